//! Installing, replacing and removing the table; error reporting.

mod common;

use common::Netns;
use nft_rules::{remove_stale, Config, Error, FlowKey, QueueMode, Ruleset};

#[test]
fn install_lists_and_removes_cleanly() {
    let ns = Netns::new();
    ns.sh("nft add table ip other && nft add chain ip other c '{ type filter hook input priority 0; }'");
    let before = ns.ruleset();
    let listing = ns.run(|| {
        let rs = Ruleset::install(&Config::default()).expect("install");
        let listing = common::sh_here("nft list table inet rackd");
        rs.remove().expect("remove");
        listing
    });
    for want in [
        "type filter hook prerouting priority raw; policy accept;",
        "type route hook output priority mangle; policy accept;",
        "set flows4",
        "map xlate_out6",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }
    assert_eq!(
        ns.ruleset(),
        before,
        "removal must restore the ruleset exactly"
    );
}

#[test]
fn drop_removes_the_table() {
    let ns = Netns::new();
    ns.run(|| drop(Ruleset::install(&Config::default()).expect("install")));
    assert_eq!(ns.ruleset(), "", "table left behind after drop");
}

#[test]
fn stale_table_is_replaced_atomically() {
    let ns = Netns::new();
    ns.sh("nft add table inet rackd && nft add chain inet rackd junk && nft add set inet rackd flows4 '{ type ipv4_addr; }'");
    // A crashed daemon: its table stays (forget skips the drop that would remove it).
    ns.run(|| {
        std::mem::forget(Ruleset::install(&Config::default()).expect("install over stale table"))
    });
    let first = ns.sh("nft list table inet rackd");
    assert!(!first.contains("junk"), "stale chain survived:\n{first}");
    let flows: Vec<FlowKey> = vec![FlowKey::new(
        "192.0.2.1:1".parse().unwrap(),
        "192.0.2.2:2".parse().unwrap(),
    )];
    let after = ns.run(move || {
        let rs = Ruleset::install(&Config::default()).expect("second install");
        rs.queue_flows(&flows).expect("queue");
        std::mem::forget(rs);
        common::sh_here("nft list table inet rackd")
    });
    assert_eq!(after.matches("chain pre {").count(), 1, "{after}");
    assert!(after.contains("192.0.2.1 . 1 . 192.0.2.2 . 2"), "{after}");
    ns.run(|| remove_stale("rackd")).expect("remove stale");
    ns.run(|| remove_stale("rackd"))
        .expect("removing an absent table is fine");
    assert_eq!(ns.ruleset(), "");
}

#[test]
fn kernel_errors_name_the_object_and_errno() {
    let ns = Netns::new();
    let native = Config {
        mode: Some(QueueMode::Native),
        ..Config::default()
    };
    match ns.run(move || Ruleset::install(&native)) {
        Ok(rs) => println!("kernel has the native queue expression ({:?})", rs.mode()),
        Err(e) => {
            let text = e.to_string();
            println!("{text}");
            assert!(matches!(e, Error::Rejected { .. }), "{e:?}");
            assert!(
                text.contains("probe rule with the Native queue expression"),
                "{text}"
            );
            assert!(text.contains("errno"), "{text}");
        }
    }
    let err = ns
        .run(|| {
            let rs = Ruleset::install(&Config::default()).expect("install");
            let key = FlowKey::new(
                "192.0.2.1:1".parse().unwrap(),
                "192.0.2.2:2".parse().unwrap(),
            );
            let t = nft_rules::Translation {
                src: key.src,
                dst: key.dst,
            };
            rs.add_translations(&[(nft_rules::Direction::In, key, t)])
                .expect("add");
            let other = nft_rules::Translation {
                src: key.dst,
                dst: key.src,
            };
            rs.add_translations(&[(nft_rules::Direction::In, key, other)])
        })
        .expect_err("conflicting translation");
    let text = err.to_string();
    assert!(
        text.contains("elements of set xlate_in4") && text.contains("errno 17"),
        "{text}"
    );
    let mixed = FlowKey::new(
        "192.0.2.1:1".parse().unwrap(),
        "[2001:db8::1]:2".parse().unwrap(),
    );
    let err = ns
        .run(move || Ruleset::install(&Config::default()).and_then(|rs| rs.queue_flows(&[mixed])));
    assert!(matches!(err, Err(Error::MixedFamilies { .. })), "{err:?}");
}

#[test]
fn invalid_config_is_refused_before_touching_the_kernel() {
    let ns = Netns::new();
    let mut cfg = Config::default();
    cfg.queue.count = 0;
    let err = ns
        .run(move || Ruleset::install(&cfg))
        .expect_err("zero queues");
    assert!(err.to_string().contains("queues 0..0+0"), "{err}");
    assert_eq!(ns.ruleset(), "");
}
