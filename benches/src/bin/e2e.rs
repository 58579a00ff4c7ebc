//! `e2e`: the end-to-end benchmark of rackd against native TCP (see the `benches` crate).
//!
//! ```text
//! e2e [--quick] [--out DIR]
//! ```
//! `--quick` is the CI smoke run (every path once, under a minute); the default is the full
//! benchmark (medians of five, 10,000 idle connections, under ten minutes). Writes
//! `results.md`, `results.json` and `ratios.svg` to DIR (default `target/bench-e2e`) and prints
//! the table. Needs root, and rackd built next to this program (`cargo build [--release] -p
//! rackd -p benches`) or named by `CARGO_BIN_EXE_rackd`. Exit status 1 if anything broke; if
//! it broke after something was measured, the partial results are written first.

use std::path::PathBuf;
use std::process::ExitCode;

use benches::plan::Plan;
use benches::report;
use benches::run::run;
use benches::scenario::Tools;
use benches::{Error, Result};

const USAGE: &str = "usage: e2e [--quick] [--out DIR]";

fn parse(args: &[String]) -> Result<(Plan, PathBuf)> {
    let (mut plan, mut out) = (Plan::full(), PathBuf::from("target/bench-e2e"));
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => plan = Plan::quick(),
            "--out" => {
                out = it
                    .next()
                    .map(PathBuf::from)
                    .ok_or_else(|| Error::Usage(format!("--out needs a directory; {USAGE}")))?;
            }
            "-h" | "--help" => return Err(Error::Usage(USAGE.into())),
            other => return Err(Error::Usage(format!("unknown argument {other:?}; {USAGE}"))),
        }
    }
    Ok((plan, out))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let outcome = parse(&args).and_then(|(plan, out)| {
        let tools = Tools::locate()?;
        let results = run(&plan, &tools, |line| eprintln!("e2e: {line}"))?;
        let written = report::write(&results, &out)?;
        print!("{}", report::render_table(&results));
        eprintln!(
            "e2e: wrote {}, {} and {}",
            written.table.display(),
            written.json.display(),
            written.svg.display()
        );
        match results.error {
            None => Ok(()),
            Some(error) => Err(Error::Incomplete(error)),
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e: error: {e}");
            ExitCode::FAILURE
        }
    }
}
