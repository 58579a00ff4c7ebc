//! rackd's own nftables table: SYN interception, per-flow queueing and in-kernel address
//! translation, installed and changed atomically through libnftnl batches.
//!
//! See the crate README for the ruleset as `nft list` shows it and the reasoning behind the
//! hooks and priorities. In short:
//!
//! * chain `pre` (prerouting, priority -300, before conntrack at -200) translates and queues
//!   arriving packets before conntrack sees them, so conntrack only ever sees the local
//!   socket's view of a flow;
//! * chain `out` (output, priority -150, type route, after conntrack) translates and queues
//!   leaving packets after conntrack has seen the socket's view, and the route type makes the
//!   kernel route the packet again for its new addresses;
//! * in each chain: the daemon's marked packets are accepted, then a jump to the chain's
//!   per-flow chain (`pre_flows`, `out_flows`), then SYN interception restricted to eligible
//!   connections;
//! * the per-flow chains hold the translation rules, then the per-flow queue rules, each only
//!   while its map or set has elements: the [`Ruleset`] mirrors their keys and adds or
//!   removes a rule in the same atomic batch that fills or empties its set, so the usual
//!   case (nothing spliced, nothing queued) costs a packet one jump instead of four rules
//!   (two 4-tuple loads and set lookups for its family).
//!
//! The queue verdict is the native `queue` expression when the kernel has it and otherwise
//! the xtables NFQUEUE target through nft_compat ([`QueueMode`]); both fail open (bypass).
//!
//! All calls act on the network namespace of the thread that created the [`Ruleset`].

mod config;
mod error;
mod flow;
mod nl;
mod occupancy;
mod ranges;
mod rules;
mod ruleset;

pub use config::{
    cidr4, cidr6, Config, ConfigError, Eligibility, Fanout, Mark, Point, QueueConfig, Selector,
};
pub use error::{Error, Result};
pub use flow::{Direction, FlowKey, Translation};
pub use nl::reply::MalformedReply;
pub use ruleset::{probe_queue_mode, remove_stale, QueueMode, Ruleset};
