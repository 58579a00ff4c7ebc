//! A paced SYN flood carrying the rackd option, and the raw socket it goes out through.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use edp::option::{SynFlags, SynOption};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::craft::{linux_syn_options, Rng, Segment};

/// An IPv4 raw socket that sends whole packets, header included (`IPPROTO_RAW`). The kernel
/// fills in the total length and the header checksum; everything else goes out as given.
#[derive(Debug)]
pub struct RawSender {
    socket: Socket,
}

impl RawSender {
    pub fn open() -> io::Result<RawSender> {
        let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(255)))?;
        Ok(RawSender { socket })
    }

    /// Sends one packet to the destination address in its header.
    pub fn send(&self, packet: &[u8]) -> io::Result<()> {
        let dst = packet
            .get(16..20)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IPv4 packet"))?;
        self.socket
            .send_to(packet, &SockAddr::from(SocketAddrV4::new(dst, 0)))
            .map(drop)
    }
}

/// What the flood sends.
#[derive(Debug, Clone)]
pub struct FloodSpec {
    /// First source address; each SYN picks one of `src_count` consecutive addresses.
    pub src: Ipv4Addr,
    pub src_count: u32,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// SYNs per second.
    pub rate: u64,
    pub duration: Duration,
    pub seed: u64,
}

/// What the flood achieved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodReport {
    pub sent: u64,
    /// Sends the kernel refused (for example `ENOBUFS`); they are not in `sent`.
    pub errors: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    /// SYNs per second actually sent.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// One JSON line: `{"sent":..,"errors":..,"elapsed_ms":..,"rate":..}`.
    pub fn to_line(&self) -> String {
        format!(
            "{{\"sent\":{},\"errors\":{},\"elapsed_ms\":{},\"rate\":{:.0}}}",
            self.sent,
            self.errors,
            self.elapsed.as_millis(),
            self.rate()
        )
    }
}

/// A SYN from a random source address and port with a random ISN, Linux's usual options and a
/// rackd option with a random token.
pub fn random_syn(spec: &FloodSpec, rng: &mut Rng) -> Vec<u8> {
    let src = u32::from(spec.src) + rng.range(0, spec.src_count.max(1));
    let sport = rng.range(1024, 65_536) as u16;
    let mut options = linux_syn_options(rng.next_u32());
    options.extend(SynOption::new(SynFlags::RESUME, Some(rng.next_u32())).encode());
    Segment::syn(
        Ipv4Addr::from(src),
        sport,
        spec.dst,
        spec.dport,
        rng.next_u32(),
    )
    .with_options(options)
    .to_bytes()
}

/// Sends `spec.rate` random SYNs per second for `spec.duration`.
pub fn run(sender: &RawSender, spec: &FloodSpec) -> FloodReport {
    let mut rng = Rng::new(spec.seed);
    paced(sender, spec.rate, spec.duration, u64::MAX, || {
        random_syn(spec, &mut rng)
    })
}

/// Sends the packets `next` makes at `rate` per second until `duration` passed or `count` were
/// tried, catching up in small bursts after each short sleep, so that the rate holds on average
/// without busy-waiting.
pub fn paced(
    sender: &RawSender,
    rate: u64,
    duration: Duration,
    count: u64,
    mut next: impl FnMut() -> Vec<u8>,
) -> FloodReport {
    let start = Instant::now();
    let (mut sent, mut errors) = (0u64, 0u64);
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration || sent + errors >= count {
            break;
        }
        let due = ((rate as f64 * elapsed.as_secs_f64()) as u64).min(count);
        while sent + errors < due {
            match sender.send(&next()) {
                Ok(()) => sent += 1,
                Err(_) => errors += 1,
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    FloodReport {
        sent,
        errors,
        elapsed: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_syns_carry_a_decodable_rackd_option_and_vary() {
        let spec = FloodSpec {
            src: Ipv4Addr::new(203, 0, 113, 2),
            src_count: 60,
            dst: Ipv4Addr::new(198, 51, 100, 2),
            dport: 5002,
            rate: 1,
            duration: Duration::ZERO,
            seed: 3,
        };
        let mut rng = Rng::new(1);
        let (a, b) = (random_syn(&spec, &mut rng), random_syn(&spec, &mut rng));
        assert_ne!(a[20..24], b[20..24], "ports differ");
        assert_eq!(a.len(), 20 + 20 + 32);
        let opt = &a[40 + 20..40 + 30];
        let decoded = SynOption::decode(opt).expect("rackd option");
        assert!(decoded.token.is_some());
        let src = Ipv4Addr::new(a[12], a[13], a[14], a[15]);
        assert!((2..62).contains(&src.octets()[3]), "{src}");
    }

    #[test]
    fn report_line_is_json_shaped() {
        let r = FloodReport {
            sent: 99_000,
            errors: 2,
            elapsed: Duration::from_secs(10),
        };
        assert_eq!(
            r.to_line(),
            "{\"sent\":99000,\"errors\":2,\"elapsed_ms\":10000,\"rate\":9900}"
        );
    }
}
