//! The `rk-stream` program on its own: usage errors, connection failures, a local transfer.

use std::process::Command;
use std::time::Duration;

use netns_tests::stream::{digest_of, StreamReport};
use netns_tests::{stream_both_ways, workspace_bin, Error, StreamOptions, Topology};

const RK_STREAM: &str = env!("CARGO_BIN_EXE_rk-stream");

#[test]
fn bad_usage_exits_2_with_a_message() {
    for args in [
        &[][..],
        &["sideways", "127.0.0.1:1"],
        &["client", "nowhere"],
        &["client", "127.0.0.1:1", "--bytes"],
    ] {
        let out = Command::new(RK_STREAM)
            .args(args)
            .output()
            .expect("run rk-stream");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("rk-stream: "),
            "{args:?}"
        );
    }
}

#[test]
fn a_refused_connection_is_reported_as_json() {
    let topo = Topology::new().expect("topology");
    let target = format!("{}:5009", topo.host("server").v4());
    let args = ["client", &target, "--connect-timeout", "0"];
    let out = topo
        .host("client")
        .command(RK_STREAM)
        .args(args)
        .run(Duration::from_secs(10))
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let report = StreamReport::parse(&out.stdout).expect("result line");
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused")),
        "{report:?}"
    );
}

#[test]
fn paced_transfer_takes_its_time_and_uses_the_given_program() {
    let topo = Topology::new().expect("topology");
    let mut options = StreamOptions::new(300_000).pace(500_000);
    options.program = Some(RK_STREAM.into());
    options.client_seed = 11;
    options.server_seed = 12;
    let report =
        stream_both_ways(topo.host("client"), topo.host("server"), options).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    assert_eq!(report.server.digest_received, digest_of(11, 300_000));
    assert!(
        report.client.elapsed_ms >= 550,
        "paced at 500 kB/s: {report:?}"
    );
}

#[test]
fn workspace_programs_are_found_and_missing_ones_named() {
    assert!(workspace_bin("rk-stream").expect("found").is_file());
    match workspace_bin("no-such-program") {
        Err(Error::BinaryNotFound { name, looked }) => {
            assert_eq!(name, "no-such-program");
            assert!(!looked.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_server_that_replies_after_eof_sends_only_after_the_whole_request() {
    let topo = Topology::new().expect("topology");
    // 0.5 s each way: one after the other takes at least twice as long as both at once.
    let mut options = StreamOptions::new(100_000)
        .pace(200_000)
        .server_replies_after_eof();
    options.program = Some(RK_STREAM.into());
    let report =
        stream_both_ways(topo.host("client"), topo.host("server"), options).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    assert!(report.client.elapsed_ms >= 950, "{report:?}");
}

#[test]
fn an_aborting_server_resets_the_connection() {
    let topo = Topology::new().expect("topology");
    let mut options = StreamOptions::new(10 << 20)
        .pace(1 << 20)
        .server_aborts_after(Duration::from_millis(500));
    options.program = Some(RK_STREAM.into());
    let report =
        stream_both_ways(topo.host("client"), topo.host("server"), options).expect("stream");
    let client = report.client.error.as_deref().unwrap_or_default();
    assert!(
        client.contains("os error 104"),
        "client saw a reset: {report:?}"
    );
    let server = report.server.error.as_deref().unwrap_or_default();
    assert!(server.contains("aborted on request"), "{report:?}");
    assert!(report.client.elapsed_ms < 2000, "{report:?}");
}

#[test]
fn a_send_only_client_closes_and_the_server_reads_everything() {
    let topo = Topology::new().expect("topology");
    let mut options = StreamOptions::new(200_000).client_sends_only();
    options.program = Some(RK_STREAM.into());
    let report =
        stream_both_ways(topo.host("client"), topo.host("server"), options).expect("stream");
    assert!(report.intact(), "{:?}", report.problems());
    assert_eq!(report.server.digest_received, digest_of(1, 200_000));
    assert_eq!(
        (report.server.bytes_sent, report.client.bytes_received),
        (0, 0)
    );
}
