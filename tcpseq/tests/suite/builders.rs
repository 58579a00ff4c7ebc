//! Every builder in both families, read back by etherparse.

use tcpseq::{parse_ip_tcp, Error, Flags, Segment, SeqNum, TcpOption};

use crate::common::*;
use crate::crosscheck::assert_same_as_etherparse;

/// Checks a built packet with etherparse and returns our view's key fields.
fn check(p: &[u8]) -> (SeqNum, SeqNum, Flags, u16, Vec<u8>) {
    assert_same_as_etherparse(p);
    assert_checksums_by_etherparse(p);
    let pkt = parse_ip_tcp(p).unwrap();
    assert!(pkt.checksums_ok());
    let t = pkt.tcp();
    (
        t.seq(),
        t.ack(),
        t.flags(),
        t.window(),
        t.payload().to_vec(),
    )
}

#[test]
fn zero_window_ack() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let p = Segment::zero_window_ack(s, d, SeqNum(10), SeqNum(u32::MAX))
            .to_vec()
            .unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(10), SeqNum(u32::MAX), Flags::ACK, 0, vec![])
        );
        assert_eq!(p.len(), if v6 { 60 } else { 40 });
    }
}

#[test]
fn window_update() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let p = Segment::window_update(s, d, SeqNum(10), SeqNum(20), 4321)
            .to_vec()
            .unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(10), SeqNum(20), Flags::ACK, 4321, vec![])
        );
    }
}

#[test]
fn keepalive_probe_sits_one_before_snd_una() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let probe = Segment::keepalive(s, d, SeqNum(0), SeqNum(5), 100);
        let p = probe.to_vec().unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(u32::MAX), SeqNum(5), Flags::ACK, 100, vec![])
        );
        let p = probe.with_payload(&[0]).to_vec().unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(u32::MAX), SeqNum(5), Flags::ACK, 100, vec![0])
        );
    }
}

#[test]
fn rst_and_rst_ack() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let p = Segment::rst(s, d, SeqNum(99)).to_vec().unwrap();
        assert_eq!(check(&p), (SeqNum(99), SeqNum(0), Flags::RST, 0, vec![]));
        let p = Segment::rst_ack(s, d, SeqNum(0), SeqNum(100))
            .to_vec()
            .unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(0), SeqNum(100), Flags::RST | Flags::ACK, 0, vec![])
        );
    }
}

#[test]
fn syn_and_syn_ack_carry_their_options() {
    let exp = TcpOption::Experimental {
        kind: 253,
        exid: 0x726b,
        data: &[1, 0xaa, 0xbb, 0xcc],
    };
    let mut opts = LINUX_SYN.to_vec();
    opts.push(exp);
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let p = Segment::syn(s, d, SeqNum(7), 65535, &opts)
            .to_vec()
            .unwrap();
        assert_eq!(check(&p), (SeqNum(7), SeqNum(0), Flags::SYN, 65535, vec![]));
        // 20 Linux bytes + 8 experimental = 28 option bytes.
        assert_eq!(parse_ip_tcp(&p).unwrap().tcp().header_len(), 48);
        let got: Vec<_> = parse_ip_tcp(&p)
            .unwrap()
            .tcp()
            .options()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
            .into_iter()
            .map(|o| format!("{o:?}"))
            .collect();
        let want: Vec<_> = opts.iter().map(|o| format!("{o:?}")).collect();
        assert_eq!(got, want);

        let p = Segment::syn_ack(d, s, SeqNum(1000), SeqNum(8), 65160, &opts[..3])
            .to_vec()
            .unwrap();
        assert_eq!(
            check(&p),
            (
                SeqNum(1000),
                SeqNum(8),
                Flags::SYN | Flags::ACK,
                65160,
                vec![]
            )
        );
        // MSS + SACK-permitted + timestamps = 16 bytes, already a multiple of 4.
        assert_eq!(parse_ip_tcp(&p).unwrap().tcp().header_len(), 36);
    }
}

#[test]
fn odd_sized_options_are_zero_padded() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let opts = [TcpOption::WindowScale(14)];
        let p = Segment::syn(s, d, SeqNum(1), 100, &opts).to_vec().unwrap();
        check(&p);
        let pkt = parse_ip_tcp(&p).unwrap();
        assert_eq!(pkt.tcp().options_bytes(), &[3, 3, 14, 0]);
    }
}

#[test]
fn data_segment() {
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let payload: Vec<u8> = (0..1449u32).map(|i| i as u8).collect();
        let p = Segment::data(s, d, SeqNum(5), SeqNum(6), 300, &payload)
            .with_hop_limit(7)
            .to_vec()
            .unwrap();
        assert_eq!(
            check(&p),
            (SeqNum(5), SeqNum(6), Flags::ACK | Flags::PSH, 300, payload)
        );
        assert_eq!(p[if v6 { 7 } else { 8 }], 7, "hop limit / TTL");
    }
}

#[test]
fn emit_into_a_caller_buffer() {
    let (s, d) = ends(false);
    let seg = Segment::data(s, d, SeqNum(1), SeqNum(2), 3, b"abc");
    let mut buf = [0xffu8; 100];
    assert_eq!(seg.wire_len(), Ok(43));
    assert_eq!(seg.emit(&mut buf), Ok(43));
    assert_eq!(buf[43..], [0xff; 57]);
    check(&buf[..43]);
    assert_eq!(
        seg.emit(&mut buf[..42]),
        Err(Error::BufferTooSmall { need: 43, have: 42 })
    );
}

#[test]
fn impossible_segments_are_errors() {
    let (s4, _) = ends(false);
    let (_, d6) = ends(true);
    assert!(matches!(
        Segment::rst(s4, d6, SeqNum(1)).to_vec(),
        Err(Error::FamilyMismatch(_))
    ));
    let (s, d) = ends(false);
    let big = [TcpOption::Unknown {
        kind: 30,
        data: &[0; 20],
    }; 2];
    assert_eq!(
        Segment::syn(s, d, SeqNum(1), 1, &big).to_vec(),
        Err(Error::OptionSpace { need: 44 })
    );
    let huge = vec![0u8; 65536];
    assert!(matches!(
        Segment::data(s, d, SeqNum(1), SeqNum(1), 1, &huge).to_vec(),
        Err(Error::TooLong { .. })
    ));
}
