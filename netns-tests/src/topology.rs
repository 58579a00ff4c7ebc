//! Hosts as network namespaces joined through a router namespace by veth pairs.
//!
//! Address plan: host number `i` (in the order added, `client` = 0, `server` = 1) gets a /26
//! from a documentation range — `192.0.2.0/26`, `198.51.100.0/26`, `203.0.113.0/26`, then the
//! next /26 of each range in turn — and `2001:db8:<i+1>::/64`. The host is `.2` / `::2` on its
//! link, the router `.1` / `::1` and the host's default gateway. So the client is
//! `192.0.2.2` / `2001:db8:1::2`, the server `198.51.100.2` / `2001:db8:2::2`, a third host
//! `203.0.113.2` / `2001:db8:3::2`. Inside a host the link is `eth0`; on the router it is
//! `v-<host>`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::process::Registry;
use crate::sync::lock;
use crate::transfer::Family;
use crate::{cmd, naming, Error, HostCommand, Output, Process, Result};

/// The documentation /24s the IPv4 links are carved from.
const V4_RANGES: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
/// IPv4 prefix length of each link: four /26 per range.
pub(crate) const V4_PREFIX: u8 = 26;
/// IPv6 prefix length of each link.
pub(crate) const V6_PREFIX: u8 = 64;
/// Hosts the address plan has room for (three ranges, four /26 each).
const MAX_HOSTS: usize = 12;
/// Longest host name: `v-<name>` must fit the 15-byte interface name limit.
const MAX_NAME: usize = 12;
/// The interface inside each host.
pub(crate) const HOST_IF: &str = "eth0";
/// How long [`Host::run`] lets a program run.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Sysctls for every namespace: addresses usable at once (no DAD), IPv6 addresses kept while a
/// link is down, secondary IPv4 addresses promoted when the primary is removed.
const HOST_SYSCTLS: &[&str] = &[
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.default.keep_addr_on_down=1",
    "net.ipv4.conf.all.promote_secondaries=1",
    "net.ipv4.conf.default.promote_secondaries=1",
];
/// Additional sysctls for the router.
const ROUTER_SYSCTLS: &[&str] = &["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"];

/// A host's addresses on its link and the router's addresses facing it (its gateways).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The host's IPv4 address.
    pub v4: Ipv4Addr,
    /// The router's IPv4 address on the host's link.
    pub v4_gateway: Ipv4Addr,
    /// The host's IPv6 address.
    pub v6: Ipv6Addr,
    /// The router's IPv6 address on the host's link.
    pub v6_gateway: Ipv6Addr,
}

impl Addresses {
    /// The plan for host number `index` (see the module documentation).
    fn plan(index: usize) -> Addresses {
        let [a, b, c] = V4_RANGES[index % V4_RANGES.len()];
        let block = u8::try_from(index / V4_RANGES.len() * 64).unwrap_or(0);
        let group = u16::try_from(index + 1).unwrap_or(u16::MAX);
        Addresses {
            v4: Ipv4Addr::new(a, b, c, block + 2),
            v4_gateway: Ipv4Addr::new(a, b, c, block + 1),
            v6: Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, 2),
            v6_gateway: Ipv6Addr::new(0x2001, 0xdb8, group, 0, 0, 0, 0, 1),
        }
    }

    /// The next addresses in the same subnets (`.3` after `.2`): a ready-made new address for
    /// [`Topology::change_address`].
    pub fn successor(&self) -> (Ipv4Addr, Ipv6Addr) {
        (
            Ipv4Addr::from(u32::from(self.v4).wrapping_add(1)),
            Ipv6Addr::from(u128::from(self.v6).wrapping_add(1)),
        )
    }

    /// The host's address of `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.v4.into(),
            Family::V6 => self.v6.into(),
        }
    }
}

/// One network namespace of a topology: a host, or the router.
#[derive(Debug)]
pub struct Host {
    name: String,
    netns: String,
    /// None for the router, which has one address per link.
    addresses: Option<Mutex<Addresses>>,
    registry: Arc<Registry>,
}

