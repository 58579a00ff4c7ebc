//! The EDP server side of one accepted connection: answer a probe, initialise an announced
//! client, or hand the connection to the application untouched.

use super::{match_announcement, ServerConfig, ANNOUNCEMENT, ANNOUNCEMENT_LEN};
use crate::crypto::Entropy;
use crate::init::{respond, Session};
use crate::message::{ConnId, ErrorCode, FrameDecoder, Message};
use std::collections::VecDeque;
use std::time::Instant;

/// What happened on the accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent<'a> {
    Data(&'a [u8]),
    /// The client closed its sending side.
    Eof,
}

/// What the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAction {
    Send(Vec<u8>),
    /// Close the connection (after sending what was queued before).
    Close,
}

/// How the connection turned out.
#[derive(Debug)]
pub enum ServerOutcome {
    /// It was a probe; the announcement was sent and the connection closed.
    ProbeAnswered,
    /// An enhanced client initialised: the connection belongs to the application now, starting
    /// with `leftover` (application bytes that arrived behind the Init).
    Enhanced { session: Session, leftover: Vec<u8> },
    /// Not EDP: give the connection to the application, replaying `prefix` (bytes already read)
    /// first; `eof` says the client had already closed its side.
    Plain { prefix: Vec<u8>, eof: bool },
    /// The client announced itself but initialisation failed; the connection was closed.
    Failed(String),
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Deciding: `matched` bytes so far agree with the announcement.
    Classifying {
        matched: usize,
    },
    ExpectInit,
    Done,
}

/// Per-connection server state machine.
#[derive(Debug)]
pub struct ServerConn {
    config: ServerConfig,
    peer_name: String,
    state: ServerState,
    deadline: Option<Instant>,
    decoder: FrameDecoder,
    actions: VecDeque<ServerAction>,
    outcome: Option<ServerOutcome>,
}

impl ServerConn {
    /// A connection accepted at `now` from a peer named `peer_name` (for host key pinning).
    pub fn new(now: Instant, config: ServerConfig, peer_name: impl Into<String>) -> Self {
        let deadline = Some(now + config.classify_timeout);
        ServerConn {
            config,
            peer_name: peer_name.into(),
            state: ServerState::Classifying { matched: 0 },
            deadline,
            decoder: FrameDecoder::new(),
            actions: VecDeque::new(),
            outcome: None,
        }
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    pub fn poll_action(&mut self) -> Option<ServerAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    pub fn outcome(&mut self) -> Option<ServerOutcome> {
        self.outcome.take()
    }

    pub fn is_done(&self) -> bool {
        self.state == ServerState::Done
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        match self.state {
            // A silent client (server-speaks-first protocol) or a stalled partial match.
            ServerState::Classifying { matched } => self.finish(ServerOutcome::Plain {
                prefix: ANNOUNCEMENT[..matched].to_vec(),
                eof: false,
            }),
            ServerState::ExpectInit => self.fail("no Init before the timeout".into(), None),
            ServerState::Done => {}
        }
    }

    pub fn handle(&mut self, now: Instant, event: ServerEvent<'_>, rng: &mut dyn Entropy) {
        match (self.state, event) {
            (ServerState::Classifying { matched: 0 }, ServerEvent::Eof) => {
                self.actions
                    .push_back(ServerAction::Send(ANNOUNCEMENT.to_vec()));
                self.actions.push_back(ServerAction::Close);
                self.finish(ServerOutcome::ProbeAnswered);
            }
            (ServerState::Classifying { matched }, ServerEvent::Eof) => {
                self.finish(ServerOutcome::Plain {
                    prefix: ANNOUNCEMENT[..matched].to_vec(),
                    eof: true,
                })
            }
            (ServerState::Classifying { matched }, ServerEvent::Data(data)) => {
                match match_announcement(matched, data) {
                    Err(()) => {
                        let mut prefix = ANNOUNCEMENT[..matched].to_vec();
                        prefix.extend_from_slice(data);
                        self.finish(ServerOutcome::Plain { prefix, eof: false });
                    }
                    Ok(n) if matched + n == ANNOUNCEMENT_LEN => {
                        self.state = ServerState::ExpectInit;
                        self.deadline = Some(now + self.config.init_timeout);
                        self.on_init_data(&data[n..], rng);
                    }
                    Ok(n) => {
                        self.state = ServerState::Classifying {
                            matched: matched + n,
                        }
                    }
                }
            }
            (ServerState::ExpectInit, ServerEvent::Data(data)) => self.on_init_data(data, rng),
            (ServerState::ExpectInit, ServerEvent::Eof) => {
                self.fail("client closed before Init".into(), None)
            }
            (ServerState::Done, _) => {}
        }
    }

    fn on_init_data(&mut self, data: &[u8], rng: &mut dyn Entropy) {
        let message = self
            .decoder
            .push(data)
            .and_then(|()| self.decoder.next_message());
        let init = match message {
            Ok(None) => return,
            Ok(Some(Message::Init(init))) => init,
            Ok(Some(other)) => {
                return self.fail(
                    format!("expected Init, got {other:?}"),
                    Some((None, ErrorCode::Malformed)),
                )
            }
            Err(e) => return self.fail(e.to_string(), Some((None, ErrorCode::Malformed))),
        };
        let result = {
            let mut trust = self.config.trust.lock().unwrap_or_else(|e| e.into_inner());
            respond(rng, &init, &self.config.params, &self.peer_name, &mut trust)
        };
        match result {
            Ok((ack, session)) => {
                self.actions
                    .push_back(ServerAction::Send(Message::InitAck(ack).encode()));
                let leftover = self.decoder.take_remaining();
                self.finish(ServerOutcome::Enhanced { session, leftover });
            }
            Err(e) => {
                let error = (Some(init.conn_id), ErrorCode::AuthenticationFailed);
                self.fail(e.to_string(), Some(error));
            }
        }
    }

    /// Ends the connection, first telling the client why when `error` is given.
    fn fail(&mut self, reason: String, error: Option<(Option<ConnId>, ErrorCode)>) {
        if let Some((conn_id, code)) = error {
            self.actions.push_back(ServerAction::Send(
                Message::Error { conn_id, code }.encode(),
            ));
        }
        self.actions.push_back(ServerAction::Close);
        self.finish(ServerOutcome::Failed(reason));
    }

    fn finish(&mut self, outcome: ServerOutcome) {
        self.state = ServerState::Done;
        self.deadline = None;
        self.outcome = Some(outcome);
    }
}
