//! Our views against etherparse on the same bytes, both families.

use etherparse::TcpOptionElement;
use tcpseq::{parse_ip_tcp, Error, Family, IpPacket, SeqNum, TcpOption};

use crate::common::*;

/// Our option list in etherparse's vocabulary (for the kinds etherparse knows).
fn to_etherparse(o: &TcpOption<'_>) -> Option<TcpOptionElement> {
    Some(match *o {
        TcpOption::Nop => TcpOptionElement::Noop,
        TcpOption::Mss(m) => TcpOptionElement::MaximumSegmentSize(m),
        TcpOption::WindowScale(s) => TcpOptionElement::WindowScale(s),
        TcpOption::SackPermitted => TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOption::Timestamps { tsval, tsecr } => TcpOptionElement::Timestamp(tsval, tsecr),
        TcpOption::Sack(b) => {
            let mut it = b.iter().map(|(l, r)| (l.0, r.0));
            let first = it.next()?;
            let mut rest = [None; 3];
            for (slot, block) in rest.iter_mut().zip(it) {
                *slot = Some(block);
            }
            TcpOptionElement::SelectiveAcknowledgement(first, rest)
        }
        _ => return None,
    })
}

/// Asserts that every field we read equals etherparse's reading.
pub fn assert_same_as_etherparse(p: &[u8]) {
    let pkt = parse_ip_tcp(p).unwrap();
    let t = pkt.tcp();
    let e = ether_tcp(p);
    assert_eq!(t.src_port(), e.source_port());
    assert_eq!(t.dst_port(), e.destination_port());
    assert_eq!(t.seq(), SeqNum(e.sequence_number()));
    assert_eq!(t.ack(), SeqNum(e.acknowledgment_number()));
    assert_eq!(t.header_len(), usize::from(e.data_offset()) * 4);
    assert_eq!(t.flags(), flags_of(&e));
    assert_eq!(t.window(), e.window_size());
    assert_eq!(t.checksum(), e.checksum());
    assert_eq!(t.urgent(), e.urgent_pointer());
    assert_eq!(t.options_bytes(), e.options());
    assert_eq!(t.payload(), e.payload());
    let ours: Vec<_> = t
        .options()
        .map(|o| o.unwrap())
        .filter(|o| *o != TcpOption::Eol)
        .collect();
    if ours.iter().all(|o| to_etherparse(o).is_some()) {
        let theirs: Vec<_> = e.options_iterator().map(|o| o.unwrap()).collect();
        let ours: Vec<_> = ours.iter().filter_map(to_etherparse).collect();
        assert_eq!(ours, theirs);
    }
    let sliced = etherparse::SlicedPacket::from_ip(p).unwrap();
    match (pkt.ip(), sliced.net.unwrap()) {
        (IpPacket::V4(ours), etherparse::NetSlice::Ipv4(theirs)) => {
            let h = theirs.header();
            assert_eq!(ours.src_addr(), h.source_addr());
            assert_eq!(ours.dst_addr(), h.destination_addr());
            assert_eq!(ours.ttl(), h.ttl());
            assert_eq!(ours.total_len(), h.total_len());
            assert_eq!(ours.ident(), h.identification());
            assert_eq!(ours.dont_frag(), h.dont_fragment());
            assert_eq!(ours.header_len(), h.slice().len());
            assert_eq!(ours.options(), h.options());
            assert_eq!(pkt.tcp_offset(), h.slice().len());
        }
        (IpPacket::V6(ours), etherparse::NetSlice::Ipv6(theirs)) => {
            let h = theirs.header();
            assert_eq!(ours.src_addr(), h.source_addr());
            assert_eq!(ours.dst_addr(), h.destination_addr());
            assert_eq!(ours.hop_limit(), h.hop_limit());
            assert_eq!(ours.payload_len(), h.payload_length());
            assert_eq!(ours.traffic_class(), h.traffic_class());
            assert_eq!(ours.flow_label(), h.flow_label().value());
            assert_eq!(pkt.tcp_offset(), 40 + theirs.extensions().slice().len());
        }
        (ours, theirs) => panic!("families differ: {ours:?} vs {theirs:?}"),
    }
}

#[test]
fn linux_syn_fields_match_etherparse() {
    for v6 in [false, true] {
        let p = linux_syn(v6, 0xffff_fff0);
        assert_same_as_etherparse(&p);
        assert_checksums_by_etherparse(&p);
        let pkt = parse_ip_tcp(&p).unwrap();
        assert_eq!(pkt.family(), if v6 { Family::V6 } else { Family::V4 });
        let (s, d) = ends(v6);
        assert_eq!((pkt.src(), pkt.dst()), (s, d));
        assert_eq!(pkt.tcp().seq_len(), 1);
        assert!(pkt.checksums_ok());
        let opts: Vec<_> = pkt.tcp_options().map(Result::unwrap).collect();
        assert_eq!(opts, LINUX_SYN);
    }
}

