//! rk-craft: sends hand-made IPv4/TCP packets through a raw socket from the network namespace it
//! runs in, and prints one JSON line saying what it sent. Needs CAP_NET_RAW.
//!
//! ```text
//! rk-craft flood --src IP [--src-count N] --dst IP --port P --rate PPS --secs S [--seed N]
//! rk-craft malformed --src IP --dst IP --port P --first-sport P [--garbage N] [--seed N]
//! rk-craft inject --from IP:PORT --to IP:PORT --kind rst|data --count N --rate PPS [--seed N]
//! ```

use std::process::ExitCode;
use std::time::Duration;

use integration::catalogue::{self, Target};
use integration::flags::Flags;
use integration::flood::{self, FloodSpec, RawSender};
use integration::inject::{self, InjectSpec};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rk-craft: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    let (mode, rest) = args
        .split_first()
        .ok_or("missing mode (flood, malformed, inject)")?;
    let flags = Flags::parse(rest)?;
    let sender = RawSender::open().map_err(|e| format!("opening a raw socket: {e}"))?;
    match mode.as_str() {
        "flood" => {
            let spec = FloodSpec {
                src: flags.get("src")?,
                src_count: flags.get_or("src-count", 1)?,
                dst: flags.get("dst")?,
                dport: flags.get("port")?,
                rate: flags.get("rate")?,
                duration: Duration::from_secs_f64(flags.get("secs")?),
                seed: flags.get_or("seed", 1)?,
            };
            Ok(flood::run(&sender, &spec).to_line())
        }
        "malformed" => {
            let target = Target {
                src: flags.get("src")?,
                dst: flags.get("dst")?,
                dport: flags.get("port")?,
                first_sport: flags.get("first-sport")?,
                garbage: flags.get_or("garbage", 64)?,
                seed: flags.get_or("seed", 1)?,
            };
            let (mut packets, mut errors) = (0, Vec::new());
            for case in catalogue::cases(&target) {
                for p in &case.packets {
                    match sender.send(p) {
                        Ok(()) => packets += 1,
                        Err(e) => errors.push(format!("{}: {e}", case.name)),
                    }
                }
            }
            Ok(format!(
                "{{\"packets\":{packets},\"errors\":{}}}",
                json_strings(&errors)
            ))
        }
        "inject" => {
            let spec = InjectSpec {
                from: flags.get("from")?,
                to: flags.get("to")?,
                kind: flags.get("kind")?,
                count: flags.get("count")?,
                seed: flags.get_or("seed", 1)?,
            };
            let rate = flags.get("rate")?;
            let report = flood::paced(
                &sender,
                rate,
                Duration::MAX,
                spec.count,
                inject::guesses(&spec),
            );
            Ok(report.to_line())
        }
        other => Err(format!("unknown mode {other:?} (flood, malformed, inject)")),
    }
}

fn json_strings(items: &[String]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("[{}]", quoted.join(","))
}
