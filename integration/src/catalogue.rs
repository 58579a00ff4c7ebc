//! Malformed SYNs for the server's rackd: bad rackd options and lengths, lying TCP data
//! offsets, IPv4 options, fragments. Each case uses its own source port, so that the test can
//! tell from `rackctl status` which ones the daemon took for a rackd SYN.
//!
//! The catalogue is deterministic: the sending program and the test build the same one.

use std::net::Ipv4Addr;

use edp::option::{SynOption, EXID, KIND};

use crate::craft::{flags, fragment, linux_syn_options, Rng, Segment};

/// What the daemon should make of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// A well-formed rackd SYN: the server's rackd starts negotiating.
    Negotiating,
    /// Not a rackd SYN: no flow.
    Ignored,
    /// Either is right (the kernel decides whether rackd sees the packet at all).
    Either,
}

/// One hostile input: a name for messages, the packets, and the expected outcome.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub sport: u16,
    pub packets: Vec<Vec<u8>>,
    pub expect: Expect,
}

/// Where the cases go.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// Source port of the first case; the others follow.
    pub first_sport: u16,
    /// How many random option bodies to try.
    pub garbage: usize,
    pub seed: u64,
}

/// A rackd option with a token, as a client's rackd sends it.
fn rackd_option(token: u32) -> Vec<u8> {
    SynOption::new(Default::default(), Some(token)).encode()
}

/// The rackd option bytes given, after a Linux SYN's usual options.
fn with_linux(option: &[u8]) -> Vec<u8> {
    let mut o = linux_syn_options(1);
    o.extend_from_slice(option);
    o
}

