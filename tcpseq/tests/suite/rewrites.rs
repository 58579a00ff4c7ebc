//! Each rewrite in both families: the new value reads back, both checksums verify by
//! etherparse's full recomputation, and no other byte changes.

use std::net::IpAddr;

use tcpseq::options::{MSS, SACK, TIMESTAMPS};
use tcpseq::{Checksum, Error, Flags, SeqAdjust, SeqNum, TcpIpPacket, TcpOption};

use crate::common::*;

/// Offsets where two equally long buffers differ.
fn diff(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&i| a[i] != b[i]).collect()
}

/// Runs `edit` on a copy of `orig` and checks checksums; returns the new bytes and the offsets
/// that changed, excluding the checksum fields.
fn rewrite(orig: &[u8], edit: impl FnOnce(&mut TcpIpPacket<&mut [u8]>)) -> (Vec<u8>, Vec<usize>) {
    let mut p = orig.to_vec();
    let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
    edit(&mut pkt);
    assert!(pkt.checksums_ok());
    let tcp_check = pkt.tcp_offset() + 16;
    let v4 = orig[0] >> 4 == 4;
    assert_checksums_by_etherparse(&p);
    let changed = diff(orig, &p)
        .into_iter()
        .filter(|&i| i != tcp_check && i != tcp_check + 1 && !(v4 && (i == 10 || i == 11)))
        .collect();
    (p, changed)
}

fn range(start: usize, len: usize) -> Vec<usize> {
    (start..start + len).collect()
}

/// Asserts that something changed, and only inside `allowed`.
fn assert_within(changed: &[usize], allowed: Vec<usize>) {
    assert!(!changed.is_empty(), "nothing changed");
    assert!(
        changed.iter().all(|i| allowed.contains(i)),
        "changed {changed:?}, allowed {allowed:?}"
    );
}

fn tcp_at(p: &[u8]) -> usize {
    TcpIpPacket::new_checked(p).unwrap().tcp_offset()
}

#[test]
fn ports() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"ports");
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| {
            pkt.set_src_port(1);
            pkt.set_dst_port(0xfffe);
        });
        assert_within(&changed, range(t, 4));
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        assert_eq!((pkt.tcp().src_port(), pkt.tcp().dst_port()), (1, 0xfffe));
    }
}

#[test]
fn seq_and_ack() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"seq");
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| {
            pkt.set_seq(SeqNum(0xdead_beef));
            pkt.set_ack(SeqNum(u32::MAX));
        });
        assert_within(&changed, range(t + 4, 8));
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(pkt.tcp().seq(), SeqNum(0xdead_beef));
        assert_eq!(pkt.tcp().ack(), SeqNum(u32::MAX));
    }
}

#[test]
fn window_raw_and_scaled() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"win");
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| pkt.set_window(0));
        assert_within(&changed, range(t + 14, 2));
        assert_eq!(TcpIpPacket::new_checked(&p[..]).unwrap().tcp().window(), 0);
        rewrite(&orig, |pkt| {
            // 1 MiB with scale 7 is 8192 units; 1000 bytes round down to 7 units (896 bytes).
            assert_eq!(pkt.set_window_bytes(1 << 20, 7), 1 << 20);
            assert_eq!(pkt.tcp().window(), 8192);
            assert_eq!(pkt.tcp().window_bytes(7), 1 << 20);
            assert_eq!(pkt.set_window_bytes(1000, 7), 896);
            assert_eq!(pkt.tcp().window(), 7);
            // Too large for the field at this scale: saturates.
            assert_eq!(pkt.set_window_bytes(u32::MAX, 2), 65535 << 2);
            assert_eq!(pkt.tcp().window(), 65535);
            // Scales above 14 are treated as 14 (RFC 7323).
            assert_eq!(pkt.set_window_bytes(1 << 29, 20), 1 << 29);
            assert_eq!(pkt.tcp().window(), 1 << 15);
        });
    }
}

#[test]
fn flags() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"f");
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| pkt.set_flags(Flags::FIN | Flags::ACK));
        assert_within(&changed, range(t + 13, 1));
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(pkt.tcp().flags(), Flags::FIN | Flags::ACK);
        assert_eq!(pkt.tcp().header_len(), 52);
    }
}

