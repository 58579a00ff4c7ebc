//! Views and rewrites checked against etherparse and against full checksum recomputation.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use proptest::prelude::*;
use tcpseq::checksum;
use tcpseq::rewrite::{self, Checksum};
use tcpseq::{parse, SeqNum, TcpOption};

const LINUX_SYN_OPTS: [etherparse::TcpOptionElement; 5] = [
    etherparse::TcpOptionElement::MaximumSegmentSize(1460),
    etherparse::TcpOptionElement::SelectiveAcknowledgementPermitted,
    etherparse::TcpOptionElement::Timestamp(12345, 0),
    etherparse::TcpOptionElement::Noop,
    etherparse::TcpOptionElement::WindowScale(7),
];

fn build(v6: bool, syn: bool, payload: &[u8], seq: u32) -> Vec<u8> {
    let b = if v6 {
        PacketBuilder::ipv6(
            Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2).octets(),
            Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2).octets(),
            64,
        )
    } else {
        PacketBuilder::ipv4([192, 0, 2, 2], [198, 51, 100, 2], 64)
    };
    let mut t = b.tcp(40000, 443, seq, 64240);
    if syn {
        t = t.syn().options(&LINUX_SYN_OPTS).unwrap();
    } else {
        t = t.ack(777);
    }
    let mut out = Vec::new();
    t.write(&mut out, payload).unwrap();
    out
}

fn etherparse_tcp(p: &[u8]) -> etherparse::TcpHeader {
    let sliced = SlicedPacket::from_ip(p).expect("etherparse parses it");
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => t.to_header(),
        other => panic!("not tcp: {other:?}"),
    }
}

fn tcp_checksum_ok(p: &[u8]) -> bool {
    let ip = parse(p).unwrap();
    rewrite::checksum_ok(p, &ip) && rewrite::ip_checksum_ok(p, &ip)
}

#[test]
fn fields_match_etherparse_both_families() {
    for v6 in [false, true] {
        for syn in [false, true] {
            let p = build(v6, syn, b"hello", 0xfffffff0);
            let ip = parse(&p).unwrap();
            let t = ip.tcp(&p);
            let e = etherparse_tcp(&p);
            assert_eq!(t.src_port(), e.source_port);
            assert_eq!(t.dst_port(), e.destination_port);
            assert_eq!(t.seq(), SeqNum(e.sequence_number));
            assert_eq!(t.ack(), SeqNum(e.acknowledgment_number));
            assert_eq!(t.window(), e.window_size);
            assert_eq!(t.checksum(), e.checksum);
            assert_eq!(t.flags().syn(), e.syn);
            assert_eq!(t.header_len(), e.header_len());
            assert_eq!(t.payload(), b"hello");
            assert_eq!(t.seq_len(), 5 + u32::from(syn));
            assert!(tcp_checksum_ok(&p));
            if syn {
                let opts: Vec<_> = t.options().map(|o| o.unwrap().1).collect();
                assert_eq!(opts[0], TcpOption::Mss(1460));
                assert!(opts.contains(&TcpOption::Timestamps {
                    tsval: 12345,
                    tsecr: 0
                }));
            }
        }
    }
}

#[test]
fn add_option_to_a_linux_syn() {
    let exp = [253u8, 8, 0x72, 0x6b, 1, 0, 0xaa, 0xbb];
    for v6 in [false, true] {
        let mut p = build(v6, true, b"", 1);
        let ip = parse(&p).unwrap();
        let out = rewrite::add_option(&mut p, &ip, &exp).unwrap();
        assert_eq!(out.tcp_header_len, 20 + 20 + 8);
        assert_eq!(parse(&p).unwrap(), out, "layout returned = layout parsed");
        assert!(tcp_checksum_ok(&p));
        let e = etherparse_tcp(&p);
        assert!(e.syn);
        let view = out.tcp(&p);
        let opts: Vec<_> = view.options().map(|o| o.unwrap().1).collect();
        assert!(opts.contains(&TcpOption::Experimental {
            kind: 253,
            exid: 0x726b,
            data: &[1, 0, 0xaa, 0xbb]
        }));
        // Options fill up to exactly 40 bytes; beyond that is an error that changes nothing.
        let out2 = rewrite::add_option(&mut p, &out, &exp).unwrap();
        let out3 = rewrite::add_option(&mut p, &out2, &[254, 4, 0, 1]).unwrap();
        assert_eq!(out3.tcp_header_len, 60);
        let before = p.clone();
        assert_eq!(
            rewrite::add_option(&mut p, &out3, &[254, 4, 0, 1]),
            Err(tcpseq::Error::OptionSpace { need: 4 })
        );
        assert_eq!(p, before);
    }
}

