//! The per-flow chains hold a translate or queue rule exactly while its map or set has
//! elements, in canonical order, changed in the same batch as the elements.

mod common;

use std::net::SocketAddr;

use common::{flow_chains_here, sh_here, Netns};
use nft_rules::{Config, Direction, Error, FlowKey, Ruleset, Translation};

fn key(src: &str, dst: &str) -> FlowKey {
    FlowKey::new(src.parse().unwrap(), dst.parse().unwrap())
}

fn rules(pre: &[&str], out: &[&str]) -> [Vec<String>; 2] {
    [pre, out].map(|c| c.iter().map(|s| s.to_string()).collect())
}

const T_IN4: &str = "translate spliced flows (xlate_in4)";
const T_IN6: &str = "translate spliced flows (xlate_in6)";
const T_OUT4: &str = "translate spliced flows (xlate_out4)";
const Q4: &str = "queue flows in @flows4";
const Q6: &str = "queue flows in @flows6";

/// Elements of a set as `nft` lists them (one line per set, order as the kernel keeps it).
fn elements(set: &str) -> String {
    let kind = if set.starts_with("xlate") {
        "map"
    } else {
        "set"
    };
    let listing = sh_here(&format!("nft list {kind} inet rackd {set}"));
    listing
        .lines()
        .map(str::trim)
        .filter(|l| l.contains(" . ") && !l.starts_with("type "))
        .collect::<Vec<_>>()
        .join("\n")
}

fn unchanged_by(what: &str, rs: &Ruleset, op: impl FnOnce(&Ruleset) -> nft_rules::Result<()>) {
    let sets = [
        "flows4",
        "flows6",
        "xlate_in4",
        "xlate_out4",
        "xlate_in6",
        "xlate_out6",
    ];
    let before: Vec<String> = sets.iter().map(|s| elements(s)).collect();
    let chains = flow_chains_here();
    let err = op(rs).expect_err(what);
    assert!(matches!(err, Error::Rejected { .. }), "{what}: {err:?}");
    let after: Vec<String> = sets.iter().map(|s| elements(s)).collect();
    assert_eq!(after, before, "{what}: elements changed by a failed batch");
    assert_eq!(
        flow_chains_here(),
        chains,
        "{what}: rules changed by a failed batch"
    );
}

