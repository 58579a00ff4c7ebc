//! A stateful host firewall, the common ruleset rewritten packets must get through.

use crate::{cmd, Host, Result};

impl Host {
    /// Installs a stateful input firewall in its own table `inet rk_firewall`: loopback,
    /// established/related and IPv6 neighbour discovery accepted, invalid dropped, new TCP
    /// connections accepted only to `open_tcp_ports`, everything else dropped. Output is not
    /// filtered. Replaces an earlier profile.
    pub fn firewall_stateful(&self, open_tcp_ports: &[u16]) -> Result<()> {
        let open = if open_tcp_ports.is_empty() {
            String::new()
        } else {
            let ports: Vec<String> = open_tcp_ports.iter().map(u16::to_string).collect();
            format!("tcp dport {{ {} }} ct state new accept\n", ports.join(", "))
        };
        let script = format!(
            "table inet rk_firewall {{}}\n\
             delete table inet rk_firewall\n\
             table inet rk_firewall {{\n\
             chain input {{\n\
             type filter hook input priority filter; policy drop;\n\
             iif lo accept\n\
             ct state established,related accept\n\
             icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert }} accept\n\
             ct state invalid drop\n\
             {open}\
             }}\n}}\n"
        );
        cmd::nft_script(self.netns(), &script)
    }

    /// Removes the firewall installed by [`Host::firewall_stateful`], if any.
    pub fn firewall_remove(&self) -> Result<()> {
        cmd::nft_script(
            self.netns(),
            "table inet rk_firewall {}\ndelete table inet rk_firewall\n",
        )
    }
}
