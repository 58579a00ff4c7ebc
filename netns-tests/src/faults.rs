//! Faults a test can inject: cut paths at the router, take links down, change a host's
//! address, limit a link's rate.
//!
//! Cuts are drop rules in the router's forward hook, so the endpoints see no link change and
//! the router's neighbour state stays: exactly an outage somewhere in the network. There is no
//! netem on the target kernels; rate limits use tbf.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::sync::lock;
use crate::topology::{Addresses, HOST_IF, V4_PREFIX, V6_PREFIX};
use crate::{cmd, Error, Host, Result, Topology};

/// The router's table: forwarded packets whose (in, out) interface pair is in `cuts` are dropped.
const FAULT_TABLE: &str = "table inet rk_faults {
    set cuts { type ifname . ifname; }
    chain forward {
        type filter hook forward priority filter - 10; policy accept;
        iifname . oifname @cuts drop
    }
}
";

pub(crate) fn install_fault_table(router: &Host) -> Result<()> {
    cmd::nft_script(router.netns(), FAULT_TABLE)
}

/// Whether the host's link is administratively up.
fn link_is_up(host: &Host) -> Result<bool> {
    let out = cmd::in_netns(host.netns(), "ip", &["-o", "link", "show", "dev", HOST_IF])?;
    // `2: eth0@if5: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu ...`
    let flags = out.split(['<', '>']).nth(1).unwrap_or_default();
    Ok(flags.split(',').any(|f| f == "UP"))
}