#[test]
fn addresses_fix_both_checksums() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"addresses");
        let (s, d) = other_addrs(v6);
        let (p, changed) = rewrite(&orig, |pkt| {
            pkt.set_src_addr(s).unwrap();
            pkt.set_dst_addr(d).unwrap();
        });
        let (src_at, len) = if v6 { (8, 16) } else { (12, 4) };
        let mut want = range(src_at, len);
        want.extend(range(src_at + len, len));
        want.retain(|&i| orig[i] != p[i]);
        assert_eq!(changed, want);
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        assert_eq!((pkt.src_addr(), pkt.dst_addr()), (s, d));
        // The other family is refused without changing anything.
        let (s_other, _) = other_addrs(!v6);
        let mut q = orig.clone();
        let mut pkt = TcpIpPacket::new_checked(&mut q[..]).unwrap();
        assert!(matches!(
            pkt.set_src_addr(s_other),
            Err(Error::FamilyMismatch(_))
        ));
        assert!(matches!(
            pkt.set_dst_addr(s_other),
            Err(Error::FamilyMismatch(_))
        ));
        assert_eq!(q, orig);
    }
}

#[test]
fn sack_blocks_shift_and_acks_unmap() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 5000, b"sack");
        let (p, changed) = rewrite(&orig, |pkt| {
            assert_eq!(pkt.map_sack(|s| s + 0x8000_0000), Ok(2));
        });
        // 16 edge bytes, at options offset 14 (NOP NOP TS NOP NOP kind len).
        let t = tcp_at(&orig);
        assert_within(&changed, range(t + 20 + 14, 16));
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        let tcp = pkt.tcp();
        let blocks: Vec<_> = tcp
            .options()
            .filter_map(|o| match o.unwrap() {
                TcpOption::Sack(b) => Some(b.iter().collect::<Vec<_>>()),
                _ => None,
            })
            .next()
            .unwrap();
        assert_eq!(
            blocks,
            [
                (SeqNum(0x8000_0000 + 6000), SeqNum(0x8000_0000 + 7000)),
                (SeqNum(0x8000_0000 + 8000), SeqNum(0x8000_0000 + 9000)),
            ]
        );

        // The other direction's map moves ack and SACK edges back.
        let mut other = SeqAdjust::constant(100);
        assert!(other.shift_from(SeqNum(7000), 10));
        let (p, _) = rewrite(&orig, |pkt| pkt.adjust_ack(&other).unwrap());
        let pkt = TcpIpPacket::new_checked(&p[..]).unwrap();
        let tcp = pkt.tcp();
        assert_eq!(tcp.ack(), SeqNum(4900));
        let blocks: Vec<_> = tcp
            .options()
            .filter_map(|o| match o.unwrap() {
                TcpOption::Sack(b) => Some(b.iter().collect::<Vec<_>>()),
                _ => None,
            })
            .next()
            .unwrap();
        assert_eq!(
            blocks,
            [(SeqNum(5900), SeqNum(6900)), (SeqNum(7890), SeqNum(8890)),]
        );
    }
}

#[test]
fn seq_adjust_of_this_direction() {
    for v6 in [false, true] {
        let orig = sack_data(v6, u32::MAX - 1, 1, b"adj");
        let map = SeqAdjust::between(SeqNum(u32::MAX - 1), SeqNum(3));
        let (p, _) = rewrite(&orig, |pkt| pkt.adjust_seq(&map));
        assert_eq!(
            TcpIpPacket::new_checked(&p[..]).unwrap().tcp().seq(),
            SeqNum(3)
        );
    }
}