#[test]
fn add_option_with_payload_and_odd_size_pads() {
    let mut p = build(false, false, b"data after the header", 5);
    let ip = parse(&p).unwrap();
    let out = rewrite::add_option(&mut p, &ip, &[253, 5, 0x72, 0x6b, 9]).unwrap();
    assert_eq!(out.tcp_header_len, 28);
    assert_eq!(out.tcp(&p).payload(), b"data after the header");
    assert!(tcp_checksum_ok(&p));
}

#[test]
fn partial_checksum_follows_the_pseudo_header() {
    for v6 in [false, true] {
        let mut p = build(v6, false, b"xyz", 9);
        let mut ip = parse(&p).unwrap();
        // Make it look offloaded: the field holds the folded pseudo-header sum.
        let c = ip.tcp_offset + 16;
        let partial = checksum::fold(checksum::pseudo_header(ip.src, ip.dst, ip.tcp_len));
        p[c..c + 2].copy_from_slice(&partial.to_be_bytes());
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9).into(),
                Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2).into(),
            )
        } else {
            (
                Ipv4Addr::new(203, 0, 113, 9).into(),
                Ipv4Addr::new(198, 51, 100, 2).into(),
            )
        };
        rewrite::set_seq(&mut p, &ip, SeqNum(1234), Checksum::Partial);
        rewrite::set_addrs(&mut p, &mut ip, src, dst, Checksum::Partial).unwrap();
        let want = checksum::fold(checksum::pseudo_header(src, dst, ip.tcp_len));
        assert_eq!(u16::from_be_bytes([p[c], p[c + 1]]), want);
        rewrite::complete_checksum(&mut p, &ip);
        assert!(tcp_checksum_ok(&p));
        assert_eq!(parse(&p).unwrap().src, src);
    }
}

#[test]
fn gso_sized_packets_parse_and_rewrite() {
    let payload = vec![0x5a; 60000];
    for v6 in [false, true] {
        let mut p = build(v6, false, &payload, 3);
        let ip = parse(&p).unwrap();
        assert_eq!(ip.payload_len(), 60000);
        rewrite::set_ack(&mut p, &ip, SeqNum(99), Checksum::Complete);
        assert!(tcp_checksum_ok(&p));
    }
}

#[test]
fn truncated_and_garbage_inputs_are_errors() {
    let p = build(false, true, b"abc", 1);
    for cut in 0..p.len() - 3 {
        assert!(parse(&p[..cut]).is_err(), "prefix of {cut} bytes parsed");
    }
    let mut bad = p.clone();
    bad[0] = 0x44; // IHL 16 bytes
    assert!(parse(&bad).is_err());
    let mut udp = p.clone();
    udp[9] = 17;
    assert_eq!(parse(&udp).unwrap_err(), tcpseq::Error::NotTcp(17));
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let p = build(true, false, b"ext", 1);
    // Insert a destination-options header (8 bytes, PadN) between IPv6 and TCP.
    let mut q = p[..40].to_vec();
    q[6] = 60;
    q.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
    q.extend_from_slice(&p[40..]);
    let plen = u16::from_be_bytes([q[4], q[5]]) + 8;
    q[4..6].copy_from_slice(&plen.to_be_bytes());
    let ip = parse(&q).unwrap();
    assert_eq!(ip.tcp_offset, 48);
    assert_eq!(ip.tcp(&q).payload(), b"ext");
    assert!(rewrite::checksum_ok(&q, &ip));
    // ESP is reported as unsupported, a fragment as a fragment.
    let mut esp = q.clone();
    esp[6] = 50;
    assert_eq!(
        parse(&esp).unwrap_err(),
        tcpseq::Error::UnsupportedExtension(50)
    );
    let mut frag = q.clone();
    frag[6] = 44;
    frag[42..44].copy_from_slice(&[0, 8 << 3]);
    assert!(matches!(
        parse(&frag).unwrap_err(),
        tcpseq::Error::Fragment(_)
    ));
}

