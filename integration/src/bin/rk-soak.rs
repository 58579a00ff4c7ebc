//! rk-soak: the long soak run (see `integration::soak`); `scripts/soak.sh` builds and runs it.
//!
//! ```text
//! rk-soak [--duration-s 3600] [--connections 100] [--outage-every-s 120] [--outage-s 30]
//!         [--sample-every-s 10] [--round-every-ms 1000] [--rss-growth-kib 4096] [--flow-slack 0]
//!         [--move-every 0]
//! ```
//!
//! Prints a CSV sample of both daemons every interval and a `#` line per outage, then a summary;
//! exits with 1 if a bound was broken or a connection failed. Root only (network namespaces);
//! finds rackd next to itself.

use std::process::ExitCode;

use integration::flags::Flags;
use integration::soak::{self, SoakConfig};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match Flags::parse(&args).and_then(|f| SoakConfig::from_flags(&f)) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("rk-soak: {e}");
            return ExitCode::from(2);
        }
    };
    println!("# soak: {cfg:?}");
    let report = match soak::run(&cfg, &|line| println!("{line}")) {
        Ok(report) => report,
        Err(e) => {
            println!("# FAILED: {e}");
            return ExitCode::from(1);
        }
    };
    let resumes: Vec<f64> = report
        .outages
        .iter()
        .map(|o| o.resumed_in.as_secs_f64())
        .collect();
    let peak = |f: fn(&soak::Sample) -> u64| report.samples.iter().map(f).max().unwrap_or(0);
    let (first, last) = (report.samples.first(), report.samples.last());
    println!(
        "# {} echo rounds on {} connections, {} outages (resumed in {:.2}..{:.2} s); \
         RSS KiB client {}->{} (peak {}), server {}->{} (peak {}); flows at most {}",
        report.rounds,
        cfg.connections,
        report.outages.len(),
        resumes.iter().copied().fold(f64::INFINITY, f64::min),
        resumes.iter().copied().fold(0.0, f64::max),
        first.map_or(0, |s| s.client_rss_kib),
        last.map_or(0, |s| s.client_rss_kib),
        peak(|s| s.client_rss_kib),
        first.map_or(0, |s| s.server_rss_kib),
        last.map_or(0, |s| s.server_rss_kib),
        peak(|s| s.server_rss_kib),
        report
            .samples
            .iter()
            .map(|s| s.client_flows.max(s.server_flows))
            .max()
            .unwrap_or(0)
    );
    let problems = report.problems(&cfg);
    if problems.is_empty() {
        println!("# PASSED: memory and flow table flat");
        ExitCode::SUCCESS
    } else {
        for p in &problems {
            println!("# FAILED: {p}");
        }
        ExitCode::from(1)
    }
}
