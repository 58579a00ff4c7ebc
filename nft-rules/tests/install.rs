//! Installing, replacing and removing the table; probing; error reporting.

mod common;

use common::Netns;
use nft_rules::{Config, Error, FlowKey, QueueMode, Ruleset};

#[test]
fn install_lists_and_removes_cleanly() {
    let ns = Netns::new();
    let before = ns.ruleset();
    let listing = ns.run(|| {
        let rs = Ruleset::install(&Config::default()).expect("install");
        let listing = common::sh_here("nft list ruleset");
        rs.remove().expect("remove");
        listing
    });
    println!("{listing}");
    assert!(listing.contains("table inet rackd"), "{listing}");
    assert_eq!(ns.ruleset(), before, "removal must restore the ruleset exactly");
}
