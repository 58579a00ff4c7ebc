use super::*;

pub(crate) fn samples() -> Vec<Message> {
    let id = ConnId(0x0123_4567_89AB_CDEF);
    let host = Some(HostSignature {
        public_key: [7; 32],
        signature: [8; 64],
    });
    vec![
        Message::Init(Init {
            conn_id: id,
            public_key: [1; 32],
            sndbuf: u32::MAX,
            rcvbuf: 131_072,
            capabilities: Capabilities::ALL,
            host,
        }),
        Message::InitAck(InitAck {
            conn_id: id,
            public_key: [2; 32],
            sndbuf: u32::MAX,
            rcvbuf: u32::MAX,
            capabilities: Capabilities(u32::MAX),
            host,
            confirm: [3; 16],
        }),
        Message::ResumeHello(Hello {
            conn_id: id,
            nonce: [4; 8],
        }),
        Message::ResumeChallenge {
            conn_id: id,
            challenge: Challenge {
                nonce: [5; 8],
                mac: [6; 16],
            },
        },
        Message::ResumeConfirm {
            conn_id: id,
            confirm: Confirm { mac: [7; 16] },
        },
        Message::Recover(Recover {
            conn_id: id,
            received: u64::MAX,
            sent: 1 << 40,
            mac: [9; 16],
        }),
        Message::Heartbeat {
            conn_id: id,
            seq: 3,
            echo: u64::MAX,
            mac: [4; 16],
        },
        Message::Close {
            conn_id: id,
            reason: CloseReason::GaveUp,
        },
        Message::Error {
            conn_id: None,
            code: ErrorCode::AuthenticationFailed,
        },
        Message::Migrate {
            conn_id: id,
            generation: u32::MAX,
            step: MigrateStep::Arrived,
            port: 65535,
            mac: [3; 16],
        },
        Message::Probe {
            token: u32::MAX,
            client: "[2001:db8::1]:65535".parse().unwrap(),
            server: "[2001:db8::2]:443".parse().unwrap(),
        },
        Message::ProbeAck {
            conn_id: id,
            client: "192.0.2.1:40000".parse().unwrap(),
            server: "198.51.100.2:80".parse().unwrap(),
        },
    ]
}

#[test]
fn every_message_round_trips_and_fits_a_frame() {
    let samples = samples();
    assert_eq!(samples.len(), usize::from(MESSAGE_VARIANTS));
    for message in samples {
        let frame = message.encode();
        // The largest (InitAck with a host signature, all varints at their widest) is well below
        // the limit; README documents "about 170 bytes".
        assert!(frame.len() <= 180, "{message:?} is {} bytes", frame.len());
        assert!(frame.len() <= HEADER_LEN + MAX_FRAME_LEN);
        assert_eq!(
            Message::decode(&frame),
            Ok(Some((message.clone(), frame.len())))
        );
    }
}

#[test]
fn golden_bytes_heartbeat_and_hello() {
    let hb = Message::Heartbeat {
        conn_id: ConnId(1),
        seq: 300,
        echo: 2,
        mac: [0xEE; 16],
    };
    // len 22 | version 1 | tag 6 | conn id varint 1 | seq varint 300 = ac 02 | echo 2 | mac
    let mut expected = vec![0, 22, 1, 6, 1, 0xAC, 0x02, 2];
    expected.extend_from_slice(&[0xEE; 16]);
    assert_eq!(hb.encode(), expected);
    let hello = Message::ResumeHello(Hello {
        conn_id: ConnId(2),
        nonce: [0xAA; 8],
    });
    let mut expected = vec![0, 11, 1, 2, 2];
    expected.extend_from_slice(&[0xAA; 8]);
    assert_eq!(hello.encode(), expected);
}

#[test]
fn every_truncation_asks_for_more_input() {
    for message in samples() {
        let frame = message.encode();
        for cut in 0..frame.len() {
            assert_eq!(Message::decode(&frame[..cut]), Ok(None), "cut at {cut}");
        }
    }
}

#[test]
fn decoder_accepts_input_one_byte_at_a_time() {
    let stream: Vec<u8> = samples().iter().flat_map(Message::encode).collect();
    let mut decoder = FrameDecoder::new();
    let mut out = Vec::new();
    for byte in &stream {
        decoder.push(std::slice::from_ref(byte)).unwrap();
        while let Some(message) = decoder.next_message().unwrap() {
            out.push(message);
        }
    }
    assert_eq!(out, samples());
    assert_eq!(decoder.buffered(), 0);
}

