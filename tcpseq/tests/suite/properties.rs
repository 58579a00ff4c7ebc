//! Property tests: random valid packets and random rewrites.
//!
//! For every rewrite the checksums verify by full recomputation (ours and etherparse's), bytes
//! outside the rewritten field and the checksum fields never change, and the rewrites followed
//! by their inverses in reverse order give back the original bytes exactly.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use proptest::prelude::*;
use tcpseq::{Checksum, Family, Flags, Segment, SeqAdjust, SeqNum, TcpIpPacket, TcpOption};

use crate::common::*;
use crate::crosscheck::assert_same_as_etherparse;

/// An owned option, borrowed as a [`TcpOption`] to build.
#[derive(Debug, Clone)]
pub enum Opt {
    Nop,
    Mss(u16),
    Ws(u8),
    SackPerm,
    Sack(Vec<u8>),
    Ts(u32, u32),
    Exp(u8, u16, Vec<u8>),
    Unknown(u8, Vec<u8>),
}

fn opt() -> impl Strategy<Value = Opt> {
    prop_oneof![
        Just(Opt::Nop),
        any::<u16>().prop_map(Opt::Mss),
        any::<u8>().prop_map(Opt::Ws),
        Just(Opt::SackPerm),
        (1usize..=4)
            .prop_flat_map(|n| prop::collection::vec(any::<u8>(), n * 8))
            .prop_map(Opt::Sack),
        any::<(u32, u32)>().prop_map(|(a, b)| Opt::Ts(a, b)),
        (
            prop_oneof![Just(253u8), Just(254u8)],
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..6)
        )
            .prop_map(|(k, e, d)| Opt::Exp(k, e, d)),
        (
            prop_oneof![6u8..8, 9u8..252],
            prop::collection::vec(any::<u8>(), 0..6)
        )
            .prop_map(|(k, d)| Opt::Unknown(k, d)),
    ]
}

impl Opt {
    fn borrow(&self) -> TcpOption<'_> {
        match self {
            Opt::Nop => TcpOption::Nop,
            Opt::Mss(m) => TcpOption::Mss(*m),
            Opt::Ws(s) => TcpOption::WindowScale(*s),
            Opt::SackPerm => TcpOption::SackPermitted,
            Opt::Sack(raw) => TcpOption::Sack(tcpseq::SackBlocks::new(raw).unwrap()),
            Opt::Ts(a, b) => TcpOption::Timestamps {
                tsval: *a,
                tsecr: *b,
            },
            Opt::Exp(kind, exid, data) => TcpOption::Experimental {
                kind: *kind,
                exid: *exid,
                data,
            },
            Opt::Unknown(kind, data) => TcpOption::Unknown { kind: *kind, data },
        }
    }
}

/// A random valid packet: either family, with IP options or extension headers, any TCP
/// options that fit, any flags and payload.
#[derive(Debug, Clone)]
pub struct Spec {
    v6: bool,
    ip_ext: usize,
    addrs: ([u8; 4], [u8; 4], [u8; 16], [u8; 16]),
    ports: (u16, u16),
    seq: u32,
    ack: u32,
    flags: u8,
    window: u16,
    opts: Vec<Opt>,
    pub payload: Vec<u8>,
}

pub fn spec(max_payload: usize) -> impl Strategy<Value = Spec> {
    (
        (
            any::<bool>(),
            0usize..3,
            any::<([u8; 4], [u8; 4], [u8; 16], [u8; 16])>(),
        ),
        any::<((u16, u16), u32, u32, u8, u16)>(),
        prop::collection::vec(opt(), 0..8),
        prop::collection::vec(any::<u8>(), 0..max_payload),
    )
        .prop_map(
            |((v6, ip_ext, addrs), (ports, seq, ack, flags, window), opts, payload)| Spec {
                v6,
                ip_ext,
                addrs,
                ports,
                seq,
                ack,
                flags,
                window,
                opts,
                payload,
            },
        )
}

pub fn build(s: &Spec) -> Vec<u8> {
    let (src, dst): (IpAddr, IpAddr) = if s.v6 {
        (
            Ipv6Addr::from(s.addrs.2).into(),
            Ipv6Addr::from(s.addrs.3).into(),
        )
    } else {
        (
            Ipv4Addr::from(s.addrs.0).into(),
            Ipv4Addr::from(s.addrs.1).into(),
        )
    };
    let mut opts: Vec<TcpOption<'_>> = s.opts.iter().map(Opt::borrow).collect();
    while opts.iter().map(TcpOption::wire_len).sum::<usize>() > 40 {
        opts.pop();
    }
    let p = Segment::new(
        SocketAddr::new(src, s.ports.0),
        SocketAddr::new(dst, s.ports.1),
        SeqNum(s.seq),
        SeqNum(s.ack),
        Flags(s.flags),
    )
    .with_window(s.window)
    .with_options(&opts)
    .with_payload(&s.payload)
    .to_vec()
    .unwrap();
    match (s.v6, s.ip_ext) {
        (_, 0) => p,
        (false, n) => with_ipv4_options(&p, n),
        (true, n) => with_ipv6_dest_opts(&p, n),
    }
}

