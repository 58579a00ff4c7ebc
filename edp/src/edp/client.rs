//! The EDP client: probe, then announce and initialise on a second connection.

use super::{match_announcement, ClientConfig, ANNOUNCEMENT, ANNOUNCEMENT_LEN};
use crate::crypto::Entropy;
use crate::init::{InitError, Initiator, Session};
use crate::message::{FrameDecoder, Message};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The client's two TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Connected, half-closed at once, only read.
    Probe,
    /// Carries the announcement, initialisation and then the application's bytes.
    Main,
}

/// What happened on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    Connected(Channel),
    ConnectFailed(Channel),
    Data(Channel, &'a [u8]),
    /// The peer closed its sending side (or the connection broke).
    Eof(Channel),
}

/// What the I/O layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Connect(Channel),
    /// `shutdown(SHUT_WR)`.
    ShutdownWrite(Channel),
    Send(Channel, Vec<u8>),
    Close(Channel),
}

/// How detection ended.
#[derive(Debug)]
pub enum ClientOutcome {
    /// The server is enhanced and initialisation succeeded: the main connection belongs to the
    /// application now; `leftover` are application bytes that arrived right after the InitAck.
    Enhanced { session: Session, leftover: Vec<u8> },
    /// Use a fresh plain connection; the reason says why.
    Plain(Fallback),
}

/// Why the client fell back to plain TCP.
#[derive(Debug)]
pub enum Fallback {
    ProbeConnectFailed,
    ProbeConnectTimeout,
    /// The probe was answered with something other than the announcement.
    UnexpectedData,
    /// The probe was closed before the whole announcement arrived.
    ClosedEarly {
        received: usize,
    },
    /// No (complete) announcement within the probe timeout.
    ProbeTimeout(Duration),
    MainConnectFailed,
    MainConnectTimeout,
    /// The server refused or botched initialisation.
    InitFailed(String),
    InitTimeout,
}

/// Where the client stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    ConnectingProbe,
    /// Probe half-closed; `matched` announcement bytes received so far.
    ExpectAnnouncement {
        matched: usize,
    },
    ConnectingMain,
    ExpectInitAck,
    Done,
}

/// The EDP client state machine. See the module docs of [`crate::edp`] for how to drive it.
#[derive(Debug)]
pub struct EdpClient {
    config: ClientConfig,
    state: ClientState,
    started: Instant,
    deadline: Option<Instant>,
    initiator: Option<Initiator>,
    init_frame: Vec<u8>,
    decoder: FrameDecoder,
    actions: VecDeque<ClientAction>,
    outcome: Option<ClientOutcome>,
}