#[test]
fn bytes_after_the_last_frame_are_handed_back() {
    let mut decoder = FrameDecoder::new();
    let mut input = samples()[6].encode();
    input.extend_from_slice(b"GET / HTTP/1.0\r\n");
    decoder.push(&input).unwrap();
    assert_eq!(decoder.next_message().unwrap(), Some(samples()[6].clone()));
    // The application data does not look like a frame: it is an error for the decoder, but the
    // caller who knows the handshake is over takes the bytes first.
    assert_eq!(decoder.take_remaining(), b"GET / HTTP/1.0\r\n");
    assert_eq!(decoder.next_message(), Ok(None));
}

#[test]
fn oversize_is_rejected_from_the_header_alone() {
    assert_eq!(
        Message::decode(&[0x02, 0x01]),
        Err(FrameError::Oversize(513))
    );
    assert_eq!(
        Message::decode(&[0xFF, 0xFF]),
        Err(FrameError::Oversize(65535))
    );
    let mut decoder = FrameDecoder::new();
    decoder.push(&[0xFF, 0xFF]).unwrap();
    assert_eq!(decoder.next_message(), Err(FrameError::Oversize(65535)));
    // The decoder stays failed: a stream cannot be resynchronised.
    decoder.push(&samples()[6].encode()).unwrap();
    assert_eq!(decoder.next_message(), Err(FrameError::Oversize(65535)));
}

#[test]
fn buffer_limit_holds() {
    let mut decoder = FrameDecoder::new();
    decoder.push(&vec![0u8; MAX_BUFFERED]).unwrap();
    assert_eq!(decoder.push(&[0]), Err(FrameError::BufferFull));
    assert_eq!(decoder.next_message(), Err(FrameError::BufferFull));
}

#[test]
fn header_and_body_errors() {
    assert_eq!(Message::decode(&[0, 0]), Err(FrameError::Empty));
    assert_eq!(
        Message::decode(&[0, 2, 9, 6]),
        Err(FrameError::UnsupportedVersion(9))
    );
    assert_eq!(
        Message::decode(&[0, 2, 1, 12]),
        Err(FrameError::UnknownMessage(12))
    );
    assert_eq!(
        Message::decode(&[0, 2, 1, 0x7F]),
        Err(FrameError::UnknownMessage(0x7F))
    );
    assert!(matches!(
        Message::decode(&[0, 1, 1]),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        Message::decode(&[0, 3, 1, 6, 1]),
        Err(FrameError::Malformed(_))
    ));
    assert!(matches!(
        Message::decode(&[0, 3, 1, 0x80, 0x01]),
        Err(FrameError::Malformed(_))
    ));
    // Close with an unknown reason index.
    assert!(matches!(
        Message::decode(&[0, 4, 1, 7, 1, 9]),
        Err(FrameError::Malformed(_))
    ));
    assert_eq!(
        Message::decode(&[0, 5, 1, 7, 1, 0, 0]),
        Err(FrameError::TrailingBytes(1))
    );
}

#[test]
fn heartbeat_verifies_only_with_its_key_and_fields() {
    let key = SecretKey::from_bytes([5; 32]);
    let hb = Message::heartbeat(&key, ConnId(7), 10, 9);
    assert!(hb.verifies(&key));
    assert!(!hb.verifies(&SecretKey::from_bytes([6; 32])));
    let Message::Heartbeat { mac, .. } = hb else {
        unreachable!()
    };
    let replayed_with_new_seq = Message::Heartbeat {
        conn_id: ConnId(7),
        seq: 11,
        echo: 9,
        mac,
    };
    assert!(!replayed_with_new_seq.verifies(&key));
    assert!(!Message::Close {
        conn_id: ConnId(7),
        reason: CloseReason::Finished
    }
    .verifies(&key));
}

#[test]
fn migrate_verifies_only_with_its_key_and_fields() {
    let key = SecretKey::from_bytes([5; 32]);
    let m = Message::migrate(&key, ConnId(7), 2, MigrateStep::Arrived, 443);
    assert!(m.verifies(&key));
    assert!(!m.verifies(&SecretKey::from_bytes([6; 32])));
    let Message::Migrate { mac, .. } = m else {
        unreachable!()
    };
    // Each field is covered: a changed generation, step or port no longer verifies.
    for (generation, step, port) in [
        (3, MigrateStep::Arrived, 443),
        (2, MigrateStep::Leaving, 443),
        (2, MigrateStep::Arrived, 444),
    ] {
        let forged = Message::Migrate {
            conn_id: ConnId(7),
            generation,
            step,
            port,
            mac,
        };
        assert!(!forged.verifies(&key), "{forged:?}");
    }
    // A heartbeat's MAC is no move's MAC (distinct labels).
    let Message::Heartbeat { mac, .. } = Message::heartbeat(&key, ConnId(7), 2, 0) else {
        unreachable!()
    };
    let relabelled = Message::Migrate {
        conn_id: ConnId(7),
        generation: 2,
        step: MigrateStep::Leaving,
        port: 0,
        mac,
    };
    assert!(!relabelled.verifies(&key));
}