/// A rewrite that keeps the packet's length; `apply` returns its inverse.
#[derive(Debug, Clone)]
pub enum Rw {
    Seq(u32),
    Ack(u32),
    SrcPort(u16),
    DstPort(u16),
    Window(u16),
    Flags(u8),
    SrcAddr([u8; 16]),
    DstAddr([u8; 16]),
    Sack(u32),
    Ts(u32, u32),
}

pub fn rw() -> impl Strategy<Value = Rw> {
    prop_oneof![
        any::<u32>().prop_map(Rw::Seq),
        any::<u32>().prop_map(Rw::Ack),
        any::<u16>().prop_map(Rw::SrcPort),
        any::<u16>().prop_map(Rw::DstPort),
        any::<u16>().prop_map(Rw::Window),
        any::<u8>().prop_map(Rw::Flags),
        any::<[u8; 16]>().prop_map(Rw::SrcAddr),
        any::<[u8; 16]>().prop_map(Rw::DstAddr),
        any::<u32>().prop_map(Rw::Sack),
        any::<(u32, u32)>().prop_map(|(a, b)| Rw::Ts(a, b)),
    ]
}

fn addr_for<T: AsRef<[u8]>>(pkt: &TcpIpPacket<T>, raw: [u8; 16]) -> IpAddr {
    match pkt.family() {
        Family::V4 => Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]).into(),
        Family::V6 => Ipv6Addr::from(raw).into(),
    }
}

