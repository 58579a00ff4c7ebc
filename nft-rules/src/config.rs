//! What the ruleset should do: table name, daemon mark, queue numbers, eligibility.

use std::fmt::Debug;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;

use crate::ranges::include_minus_exclude;

/// Configuration of the installed ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Name of the `inet` table (default `rackd`). An existing table of this name is replaced.
    pub table: String,
    /// Packets carrying this mark (under the mask) are the daemon's own and are never queued.
    pub mark: Mark,
    /// Where queued packets go.
    pub queue: QueueConfig,
    /// Which connections' SYNs are queued at all.
    pub eligibility: Eligibility,
    /// Queueing mechanism: `None` probes (native first), `Some` insists on one.
    pub mode: Option<crate::QueueMode>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            table: "rackd".into(),
            mark: Mark::default(),
            queue: QueueConfig::default(),
            eligibility: Eligibility::default(),
            mode: None,
        }
    }
}

/// A packet mark under a mask: matches when `meta mark & mask == value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Bits that must be set (within `mask`).
    pub value: u32,
    /// Bits of the mark the daemon owns.
    pub mask: u32,
}

impl Default for Mark {
    /// One high bit, leaving the rest of the mark to other software.
    fn default() -> Self {
        Self {
            value: 0x4000_0000,
            mask: 0x4000_0000,
        }
    }
}

/// How packets are spread over queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fanout {
    /// By a hash of the flow, so one connection's packets stay in one queue, in order.
    #[default]
    FlowHash,
    /// By the CPU that handles the packet.
    Cpu,
}

/// Queue numbers and behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// First queue number.
    pub num: u16,
    /// Number of queues (`num..num+count`); 1 means no fan-out.
    pub count: u16,
    /// How packets are spread when `count > 1`.
    pub fanout: Fanout,
    /// Let packets pass when no reader is bound to the queue (fail-open). Default on.
    pub bypass: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            num: 0,
            count: 1,
            fanout: Fanout::FlowHash,
            bypass: true,
        }
    }
}

/// A value that can bound an eligibility range: ports and addresses.
pub trait Point: Copy + Ord + Debug {
    /// Largest value, as `u128`.
    const MAX: u128;
    /// Length of the network-order encoding in bytes.
    const LEN: usize;
    /// The value as an integer.
    fn to_u128(self) -> u128;
}

impl Point for u16 {
    const MAX: u128 = u16::MAX as u128;
    const LEN: usize = 2;
    fn to_u128(self) -> u128 {
        self.into()
    }
}

impl Point for Ipv4Addr {
    const MAX: u128 = u32::MAX as u128;
    const LEN: usize = 4;
    fn to_u128(self) -> u128 {
        u32::from(self).into()
    }
}

impl Point for Ipv6Addr {
    const MAX: u128 = u128::MAX;
    const LEN: usize = 16;
    fn to_u128(self) -> u128 {
        self.into()
    }
}

/// Encodes an integer value of a `T` in network byte order.
pub(crate) fn encode<T: Point>(v: u128) -> Vec<u8> {
    v.to_be_bytes()[16 - T::LEN..].to_vec()
}

/// Include and exclude lists of ranges. Empty `include` means everything; `exclude` wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector<T> {
    /// Ranges that are eligible (empty: all).
    pub include: Vec<RangeInclusive<T>>,
    /// Ranges that are not, even if included.
    pub exclude: Vec<RangeInclusive<T>>,
}

