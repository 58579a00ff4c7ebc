//! CI smoke run of the end-to-end benchmark: `e2e --quick` must exercise every path (native,
//! released, managed) and write a table, JSON and plot that parse, with every native
//! measurement positive. Needs root and a built rackd; fails (never skips) without them.

use std::path::{Path, PathBuf};
use std::process::Command;

use benches::metrics::METRICS;

fn require_root() {
    let euid = nix::unistd::geteuid();
    assert!(
        euid.is_root(),
        "the benchmark smoke test needs root (network namespaces, nftables, NFQUEUE); \
         effective uid is {euid}: run the tests as root"
    );
}

fn require_rackd() {
    if let Err(e) = netns_tests::workspace_bin("rackd") {
        panic!("{e} (the smoke test runs rackd from the same target directory)");
    }
}

fn out_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rkb-smoke-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn e2e(args: &[&str], rackd: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2e"));
    cmd.args(args)
        .env("CARGO_BIN_EXE_rkb-peer", env!("CARGO_BIN_EXE_rkb-peer"));
    if let Some(rackd) = rackd {
        cmd.env("CARGO_BIN_EXE_rackd", rackd);
    }
    cmd.output().expect("start e2e")
}

/// The samples of `metric` for `mode` in the JSON.
fn values(json: &serde_json::Value, metric: &str, mode: &str) -> Vec<f64> {
    json["samples"]["values"][metric][mode]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn quick_run_measures_every_mode_and_writes_parsable_results() {
    require_root();
    require_rackd();
    let dir = out_dir("quick");
    let started = std::time::Instant::now();
    let out = e2e(&["--quick", "--out", dir.to_str().unwrap()], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "e2e --quick failed ({}):\n{stderr}",
        out.status
    );
    // About 30 s on an idle two-core machine; the bound only catches a run gone astray (CI
    // runs other tests meanwhile).
    assert!(
        started.elapsed().as_secs() < 120,
        "quick mode took {:?}:\n{stderr}",
        started.elapsed()
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
            .expect("results.json parses");
    assert_eq!(json["plan"]["name"], "quick");
    assert_eq!(json["rows"].as_array().map(Vec::len), Some(METRICS.len()));
    // Everything native TCP has is measured and positive.
    for metric in [
        "bulk_1_up",
        "bulk_1_down",
        "bulk_8_up",
        "bulk_8_down",
        "rr_p50",
        "rr_p99",
        "connect_p50",
        "connect_rate",
        "restore",
    ] {
        let native = values(&json, metric, "native");
        assert!(
            !native.is_empty() && native.iter().all(|v| *v > 0.0),
            "native {metric}: {native:?}"
        );
    }
    // Both rackd modes and the reference modes (native again for the noise floor, rackd's
    // table without a daemon) moved data and answered requests.
    for mode in ["released", "managed", "native-b", "table-only"] {
        for metric in ["bulk_1_up", "bulk_8_down", "rr_p50", "connect_rate"] {
            let v = values(&json, metric, mode);
            assert!(
                !v.is_empty() && v.iter().all(|v| *v > 0.0),
                "{mode} {metric}: {v:?}"
            );
        }
    }
    for mode in ["released", "managed"] {
        assert!(
            !values(&json, "idle_mem_per_conn", mode).is_empty(),
            "{mode}: no idle sample"
        );
    }
    assert!(
        json["rows"][0]["noise"].as_f64().is_some(),
        "no noise estimate: {}",
        json["rows"][0]
    );
    assert_eq!(json["table_cost"]["pairs"], 2, "{}", json["table_cost"]);
    assert!(json["table_cost"]["base_ns"].as_f64().unwrap_or(0.0) > 0.0);

    let table = std::fs::read_to_string(dir.join("results.md")).unwrap();
    assert!(
        table.contains("Per-packet cost of rackd's table"),
        "{table}"
    );
    for metric in METRICS {
        assert!(
            table.contains(metric.label),
            "no row {:?} in\n{table}",
            metric.label
        );
    }
    let svg = std::fs::read_to_string(dir.join("ratios.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg}"
    );
    assert!(svg.matches("<rect").count() > 3, "no bars in {svg}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_daemon_that_does_not_start_fails_the_run_with_its_reason() {
    require_root();
    let dir = out_dir("broken");
    // `true` exits at once: the daemon never answers on its control socket.
    let out = e2e(
        &["--quick", "--out", dir.to_str().unwrap()],
        Some(Path::new("/bin/true")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "e2e succeeded without a daemon:\n{stderr}"
    );
    assert!(
        stderr.contains("rackd in host \"client\"") && stderr.contains("exited"),
        "unclear error:\n{stderr}"
    );
    assert!(
        !dir.join("results.json").exists(),
        "results written for a broken run"
    );
}
