//! Packet construction and independent verification shared by the tests.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{NetSlice, SlicedPacket, TcpSlice, TransportSlice};
use tcpseq::{checksum, Flags, Segment, SeqNum, TcpIpPacket, TcpOption};

pub const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
pub const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

/// Client and server socket addresses of the given family.
pub fn ends(v6: bool) -> (SocketAddr, SocketAddr) {
    let (s, d): (IpAddr, IpAddr) = if v6 {
        (V6_SRC.into(), V6_DST.into())
    } else {
        (V4_SRC.into(), V4_DST.into())
    };
    (SocketAddr::new(s, 40000), SocketAddr::new(d, 443))
}

/// Other addresses of the same family, for address rewrites.
pub fn other_addrs(v6: bool) -> (IpAddr, IpAddr) {
    if v6 {
        (
            Ipv6Addr::new(0x2001, 0xdb8, 9, 0, 0, 0, 0, 9).into(),
            Ipv6Addr::new(0x2001, 0xdb8, 0xa, 0, 0, 0, 0, 0xff).into(),
        )
    } else {
        (
            Ipv4Addr::new(203, 0, 113, 9).into(),
            Ipv4Addr::new(198, 51, 100, 200).into(),
        )
    }
}

/// The options of a Linux SYN: MSS, SACK-permitted, timestamps, NOP, window scale.
pub const LINUX_SYN: [TcpOption<'static>; 5] = [
    TcpOption::Mss(1460),
    TcpOption::SackPermitted,
    TcpOption::Timestamps {
        tsval: 0x1234_5678,
        tsecr: 0,
    },
    TcpOption::Nop,
    TcpOption::WindowScale(7),
];

pub fn linux_syn(v6: bool, isn: u32) -> Vec<u8> {
    let (s, d) = ends(v6);
    Segment::syn(s, d, SeqNum(isn), 64240, &LINUX_SYN)
        .to_vec()
        .unwrap()
}

/// An ACK with data, timestamps and two SACK blocks (Linux layout: NOP NOP TS NOP NOP SACK).
pub fn sack_data(v6: bool, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut raw = [0u8; 32];
    let blocks = [
        (
            SeqNum(ack.wrapping_add(1000)),
            SeqNum(ack.wrapping_add(2000)),
        ),
        (
            SeqNum(ack.wrapping_add(3000)),
            SeqNum(ack.wrapping_add(4000)),
        ),
    ];
    let sack = tcpseq::SackBlocks::encode(&blocks, &mut raw).unwrap();
    let opts = [
        TcpOption::Nop,
        TcpOption::Nop,
        TcpOption::Timestamps {
            tsval: 1000,
            tsecr: 2000,
        },
        TcpOption::Nop,
        TcpOption::Nop,
        TcpOption::Sack(sack),
    ];
    let (s, d) = ends(v6);
    Segment::data(s, d, SeqNum(seq), SeqNum(ack), 501, payload)
        .with_options(&opts)
        .to_vec()
        .unwrap()
}

/// Inserts `words` 4-byte IPv4 options (NOPs, then EOL) after the fixed IPv4 header.
pub fn with_ipv4_options(p: &[u8], words: usize) -> Vec<u8> {
    let mut q = p[..20].to_vec();
    let mut opts = vec![1u8; words * 4];
    if let Some(last) = opts.last_mut() {
        *last = 0;
    }
    q.extend_from_slice(&opts);
    q.extend_from_slice(&p[20..]);
    q[0] = 0x40 | (5 + words as u8);
    let total = q.len() as u16;
    q[2..4].copy_from_slice(&total.to_be_bytes());
    tcpseq::Ipv4Packet::new_unchecked(&mut q[..]).fill_checksum();
    q
}

/// Inserts `n` 8-byte destination-options headers (PadN) between IPv6 and TCP.
pub fn with_ipv6_dest_opts(p: &[u8], n: usize) -> Vec<u8> {
    let mut q = p[..40].to_vec();
    let mut next = p[6];
    let mut exts = Vec::new();
    for _ in 0..n {
        let mut h = vec![next, 0, 1, 4, 0, 0, 0, 0];
        h.append(&mut exts);
        exts = h;
        next = 60;
    }
    q[6] = next;
    q.extend_from_slice(&exts);
    q.extend_from_slice(&p[40..]);
    let plen = (q.len() - 40) as u16;
    q[4..6].copy_from_slice(&plen.to_be_bytes());
    q
}

/// etherparse's view of the TCP segment.
pub fn ether_tcp(p: &[u8]) -> TcpSlice<'_> {
    let sliced = SlicedPacket::from_ip(p).expect("etherparse parses the packet");
    match sliced.transport {
        Some(TransportSlice::Tcp(t)) => t,
        other => panic!("etherparse finds no TCP: {other:?}"),
    }
}

/// Verifies both checksums by etherparse's independent full recomputation.
pub fn assert_checksums_by_etherparse(p: &[u8]) {
    let sliced = SlicedPacket::from_ip(p).expect("etherparse parses the packet");
    let Some(TransportSlice::Tcp(t)) = sliced.transport else {
        panic!("etherparse finds no TCP");
    };
    match sliced.net {
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            assert_eq!(
                t.calc_checksum_ipv4(h.source(), h.destination()).unwrap(),
                t.checksum(),
                "TCP checksum (IPv4)"
            );
            assert_eq!(
                h.to_header().calc_header_checksum(),
                h.header_checksum(),
                "IPv4 header checksum"
            );
        }
        Some(NetSlice::Ipv6(ip)) => {
            let h = ip.header();
            assert_eq!(
                t.calc_checksum_ipv6(h.source(), h.destination()).unwrap(),
                t.checksum(),
                "TCP checksum (IPv6)"
            );
        }
        None => panic!("etherparse finds no IP header"),
    }
}

/// Puts a complete packet into the state the kernel hands over for CHECKSUM_PARTIAL: the TCP
/// checksum field holds the folded pseudo-header sum.
pub fn make_partial(p: &mut [u8]) {
    let pkt = TcpIpPacket::new_checked(&*p).unwrap();
    let sum = checksum::fold(checksum::pseudo_header(
        pkt.src_addr(),
        pkt.dst_addr(),
        pkt.tcp_len(),
    ));
    let at = pkt.tcp_offset() + 16;
    p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
}

/// All options of a parsed packet (panics on malformed ones: test packets are valid).
pub fn options_of(p: &[u8]) -> Vec<String> {
    let pkt = TcpIpPacket::new_checked(p).unwrap();
    let tcp = pkt.tcp();
    tcp.options().map(|o| format!("{:?}", o.unwrap())).collect()
}

pub fn flags_of(t: &TcpSlice<'_>) -> Flags {
    let bits = [
        (t.fin(), Flags::FIN),
        (t.syn(), Flags::SYN),
        (t.rst(), Flags::RST),
        (t.psh(), Flags::PSH),
        (t.ack(), Flags::ACK),
        (t.urg(), Flags::URG),
        (t.ece(), Flags::ECE),
        (t.cwr(), Flags::CWR),
    ];
    bits.iter()
        .filter(|(set, _)| *set)
        .fold(Flags(0), |acc, (_, f)| acc | *f)
}