#[test]
fn rules_follow_emptiness_of_mixed_v4_v6_sets() {
    let ns = Netns::new();
    ns.run(|| {
        let rs = Ruleset::install(&Config::default()).expect("install");
        assert_eq!(
            flow_chains_here(),
            rules(&[], &[]),
            "empty table, empty chains"
        );

        let q6 = key("[2001:db8::1]:40000", "[2001:db8::2]:443");
        rs.queue_flows(&[q6]).expect("first v6 queue entry");
        assert_eq!(flow_chains_here(), rules(&[Q6], &[Q6]));

        let out4 = key("192.0.2.1:40000", "198.51.100.9:443");
        let to4 = Translation {
            src: "192.0.2.10:50000".parse().unwrap(),
            dst: "203.0.113.2:443".parse().unwrap(),
        };
        rs.add_translations(&[(Direction::Out, out4, to4)])
            .expect("first v4 outgoing translation");
        assert_eq!(flow_chains_here(), rules(&[Q6], &[T_OUT4, Q6]));

        let in6 = key("[2001:db8::2]:443", "[2001:db8::1]:40000");
        let to6 = Translation {
            src: "[2001:db8:51::9]:443".parse().unwrap(),
            dst: "[2001:db8::1]:40000".parse().unwrap(),
        };
        let in4 = key("203.0.113.2:443", "192.0.2.10:50000");
        let back4 = Translation {
            src: "198.51.100.9:443".parse().unwrap(),
            dst: "192.0.2.1:40000".parse().unwrap(),
        };
        // IPv6 first in the call: the rules still come in canonical order.
        rs.add_translations(&[(Direction::In, in6, to6), (Direction::In, in4, back4)])
            .expect("incoming translations of both families");
        assert_eq!(
            flow_chains_here(),
            rules(&[T_IN4, T_IN6, Q6], &[T_OUT4, Q6])
        );

        // Both v4 directions of a flow, plus a v6 key already present (accepted as before).
        let q4 = key("192.0.2.1:40001", "192.0.2.2:22");
        rs.queue_flows(&[q6, q4, q4.reversed()])
            .expect("queue v4, re-queue v6");
        let full = rules(&[T_IN4, T_IN6, Q4, Q6], &[T_OUT4, Q4, Q6]);
        assert_eq!(flow_chains_here(), full);
        assert_eq!(
            elements("flows6").matches(" . 443").count(),
            1,
            "re-queued key is one element"
        );

        // A batch with an absent key fails as a whole: nothing removed, rules intact, even
        // though the batch would otherwise have emptied flows4 and flows6.
        let absent = key("192.0.2.99:1", "192.0.2.2:22");
        unchanged_by("absent v4 key", &rs, |rs| {
            rs.unqueue_flows(&[q4, q4.reversed(), q6, absent])
        });
        let absent6 = key("[2001:db8::99]:1", "[2001:db8::2]:443");
        unchanged_by("absent v6 translation", &rs, |rs| {
            rs.remove_translations(&[(Direction::In, in4), (Direction::In, absent6)])
        });
        // A conflicting translation fails as a whole too.
        unchanged_by("conflicting translation", &rs, |rs| {
            let other = Translation {
                src: to4.dst,
                dst: to4.src,
            };
            rs.add_translations(&[(Direction::In, in6, to6), (Direction::Out, out4, other)])
        });
        assert_eq!(flow_chains_here(), full);

        // Removing one of two keys keeps the rule; removing the last removes it.
        rs.unqueue_flows(&[q4]).expect("unqueue one v4 direction");
        assert_eq!(flow_chains_here(), full);
        rs.unqueue_flows(&[q4.reversed(), q6])
            .expect("unqueue the rest");
        assert_eq!(flow_chains_here(), rules(&[T_IN4, T_IN6], &[T_OUT4]));
        rs.remove_translations(&[(Direction::In, in4), (Direction::Out, out4)])
            .expect("remove v4 translations");
        assert_eq!(flow_chains_here(), rules(&[T_IN6], &[]));
        rs.remove_translations(&[(Direction::In, in6)])
            .expect("remove last translation");
        assert_eq!(flow_chains_here(), rules(&[], &[]), "all empty again");

        // Base chains keep their rules throughout: mark, jump, SYN per family.
        let pre = sh_here("nft list chain inet rackd pre");
        assert_eq!(pre.matches("comment \"rackd: ").count(), 4, "{pre}");
        assert!(pre.contains("jump pre_flows"), "{pre}");
        rs.remove().expect("remove");
    });
    assert_eq!(ns.ruleset(), "");
}

#[test]
fn thousands_of_flows_need_one_rule_per_chain() {
    let ns = Netns::new();
    ns.run(|| {
        let rs = Ruleset::install(&Config::default()).expect("install");
        let flows: Vec<FlowKey> = (0..2000u16)
            .map(|i| {
                let src = SocketAddr::new([198, 51, 100, (i % 200) as u8].into(), 1000 + i);
                FlowKey::new(src, "203.0.113.1:443".parse().unwrap())
            })
            .collect();
        rs.queue_flows(&flows).expect("queue 2000");
        assert_eq!(flow_chains_here(), rules(&[Q4], &[Q4]));
        let (half, rest) = flows.split_at(1000);
        rs.unqueue_flows(half).expect("unqueue half");
        assert_eq!(flow_chains_here(), rules(&[Q4], &[Q4]));
        rs.unqueue_flows(rest).expect("unqueue the rest");
        assert_eq!(flow_chains_here(), rules(&[], &[]));
        // Adding the same key twice in one call is one element.
        rs.queue_flows(&[flows[0], flows[0]])
            .expect("duplicate in one call");
        rs.unqueue_flows(&[flows[0]])
            .expect("one removal empties it");
        assert_eq!(flow_chains_here(), rules(&[], &[]));
        let err = rs.unqueue_flows(&[flows[0]]).expect_err("absent");
        assert!(
            err.to_string().contains("elements of set flows4")
                && err.to_string().contains("errno 2"),
            "{err}"
        );
    });
}