impl Host {
    /// The host's name in the topology (`client`, `server`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace name, for `ip netns exec` / `ip -n`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The interface of the host's link (`eth0`).
    pub fn interface(&self) -> &str {
        HOST_IF
    }

    /// The host's current addresses and gateways.
    ///
    /// # Panics
    /// When called on the router, which has an address per link: use
    /// [`Topology::host`]`(name).addresses()` and its gateway fields instead.
    pub fn addresses(&self) -> Addresses {
        match &self.addresses {
            Some(addresses) => *lock(addresses),
            None => panic!("the router has one address per link; ask a host for its gateway"),
        }
    }

    /// The host's current IPv4 address.
    pub fn v4(&self) -> Ipv4Addr {
        self.addresses().v4
    }

    /// The host's current IPv6 address.
    pub fn v6(&self) -> Ipv6Addr {
        self.addresses().v6
    }

    /// The host's current address of `family`.
    pub fn ip(&self, family: Family) -> IpAddr {
        self.addresses().ip(family)
    }

    pub(crate) fn set_addresses(&self, new: Addresses) {
        if let Some(addresses) = &self.addresses {
            *lock(addresses) = new;
        }
    }

    /// A program to run in this host, to be configured and then spawned or run.
    pub fn command(&self, program: impl AsRef<OsStr>) -> HostCommand {
        HostCommand::new(&self.netns, Arc::clone(&self.registry), program)
    }

    /// Starts `program args..` in this host, output captured.
    pub fn spawn<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program).args(args).spawn()
    }

    /// Runs `program args..` in this host to completion (at most a minute); fails unless it
    /// exits with status 0. Use [`Host::command`] for other timeouts or to see failures.
    pub fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command(program).args(args).run(RUN_TIMEOUT)?.check()
    }

    /// Sets a sysctl of this host's network namespace, e.g. `net.ipv4.tcp_retries2` to `3`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        cmd::in_netns(
            &self.netns,
            "sysctl",
            &["-q", "-w", &format!("{key}={value}")],
        )
        .map(drop)
    }

    /// Reads a sysctl of this host's network namespace.
    pub fn sysctl_get(&self, key: &str) -> Result<String> {
        Ok(cmd::in_netns(&self.netns, "sysctl", &["-n", key])?
            .trim()
            .to_owned())
    }

    /// Runs `ip -n <netns> -batch -` with `batch`.
    pub(crate) fn ip_batch(&self, batch: &str) -> Result<()> {
        cmd::ip_batch(&self.netns, batch)
    }
}

/// Which hosts a [`Topology`] gets; made by [`Topology::builder`].
#[derive(Debug, Clone)]
pub struct TopologyBuilder {
    hosts: Vec<String>,
}

impl TopologyBuilder {
    /// Adds a host behind the router (after `client` and `server`), e.g. `third`.
    /// Names are 1 to 12 lowercase letters or digits, starting with a letter.
    pub fn host(mut self, name: &str) -> Self {
        self.hosts.push(name.to_owned());
        self
    }

    /// Creates the namespaces, links, addresses and routes. Removes first the namespaces of
    /// earlier runs whose process is gone.
    pub fn build(self) -> Result<Topology> {
        require_root()?;
        validate_names(&self.hosts)?;
        naming::sweep_stale();
        let id = naming::new_topology_id();
        let registry = Arc::new(Registry::default());
        let make = |name: &str, addresses: Option<Addresses>| Host {
            name: name.to_owned(),
            netns: format!("{id}-{name}"),
            addresses: addresses.map(Mutex::new),
            registry: Arc::clone(&registry),
        };
        let router = make("router", None);
        let hosts = self
            .hosts
            .iter()
            .enumerate()
            .map(|(i, name)| make(name, Some(Addresses::plan(i))))
            .collect();
        // From here on, Drop removes whatever part of the topology exists.
        let topology = Topology {
            id,
            router,
            hosts,
            cuts: Mutex::default(),
            rate_limited: Mutex::default(),
            registry,
            torn_down: false,
        };
        topology.create()?;
        Ok(topology)
    }
}