impl<T> Default for Selector<T> {
    fn default() -> Self {
        Self {
            include: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

impl<T: Point> Selector<T> {
    /// Everything except `ranges`.
    pub fn except(ranges: impl IntoIterator<Item = RangeInclusive<T>>) -> Self {
        Self {
            include: Vec::new(),
            exclude: ranges.into_iter().collect(),
        }
    }

    /// Only `ranges`.
    pub fn only(ranges: impl IntoIterator<Item = RangeInclusive<T>>) -> Self {
        Self {
            include: ranges.into_iter().collect(),
            exclude: Vec::new(),
        }
    }

    /// The eligible ranges as integers: `None` = everything (no rule needed), empty = nothing.
    pub(crate) fn effective(
        &self,
        what: &'static str,
    ) -> Result<Option<Vec<(u128, u128)>>, ConfigError> {
        let ints = |ranges: &[RangeInclusive<T>]| -> Result<Vec<(u128, u128)>, ConfigError> {
            ranges
                .iter()
                .map(|r| {
                    if r.start() > r.end() {
                        return Err(ConfigError::EmptyRange {
                            what,
                            range: format!("{:?}..={:?}", r.start(), r.end()),
                        });
                    }
                    Ok((r.start().to_u128(), r.end().to_u128()))
                })
                .collect()
        };
        Ok(include_minus_exclude(
            &ints(&self.include)?,
            &ints(&self.exclude)?,
            T::MAX,
        ))
    }
}

/// The range of addresses of an IPv4 prefix, e.g. `cidr4("192.0.2.0".parse()?, 24)`.
pub fn cidr4(addr: Ipv4Addr, prefix: u8) -> Result<RangeInclusive<Ipv4Addr>, ConfigError> {
    let (lo, hi) = prefix_range(u32::from(addr).into(), prefix, 32, &addr)?;
    Ok(Ipv4Addr::from(lo as u32)..=Ipv4Addr::from(hi as u32))
}

/// The range of addresses of an IPv6 prefix.
pub fn cidr6(addr: Ipv6Addr, prefix: u8) -> Result<RangeInclusive<Ipv6Addr>, ConfigError> {
    let (lo, hi) = prefix_range(addr.into(), prefix, 128, &addr)?;
    Ok(Ipv6Addr::from(lo)..=Ipv6Addr::from(hi))
}

fn prefix_range(
    v: u128,
    prefix: u8,
    bits: u8,
    shown: &dyn Debug,
) -> Result<(u128, u128), ConfigError> {
    if prefix > bits {
        return Err(ConfigError::PrefixTooLong {
            prefix: format!("{shown:?}/{prefix}"),
            bits,
        });
    }
    let host_bits = u32::from(bits - prefix);
    let host_mask = if host_bits == 0 {
        0
    } else {
        u128::MAX >> (128 - host_bits)
    };
    Ok((v & !host_mask, v | host_mask))
}

/// Which connections may be intercepted at SYN time. "Local" is this host's end of the
/// connection, "remote" the peer's, whichever side opened it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    /// Intercept IPv4 connections.
    pub ipv4: bool,
    /// Intercept IPv6 connections.
    pub ipv6: bool,
    /// Local TCP ports.
    pub local_ports: Selector<u16>,
    /// Remote TCP ports.
    pub remote_ports: Selector<u16>,
    /// Local IPv4 addresses.
    pub local_v4: Selector<Ipv4Addr>,
    /// Remote IPv4 addresses.
    pub remote_v4: Selector<Ipv4Addr>,
    /// Local IPv6 addresses.
    pub local_v6: Selector<Ipv6Addr>,
    /// Remote IPv6 addresses.
    pub remote_v6: Selector<Ipv6Addr>,
}

impl Default for Eligibility {
    /// Everything, both families.
    fn default() -> Self {
        Self {
            ipv4: true,
            ipv6: true,
            local_ports: Selector::default(),
            remote_ports: Selector::default(),
            local_v4: Selector::default(),
            remote_v4: Selector::default(),
            local_v6: Selector::default(),
            remote_v6: Selector::default(),
        }
    }
}

/// A configuration value that cannot be turned into rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A range whose start is after its end.
    #[error("{what}: range {range} is empty (start after end)")]
    EmptyRange {
        /// Which selector.
        what: &'static str,
        /// The range as written.
        range: String,
    },
    /// A prefix longer than the address.
    #[error("prefix {prefix} is longer than {bits} bits")]
    PrefixTooLong {
        /// The prefix as written.
        prefix: String,
        /// Address width.
        bits: u8,
    },
    /// Table names must be 1..=255 bytes without NUL.
    #[error("table name {0:?} must be 1 to 255 bytes without NUL")]
    TableName(String),
    /// The mark has bits outside its mask, so it could never match.
    #[error("mark value {value:#x} has bits outside mask {mask:#x}")]
    MarkOutsideMask {
        /// Configured value.
        value: u32,
        /// Configured mask.
        mask: u32,
    },
    /// Queue numbers must be 1.. queues within 0..=65535.
    #[error(
        "queues {num}..{num}+{count} do not fit the 16-bit queue numbers (count must be >= 1)"
    )]
    QueueRange {
        /// First queue.
        num: u16,
        /// Number of queues.
        count: u16,
    },
}

impl Config {
    /// Checks what can be checked without the kernel.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.table.is_empty() || self.table.len() > 255 || self.table.contains('\0') {
            return Err(ConfigError::TableName(self.table.clone()));
        }
        if self.mark.value & !self.mark.mask != 0 {
            return Err(ConfigError::MarkOutsideMask {
                value: self.mark.value,
                mask: self.mark.mask,
            });
        }
        let q = self.queue;
        if q.count == 0 || u32::from(q.num) + u32::from(q.count) - 1 > u32::from(u16::MAX) {
            return Err(ConfigError::QueueRange {
                num: q.num,
                count: q.count,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_bounds() {
        let r = cidr4(Ipv4Addr::new(192, 0, 2, 77), 24).unwrap();
        assert_eq!(
            r,
            Ipv4Addr::new(192, 0, 2, 0)..=Ipv4Addr::new(192, 0, 2, 255)
        );
        let all = cidr4(Ipv4Addr::new(1, 2, 3, 4), 0).unwrap();
        assert_eq!(all, Ipv4Addr::UNSPECIFIED..=Ipv4Addr::BROADCAST);
        let host = cidr6("2001:db8::1".parse().unwrap(), 128).unwrap();
        assert_eq!(host.start(), host.end());
        assert!(matches!(
            cidr4(Ipv4Addr::LOCALHOST, 33),
            Err(ConfigError::PrefixTooLong { .. })
        ));
    }

    #[test]
    fn reversed_range_is_named_in_the_error() {
        #[allow(clippy::reversed_empty_ranges)]
        let s = Selector::only([9000u16..=80]);
        let err = s.effective("local ports").unwrap_err();
        assert_eq!(
            err.to_string(),
            "local ports: range 9000..=80 is empty (start after end)"
        );
    }

    #[test]
    fn encode_is_network_order() {
        assert_eq!(encode::<u16>(0x1234), vec![0x12, 0x34]);
        assert_eq!(encode::<Ipv4Addr>(0xc000_0201), vec![192, 0, 2, 1]);
    }

    #[test]
    fn validation() {
        let mut c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        c.queue = QueueConfig {
            num: 65535,
            count: 2,
            ..QueueConfig::default()
        };
        assert!(matches!(c.validate(), Err(ConfigError::QueueRange { .. })));
        c.queue = QueueConfig::default();
        c.mark = Mark { value: 3, mask: 1 };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::MarkOutsideMask { .. })
        ));
        c.mark = Mark::default();
        c.table = "a\0b".into();
        assert!(matches!(c.validate(), Err(ConfigError::TableName(_))));
    }
}
