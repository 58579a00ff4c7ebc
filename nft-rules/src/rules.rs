//! The ruleset as data: which sets exist and which rules, in which order, in which chain.
//! Nothing here talks to the kernel, so the layout is unit-tested.

use std::ffi::CStr;

use crate::config::{encode, Config, ConfigError, Fanout, Point, Selector};
use crate::flow::{Direction, Family};
use crate::nl::consts::*;
use crate::nl::expr::{self, Base, Csum, Expr};
use crate::nl::set::{Elem, SetSpec};
use crate::QueueMode;

/// The table's chains: two base chains and, for each, the regular chain holding the
/// per-flow rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChainId {
    /// `hook prerouting priority -300`: before conntrack (-200) and before routing.
    Pre,
    /// `hook output priority -150`, type route: after conntrack (-200), re-routed after.
    Out,
    /// Jumped to from `pre`: translation and queueing of arriving packets of known flows.
    PreFlows,
    /// Jumped to from `out`: translation and queueing of leaving packets of known flows.
    OutFlows,
}

impl ChainId {
    /// Regular chains first: a base chain's jump must find its target already created.
    pub(crate) const ALL: [ChainId; 4] = [
        ChainId::PreFlows,
        ChainId::OutFlows,
        ChainId::Pre,
        ChainId::Out,
    ];
    pub(crate) const BASE: [ChainId; 2] = [ChainId::Pre, ChainId::Out];

    pub(crate) fn name(self) -> &'static CStr {
        match self {
            ChainId::Pre => c"pre",
            ChainId::Out => c"out",
            ChainId::PreFlows => c"pre_flows",
            ChainId::OutFlows => c"out_flows",
        }
    }

    pub(crate) fn direction(self) -> Direction {
        match self {
            ChainId::Pre | ChainId::PreFlows => Direction::In,
            ChainId::Out | ChainId::OutFlows => Direction::Out,
        }
    }

    /// The regular chain that holds this chain's per-flow rules.
    pub(crate) fn flows(self) -> ChainId {
        match self.direction() {
            Direction::In => ChainId::PreFlows,
            Direction::Out => ChainId::OutFlows,
        }
    }
}

/// Per-family facts: header offsets and the names of the family's sets.
#[derive(Debug)]
pub(crate) struct FamilyLayout {
    family: Family,
    nfproto: u8,
    /// Address length in bytes.
    addr_len: u32,
    saddr_offset: u32,
    daddr_offset: u32,
    /// The IP header checksum, if the family has one.
    ip_csum: Csum,
    pub(crate) flows: SetSpec,
    /// Flows queued without bypass: their packets are dropped while no reader is bound.
    pub(crate) strict: SetSpec,
    pub(crate) xlate_in: SetSpec,
    pub(crate) xlate_out: SetSpec,
    local_addrs: &'static CStr,
    remote_addrs: &'static CStr,
    addr_type: u32,
}

const V4_KEY: &[u32] = &[
    TYPE_IPADDR,
    TYPE_INET_SERVICE,
    TYPE_IPADDR,
    TYPE_INET_SERVICE,
];
const V4_DATA: &[u32] = &[
    TYPE_IPADDR,
    TYPE_IPADDR,
    TYPE_INET_SERVICE,
    TYPE_INET_SERVICE,
];
const V6_KEY: &[u32] = &[
    TYPE_IP6ADDR,
    TYPE_INET_SERVICE,
    TYPE_IP6ADDR,
    TYPE_INET_SERVICE,
];
const V6_DATA: &[u32] = &[
    TYPE_IP6ADDR,
    TYPE_IP6ADDR,
    TYPE_INET_SERVICE,
    TYPE_INET_SERVICE,
];

const fn tuple_set(
    name: &'static CStr,
    key: &'static [u32],
    addr: u8,
    data: Option<&'static [u32]>,
) -> SetSpec {
    const V4_FIELDS: &[u8] = &[4, 2, 4, 2];
    const V6_FIELDS: &[u8] = &[16, 2, 16, 2];
    let key_fields = if addr == 4 { V4_FIELDS } else { V6_FIELDS };
    // Value: two addresses and two ports, each port in its own register.
    let data_len = 2 * addr as u32 + 8;
    SetSpec {
        name,
        key_types: key,
        key_fields,
        data: match data {
            Some(types) => Some((types, data_len)),
            None => None,
        },
        interval: false,
    }
}