/// Fails with [`Error::NotRoot`] unless the process runs as root.
pub(crate) fn require_root() -> Result<()> {
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        Ok(())
    } else {
        Err(Error::NotRoot {
            euid: euid.as_raw(),
        })
    }
}

fn validate_names(names: &[String]) -> Result<()> {
    if names.len() > MAX_HOSTS {
        return Err(Error::TooManyHosts {
            count: names.len(),
            max: MAX_HOSTS,
        });
    }
    for (i, name) in names.iter().enumerate() {
        let bad = |reason| {
            Err(Error::InvalidHostName {
                name: name.clone(),
                reason,
            })
        };
        if name.is_empty() || name.len() > MAX_NAME {
            return bad("must be 1 to 12 characters");
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase())
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return bad("must be lowercase letters and digits, starting with a letter");
        }
        if name == "router" {
            return bad("is the router's name");
        }
        if names[..i].contains(name) {
            return bad("is used twice");
        }
    }
    Ok(())
}

/// Test hosts in network namespaces behind a router; torn down on drop.
///
/// ```no_run
/// use netns_tests::Topology;
/// let topo = Topology::builder().host("third").build()?;
/// let server = topo.host("server");
/// topo.host("client").run("ping", ["-c1", "-W1", &server.v4().to_string()])?;
/// topo.cut("client", "server")?;
/// # Ok::<(), netns_tests::Error>(())
/// ```
#[derive(Debug)]
pub struct Topology {
    id: String,
    router: Host,
    hosts: Vec<Host>,
    /// Directions cut at the router, as (inbound, outbound) router interface names.
    pub(crate) cuts: Mutex<BTreeSet<(String, String)>>,
    /// Hosts with a rate limit in place.
    pub(crate) rate_limited: Mutex<BTreeSet<String>>,
    registry: Arc<Registry>,
    torn_down: bool,
}