/// Every case, in sending order. The last is a well-formed rackd SYN: once the daemon shows it,
/// it has read everything before it (one queue, in order).
pub fn cases(t: &Target) -> Vec<Case> {
    let mut rng = Rng::new(t.seed);
    let mut out = Vec::new();
    let mut sport = t.first_sport;
    let mut add = |name: String, packets: Vec<Vec<u8>>, expect: Expect, sport: u16| {
        out.push(Case {
            name,
            sport,
            packets,
            expect,
        });
    };
    let exid = EXID.to_be_bytes();
    let options: Vec<(&str, Vec<u8>)> = vec![
        ("option length 0", vec![KIND, 0, exid[0], exid[1], 1, 0]),
        ("option length 1", vec![KIND, 1, exid[0], exid[1], 1, 0]),
        // Longer than the whole option area that follows it.
        ("option length 40 (overlong)", {
            let mut o = vec![KIND, 40, exid[0], exid[1], 1, 0];
            o.extend_from_slice(&[0xAB; 6]);
            o
        }),
        ("option length 255", vec![KIND, 255, exid[0], exid[1], 1, 0]),
        ("truncated ExID", vec![KIND, 3, exid[0]]),
        ("ExID only", vec![KIND, 4, exid[0], exid[1]]),
        ("version only", vec![KIND, 5, exid[0], exid[1], 1]),
        (
            "version 0",
            vec![KIND, 10, exid[0], exid[1], 0, 0, 1, 2, 3, 4],
        ),
        (
            "length 8 (half a token)",
            vec![KIND, 8, exid[0], exid[1], 1, 0, 1, 2],
        ),
        ("length 11 in version 1", {
            let mut o = vec![KIND, 11, exid[0], exid[1], 1, 0];
            o.extend_from_slice(&[1, 2, 3, 4, 5]);
            o
        }),
        ("foreign ExID", vec![KIND, 10, 0x12, 0x34, 1, 0, 1, 2, 3, 4]),
        // A version-1 option without a token says "rackd here" but cannot be paired.
        ("no token", vec![KIND, 6, exid[0], exid[1], 1, 0]),
        // An option that claims to run past the end of the header.
        (
            "option list ends inside an option",
            vec![1, 1, KIND, 10, exid[0], exid[1]],
        ),
    ];
    let syn =
        |sport: u16, rng: &mut Rng| Segment::syn(t.src, sport, t.dst, t.dport, rng.next_u32());
    for (name, option) in options {
        let p = syn(sport, &mut rng)
            .with_options(with_linux(&option))
            .to_bytes();
        add(name.to_owned(), vec![p], Expect::Ignored, sport);
        sport += 1;
    }
    // Random bodies behind a correct kind, length and ExID: whatever rackd's own codec accepts
    // with a token is a rackd SYN, the rest is not.
    for i in 0..t.garbage {
        let len = rng.range(0, 17) as usize;
        let mut option = vec![KIND, (4 + len) as u8, exid[0], exid[1]];
        option.extend(rng.bytes(len));
        let expect = match SynOption::decode(&option) {
            Ok(SynOption { token: Some(_), .. }) => Expect::Negotiating,
            _ => Expect::Ignored,
        };
        let p = syn(sport, &mut rng)
            .with_options(with_linux(&option))
            .to_bytes();
        add(
            format!("garbage body {i} ({option:02x?})"),
            vec![p],
            expect,
            sport,
        );
        sport += 1;
    }
    let good = |sport: u16, rng: &mut Rng| {
        let token = rng.next_u32();
        syn(sport, rng).with_options(with_linux(&rackd_option(token)))
    };
    for (name, offset) in [
        ("data offset 15, past the packet", 15),
        ("data offset 3, inside the fixed header", 3),
        ("data offset 0", 0),
    ] {
        let mut s = good(sport, &mut rng);
        s.data_offset = Some(offset);
        add(name.to_owned(), vec![s.to_bytes()], Expect::Ignored, sport);
        sport += 1;
    }
    {
        let mut s = good(sport, &mut rng);
        s.flags = flags::SYN | flags::ACK;
        s.ack = rng.next_u32();
        add(
            "unsolicited SYN-ACK with the option".into(),
            vec![s.to_bytes()],
            Expect::Ignored,
            sport,
        );
        sport += 1;
    }
    {
        let mut s = good(sport, &mut rng);
        s.flags = flags::SYN | flags::RST;
        add(
            "SYN+RST with the option".into(),
            vec![s.to_bytes()],
            Expect::Ignored,
            sport,
        );
        sport += 1;
    }
    {
        // IPv4 options shift the TCP header: rackd must find the option behind them.
        let mut s = good(sport, &mut rng);
        s.ip_options = vec![1, 1, 1, 0];
        add(
            "IPv4 options (NOP NOP NOP EOL)".into(),
            vec![s.to_bytes()],
            Expect::Negotiating,
            sport,
        );
        sport += 1;
    }
    {
        // Record route with room for one address (the router fills it in).
        let mut s = good(sport, &mut rng);
        s.ip_options = vec![7, 7, 4, 0, 0, 0, 0, 1];
        add(
            "IPv4 record-route option".into(),
            vec![s.to_bytes()],
            Expect::Negotiating,
            sport,
        );
        sport += 1;
    }
    // Fragments: whether rackd sees the reassembled SYN, the first piece or nothing depends on
    // where the kernel reassembles; none of it may hurt.
    let fragmented: [(&str, &[usize], bool); 4] = [
        ("fragments, TCP header cut after 8 bytes", &[0, 8], false),
        ("fragments, options in a second piece", &[0, 24], false),
        ("fragments, three pieces", &[0, 8, 16], false),
        ("first fragment only (never completes)", &[0, 24], true),
    ];
    for (i, (name, cuts, last_more)) in fragmented.into_iter().enumerate() {
        let mut s = good(sport, &mut rng);
        s.ip_id = 0x4000 + i as u16;
        let mut pieces = fragment(&s.to_bytes(), cuts, last_more);
        if last_more {
            pieces.truncate(1);
        }
        add(name.to_owned(), pieces, Expect::Either, sport);
        sport += 1;
    }
    {
        // Overlapping fragments: the start of the TCP header arrives twice.
        let s = good(sport, &mut rng);
        let mut pieces = fragment(&s.to_bytes(), &[0, 8], false);
        let overlap = fragment(&s.to_bytes(), &[0, 16], false).remove(0);
        pieces.insert(1, overlap);
        add(
            "overlapping fragments".into(),
            pieces,
            Expect::Either,
            sport,
        );
        sport += 1;
    }
    let sentinel = good(sport, &mut rng).to_bytes();
    add(
        "sentinel (well-formed)".into(),
        vec![sentinel],
        Expect::Negotiating,
        sport,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            src: Ipv4Addr::new(203, 0, 113, 2),
            dst: Ipv4Addr::new(198, 51, 100, 2),
            dport: 5009,
            first_sport: 20000,
            garbage: 64,
            seed: 7,
        }
    }

    #[test]
    fn catalogue_is_deterministic_with_distinct_ports() {
        let (a, b) = (cases(&target()), cases(&target()));
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(&b) {
            assert_eq!((x.sport, &x.packets), (y.sport, &y.packets));
        }
        let mut ports: Vec<u16> = a.iter().map(|c| c.sport).collect();
        ports.dedup();
        assert_eq!(ports.len(), a.len());
        assert_eq!(a.last().unwrap().expect, Expect::Negotiating);
    }

    #[test]
    fn garbage_mixes_accepted_and_refused_bodies() {
        let all = cases(&target());
        let garbage = all.iter().filter(|c| c.name.starts_with("garbage"));
        let accepted = garbage.filter(|c| c.expect == Expect::Negotiating).count();
        assert!(accepted > 0 && accepted < 64, "{accepted} of 64 accepted");
    }
}