pub(crate) const V4: FamilyLayout = FamilyLayout {
    family: Family::V4,
    nfproto: NFPROTO_IPV4,
    addr_len: 4,
    saddr_offset: 12,
    daddr_offset: 16,
    ip_csum: Csum::Inet { offset: 10 },
    flows: tuple_set(c"flows4", V4_KEY, 4, None),
    strict: tuple_set(c"strict4", V4_KEY, 4, None),
    xlate_in: tuple_set(c"xlate_in4", V4_KEY, 4, Some(V4_DATA)),
    xlate_out: tuple_set(c"xlate_out4", V4_KEY, 4, Some(V4_DATA)),
    local_addrs: c"local4",
    remote_addrs: c"remote4",
    addr_type: TYPE_IPADDR,
};

pub(crate) const V6: FamilyLayout = FamilyLayout {
    family: Family::V6,
    nfproto: NFPROTO_IPV6,
    addr_len: 16,
    saddr_offset: 8,
    daddr_offset: 24,
    ip_csum: Csum::None,
    flows: tuple_set(c"flows6", V6_KEY, 16, None),
    strict: tuple_set(c"strict6", V6_KEY, 16, None),
    xlate_in: tuple_set(c"xlate_in6", V6_KEY, 16, Some(V6_DATA)),
    xlate_out: tuple_set(c"xlate_out6", V6_KEY, 16, Some(V6_DATA)),
    local_addrs: c"local6",
    remote_addrs: c"remote6",
    addr_type: TYPE_IP6ADDR,
};

impl FamilyLayout {
    pub(crate) fn of(family: Family) -> &'static FamilyLayout {
        match family {
            Family::V4 => &V4,
            Family::V6 => &V6,
        }
    }

    pub(crate) fn xlate(&self, direction: Direction) -> &SetSpec {
        match direction {
            Direction::In => &self.xlate_in,
            Direction::Out => &self.xlate_out,
        }
    }

    /// Registers used per address.
    fn addr_regs(&self) -> u32 {
        self.addr_len / 4
    }

    /// `meta nfproto <family> meta l4proto tcp`.
    fn match_tcp(&self) -> Vec<Expr> {
        vec![
            expr::meta_load(NFT_META_NFPROTO, NFT_REG32_00),
            expr::cmp(NFT_CMP_EQ, NFT_REG32_00, &[self.nfproto]),
            expr::meta_load(NFT_META_L4PROTO, NFT_REG32_00),
            expr::cmp(NFT_CMP_EQ, NFT_REG32_00, &[IPPROTO_TCP]),
        ]
    }

    /// Loads `saddr . sport . daddr . dport` from the first register on.
    fn load_tuple(&self) -> Vec<Expr> {
        let (r, a) = (NFT_REG32_00, self.addr_regs());
        vec![
            expr::payload_load(Base::Network, self.saddr_offset, self.addr_len, r),
            expr::payload_load(Base::Transport, 0, 2, r + a),
            expr::payload_load(Base::Network, self.daddr_offset, self.addr_len, r + a + 1),
            expr::payload_load(Base::Transport, 2, 2, r + 2 * a + 1),
        ]
    }

    /// Looks the tuple up in the translation map — the value lands in the same registers,
    /// which the kernel allows since the key is read before the value is written — and then
    /// writes the new addresses and ports with checksum updates.
    fn translate(&self, map: &'static CStr) -> Vec<Expr> {
        let (r, a) = (NFT_REG32_00, self.addr_regs());
        let tcp_csum = Csum::Inet { offset: 16 };
        let mut e = self.match_tcp();
        e.extend(self.load_tuple());
        e.extend([
            expr::lookup(map, r, Some(r), false),
            expr::counter(),
            expr::payload_write(
                Base::Network,
                self.saddr_offset,
                self.addr_len,
                r,
                self.ip_csum,
                true,
            ),
            expr::payload_write(
                Base::Network,
                self.daddr_offset,
                self.addr_len,
                r + a,
                self.ip_csum,
                true,
            ),
            expr::payload_write(Base::Transport, 0, 2, r + 2 * a, tcp_csum, false),
            expr::payload_write(Base::Transport, 2, 2, r + 2 * a + 1, tcp_csum, false),
        ]);
        e
    }

    fn queue_flows(&self, set: &'static CStr, verdict: &Expr) -> Vec<Expr> {
        let mut e = self.match_tcp();
        e.extend(self.load_tuple());
        e.extend([
            expr::lookup(set, NFT_REG32_00, None, false),
            expr::counter(),
            verdict.clone(),
        ]);
        e
    }

    /// SYN (with or without ACK) of an eligible connection → queue. `Local` is the
    /// destination of arriving packets and the source of leaving ones.
    fn syn(&self, chain: ChainId, elig: &Eligible, verdict: &Expr) -> Vec<Expr> {
        let r = NFT_REG32_00;
        let (local_port, remote_port, local_addr, remote_addr) = match chain.direction() {
            Direction::In => (2, 0, self.daddr_offset, self.saddr_offset),
            Direction::Out => (0, 2, self.saddr_offset, self.daddr_offset),
        };
        let mut e = self.match_tcp();
        e.extend([
            expr::payload_load(Base::Transport, 13, 1, r),
            expr::and_mask(r, &[TCP_FLAG_SYN]),
            expr::cmp(NFT_CMP_NEQ, r, &[0]),
        ]);
        let mut check = |base, offset, len, set: Option<&'static CStr>| {
            if let Some(set) = set {
                e.push(expr::payload_load(base, offset, len, r));
                e.push(expr::lookup(set, r, None, false));
            }
        };
        check(
            Base::Transport,
            local_port,
            2,
            elig.local_ports.then_some(c"local_ports"),
        );
        check(
            Base::Transport,
            remote_port,
            2,
            elig.remote_ports.then_some(c"remote_ports"),
        );
        let (local, remote) = elig.addrs(self.family);
        check(
            Base::Network,
            local_addr,
            self.addr_len,
            local.then_some(self.local_addrs),
        );
        check(
            Base::Network,
            remote_addr,
            self.addr_len,
            remote.then_some(self.remote_addrs),
        );
        e.extend([expr::counter(), verdict.clone()]);
        e
    }
}