impl Topology {
    /// Cuts the path between hosts `a` and `b` in both directions (packets dropped silently at
    /// the router). Other paths keep working.
    pub fn cut(&self, a: &str, b: &str) -> Result<()> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        self.set_cut(&[(a, b), (b, a)], true)
    }

    /// Cuts only the direction from `from` to `to`.
    pub fn cut_one_way(&self, from: &str, to: &str) -> Result<()> {
        self.set_cut(&[(self.get(from)?, self.get(to)?)], true)
    }

    /// Restores the path between `a` and `b` (both directions, whichever were cut).
    pub fn restore(&self, a: &str, b: &str) -> Result<()> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        self.set_cut(&[(a, b), (b, a)], false)
    }

    /// Restores every cut path.
    pub fn restore_all(&self) -> Result<()> {
        let cut: Vec<(String, String)> = lock(&self.cuts).iter().cloned().collect();
        self.apply_cut_elements("delete", &cut)?;
        lock(&self.cuts).clear();
        Ok(())
    }

    fn set_cut(&self, directions: &[(&Host, &Host)], cut: bool) -> Result<()> {
        let mut cuts = lock(&self.cuts);
        let pairs: Vec<(String, String)> = directions
            .iter()
            .map(|(from, to)| (Self::router_if(from), Self::router_if(to)))
            // nft refuses to delete an element that is not there, and adding twice is pointless.
            .filter(|pair| cuts.contains(pair) != cut)
            .collect();
        self.apply_cut_elements(if cut { "add" } else { "delete" }, &pairs)?;
        for pair in pairs {
            if cut {
                cuts.insert(pair);
            } else {
                cuts.remove(&pair);
            }
        }
        Ok(())
    }

    fn apply_cut_elements(&self, verb: &str, pairs: &[(String, String)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        let elements: Vec<String> = pairs
            .iter()
            .map(|(i, o)| format!("\"{i}\" . \"{o}\""))
            .collect();
        let script = format!(
            "{verb} element inet rk_faults cuts {{ {} }}\n",
            elements.join(", ")
        );
        cmd::nft_script(self.router().netns(), &script)
    }

    /// Sets the host's link administratively down (inside the host: it sees the link go away,
    /// and the router sees carrier loss).
    pub fn link_down(&self, host: &str) -> Result<()> {
        self.get(host)?
            .ip_batch(&format!("link set {HOST_IF} down\n"))
    }

    /// Brings the host's link back up with its addresses and default routes.
    pub fn link_up(&self, host: &str) -> Result<()> {
        let host = self.get(host)?;
        let a = host.addresses();
        host.ip_batch(&format!(
            "link set {HOST_IF} up\n\
             addr replace {}/{V4_PREFIX} dev {HOST_IF}\naddr replace {}/{V6_PREFIX} dev {HOST_IF} nodad\n\
             route replace default via {}\nroute replace default via {}\n",
            a.v4, a.v6, a.v4_gateway, a.v6_gateway
        ))
    }

    /// Gives `host` new addresses: the old ones are removed (sockets bound to them can no longer
    /// send or receive), the new ones added, default routes re-set. A new address outside the
    /// host's current subnets moves the link: the router's side then takes the first address
    /// of the new subnet, which must not overlap another link's. While the host's link is down
    /// (see [`Topology::link_down`]) only the addresses change: a route cannot be added then,
    /// and [`Topology::link_up`] adds them.
    pub fn change_address(&self, host: &str, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        let target = self.get(host)?;
        let old = target.addresses();
        let new = self.plan_new_addresses(target, v4, v6)?;
        let rif = Self::router_if(target);
        let mut router = String::new();
        if new.v4_gateway != old.v4_gateway {
            router.push_str(&format!(
                "addr del {}/{V4_PREFIX} dev {rif}\naddr add {}/{V4_PREFIX} dev {rif}\n",
                old.v4_gateway, new.v4_gateway
            ));
        }
        if new.v6_gateway != old.v6_gateway {
            router.push_str(&format!(
                "addr del {}/{V6_PREFIX} dev {rif}\naddr add {}/{V6_PREFIX} dev {rif} nodad\n",
                old.v6_gateway, new.v6_gateway
            ));
        }
        if !router.is_empty() {
            self.router().ip_batch(&router)?;
        }
        let mut batch = format!(
            "addr del {}/{V4_PREFIX} dev {HOST_IF}\naddr del {}/{V6_PREFIX} dev {HOST_IF}\n\
             addr add {}/{V4_PREFIX} dev {HOST_IF}\naddr add {}/{V6_PREFIX} dev {HOST_IF} nodad\n",
            old.v4, old.v6, new.v4, new.v6
        );
        if link_is_up(target)? {
            batch.push_str(&format!(
                "route replace default via {}\nroute replace default via {}\n",
                new.v4_gateway, new.v6_gateway
            ));
        }
        target.ip_batch(&batch)?;
        target.set_addresses(new);
        Ok(())
    }

    /// Checks new addresses for `target` and works out the gateways that go with them.
    fn plan_new_addresses(&self, target: &Host, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<Addresses> {
        let bad = |addr: String, reason| {
            Err(Error::BadAddress {
                host: target.name().to_owned(),
                addr,
                reason,
            })
        };
        let v4_net = u32::from(v4) & !(u32::MAX >> V4_PREFIX);
        let v6_net = u128::from(v6) & !(u128::MAX >> V6_PREFIX);
        let v4_gateway = Ipv4Addr::from(v4_net + 1);
        let v6_gateway = Ipv6Addr::from(v6_net + 1);
        let v4_host = u32::from(v4) - v4_net;
        if v4_host < 2 || v4_host == (1 << (32 - V4_PREFIX)) - 1 {
            return bad(
                v4.to_string(),
                "the network, gateway (.1) and broadcast addresses are taken",
            );
        }
        if u128::from(v6) - v6_net < 2 {
            return bad(
                v6.to_string(),
                "the subnet-router anycast and gateway (::1) addresses are taken",
            );
        }
        for other in self.hosts().iter().filter(|h| h.name() != target.name()) {
            let o = other.addresses();
            if u32::from(o.v4) & !(u32::MAX >> V4_PREFIX) == v4_net {
                return bad(v4.to_string(), "it is in another host's subnet");
            }
            if u128::from(o.v6) & !(u128::MAX >> V6_PREFIX) == v6_net {
                return bad(v6.to_string(), "it is in another host's subnet");
            }
        }
        Ok(Addresses {
            v4,
            v4_gateway,
            v6,
            v6_gateway,
        })
    }

    /// Limits the rate of `host`'s link to `bits_per_s` in both directions (tbf on the host's
    /// side and on the router's side).
    pub fn rate_limit(&self, host: &str, bits_per_s: u64) -> Result<()> {
        let target = self.get(host)?;
        // A burst of 10 ms of traffic, and at least a few full-size frames.
        let burst = (bits_per_s / 8 / 100).max(16 * 1024);
        let tbf = |netns: &str, dev: &str| {
            cmd::in_netns(
                netns,
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "root",
                    "tbf",
                    "rate",
                    &format!("{bits_per_s}bit"),
                    "burst",
                    &burst.to_string(),
                    "latency",
                    "100ms",
                ],
            )
        };
        tbf(target.netns(), HOST_IF)?;
        tbf(self.router().netns(), &Self::router_if(target))?;
        lock(&self.rate_limited).insert(target.name().to_owned());
        Ok(())
    }

    /// Removes the rate limit of `host`'s link, if any.
    pub fn clear_rate_limit(&self, host: &str) -> Result<()> {
        let target = self.get(host)?;
        if !lock(&self.rate_limited).remove(target.name()) {
            return Ok(());
        }
        let del = |netns: &str, dev: &str| {
            cmd::in_netns(netns, "tc", &["qdisc", "del", "dev", dev, "root"])
        };
        del(target.netns(), HOST_IF)?;
        del(self.router().netns(), &Self::router_if(target)).map(drop)
    }
}
