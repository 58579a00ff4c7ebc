//! Packet queue I/O: nfnetlink_queue over a raw netlink socket.
//!
//! `wire` turns bytes into messages and back; `socket` moves them. Neither knows what rackd
//! does with a packet.

pub mod pump;
pub mod socket;
pub mod wire;

pub use pump::{Decision, PacketHandler, Pump, PumpStats};
pub use socket::{QueueOptions, QueueSocket};
pub use wire::{Batch, Message, QueuedPacket, Verdict};