#[test]
fn data_with_sack_and_timestamps_matches_etherparse() {
    for v6 in [false, true] {
        let p = sack_data(v6, u32::MAX - 2, 77, b"hello, world");
        assert_same_as_etherparse(&p);
        assert_checksums_by_etherparse(&p);
        let pkt = parse_ip_tcp(&p).unwrap();
        assert_eq!(pkt.tcp().payload(), b"hello, world");
        assert_eq!(pkt.tcp().seq_len(), 12);
        assert_eq!(pkt.len(), p.len());
    }
}

#[test]
fn ip_options_and_extension_headers_match_etherparse() {
    let p4 = with_ipv4_options(&sack_data(false, 1, 2, b"opt"), 2);
    let p6 = with_ipv6_dest_opts(&sack_data(true, 1, 2, b"ext"), 2);
    for p in [p4, p6] {
        assert_same_as_etherparse(&p);
        assert_checksums_by_etherparse(&p);
        assert!(parse_ip_tcp(&p).unwrap().checksums_ok());
    }
    assert_eq!(
        parse_ip_tcp(&with_ipv4_options(&linux_syn(false, 1), 3))
            .unwrap()
            .tcp_offset(),
        32
    );
    assert_eq!(
        parse_ip_tcp(&with_ipv6_dest_opts(&linux_syn(true, 1), 3))
            .unwrap()
            .tcp_offset(),
        64
    );
}

#[test]
fn trailing_bytes_after_the_ip_length_are_not_the_packet() {
    for v6 in [false, true] {
        let mut p = sack_data(v6, 1, 2, b"xy");
        let n = p.len();
        p.extend_from_slice(&[0xee; 7]);
        let pkt = parse_ip_tcp(&p).unwrap();
        assert_eq!(pkt.len(), n);
        assert_eq!(pkt.tcp().payload(), b"xy");
        assert!(pkt.checksums_ok());
    }
}

#[test]
fn every_truncation_is_an_error() {
    for v6 in [false, true] {
        for p in [linux_syn(v6, 1), sack_data(v6, 1, 2, b"")] {
            for cut in 0..p.len() {
                assert!(parse_ip_tcp(&p[..cut]).is_err(), "prefix of {cut} parsed");
            }
        }
    }
}

#[test]
fn impossible_headers_are_errors_with_the_offending_value() {
    let p = sack_data(false, 1, 2, b"abc");
    let mut udp = p.clone();
    udp[9] = 17;
    assert_eq!(parse_ip_tcp(&udp).unwrap_err(), Error::NotTcp(17));
    let mut frag = p.clone();
    frag[6..8].copy_from_slice(&[0x00, 0x02]);
    assert_eq!(
        parse_ip_tcp(&frag).unwrap_err(),
        Error::Fragment {
            offset: 16,
            more: false
        }
    );
    let mut first = p.clone();
    first[6..8].copy_from_slice(&[0x20, 0x00]);
    assert_eq!(
        parse_ip_tcp(&first).unwrap_err(),
        Error::Fragment {
            offset: 0,
            more: true
        }
    );
    let mut doff = p.clone();
    doff[20 + 12] = 0x40;
    assert!(matches!(
        parse_ip_tcp(&doff).unwrap_err(),
        Error::TcpHeaderLen { len: 16, .. }
    ));
    let mut doff = p.clone();
    doff[20 + 12] = 0xf0;
    assert!(matches!(
        parse_ip_tcp(&doff).unwrap_err(),
        Error::TcpHeaderLen { len: 60, .. }
    ));
    assert_eq!(parse_ip_tcp(&[0x55; 40]).unwrap_err(), Error::Version(5));
    assert!(matches!(
        parse_ip_tcp(&[]).unwrap_err(),
        Error::Truncated { have: 0, .. }
    ));
    let mut esp = sack_data(true, 1, 2, b"abc");
    esp[6] = 50;
    assert_eq!(
        parse_ip_tcp(&esp).unwrap_err(),
        Error::UnsupportedExtension(50)
    );
    let mut udp6 = sack_data(true, 1, 2, b"abc");
    udp6[6] = 17;
    assert_eq!(parse_ip_tcp(&udp6).unwrap_err(), Error::NotTcp(17));
}

#[test]
fn gso_sized_packets_parse() {
    // A 64 KiB IPv4 super-packet (total length 65535) and an IPv6 one (payload 65535).
    for v6 in [false, true] {
        // The length field counts the IPv4 header, not the IPv6 one; the TCP header with
        // timestamps and two SACK blocks is 52 bytes.
        let room = if v6 { 65535 } else { 65535 - 20 };
        let payload = vec![0x5a; room - 52];
        let p = sack_data(v6, 1, 2, &payload);
        let pkt = parse_ip_tcp(&p).unwrap();
        assert_eq!(pkt.tcp().payload().len(), payload.len());
        assert!(pkt.checksums_ok());
        assert_checksums_by_etherparse(&p);
    }
}