const TCP_FLAG_SYN: u8 = 0x02;

/// One rule to add, with the comment `nft list` shows and error messages name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSpec {
    pub(crate) chain: ChainId,
    pub(crate) comment: String,
    pub(crate) exprs: Vec<Expr>,
}

/// A set to create together with its initial elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetInit {
    pub(crate) spec: SetSpec,
    pub(crate) elems: Vec<Elem>,
}

/// Which eligibility dimensions need a set lookup, and whether a family has anything
/// eligible at all.
#[derive(Debug, Default)]
struct Eligible {
    local_ports: bool,
    remote_ports: bool,
    local_v4: bool,
    remote_v4: bool,
    local_v6: bool,
    remote_v6: bool,
    any_v4: bool,
    any_v6: bool,
}

impl Eligible {
    fn addrs(&self, family: Family) -> (bool, bool) {
        match family {
            Family::V4 => (self.local_v4, self.remote_v4),
            Family::V6 => (self.local_v6, self.remote_v6),
        }
    }

    fn any(&self, family: Family) -> bool {
        match family {
            Family::V4 => self.any_v4,
            Family::V6 => self.any_v6,
        }
    }
}

/// Interval-set elements for inclusive ranges: a start key, and an end marker one past the
/// end unless the range runs to the top of the value space.
fn interval_elems<T: Point>(ranges: &[(u128, u128)]) -> Vec<Elem> {
    let mut out = Vec::with_capacity(ranges.len() * 2);
    for &(lo, hi) in ranges {
        out.push(Elem::key(encode::<T>(lo)));
        if hi < T::MAX {
            out.push(Elem {
                key: encode::<T>(hi + 1),
                data: None,
                interval_end: true,
            });
        }
    }
    out
}

/// Adds the interval set for one selector when it restricts anything; returns whether any
/// value is eligible and whether a lookup is needed.
fn selector_set<T: Point>(
    sets: &mut Vec<SetInit>,
    selector: &Selector<T>,
    what: &'static str,
    name: &'static CStr,
    key_type: &'static [u32],
) -> Result<(bool, bool), ConfigError> {
    const FIELD: [&[u8]; 3] = [&[2], &[4], &[16]];
    let Some(ranges) = selector.effective(what)? else {
        return Ok((true, false));
    };
    if ranges.is_empty() {
        return Ok((false, false));
    }
    let key_fields = match T::LEN {
        2 => FIELD[0],
        4 => FIELD[1],
        _ => FIELD[2],
    };
    let spec = SetSpec {
        name,
        key_types: key_type,
        key_fields,
        data: None,
        interval: true,
    };
    sets.push(SetInit {
        spec,
        elems: interval_elems::<T>(&ranges),
    });
    Ok((true, true))
}