#[test]
fn timestamps_translate_and_back() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"ts");
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| {
            assert_eq!(pkt.translate_timestamps(u32::MAX, 5), Ok(true));
        });
        assert_within(&changed, range(t + 24, 8));
        let ts: Vec<_> = TcpIpPacket::new_checked(&p[..])
            .unwrap()
            .tcp()
            .options()
            .filter_map(|o| match o.unwrap() {
                TcpOption::Timestamps { tsval, tsecr } => Some((tsval, tsecr)),
                _ => None,
            })
            .collect();
        assert_eq!(ts, [(999, 2005)]);
        let (back, _) = rewrite(&p, |pkt| {
            pkt.translate_timestamps(1, 5u32.wrapping_neg()).unwrap();
        });
        assert_eq!(back, orig);

        // On a SYN (no ACK flag) TSecr is not meaningful and stays as it is.
        let syn = linux_syn(v6, 1);
        let (p, _) = rewrite(&syn, |pkt| {
            pkt.translate_timestamps(10, 10).unwrap();
        });
        let opts = options_of(&p);
        assert!(opts.contains(&format!(
            "{:?}",
            TcpOption::Timestamps {
                tsval: 0x1234_5678 + 10,
                tsecr: 0
            }
        )));
        // No timestamps option: nothing to do.
        let (s, d) = ends(v6);
        let bare = tcpseq::Segment::rst(s, d, SeqNum(1)).to_vec().unwrap();
        let (p, _) = rewrite(&bare, |pkt| {
            assert_eq!(pkt.translate_timestamps(1, 1), Ok(false));
        });
        assert_eq!(p, bare);
    }
}

#[test]
fn mss_clamp() {
    for v6 in [false, true] {
        let orig = linux_syn(v6, 1);
        let t = tcp_at(&orig);
        let (p, changed) = rewrite(&orig, |pkt| {
            assert_eq!(pkt.clamp_mss(1400), Ok(true));
            assert_eq!(pkt.clamp_mss(1400), Ok(false));
            assert_eq!(pkt.clamp_mss(9000), Ok(false));
        });
        assert_within(&changed, range(t + 22, 2));
        assert_eq!(options_of(&p)[0], "Mss(1400)");
    }
}

#[test]
fn option_fields_at_odd_offsets_keep_the_checksum() {
    // A single NOP before MSS puts the MSS value at odd header offsets 23..25.
    for v6 in [false, true] {
        let (s, d) = ends(v6);
        let opts = [TcpOption::Nop, TcpOption::Mss(1460), TcpOption::Nop];
        let orig = tcpseq::Segment::syn(s, d, SeqNum(1), 1, &opts)
            .to_vec()
            .unwrap();
        let t = tcp_at(&orig);
        let (_, changed) = rewrite(&orig, |pkt| {
            assert_eq!(pkt.clamp_mss(0x0101), Ok(true));
        });
        assert_within(&changed, range(t + 23, 2));
    }
}

#[test]
fn insert_option_into_a_linux_syn() {
    let exp = TcpOption::Experimental {
        kind: 253,
        exid: 0x726b,
        data: &[1, 0, 0xaa, 0xbb],
    };
    for v6 in [false, true] {
        let orig = linux_syn(v6, 1);
        let mut p = orig.clone();
        p.resize(orig.len() + 40, 0);
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let n = pkt.len();
        pkt.insert_option(&exp).unwrap();
        assert_eq!(pkt.len(), n + 8);
        assert_eq!(pkt.tcp().header_len(), 48);
        assert!(pkt.checksums_ok());
        let len = pkt.len();
        p.truncate(len);
        assert_checksums_by_etherparse(&p);
        let opts = options_of(&p);
        assert_eq!(opts.last().unwrap(), &format!("{exp:?}"));
        assert_eq!(p[..orig.len()].len(), orig.len());

        // Fill up to exactly 40 option bytes, then the next is refused unchanged.
        let mut pkt = TcpIpPacket::new_checked(p.clone()).unwrap();
        pkt.insert_option_growing(&exp).unwrap();
        pkt.insert_option_growing(&TcpOption::Mss(1)).unwrap();
        assert_eq!(pkt.tcp().header_len(), 60);
        let full = pkt.as_bytes().to_vec();
        assert_eq!(
            pkt.insert_option_growing(&TcpOption::SackPermitted),
            Err(Error::OptionSpace { need: 42 })
        );
        assert_eq!(pkt.as_bytes(), &full[..]);
        assert!(pkt.checksums_ok());

        // Without room in the buffer: an error, nothing changed.
        let mut q = orig.clone();
        let mut pkt = TcpIpPacket::new_checked(&mut q[..]).unwrap();
        assert_eq!(
            pkt.insert_option(&exp),
            Err(Error::BufferTooSmall {
                need: orig.len() + 8,
                have: orig.len()
            })
        );
        assert_eq!(q, orig);
    }
}