fn raw_of(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut r = [0; 16];
            r[..4].copy_from_slice(&a.octets());
            r
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Applies `r`; returns the inverse rewrite and the byte range `r` may change.
pub fn apply<T: AsRef<[u8]> + AsMut<[u8]>>(
    pkt: &mut TcpIpPacket<T>,
    r: &Rw,
) -> (Rw, std::ops::Range<usize>) {
    let t = pkt.tcp_offset();
    let tcp = pkt.tcp();
    let opts = t + 20..t + tcp.header_len();
    let (src_r, dst_r) = match pkt.family() {
        Family::V6 => (8..24, 24..40),
        Family::V4 => (12..16, 16..20),
    };
    match *r {
        Rw::Seq(v) => {
            let old = tcp.seq().0;
            pkt.set_seq(SeqNum(v));
            (Rw::Seq(old), t + 4..t + 8)
        }
        Rw::Ack(v) => {
            let old = tcp.ack().0;
            pkt.set_ack(SeqNum(v));
            (Rw::Ack(old), t + 8..t + 12)
        }
        Rw::SrcPort(v) => {
            let old = tcp.src_port();
            pkt.set_src_port(v);
            (Rw::SrcPort(old), t..t + 2)
        }
        Rw::DstPort(v) => {
            let old = tcp.dst_port();
            pkt.set_dst_port(v);
            (Rw::DstPort(old), t + 2..t + 4)
        }
        Rw::Window(v) => {
            let old = tcp.window();
            pkt.set_window(v);
            (Rw::Window(old), t + 14..t + 16)
        }
        Rw::Flags(v) => {
            let old = tcp.flags().0;
            pkt.set_flags(Flags(v));
            (Rw::Flags(old), t + 13..t + 14)
        }
        Rw::SrcAddr(raw) => {
            let old = raw_of(pkt.src_addr());
            pkt.set_src_addr(addr_for(pkt, raw)).unwrap();
            (Rw::SrcAddr(old), src_r)
        }
        Rw::DstAddr(raw) => {
            let old = raw_of(pkt.dst_addr());
            pkt.set_dst_addr(addr_for(pkt, raw)).unwrap();
            (Rw::DstAddr(old), dst_r)
        }
        Rw::Sack(d) => {
            pkt.map_sack(|s| s + d).unwrap();
            (Rw::Sack(d.wrapping_neg()), opts)
        }
        Rw::Ts(a, b) => {
            pkt.translate_timestamps(a, b).unwrap();
            (Rw::Ts(a.wrapping_neg(), b.wrapping_neg()), opts)
        }
    }
}

fn checksum_fields<T: AsRef<[u8]>>(pkt: &TcpIpPacket<T>) -> [usize; 4] {
    let c = pkt.tcp_offset() + 16;
    match pkt.family() {
        Family::V4 => [c, c + 1, 10, 11],
        Family::V6 => [c, c + 1, c, c + 1],
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_packets_parse_like_etherparse(s in spec(1600)) {
        let p = build(&s);
        assert_same_as_etherparse(&p);
        assert_checksums_by_etherparse(&p);
        prop_assert!(TcpIpPacket::new_checked(&p[..]).unwrap().checksums_ok());
    }

    #[test]
    fn rewrites_verify_stay_local_and_invert(
        s in spec(1600),
        rws in prop::collection::vec(rw(), 1..8),
    ) {
        let orig = build(&s);
        let mut p = orig.clone();
        let mut inverses = Vec::new();
        for r in &rws {
            let before = p.clone();
            let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
            let (inv, allowed) = apply(&mut pkt, r);
            prop_assert!(pkt.checksums_ok(), "{:?}", r);
            let csum = checksum_fields(&pkt);
            inverses.push(inv);
            assert_checksums_by_etherparse(&p);
            for i in (0..p.len()).filter(|&i| p[i] != before[i]) {
                prop_assert!(
                    allowed.contains(&i) || csum.contains(&i),
                    "{:?} changed byte {} outside {:?}", r, i, allowed
                );
            }
        }
        for inv in inverses.iter().rev() {
            let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
            apply(&mut pkt, inv);
        }
        prop_assert_eq!(p, orig);
    }

    #[test]
    fn partial_mode_ends_where_complete_mode_does(
        s in spec(1600),
        rws in prop::collection::vec(rw(), 1..8),
        insert in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
    ) {
        let complete = build(&s);
        let mut partial = complete.clone();
        make_partial(&mut partial);
        let mut a = TcpIpPacket::new_checked(complete).unwrap();
        let mut b = TcpIpPacket::new_checked(partial)
            .unwrap()
            .with_checksum_mode(Checksum::Partial);
        for r in &rws {
            apply(&mut a, r);
            apply(&mut b, r);
            prop_assert!(b.checksums_ok());
        }
        if let Some(data) = insert {
            let o = TcpOption::Unknown { kind: 252, data: &data };
            prop_assert_eq!(a.insert_option_growing(&o), b.insert_option_growing(&o));
            prop_assert!(a.checksums_ok() && b.checksums_ok());
        }
        b.complete_partial();
        prop_assert!(b.checksums_ok());
        prop_assert_eq!(a.as_bytes(), b.as_bytes());
    }

    #[test]
    fn insert_then_remove_is_the_identity(
        s in spec(1600),
        data in prop::collection::vec(any::<u8>(), 0..12),
    ) {
        let orig = build(&s);
        let mut pkt = TcpIpPacket::new_checked(orig.clone()).unwrap();
        // Trailing NOPs are padding the insertion reuses; the removal cannot know they were
        // there.
        let ends_with_nop = pkt
            .tcp_options()
            .map(Result::unwrap)
            .filter(|o| *o != TcpOption::Eol)
            .last()
            == Some(TcpOption::Nop);
        let o = TcpOption::Unknown { kind: 252, data: &data };
        match pkt.insert_option_growing(&o) {
            Ok(()) => {
                prop_assert!(pkt.checksums_ok());
                assert_checksums_by_etherparse(pkt.as_bytes());
                assert_same_as_etherparse(pkt.as_bytes());
                prop_assert_eq!(pkt.tcp_payload(), &s.payload[..]);
                pkt.remove_option(252).unwrap();
                prop_assert!(pkt.checksums_ok());
                if !ends_with_nop {
                    prop_assert_eq!(pkt.as_bytes(), &orig[..]);
                }
            }
            Err(tcpseq::Error::OptionSpace { .. }) => prop_assert_eq!(pkt.as_bytes(), &orig[..]),
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
    }

    #[test]
    fn serial_order_holds_across_the_wrap(a: u32, d in 1u32..0x8000_0000) {
        let x = SeqNum(a);
        let y = x + d;
        // Both directions, as each call compares from its own receiver.
        prop_assert_eq!(x.cmp(&y), std::cmp::Ordering::Less);
        prop_assert_eq!(y.cmp(&x), std::cmp::Ordering::Greater);
        prop_assert_eq!(y - x, d as i32);
        prop_assert_eq!(x - y, (d as i32).wrapping_neg());
        prop_assert_eq!(y - d, x);
        prop_assert!(x.in_window(x, y) && !y.in_window(x, y));
        prop_assert_eq!(x.offset(d as i32), y);
    }

    #[test]
    fn seq_adjust_unmap_inverts_map(
        pos: u32,
        before in -(1i32 << 29)..(1 << 29),
        grow in 0i32..(1 << 20),
        dist in -(1i32 << 29)..(1 << 29),
    ) {
        let mut m = SeqAdjust::constant(before);
        m.shift_from(SeqNum(pos), grow);
        let s = SeqNum(pos).offset(dist);
        prop_assert_eq!(m.unmap(m.map(s)), s);
        // Rewritten order is original order.
        prop_assert!(m.map(s) < m.map(s + 1));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn gso_sized_packets_rewrite_and_invert(
        mut s in spec(2),
        len in 30_000usize..65_000,
        fill: u8,
        rws in prop::collection::vec(rw(), 1..6),
    ) {
        s.payload = vec![fill; len];
        let orig = build(&s);
        let mut p = orig.clone();
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let inverses: Vec<_> = rws.iter().map(|r| apply(&mut pkt, r).0).collect();
        prop_assert!(pkt.checksums_ok());
        assert_checksums_by_etherparse(pkt.as_bytes());
        for inv in inverses.iter().rev() {
            apply(&mut pkt, inv);
        }
        prop_assert_eq!(p, orig);
    }
}