impl EdpClient {
    /// Starts detection: the first action is connecting the probe. `rng` makes the ephemeral key.
    pub fn new(
        now: Instant,
        config: ClientConfig,
        rng: &mut dyn Entropy,
    ) -> Result<Self, InitError> {
        let (initiator, init) = Initiator::start(rng, config.conn_id, &config.params)?;
        let deadline = Some(now + config.connect_timeout);
        Ok(EdpClient {
            config,
            state: ClientState::ConnectingProbe,
            started: now,
            deadline,
            initiator: Some(initiator),
            init_frame: Message::Init(init).encode(),
            decoder: FrameDecoder::new(),
            actions: VecDeque::from([ClientAction::Connect(Channel::Probe)]),
            outcome: None,
        })
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn poll_action(&mut self) -> Option<ClientAction> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// `Some` once detection is over (then no more actions follow after the queued ones).
    pub fn outcome(&mut self) -> Option<ClientOutcome> {
        self.outcome.take()
    }

    pub fn is_done(&self) -> bool {
        self.state == ClientState::Done
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        let fallback = match self.state {
            ClientState::ConnectingProbe => Fallback::ProbeConnectTimeout,
            ClientState::ExpectAnnouncement { .. } => {
                Fallback::ProbeTimeout(now.saturating_duration_since(self.started))
            }
            ClientState::ConnectingMain => Fallback::MainConnectTimeout,
            ClientState::ExpectInitAck => Fallback::InitTimeout,
            ClientState::Done => return,
        };
        self.fall_back(fallback);
    }

    pub fn handle(&mut self, now: Instant, event: ClientEvent<'_>) {
        use Channel::*;
        use ClientEvent::*;
        match (self.state, event) {
            (ClientState::ConnectingProbe, Connected(Probe)) => {
                let wait = self
                    .config
                    .timing
                    .timeout(now.saturating_duration_since(self.started));
                self.started = now;
                self.deadline = Some(now + wait);
                self.actions.push_back(ClientAction::ShutdownWrite(Probe));
                self.state = ClientState::ExpectAnnouncement { matched: 0 };
            }
            (ClientState::ConnectingProbe, ConnectFailed(Probe)) => {
                self.fall_back(Fallback::ProbeConnectFailed)
            }
            (ClientState::ExpectAnnouncement { matched }, Data(Probe, data)) => {
                match match_announcement(matched, data) {
                    Ok(n) if n < data.len() => self.fall_back(Fallback::UnexpectedData),
                    Ok(n) if matched + n == ANNOUNCEMENT_LEN => self.announce(now),
                    Ok(n) => {
                        self.state = ClientState::ExpectAnnouncement {
                            matched: matched + n,
                        }
                    }
                    Err(()) => self.fall_back(Fallback::UnexpectedData),
                }
            }
            (ClientState::ExpectAnnouncement { matched }, Eof(Probe)) => {
                self.fall_back(Fallback::ClosedEarly { received: matched })
            }
            (ClientState::ConnectingMain, Connected(Main)) => {
                let mut bytes = ANNOUNCEMENT.to_vec();
                bytes.extend_from_slice(&self.init_frame);
                self.actions.push_back(ClientAction::Send(Main, bytes));
                self.deadline = Some(now + self.config.init_timeout);
                self.state = ClientState::ExpectInitAck;
            }
            (ClientState::ConnectingMain, ConnectFailed(Main)) => {
                self.fall_back(Fallback::MainConnectFailed)
            }
            (ClientState::ExpectInitAck, Data(Main, data)) => self.on_main_data(data),
            (ClientState::ExpectInitAck, Eof(Main)) => {
                self.fall_back(Fallback::InitFailed("server closed the connection".into()))
            }
            // Late events of a connection we are done with (e.g. the probe's EOF after the
            // announcement) change nothing.
            _ => {}
        }
    }

    /// The probe delivered the whole announcement: close it and open the main connection.
    fn announce(&mut self, now: Instant) {
        self.actions.push_back(ClientAction::Close(Channel::Probe));
        self.actions.push_back(ClientAction::Connect(Channel::Main));
        self.deadline = Some(now + self.config.connect_timeout);
        self.state = ClientState::ConnectingMain;
    }

    fn on_main_data(&mut self, data: &[u8]) {
        let message = self
            .decoder
            .push(data)
            .and_then(|()| self.decoder.next_message());
        let ack = match message {
            Ok(None) => return,
            Ok(Some(Message::InitAck(ack))) => ack,
            Ok(Some(other)) => {
                return self.fall_back(Fallback::InitFailed(format!(
                    "expected InitAck, got {other:?}"
                )))
            }
            Err(e) => return self.fall_back(Fallback::InitFailed(e.to_string())),
        };
        let initiator = self.initiator.take().expect("present until the InitAck");
        let result = {
            let mut trust = self.config.trust.lock().unwrap_or_else(|e| e.into_inner());
            initiator.finish(&ack, &self.config.peer_name, &mut trust)
        };
        match result {
            Ok(session) => {
                let leftover = self.decoder.take_remaining();
                self.finish(ClientOutcome::Enhanced { session, leftover });
            }
            Err(e) => self.fall_back(Fallback::InitFailed(e.to_string())),
        }
    }

    fn fall_back(&mut self, reason: Fallback) {
        match self.state {
            ClientState::ConnectingProbe | ClientState::ExpectAnnouncement { .. } => {
                self.actions.push_back(ClientAction::Close(Channel::Probe))
            }
            ClientState::ConnectingMain | ClientState::ExpectInitAck => {
                self.actions.push_back(ClientAction::Close(Channel::Main))
            }
            ClientState::Done => return,
        }
        self.finish(ClientOutcome::Plain(reason));
    }

    fn finish(&mut self, outcome: ClientOutcome) {
        self.state = ClientState::Done;
        self.deadline = None;
        self.outcome = Some(outcome);
    }
}
