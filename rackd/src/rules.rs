//! The daemon's configuration expressed as its nftables table (crate `nft-rules`).

use std::net::IpAddr;
use std::ops::RangeInclusive;

use nft_rules::{cidr4, cidr6, Selector};

use crate::config::{Config, PortRange, Prefix};

/// The nft-rules configuration for `cfg`. The daemon channel's port is never intercepted: those
/// connections are rackd's own.
pub fn nft_config(cfg: &Config) -> Result<nft_rules::Config, nft_rules::ConfigError> {
    let e = &cfg.eligibility;
    let own_port = PortRange {
        lo: cfg.peer.port,
        hi: cfg.peer.port,
    };
    let with_own = |ports: &[PortRange]| {
        let mut all = ports.to_vec();
        all.push(own_port);
        all
    };
    let (local_v4, local_v6) = addr_selectors(&e.local_addrs, &e.exclude_local_addrs)?;
    let (remote_v4, remote_v6) = addr_selectors(&e.remote_addrs, &e.exclude_remote_addrs)?;
    // An include list that names only one family makes the other family ineligible, rather
    // than silently "all" because its own list is empty.
    let family_listed = |v4: bool| {
        [&e.local_addrs, &e.remote_addrs]
            .iter()
            .all(|list| list.is_empty() || list.iter().any(|p| p.addr.is_ipv4() == v4))
    };
    Ok(nft_rules::Config {
        table: cfg.rules.table.clone(),
        mark: nft_rules::Mark {
            value: cfg.rules.mark,
            mask: cfg.rules.mark_mask,
        },
        queue: nft_rules::QueueConfig {
            num: cfg.queue.num,
            count: cfg.queue.count,
            fanout: nft_rules::Fanout::FlowHash,
            bypass: true,
        },
        eligibility: nft_rules::Eligibility {
            ipv4: e.ipv4 && family_listed(true),
            ipv6: e.ipv6 && family_listed(false),
            local_ports: port_selector(&e.local_ports, &with_own(&e.exclude_local_ports)),
            remote_ports: port_selector(&e.remote_ports, &with_own(&e.exclude_remote_ports)),
            local_v4,
            remote_v4,
            local_v6,
            remote_v6,
        },
        mode: None,
    })
}

fn port_selector(include: &[PortRange], exclude: &[PortRange]) -> Selector<u16> {
    let ranges = |list: &[PortRange]| list.iter().map(|p| p.lo..=p.hi).collect();
    Selector {
        include: ranges(include),
        exclude: ranges(exclude),
    }
}

type AddrSelectors = (Selector<std::net::Ipv4Addr>, Selector<std::net::Ipv6Addr>);

fn addr_selectors(
    include: &[Prefix],
    exclude: &[Prefix],
) -> Result<AddrSelectors, nft_rules::ConfigError> {
    let mut v4 = Selector::default();
    let mut v6 = Selector::default();
    for (list, is_include) in [(include, true), (exclude, false)] {
        for p in list {
            match p.addr {
                IpAddr::V4(a) => pick(&mut v4, is_include).push(cidr4(a, p.len)?),
                IpAddr::V6(a) => pick(&mut v6, is_include).push(cidr6(a, p.len)?),
            }
        }
    }
    Ok((v4, v6))
}

fn pick<T>(s: &mut Selector<T>, include: bool) -> &mut Vec<RangeInclusive<T>> {
    if include {
        &mut s.include
    } else {
        &mut s.exclude
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn nft(text: &str) -> nft_rules::Config {
        let cfg = Config::parse(text, Path::new("t.toml")).unwrap();
        let n = nft_config(&cfg).unwrap();
        n.validate().unwrap();
        n
    }

    #[test]
    fn defaults_intercept_everything_but_the_daemon_channel() {
        let n = nft("");
        assert!(n.eligibility.ipv4 && n.eligibility.ipv6);
        assert!(n.eligibility.local_ports.include.is_empty());
        assert_eq!(n.eligibility.local_ports.exclude, [7113..=7113]);
        assert_eq!(n.eligibility.remote_ports.exclude, [7113..=7113]);
        assert_eq!(n.mark.value & !n.mark.mask, 0);
    }

    #[test]
    fn address_lists_split_by_family() {
        let n = nft(
            "[eligibility]\nremote_addrs = [\"198.51.100.0/24\", \"2001:db8::/32\"]\n\
             exclude_local_addrs = [\"192.0.2.7\"]\n",
        );
        assert_eq!(
            n.eligibility.remote_v4.include,
            ["198.51.100.0".parse().unwrap()..="198.51.100.255".parse().unwrap()]
        );
        assert_eq!(n.eligibility.remote_v6.include.len(), 1);
        let one: std::net::Ipv4Addr = "192.0.2.7".parse().unwrap();
        assert_eq!(n.eligibility.local_v4.exclude, [one..=one]);
        assert!(n.eligibility.ipv4 && n.eligibility.ipv6);
    }

    #[test]
    fn a_one_family_include_list_disables_the_other_family() {
        let n = nft("[eligibility]\nremote_addrs = [\"198.51.100.0/24\"]\n");
        assert!(n.eligibility.ipv4);
        assert!(!n.eligibility.ipv6);
    }
}