proptest! {
    #[test]
    fn field_rewrites_keep_checksums_and_invert(
        v6: bool,
        payload in proptest::collection::vec(any::<u8>(), 0..1600),
        seq: u32, new_seq: u32, new_ack: u32, win: u16, sp: u16, dp: u16,
    ) {
        let orig = build(v6, false, &payload, seq);
        let mut p = orig.clone();
        let ip = parse(&p).unwrap();
        let t = ip.tcp(&orig);
        let (old_seq, old_ack, old_win) = (t.seq(), t.ack(), t.window());
        let (old_sp, old_dp) = (t.src_port(), t.dst_port());
        rewrite::set_seq(&mut p, &ip, SeqNum(new_seq), Checksum::Complete);
        rewrite::set_ack(&mut p, &ip, SeqNum(new_ack), Checksum::Complete);
        rewrite::set_window(&mut p, &ip, win, Checksum::Complete);
        rewrite::set_ports(&mut p, &ip, sp, dp, Checksum::Complete);
        prop_assert!(tcp_checksum_ok(&p));
        let t2 = ip.tcp(&p);
        prop_assert_eq!((t2.seq().0, t2.ack().0, t2.window()), (new_seq, new_ack, win));
        prop_assert_eq!(t2.payload(), &payload[..]);
        rewrite::set_seq(&mut p, &ip, old_seq, Checksum::Complete);
        rewrite::set_ack(&mut p, &ip, old_ack, Checksum::Complete);
        rewrite::set_window(&mut p, &ip, old_win, Checksum::Complete);
        rewrite::set_ports(&mut p, &ip, old_sp, old_dp, Checksum::Complete);
        // The checksum may change representation (0x0000 vs 0xffff) but not its meaning.
        prop_assert!(tcp_checksum_ok(&p));
        let c = ip.tcp_offset + 16;
        let mut a = p.clone();
        let mut b = orig.clone();
        a[c..c + 2].fill(0);
        b[c..c + 2].fill(0);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn address_rewrite_keeps_checksums(
        payload in proptest::collection::vec(any::<u8>(), 0..600),
        a: [u8; 4], b: [u8; 4], a6: [u8; 16], b6: [u8; 16],
    ) {
        for v6 in [false, true] {
            let mut p = build(v6, false, &payload, 7);
            let mut ip = parse(&p).unwrap();
            let (s, d): (IpAddr, IpAddr) = if v6 {
                (Ipv6Addr::from(a6).into(), Ipv6Addr::from(b6).into())
            } else {
                (Ipv4Addr::from(a).into(), Ipv4Addr::from(b).into())
            };
            rewrite::set_addrs(&mut p, &mut ip, s, d, Checksum::Complete).unwrap();
            prop_assert!(tcp_checksum_ok(&p));
            let back = parse(&p).unwrap();
            prop_assert_eq!((back.src, back.dst), (s, d));
        }
    }

    #[test]
    fn seq_order_is_serial(a: u32, d in 1u32..0x7fff_ffff) {
        let x = SeqNum(a);
        let y = x + d;
        prop_assert!(x < y);
        prop_assert!(y > x);
        prop_assert_eq!(y - x, d as i32);
    }
}

/// A fixed-seed run over random and mutated inputs: parsing, option iteration and rewriting
/// never panic and never index out of bounds.
#[test]
fn a_million_random_and_mutated_inputs_never_panic() {
    let seeds = [
        build(false, true, b"", 1),
        build(true, true, b"", 1),
        build(false, false, b"abcdef", 2),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut parsed = 0;
    for i in 0..1_000_000u32 {
        let mut p = if i % 4 == 0 {
            let len = (next() % 120) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut p = seeds[i as usize % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % p.len();
                p[at] = next() as u8;
            }
            p
        };
        if let Ok(ip) = parse(&p) {
            parsed += 1;
            for o in ip.tcp(&p).options() {
                if o.is_err() {
                    break;
                }
            }
            rewrite::set_seq(&mut p, &ip, SeqNum(next() as u32), Checksum::Complete);
            let _ = rewrite::add_option(&mut p, &ip, &[253, 4, 0x72, 0x6b]);
        }
    }
    assert!(
        parsed > 100_000,
        "mutations should mostly stay parseable: {parsed}"
    );
}
