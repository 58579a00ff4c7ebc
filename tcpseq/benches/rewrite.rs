//! Per-packet costs of the rewrites the daemon does on every queued packet, for a full-size
//! (1500-byte) packet and a 64 KiB GSO super-packet, IPv4 and IPv6.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tcpseq::{Checksum, SackBlocks, Segment, SeqAdjust, SeqNum, TcpIpPacket, TcpOption};

/// An ACK with timestamps and two SACK blocks, `total` bytes long.
fn packet(v6: bool, total: usize) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
        )
    };
    let mut raw = [0u8; 32];
    let blocks = [(SeqNum(10), SeqNum(20)), (SeqNum(30), SeqNum(40))];
    let opts = [
        TcpOption::Nop,
        TcpOption::Nop,
        TcpOption::Timestamps { tsval: 1, tsecr: 2 },
        TcpOption::Nop,
        TcpOption::Nop,
        TcpOption::Sack(SackBlocks::encode(&blocks, &mut raw).unwrap()),
    ];
    let headers = if v6 { 40 } else { 20 } + 52;
    // The IPv6 length field does not count the 40-byte header: 64 KiB is 65535 + 40 there.
    let total = if v6 && total > 65535 {
        65535 + 40
    } else {
        total.min(65535)
    };
    let payload = vec![0xa5; total - headers];
    Segment::data(
        SocketAddr::new(src, 40000),
        SocketAddr::new(dst, 443),
        SeqNum(1),
        SeqNum(2),
        1000,
        &payload,
    )
    .with_options(&opts)
    .to_vec()
    .unwrap()
}

const SIZES: [usize; 2] = [1500, 65536];

fn cases() -> impl Iterator<Item = (String, Vec<u8>)> {
    [false, true].into_iter().flat_map(|v6| {
        SIZES.into_iter().map(move |n| {
            let fam = if v6 { "v6" } else { "v4" };
            (format!("{fam}/{n}"), packet(v6, n))
        })
    })
}

fn seq_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("seq_ack_rewrite");
    for (name, mut p) in cases() {
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let mut x = 0u32;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                x = x.wrapping_add(1);
                pkt.set_seq(SeqNum(black_box(x)));
                pkt.set_ack(SeqNum(black_box(!x)));
            })
        });
    }
    g.finish();
}

fn parse_then_seq_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_and_seq_ack_rewrite");
    for (name, mut p) in cases() {
        let mut x = 0u32;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                x = x.wrapping_add(1);
                let mut pkt = TcpIpPacket::new_checked(black_box(&mut p[..])).unwrap();
                pkt.set_seq(SeqNum(x));
                pkt.set_ack(SeqNum(!x));
            })
        });
    }
    g.finish();
}

fn addr_port(c: &mut Criterion) {
    let mut g = c.benchmark_group("addr_port_rewrite");
    for (name, mut p) in cases() {
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let addrs = [pkt.src_addr(), pkt.dst_addr()];
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                i += 1;
                pkt.set_src_addr(black_box(addrs[i & 1])).unwrap();
                pkt.set_src_port(black_box(i as u16));
            })
        });
    }
    g.finish();
}

fn ack_and_sack_unmap(c: &mut Criterion) {
    let mut g = c.benchmark_group("ack_sack_adjust");
    for (name, mut p) in cases() {
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let maps = [SeqAdjust::constant(1000), SeqAdjust::constant(-1000)];
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                i += 1;
                pkt.adjust_ack(black_box(&maps[i & 1])).unwrap();
            })
        });
    }
    g.finish();
}

fn full_checksum(c: &mut Criterion) {
    let mut g = c.benchmark_group("complete_partial");
    for (name, mut p) in cases() {
        g.throughput(Throughput::Bytes(p.len() as u64));
        let mut pkt = TcpIpPacket::new_checked(&mut p[..])
            .unwrap()
            .with_checksum_mode(Checksum::Partial);
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                pkt.complete_partial();
                black_box(&pkt);
            })
        });
    }
    g.finish();
}

fn option_insert_remove(c: &mut Criterion) {
    let mut g = c.benchmark_group("insert_and_remove_option");
    let opt = TcpOption::Experimental {
        kind: 253,
        exid: 0x726b,
        data: &[1, 0, 0, 0, 0, 0],
    };
    for (name, mut buf) in cases() {
        // The SACK option leaves no room for another; without it the 64 KiB packets also have
        // 16 bytes to grow by.
        let mut pkt = TcpIpPacket::new_checked(&mut buf[..]).unwrap();
        pkt.remove_option(tcpseq::options::SACK).unwrap();
        let mut pkt = TcpIpPacket::new_checked(&mut buf[..]).unwrap();
        g.bench_function(BenchmarkId::from_parameter(&name), |b| {
            b.iter(|| {
                pkt.insert_option(black_box(&opt)).unwrap();
                pkt.remove_option(253).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    seq_ack,
    parse_then_seq_ack,
    addr_port,
    ack_and_sack_unmap,
    full_checksum,
    option_insert_remove
);
criterion_main!(benches);