#[test]
fn insert_and_remove_move_the_payload_and_invert() {
    for v6 in [false, true] {
        let payload: Vec<u8> = (0..1001u32).map(|i| (i * 13) as u8).collect();
        let orig = sack_data(v6, 1, 2, &payload);
        let mut pkt = TcpIpPacket::new_checked(orig.clone()).unwrap();
        let opt = TcpOption::Unknown {
            kind: 30,
            data: &[7],
        };
        pkt.insert_option_growing(&opt).unwrap();
        assert_eq!(pkt.tcp().payload(), &payload[..]);
        assert_eq!(pkt.tcp().header_len(), 52 + 4);
        assert!(pkt.checksums_ok());
        assert_checksums_by_etherparse(pkt.as_bytes());
        pkt.remove_option(30).unwrap();
        assert_eq!(
            pkt.as_bytes(),
            &orig[..],
            "remove after insert is the identity"
        );
    }
}

#[test]
fn remove_option_packs_and_shrinks() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"payload");
        let mut p = orig.clone();
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        // Dropping the 18-byte SACK option leaves 14 bytes: header 52 -> 36.
        pkt.remove_option(SACK).unwrap();
        assert_eq!(pkt.tcp().header_len(), 36);
        assert_eq!(pkt.tcp().payload(), b"payload");
        assert!(pkt.checksums_ok());
        let n = pkt.len();
        assert_eq!(n, orig.len() - 16);
        assert_eq!(
            pkt.remove_option(SACK),
            Err(Error::NoOption(SACK)),
            "already gone"
        );
        pkt.remove_option(TIMESTAMPS).unwrap();
        assert_eq!(pkt.tcp().header_len(), 24, "four NOPs remain");
        assert_checksums_by_etherparse(pkt.as_bytes());

        let mut syn = linux_syn(v6, 1);
        let mut pkt = TcpIpPacket::new_checked(&mut syn[..]).unwrap();
        pkt.remove_option(MSS).unwrap();
        assert_eq!(pkt.tcp().header_len(), 36);
        assert!(pkt.checksums_ok());
        let opts = options_of(pkt.as_bytes());
        assert_eq!(opts.first().unwrap(), "SackPermitted");
    }
}

#[test]
fn malformed_options_fail_option_rewrites_without_change() {
    for v6 in [false, true] {
        let mut orig = sack_data(v6, 1, 2, b"x");
        let t = tcp_at(&orig);
        orig[t + 20 + 15] = 99; // the SACK option's length
        let mut p = orig.clone();
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        let bad = |e: Result<_, Error>| matches!(e, Err(Error::OptionLength { kind: 5, .. }));
        assert!(bad(pkt.adjust_ack(&SeqAdjust::constant(1)).map(|_| 0)));
        assert!(bad(pkt.map_sack(|s| s).map(|_| 0)));
        assert!(bad(pkt.translate_timestamps(1, 1).map(|_| 0)));
        assert!(bad(pkt.clamp_mss(1).map(|_| 0)));
        assert!(bad(pkt.remove_option(8).map(|_| 0)));
        assert!(bad(pkt.insert_option(&TcpOption::Nop).map(|_| 0)));
        assert_eq!(p, orig);
    }
}

