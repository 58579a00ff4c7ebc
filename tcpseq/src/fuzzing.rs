//! One entry point that runs every parser and rewrite on arbitrary bytes, shared by the
//! cargo-fuzz target (`fuzz/`) and the fixed-seed run in the test suite. Not part of the API.

use crate::{
    Checksum, IpPacket, Ipv4Packet, Ipv6Packet, SeqAdjust, SeqNum, TcpIpPacket, TcpOption,
    TcpSegment,
};

/// Bytes of `data` taken as rewrite parameters before the packet.
pub const PARAMS: usize = 5;

/// Parses `data[PARAMS..]` with every view and, when it is a TCP/IP packet, applies every
/// rewrite with parameters from `data[..PARAMS]`. Panics only if a repaired packet does not
/// verify, which would be a bug.
pub fn exercise(data: &[u8]) {
    let (params, packet) = data.split_at(PARAMS.min(data.len()));
    let mut p = [0u8; PARAMS];
    p[..params.len()].copy_from_slice(params);
    let x = u32::from_be_bytes([p[1], p[2], p[3], p[4]]);
    read_all(packet);
    // Room for option insertion to grow the packet.
    let mut buf = Vec::with_capacity(packet.len() + 40);
    buf.extend_from_slice(packet);
    buf.resize(packet.len() + 40, 0);
    rewrite_all(&mut buf, p[0], x);
}

fn read_all(b: &[u8]) {
    if let Ok(ip) = IpPacket::new_checked(b) {
        let _ = ip.upper_layer();
        let _ = (ip.end(), ip.src_addr(), ip.dst_addr());
        match ip {
            IpPacket::V4(p) => {
                let _ = (
                    p.options(),
                    p.payload(),
                    p.verify_checksum(),
                    p.frag_offset(),
                );
            }
            IpPacket::V6(p) => {
                let _ = (p.payload(), p.flow_label(), p.traffic_class());
            }
        }
    }
    let _ = (Ipv4Packet::new_checked(b), Ipv6Packet::new_checked(b));
    if let Ok(t) = TcpSegment::new_checked(b) {
        let _ = t.options().count();
        let _ = (t.payload(), t.seq_len(), t.window_bytes(14), t.urgent());
    }
}

fn rewrite_all(buf: &mut [u8], op: u8, x: u32) {
    let Ok(pkt) = TcpIpPacket::new_checked(buf) else {
        return;
    };
    let mode = if op & 1 == 0 {
        Checksum::Complete
    } else {
        Checksum::Partial
    };
    let mut pkt = pkt.with_checksum_mode(mode);
    let _ = pkt.tcp_options().count();
    let _ = (pkt.tcp_payload(), pkt.src(), pkt.dst(), pkt.checksums_ok());
    pkt.set_seq(SeqNum(x));
    pkt.set_ack(SeqNum(!x));
    pkt.set_window_bytes(x, op >> 4);
    let other = pkt.dst_addr();
    let _ = pkt.set_src_addr(other);
    let _ = pkt.map_sack(|s| s + x);
    let _ = pkt.adjust_ack(&SeqAdjust::constant(x as i32));
    let _ = pkt.translate_timestamps(x, !x);
    let _ = pkt.clamp_mss(x as u16);
    if op & 2 == 0 {
        let _ = pkt.insert_option(&TcpOption::Experimental {
            kind: 253,
            exid: 0x726b,
            data: &[1, 2, 3, 4],
        });
    }
    let _ = pkt.remove_option(op % 10);
    pkt.fill_checksums();
    assert!(
        pkt.checksums_ok(),
        "a packet with filled checksums verifies"
    );
    assert!(
        TcpIpPacket::new_checked(pkt.as_bytes()).is_ok(),
        "a rewritten packet still parses"
    );
}
