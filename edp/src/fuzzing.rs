//! Entry points shared by the cargo-fuzz target (`fuzz/`) and the fixed-seed run in the test
//! suite: every parser of untrusted bytes, fed the same input. Panics are the only failure.

use crate::crypto::DeterministicEntropy;
use crate::edp::{ServerConfig, ServerConn, ServerEvent, ANNOUNCEMENT};
use crate::message::{FrameDecoder, Message};
use crate::option::SynOption;
use std::time::Instant;

/// Runs `data` through every parser and checks that whatever decodes re-encodes to the same value.
pub fn exercise(data: &[u8]) {
    if let Ok(Some((message, _))) = Message::decode(data) {
        let again = Message::decode(&message.encode()).expect("re-encoded frame decodes");
        assert_eq!(again.map(|(m, _)| m), Some(message));
    }
    streaming(data);
    if let Ok(opt) = SynOption::decode(data) {
        assert_eq!(
            SynOption::decode_body(&opt.encode()[4..]).map(|o| o.flags),
            Ok(opt.flags)
        );
    }
    let _ = SynOption::decode_body(data);
    if let Ok(hello) = crate::message::Hello::from_compact(data) {
        assert_eq!(hello.to_compact()[..], data[..]);
    }
    let _ = crate::message::Challenge::from_compact(data);
    let _ = crate::message::Confirm::from_compact(data);
    server(data, true);
    server(data, false);
}

/// The frame decoder, fed in chunks whose sizes come from the input itself.
fn streaming(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else {
        return;
    };
    let step = usize::from(step % 17) + 1;
    let mut decoder = FrameDecoder::new();
    for chunk in rest.chunks(step) {
        if decoder.push(chunk).is_err() {
            return;
        }
        while let Ok(Some(_)) = decoder.next_message() {}
    }
}

/// The server's per-connection machine, optionally after a correct announcement.
fn server(data: &[u8], announced: bool) {
    let now = Instant::now();
    let mut conn = ServerConn::new(now, ServerConfig::default(), "fuzz");
    let mut rng = DeterministicEntropy::new(0);
    if announced {
        conn.handle(now, ServerEvent::Data(&ANNOUNCEMENT), &mut rng);
    }
    conn.handle(now, ServerEvent::Data(data), &mut rng);
    conn.handle(now, ServerEvent::Eof, &mut rng);
    while conn.poll_action().is_some() {}
    assert!(conn.is_done());
}

/// Valid inputs to start mutating from.
pub fn seeds() -> Vec<Vec<u8>> {
    use crate::message::*;
    let id = ConnId(0x0102_0304_0506_0708);
    let mut seeds = vec![
        Message::Heartbeat {
            conn_id: id,
            seq: 1,
            echo: 0,
            mac: [3; 16],
        }
        .encode(),
        Message::ResumeHello(Hello {
            conn_id: id,
            nonce: [1; 8],
        })
        .encode(),
        Message::Recover(Recover {
            conn_id: id,
            received: 9,
            sent: 10,
            mac: [2; 16],
        })
        .encode(),
        Message::Close {
            conn_id: id,
            reason: CloseReason::Finished,
        }
        .encode(),
        Message::Error {
            conn_id: Some(id),
            code: ErrorCode::Refused,
        }
        .encode(),
        Message::Init(Init {
            conn_id: id,
            public_key: [9; 32],
            sndbuf: 1 << 20,
            rcvbuf: 1 << 20,
            capabilities: Capabilities::ALL,
            host: Some(HostSignature {
                public_key: [3; 32],
                signature: [4; 64],
            }),
        })
        .encode(),
        SynOption::new(crate::option::SynFlags::RESUME, Some(7)).encode(),
        Hello {
            conn_id: id,
            nonce: [5; 8],
        }
        .to_compact()
        .to_vec(),
        Challenge {
            nonce: [6; 8],
            mac: [7; 16],
        }
        .to_compact()
        .to_vec(),
    ];
    let two: Vec<u8> = seeds[..2].concat();
    seeds.push(two);
    seeds
}
