//! The topology itself: addresses, routes, forwarding, per-host programs and sysctls.

use std::time::Duration;

use netns_tests::{Family, Topology};

/// One ping from `from` to `to`'s address of `family`; Err with ping's output if unanswered.
fn ping(topo: &Topology, from: &str, to: &str, family: Family) -> Result<(), String> {
    let target = topo.host(to).ip(family).to_string();
    let out = topo
        .host(from)
        .command("busybox")
        .args(["ping", "-c1", "-W1", &target])
        .run(Duration::from_secs(5))
        .expect("ping runs");
    out.check().map(drop).map_err(|e| e.to_string())
}

#[test]
fn every_host_reaches_every_other_over_both_families() {
    let topo = Topology::builder().host("third").build().expect("topology");
    for (from, to) in [
        ("client", "server"),
        ("server", "third"),
        ("third", "client"),
    ] {
        for family in [Family::V4, Family::V6] {
            let answered = ping(&topo, from, to, family);
            assert!(
                answered.is_ok(),
                "{from} -> {to} over {family:?}: {answered:?}"
            );
        }
    }
}

#[test]
fn hosts_have_the_documented_addresses_and_names() {
    let topo = Topology::builder().host("third").build().expect("topology");
    let client = topo.host("client");
    assert_eq!(client.v4().to_string(), "192.0.2.2");
    assert_eq!(client.v6().to_string(), "2001:db8:1::2");
    assert_eq!(topo.host("server").v4().to_string(), "198.51.100.2");
    assert_eq!(topo.host("third").v6().to_string(), "2001:db8:3::2");
    let shown = client
        .run("ip", ["-o", "addr", "show", "dev", "eth0"])
        .expect("ip addr")
        .stdout;
    assert!(
        shown.contains("192.0.2.2/26") && shown.contains("2001:db8:1::2/64"),
        "{shown}"
    );
    assert!(!shown.contains("tentative"), "DAD must be off: {shown}");
    for ns in topo.namespaces() {
        assert!(ns.starts_with(topo.id()) && ns.len() <= 64, "{ns}");
    }
    assert!(topo.get("nobody").is_err());
}

#[test]
fn sysctls_are_per_host() {
    let topo = Topology::new().expect("topology");
    let (client, server) = (topo.host("client"), topo.host("server"));
    client.sysctl("net.ipv4.tcp_retries2", "3").expect("set");
    assert_eq!(
        client.sysctl_get("net.ipv4.tcp_retries2").expect("get"),
        "3"
    );
    assert_eq!(
        server.sysctl_get("net.ipv4.tcp_retries2").expect("get"),
        "15"
    );
    assert_eq!(
        topo.router()
            .sysctl_get("net.ipv4.ip_forward")
            .expect("get"),
        "1"
    );
}

#[test]
fn programs_run_in_their_host_and_as_the_requested_user() {
    let topo = Topology::new().expect("topology");
    let server = topo.host("server");
    let out = server
        .run("ip", ["-o", "-4", "addr", "show", "dev", "eth0"])
        .expect("ip");
    assert!(out.stdout.contains("198.51.100.2"), "{}", out.stdout);
    let ids = server
        .command("id")
        .args(["-u"])
        .user(65534, 65534)
        .run(Duration::from_secs(5))
        .expect("id");
    assert_eq!(ids.stdout.trim(), "65534");
    let failing = server
        .command("false")
        .run(Duration::from_secs(5))
        .expect("runs");
    assert!(!failing.success());
    assert!(failing.check().is_err());
}

#[test]
fn spawned_process_can_be_waited_for_with_a_timeout_and_killed() {
    let topo = Topology::new().expect("topology");
    let sleeper = topo.host("client").spawn("sleep", ["30"]).expect("spawn");
    let err = sleeper
        .wait(Duration::from_millis(100))
        .expect_err("still running");
    assert!(matches!(err, netns_tests::Error::Timeout { .. }), "{err}");
    let pid = sleeper.pid();
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let out = sleeper.kill().expect("kill");
    assert!(!out.success());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} still there"
    );
}

#[test]
fn a_setuid_program_started_as_a_user_runs_with_its_owners_euid() {
    use std::os::unix::fs::PermissionsExt;
    let topo = Topology::new().expect("topology");
    // A setuid-root copy of `id`, as later tests will use setuid programs.
    let copy = std::env::temp_dir().join(format!("{}-id", topo.id()));
    std::fs::copy("/usr/bin/id", &copy).expect("copy id");
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
    let out = topo
        .host("client")
        .command(&copy)
        .user(65534, 65534)
        .run(Duration::from_secs(5));
    let _ = std::fs::remove_file(&copy);
    let text = out.expect("id runs").check().expect("id succeeds").stdout;
    assert!(
        text.starts_with("uid=65534") && text.contains("euid=0"),
        "{text}"
    );
}