/// All sets of the table.
pub(crate) fn sets(cfg: &Config) -> Result<(Vec<SetInit>, EligibleSummary), ConfigError> {
    let mut sets = Vec::new();
    for layout in [&V4, &V6] {
        for spec in [
            &layout.flows,
            &layout.strict,
            &layout.xlate_in,
            &layout.xlate_out,
        ] {
            sets.push(SetInit {
                spec: spec.clone(),
                elems: Vec::new(),
            });
        }
    }
    let el = &cfg.eligibility;
    const PORT: &[u32] = &[TYPE_INET_SERVICE];
    const A4: &[u32] = &[V4.addr_type];
    const A6: &[u32] = &[V6.addr_type];
    let (lp_any, lp) = selector_set(
        &mut sets,
        &el.local_ports,
        "local ports",
        c"local_ports",
        PORT,
    )?;
    let (rp_any, rp) = selector_set(
        &mut sets,
        &el.remote_ports,
        "remote ports",
        c"remote_ports",
        PORT,
    )?;
    let (l4_any, l4) = selector_set(
        &mut sets,
        &el.local_v4,
        "local IPv4 addresses",
        V4.local_addrs,
        A4,
    )?;
    let (r4_any, r4) = selector_set(
        &mut sets,
        &el.remote_v4,
        "remote IPv4 addresses",
        V4.remote_addrs,
        A4,
    )?;
    let (l6_any, l6) = selector_set(
        &mut sets,
        &el.local_v6,
        "local IPv6 addresses",
        V6.local_addrs,
        A6,
    )?;
    let (r6_any, r6) = selector_set(
        &mut sets,
        &el.remote_v6,
        "remote IPv6 addresses",
        V6.remote_addrs,
        A6,
    )?;
    let ports = lp_any && rp_any;
    let summary = EligibleSummary(Eligible {
        local_ports: lp,
        remote_ports: rp,
        local_v4: l4,
        remote_v4: r4,
        local_v6: l6,
        remote_v6: r6,
        any_v4: el.ipv4 && ports && l4_any && r4_any,
        any_v6: el.ipv6 && ports && l6_any && r6_any,
    });
    Ok((sets, summary))
}

/// What [`sets`] decided about eligibility, needed by [`rules`].
#[derive(Debug)]
pub(crate) struct EligibleSummary(Eligible);

/// The queue verdicts for the configured queues and mechanism: `open` lets packets pass while
/// no reader is bound (if the configuration says so), `strict` never does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QueueVerdicts {
    pub(crate) open: Expr,
    pub(crate) strict: Expr,
}

pub(crate) fn queue_verdicts(cfg: &Config, mode: QueueMode) -> QueueVerdicts {
    let q = cfg.queue;
    let verdict = |bypass: bool| {
        let mut flags = 0;
        if bypass {
            flags |= QUEUE_FLAG_BYPASS;
        }
        if q.count > 1 && q.fanout == Fanout::Cpu {
            flags |= QUEUE_FLAG_CPU_FANOUT;
        }
        match mode {
            QueueMode::Native => expr::queue_native(q.num, q.count, flags),
            QueueMode::Compat => expr::queue_compat(q.num, q.count, flags),
        }
    };
    QueueVerdicts {
        open: verdict(q.bypass),
        strict: verdict(false),
    }
}

/// The rules of both base chains, in order: the mark, the jump to the per-flow rules, SYN
/// interception. The per-flow chains start empty ([`flow_rules`] fills them).
pub(crate) fn rules(cfg: &Config, elig: &EligibleSummary, mode: QueueMode) -> Vec<RuleSpec> {
    let verdict = queue_verdicts(cfg, mode).open;
    let mark = cfg.mark;
    let mut out = Vec::new();
    for chain in ChainId::BASE {
        let mut push = |comment: String, exprs| {
            out.push(RuleSpec {
                chain,
                comment,
                exprs,
            })
        };
        push(
            "daemon's own packets are never queued".into(),
            vec![
                expr::meta_load(NFT_META_MARK, NFT_REG32_00),
                expr::and_mask(NFT_REG32_00, &mark.mask.to_ne_bytes()),
                expr::cmp(NFT_CMP_EQ, NFT_REG32_00, &mark.value.to_ne_bytes()),
                expr::verdict(NF_ACCEPT),
            ],
        );
        push(
            "translated and queued flows".into(),
            vec![expr::jump(chain.flows().name())],
        );
        for l in [&V4, &V6] {
            if elig.0.any(l.family) {
                push(
                    format!("queue SYN of eligible {} connections", l.family.name()),
                    l.syn(chain, &elig.0, &verdict),
                );
            }
        }
    }
    out
}

