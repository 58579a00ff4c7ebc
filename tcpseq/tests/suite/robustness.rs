//! A fixed-seed run over a million random and mutated inputs: parsing, every accessor and
//! every rewrite must neither panic nor index out of bounds, and a repaired packet verifies.

use tcpseq::{
    Checksum, IpPacket, Ipv4Packet, Ipv6Packet, SeqAdjust, SeqNum, TcpIpPacket, TcpOption,
    TcpSegment,
};

use crate::common::*;

/// xorshift64: fixed seed, no dependency, fast.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for v6 in [false, true] {
        v.push(linux_syn(v6, u32::MAX));
        v.push(sack_data(v6, 1, 2, b"payload bytes"));
    }
    v.push(with_ipv4_options(&sack_data(false, 3, 4, b"o"), 2));
    v.push(with_ipv6_dest_opts(&linux_syn(true, 5), 2));
    v
}

/// Reads everything a view offers.
fn read_all(b: &[u8]) -> usize {
    let mut n = 0;
    if let Ok(ip) = IpPacket::new_checked(b) {
        n += usize::from(ip.upper_layer().is_ok());
        n += ip.end();
        match ip {
            IpPacket::V4(p) => n += p.options().len() + p.payload().len(),
            IpPacket::V6(p) => n += p.payload().len() + p.flow_label() as usize,
        }
    }
    n += usize::from(Ipv4Packet::new_checked(b).is_ok())
        + usize::from(Ipv6Packet::new_checked(b).is_ok());
    if let Ok(t) = TcpSegment::new_checked(b) {
        n += t.options().filter(Result::is_ok).count() + t.payload().len() + t.seq_len() as usize;
    }
    n
}

/// Runs every rewrite; returns whether the packet parsed.
fn rewrite_all(buf: &mut [u8], rng: &mut Rng) -> bool {
    let Ok(pkt) = TcpIpPacket::new_checked(&mut *buf) else {
        return false;
    };
    let mode = if rng.next() & 1 == 0 {
        Checksum::Complete
    } else {
        Checksum::Partial
    };
    let mut pkt = pkt.with_checksum_mode(mode);
    let _ = pkt.tcp_options().count();
    let x = rng.next() as u32;
    pkt.set_seq(SeqNum(x));
    pkt.set_window_bytes(x, (x >> 28) as u8);
    let src = pkt.dst_addr();
    let _ = pkt.set_src_addr(src);
    let _ = pkt.map_sack(|s| s + x);
    let _ = pkt.adjust_ack(&SeqAdjust::constant(x as i32));
    let _ = pkt.translate_timestamps(x, !x);
    let _ = pkt.clamp_mss(x as u16);
    let _ = pkt.insert_option(&TcpOption::Experimental {
        kind: 253,
        exid: 0x726b,
        data: &[1, 2, 3, 4],
    });
    let _ = pkt.remove_option((x >> 8) as u8 % 10);
    let _ = pkt.checksums_ok();
    pkt.fill_checksums();
    assert!(pkt.checksums_ok(), "a repaired packet verifies");
    let _ = tcpseq::parse(pkt.as_bytes());
    true
}

#[test]
fn a_million_random_and_mutated_inputs_never_panic() {
    let seeds = seeds();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut buf = Vec::with_capacity(2048);
    let (mut parsed, mut read) = (0u32, 0usize);
    for i in 0..1_000_000u32 {
        buf.clear();
        if i % 4 == 0 {
            let len = rng.below(128);
            buf.extend((0..len).map(|_| rng.next() as u8));
            // Often make it look like IP so the deeper layers are reached.
            if let Some(b) = buf.first_mut() {
                *b = [0x45, 0x60, *b][rng.below(3)];
            }
        } else {
            buf.extend_from_slice(&seeds[rng.below(seeds.len())]);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(buf.len());
                buf[at] = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    _ => rng.next() as u8,
                };
            }
            match rng.below(8) {
                0 => buf.truncate(rng.below(buf.len() + 1)),
                1 => buf.extend((0..rng.below(48)).map(|_| rng.next() as u8)),
                _ => {}
            }
        }
        read = read.wrapping_add(read_all(&buf));
        // Spare room so option insertion can grow the packet.
        let len = buf.len();
        buf.resize(len + 40, 0);
        parsed += u32::from(rewrite_all(&mut buf, &mut rng));
    }
    assert!(
        parsed > 200_000,
        "too few inputs reached the rewrites: {parsed}"
    );
    assert!(read > 0);
}
