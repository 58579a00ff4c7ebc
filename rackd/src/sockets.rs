//! The kernel's TCP socket table as the engine needs it: [`SocketCounters`] by flow key.

use std::collections::HashMap;
use std::io;

use crate::engine::{FlowKey, SocketCounters};
use crate::sockdiag::{SockDiag, SockInfo, States, TcpState};

#[derive(Debug)]
pub struct SocketTable {
    diag: SockDiag,
}

impl SocketTable {
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            diag: SockDiag::open().map_err(io::Error::other)?,
        })
    }

    /// One socket, by the local socket's view of the flow; `None` when it is gone or only
    /// lingers in TIME_WAIT.
    pub fn lookup(&mut self, key: &FlowKey) -> io::Result<Option<SocketCounters>> {
        let info = self
            .diag
            .lookup(key.local, key.remote)
            .map_err(io::Error::other)?;
        Ok(info.as_ref().and_then(counters))
    }

    /// Aborts the flow's local socket (the kernel resets it towards its peer); false if it was
    /// already gone.
    pub fn destroy(&mut self, key: &FlowKey) -> io::Result<bool> {
        self.diag
            .destroy(key.local, key.remote)
            .map_err(io::Error::other)
    }

    /// Every open TCP connection.
    pub fn snapshot(&mut self) -> io::Result<HashMap<FlowKey, SocketCounters>> {
        let all = self.diag.dump(States::all()).map_err(io::Error::other)?;
        Ok(all
            .iter()
            .filter_map(|i| {
                let key = FlowKey {
                    local: i.local,
                    remote: i.remote,
                };
                Some((key, counters(i)?))
            })
            .collect())
    }
}

fn counters(i: &SockInfo) -> Option<SocketCounters> {
    use TcpState::*;
    match i.state {
        Established | SynSent | SynRecv | FinWait1 | FinWait2 | CloseWait | LastAck | Closing => {}
        // Gone for the application and for rackd.
        TimeWait | Close | Listen | Unknown(_) => return None,
    }
    Some(SocketCounters {
        bytes_acked: i.bytes_acked,
        bytes_received: i.bytes_received,
        bytes_sent: i.bytes_sent,
        snd_wnd: i.snd_wnd,
        snd_wscale: i.snd_wscale,
        timestamps: i.timestamps,
        unacked: i.unacked,
    })
}