/// The rules of the per-flow chain of `base` for the sets and maps that are not empty, in
/// canonical order: translation before queueing (a queued packet is seen translated), IPv4
/// before IPv6. A lookup in an empty set could never match, yet every TCP packet of the
/// host would pay for it.
pub(crate) fn flow_rules(
    base: ChainId,
    verdicts: &QueueVerdicts,
    nonempty: impl Fn(&'static CStr) -> bool,
) -> Vec<RuleSpec> {
    let chain = base.flows();
    let d = base.direction();
    let mut out = Vec::new();
    for l in [&V4, &V6] {
        let map = l.xlate(d).name;
        if nonempty(map) {
            out.push(RuleSpec {
                chain,
                comment: format!("translate spliced flows ({})", map.to_string_lossy()),
                exprs: l.translate(map),
            });
        }
    }
    let queued = [&V4, &V6].map(|l| (l, l.flows.name, &verdicts.open));
    let strict = [&V4, &V6].map(|l| (l, l.strict.name, &verdicts.strict));
    for (l, set, verdict) in queued.into_iter().chain(strict) {
        if nonempty(set) {
            out.push(RuleSpec {
                chain,
                comment: format!("queue flows in @{}", set.to_string_lossy()),
                exprs: l.queue_flows(set, verdict),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Eligibility;

    fn names(rules: &[RuleSpec]) -> Vec<String> {
        rules
            .iter()
            .map(|r| format!("{:?}: {}", r.chain, r.comment))
            .collect()
    }

    #[test]
    fn base_chains_hold_mark_jump_and_syn() {
        let cfg = Config::default();
        let (_, el) = sets(&cfg).unwrap();
        let r = rules(&cfg, &el, QueueMode::Compat);
        assert_eq!(
            names(&r),
            [
                "Pre: daemon's own packets are never queued",
                "Pre: translated and queued flows",
                "Pre: queue SYN of eligible IPv4 connections",
                "Pre: queue SYN of eligible IPv6 connections",
                "Out: daemon's own packets are never queued",
                "Out: translated and queued flows",
                "Out: queue SYN of eligible IPv4 connections",
                "Out: queue SYN of eligible IPv6 connections",
            ]
        );
    }

    #[test]
    fn flow_rules_only_for_nonempty_sets_in_canonical_order() {
        let v = queue_verdicts(&Config::default(), QueueMode::Native);
        assert!(flow_rules(ChainId::Pre, &v, |_| true).len() == 6);
        let all = names(&flow_rules(ChainId::Out, &v, |_| true));
        assert_eq!(
            all,
            [
                "OutFlows: translate spliced flows (xlate_out4)",
                "OutFlows: translate spliced flows (xlate_out6)",
                "OutFlows: queue flows in @flows4",
                "OutFlows: queue flows in @flows6",
                "OutFlows: queue flows in @strict4",
                "OutFlows: queue flows in @strict6",
            ]
        );
        assert!(flow_rules(ChainId::Pre, &v, |_| false).is_empty());
        let some = flow_rules(ChainId::Pre, &v, |s| s == c"flows6" || s == c"xlate_out4");
        assert_eq!(names(&some), ["PreFlows: queue flows in @flows6"]);
    }

    #[test]
    fn disabled_or_empty_family_has_no_syn_rule() {
        let cfg = Config {
            eligibility: Eligibility {
                ipv6: false,
                remote_v4: Selector::except([cidr_all()]),
                ..Eligibility::default()
            },
            ..Config::default()
        };
        let (_, el) = sets(&cfg).unwrap();
        let r = rules(&cfg, &el, QueueMode::Compat);
        assert!(
            !names(&r).iter().any(|n| n.contains("SYN")),
            "{:?}",
            names(&r)
        );
    }

    fn cidr_all() -> std::ops::RangeInclusive<std::net::Ipv4Addr> {
        crate::config::cidr4(std::net::Ipv4Addr::UNSPECIFIED, 0).unwrap()
    }

    #[test]
    fn only_restricting_selectors_create_sets() {
        let mut cfg = Config::default();
        cfg.eligibility.local_ports = Selector::except([22, 0].map(|p| p..=p));
        let (s, el) = sets(&cfg).unwrap();
        let extra: Vec<_> = s.iter().skip(8).collect();
        assert_eq!(extra.len(), 1);
        assert_eq!(extra[0].spec.name, c"local_ports");
        // 1..=21, 23..=65535 (open-ended: no end marker)
        let keys: Vec<_> = extra[0]
            .elems
            .iter()
            .map(|e| (e.key.clone(), e.interval_end))
            .collect();
        assert_eq!(
            keys,
            vec![
                (vec![0, 1], false),
                (vec![0, 22], true),
                (vec![0, 23], false)
            ]
        );
        let r = rules(&cfg, &el, QueueMode::Native);
        let syn = r
            .iter()
            .find(|r| r.chain == ChainId::Pre && r.comment.contains("SYN"))
            .unwrap();
        assert_eq!(
            syn.exprs.iter().filter(|e| e.name() == c"lookup").count(),
            1
        );
    }
}