impl Topology {
    /// The usual shape, `client` — router — `server`; add hosts with
    /// [`TopologyBuilder::host`].
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder {
            hosts: vec!["client".to_owned(), "server".to_owned()],
        }
    }

    /// Builds the usual shape, `client` — router — `server`.
    pub fn new() -> Result<Topology> {
        Topology::builder().build()
    }

    /// This topology's unique id, the prefix of its namespace names (`rk<pid>x<n>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The host called `name`.
    ///
    /// # Panics
    /// If there is no such host (a mistake in the test); [`Topology::get`] does not panic.
    pub fn host(&self, name: &str) -> &Host {
        match self.get(name) {
            Ok(host) => host,
            Err(e) => panic!("{e}"),
        }
    }

    /// The host called `name`, or [`Error::UnknownHost`].
    pub fn get(&self, name: &str) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| Error::UnknownHost(name.to_owned()))
    }

    /// The hosts, in the order they were added (without the router).
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The router namespace (to run programs there, e.g. `nft list ruleset`).
    pub fn router(&self) -> &Host {
        &self.router
    }

    /// The router's interface towards `host`.
    pub(crate) fn router_if(host: &Host) -> String {
        format!("v-{}", host.name)
    }

    /// All namespace names of this topology, router first.
    pub fn namespaces(&self) -> Vec<&str> {
        std::iter::once(&self.router)
            .chain(&self.hosts)
            .map(|h| h.netns.as_str())
            .collect()
    }

    fn create(&self) -> Result<()> {
        let adds: String = self
            .namespaces()
            .iter()
            .map(|ns| format!("netns add {ns}\n"))
            .collect();
        cmd::run_with_input("ip", &["-batch", "-"], Some(&adds))?;
        let mut router_sysctls = HOST_SYSCTLS.to_vec();
        router_sysctls.extend_from_slice(ROUTER_SYSCTLS);
        set_sysctls(&self.router.netns, &router_sysctls)?;
        for host in &self.hosts {
            set_sysctls(&host.netns, HOST_SYSCTLS)?;
        }
        let links: String = self
            .hosts
            .iter()
            .map(|h| {
                format!(
                    "link add {} netns {} type veth peer name {HOST_IF} netns {}\n",
                    Self::router_if(h),
                    self.router.netns,
                    h.netns
                )
            })
            .collect();
        cmd::run_with_input("ip", &["-batch", "-"], Some(&links))?;
        let mut router = String::from("link set lo up\n");
        for host in &self.hosts {
            let a = host.addresses();
            let rif = Self::router_if(host);
            router.push_str(&format!(
                "link set {rif} up\naddr add {}/{V4_PREFIX} dev {rif}\naddr add {}/{V6_PREFIX} dev {rif} nodad\n",
                a.v4_gateway, a.v6_gateway
            ));
            host.ip_batch(&format!(
                "link set lo up\nlink set {HOST_IF} up\n\
                 addr add {}/{V4_PREFIX} dev {HOST_IF}\naddr add {}/{V6_PREFIX} dev {HOST_IF} nodad\n\
                 route add default via {}\nroute add default via {}\n",
                a.v4, a.v6, a.v4_gateway, a.v6_gateway
            ))?;
        }
        self.router.ip_batch(&router)?;
        crate::faults::install_fault_table(&self.router)
    }

    /// Ends every process started in the topology (by pid) and deletes its namespaces, which
    /// removes their links, addresses and rules. Dropping the topology does the same; call this
    /// to see errors.
    pub fn teardown(mut self) -> Result<()> {
        self.torn_down = true;
        self.remove()
    }

    fn remove(&self) -> Result<()> {
        self.registry.kill_all();
        let mut first_error = None;
        for ns in self.namespaces() {
            // A build that failed early has not created them all.
            if naming::exists(ns) {
                if let Err(e) = naming::delete_namespace(ns) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if !self.torn_down {
            if let Err(e) = self.remove() {
                eprintln!("netns-tests: teardown of {}: {e}", self.id);
            }
        }
    }
}

fn set_sysctls(netns: &str, settings: &[&str]) -> Result<()> {
    let mut args = vec!["-q", "-w"];
    args.extend_from_slice(settings);
    cmd::in_netns(netns, "sysctl", &args).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan_matches_the_documented_addresses() {
        let client = Addresses::plan(0);
        assert_eq!(client.v4, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(client.v4_gateway, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(client.v6, "2001:db8:1::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(Addresses::plan(1).v4, Ipv4Addr::new(198, 51, 100, 2));
        assert_eq!(
            Addresses::plan(2).v6_gateway,
            "2001:db8:3::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(Addresses::plan(3).v4, Ipv4Addr::new(192, 0, 2, 66));
        assert_eq!(Addresses::plan(11).v4, Ipv4Addr::new(203, 0, 113, 194));
    }

    #[test]
    fn plan_subnets_never_overlap() {
        let nets: Vec<u32> = (0..MAX_HOSTS)
            .map(|i| u32::from(Addresses::plan(i).v4) >> 6)
            .collect();
        for (i, a) in nets.iter().enumerate() {
            assert!(!nets[i + 1..].contains(a), "host {i}");
        }
    }

    #[test]
    fn host_names_are_checked() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(validate_names(&names(&["client", "server", "third2"])).is_ok());
        for bad in [
            &["router"][..],
            &["a", "a"],
            &["Upper"],
            &["9lives"],
            &["thirteenchars"],
            &[""],
            &["a-b"],
        ] {
            assert!(
                matches!(
                    validate_names(&names(bad)),
                    Err(Error::InvalidHostName { .. })
                ),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..13).map(|i| format!("h{i}")).collect();
        assert!(matches!(
            validate_names(&many),
            Err(Error::TooManyHosts { count: 13, max: 12 })
        ));
    }
}