#[test]
fn partial_checksum_mode_follows_only_the_pseudo_header() {
    for v6 in [false, true] {
        let complete = sack_data(v6, 1, 2, b"offloaded");
        let mut partial = complete.clone();
        make_partial(&mut partial);
        let (s, d) = other_addrs(v6);
        let edit = |pkt: &mut TcpIpPacket<Vec<u8>>| {
            pkt.set_seq(SeqNum(77));
            pkt.set_ack(SeqNum(78));
            pkt.set_window(1);
            pkt.set_src_port(9);
            pkt.map_sack(|x| x + 1).unwrap();
            pkt.translate_timestamps(3, 4).unwrap();
            pkt.set_src_addr(s).unwrap();
            pkt.set_dst_addr(d).unwrap();
            pkt.insert_option_growing(&TcpOption::WindowScale(1))
                .unwrap();
            pkt.remove_option(SACK).unwrap();
        };
        let mut a = TcpIpPacket::new_checked(partial)
            .unwrap()
            .with_checksum_mode(Checksum::Partial);
        edit(&mut a);
        assert!(a.checksums_ok(), "field holds the new pseudo-header sum");
        let want = tcpseq::checksum::fold(tcpseq::checksum::pseudo_header(s, d, a.tcp_len()));
        assert_eq!(a.tcp().checksum(), want);
        a.complete_partial();
        assert_eq!(a.checksum_mode(), Checksum::Complete);
        assert!(a.checksums_ok());
        assert_checksums_by_etherparse(a.as_bytes());

        // The same edits on the complete packet give the same bytes.
        let mut b = TcpIpPacket::new_checked(complete).unwrap();
        edit(&mut b);
        assert_eq!(a.as_bytes(), b.as_bytes());
    }
}

#[test]
fn gso_super_packets_rewrite_in_both_modes() {
    for v6 in [false, true] {
        let room = if v6 { 65535 } else { 65535 - 20 };
        let payload: Vec<u8> = (0..room - 52).map(|i| (i * 7) as u8).collect();
        let orig = sack_data(v6, 1, 2, &payload);
        let (s, _) = other_addrs(v6);
        let (p, _) = rewrite(&orig, |pkt| {
            pkt.set_seq(SeqNum(5));
            pkt.set_src_addr(s).unwrap();
            pkt.remove_option(SACK).unwrap();
        });
        assert_eq!(
            TcpIpPacket::new_checked(&p[..]).unwrap().tcp().payload(),
            &payload[..]
        );
        // Growing past the length field is refused.
        let mut big = orig.clone();
        big.resize(orig.len() + 40, 0);
        let mut pkt = TcpIpPacket::new_checked(&mut big[..]).unwrap();
        assert!(matches!(
            pkt.insert_option(&TcpOption::SackPermitted),
            Err(Error::TooLong { .. })
        ));
        let mut partial = orig.clone();
        make_partial(&mut partial);
        let mut pkt = TcpIpPacket::new_checked(&mut partial[..])
            .unwrap()
            .with_checksum_mode(Checksum::Partial);
        pkt.set_ack(SeqNum(1234));
        pkt.set_dst_addr(s).unwrap();
        assert!(pkt.checksums_ok());
        pkt.complete_partial();
        assert_checksums_by_etherparse(&partial);
    }
}

#[test]
fn rewrites_behind_ip_options_and_extension_headers() {
    let p4 = with_ipv4_options(&sack_data(false, 1, 2, b"o"), 3);
    let p6 = with_ipv6_dest_opts(&sack_data(true, 1, 2, b"o"), 3);
    for orig in [p4, p6] {
        let v6 = orig[0] >> 4 == 6;
        let (s, d) = other_addrs(v6);
        let (p, _) = rewrite(&orig, |pkt| {
            pkt.set_seq(SeqNum(1));
            pkt.set_src_addr(s).unwrap();
            pkt.set_dst_addr(d).unwrap();
            pkt.map_sack(|x| x - 1).unwrap();
        });
        let mut pkt = TcpIpPacket::new_checked(p).unwrap();
        pkt.insert_option_growing(&TcpOption::WindowScale(3))
            .unwrap();
        assert!(pkt.checksums_ok());
        assert_checksums_by_etherparse(pkt.as_bytes());
        let _: IpAddr = pkt.src_addr();
    }
}

#[test]
fn fill_checksums_repairs_a_corrupt_packet() {
    for v6 in [false, true] {
        let orig = sack_data(v6, 1, 2, b"fix");
        let mut p = orig.clone();
        let n = p.len();
        p[n - 1] ^= 0xff;
        if !v6 {
            p[8] = 1; // TTL, covered by the IPv4 header checksum
        }
        let mut pkt = TcpIpPacket::new_checked(&mut p[..]).unwrap();
        assert!(!pkt.checksums_ok());
        pkt.fill_checksums();
        assert!(pkt.checksums_ok());
        assert_checksums_by_etherparse(&p);
    }
}
