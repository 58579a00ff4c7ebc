use super::*;
use crate::crypto::DeterministicEntropy;

const ID: ConnId = ConnId(0x1122_3344_5566_7788);

fn key(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

struct Run {
    now: Instant,
    rng: DeterministicEntropy,
}

impl Run {
    fn new(seed: u64) -> Self {
        Run {
            now: Instant::now(),
            rng: DeterministicEntropy::new(seed),
        }
    }

    fn initiator(&mut self, k: u8) -> (ResumeInitiator, Hello) {
        ResumeInitiator::start(self.now, &mut self.rng, ID, key(k), DEFAULT_TIMEOUT).unwrap()
    }

    fn responder(&mut self, hello: &Hello, k: u8) -> (ResumeResponder, Challenge) {
        ResumeResponder::start(self.now, &mut self.rng, hello, ID, key(k), DEFAULT_TIMEOUT).unwrap()
    }
}

#[test]
fn matching_keys_resume_and_exchange_recover_counts() {
    let mut run = Run::new(1);
    let (mut init, hello) = run.initiator(5);
    assert_eq!(init.state(), &ResumeState::ExpectChallenge);
    let (mut resp, challenge) = run.responder(&hello, 5);
    assert_eq!(resp.state(), &ResumeState::ExpectConfirm);
    let (confirm, i_done) = init.handle_challenge(run.now, &challenge).unwrap();
    assert_eq!(init.state(), &ResumeState::Resumed);
    assert_eq!(init.poll_timeout(), None);
    let r_done = resp.handle_confirm(run.now, &confirm).unwrap();
    assert_eq!(resp.state(), &ResumeState::Resumed);
    assert_eq!(
        (i_done.role, r_done.role),
        (Role::Initiator, Role::Responder)
    );

    let from_i = i_done.seal_recover(100, 200);
    assert_eq!(r_done.open_recover(&from_i), Ok((100, 200)));
    let from_r = r_done.seal_recover(200, 100);
    assert_eq!(i_done.open_recover(&from_r), Ok((200, 100)));
    // Reflection: a side's own Recover does not verify as the peer's.
    assert_eq!(
        i_done.open_recover(&from_i),
        Err(ResumeError::BadMac("recover"))
    );
    let mut altered = from_i;
    altered.received += 1;
    assert_eq!(
        r_done.open_recover(&altered),
        Err(ResumeError::BadMac("recover"))
    );
    let mut other_conn = from_i;
    other_conn.conn_id = ConnId(1);
    assert!(matches!(
        r_done.open_recover(&other_conn),
        Err(ResumeError::RecoverConnId { .. })
    ));
}

#[test]
fn wrong_key_fails_at_the_initiator() {
    let mut run = Run::new(2);
    let (mut init, hello) = run.initiator(5);
    let (_, challenge) = run.responder(&hello, 6);
    let err = init.handle_challenge(run.now, &challenge).unwrap_err();
    assert_eq!(err, ResumeError::BadMac("challenge"));
    assert_eq!(init.state(), &ResumeState::Failed(err.clone()));
    // A failed attempt stays failed, even when the right challenge arrives afterwards.
    assert_eq!(init.handle_challenge(run.now, &challenge).unwrap_err(), err);
}

#[test]
fn wrong_key_fails_at_the_responder() {
    // An impostor without the key answers a genuine challenge with a guessed confirm.
    let mut run = Run::new(3);
    let (_, hello) = run.initiator(7);
    let (mut resp, _) = run.responder(&hello, 5);
    let err = resp
        .handle_confirm(run.now, &Confirm { mac: [0; 16] })
        .unwrap_err();
    assert_eq!(err, ResumeError::BadMac("confirm"));
    assert!(matches!(resp.state(), ResumeState::Failed(_)));
}

#[test]
fn replayed_confirm_fails_against_a_fresh_challenge() {
    let mut run = Run::new(4);
    let (mut init, hello) = run.initiator(5);
    let (mut resp, challenge) = run.responder(&hello, 5);
    let (confirm, _) = init.handle_challenge(run.now, &challenge).unwrap();
    resp.handle_confirm(run.now, &confirm).unwrap();
    // The attacker replays the recorded Hello and Confirm.
    let (mut resp2, _) = run.responder(&hello, 5);
    assert_eq!(
        resp2.handle_confirm(run.now, &confirm).unwrap_err(),
        ResumeError::BadMac("confirm")
    );
}

#[test]
fn replayed_challenge_fails_against_a_fresh_hello() {
    let mut run = Run::new(5);
    let (_, hello) = run.initiator(5);
    let (_, old_challenge) = run.responder(&hello, 5);
    let (mut init2, _) = run.initiator(5);
    let err = init2.handle_challenge(run.now, &old_challenge).unwrap_err();
    assert_eq!(err, ResumeError::BadMac("challenge"));
}

#[test]
fn confirm_cannot_be_reflected_as_challenge_mac() {
    // The responder's challenge MAC, sent back as a confirm, must not verify.
    let mut run = Run::new(6);
    let (_, hello) = run.initiator(5);
    let (mut resp, challenge) = run.responder(&hello, 5);
    let err = resp
        .handle_confirm(run.now, &Confirm { mac: challenge.mac })
        .unwrap_err();
    assert_eq!(err, ResumeError::BadMac("confirm"));
}

#[test]
fn hello_for_another_connection_is_refused() {
    let mut run = Run::new(7);
    let hello = Hello {
        conn_id: ConnId(9),
        nonce: [1; 8],
    };
    let err = ResumeResponder::start(run.now, &mut run.rng, &hello, ID, key(5), DEFAULT_TIMEOUT)
        .unwrap_err();
    assert_eq!(
        err,
        ResumeError::ConnIdMismatch {
            expected: ID,
            got: ConnId(9)
        }
    );
}

#[test]
fn timeouts_fail_both_roles_and_late_messages_are_refused() {
    let mut run = Run::new(8);
    let (mut init, hello) = run.initiator(5);
    let (mut resp, challenge) = run.responder(&hello, 5);
    let deadline = run.now + DEFAULT_TIMEOUT;
    assert_eq!(init.poll_timeout(), Some(deadline));
    assert_eq!(resp.poll_timeout(), Some(deadline));
    init.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(init.state(), &ResumeState::ExpectChallenge);
    init.handle_timeout(deadline);
    assert_eq!(
        init.state(),
        &ResumeState::Failed(ResumeError::Timeout(DEFAULT_TIMEOUT))
    );
    assert_eq!(init.poll_timeout(), None);
    // A message arriving after the deadline fails even without a timer having fired.
    let (mut init2, hello2) = run.initiator(5);
    let late = run.now + DEFAULT_TIMEOUT + Duration::from_secs(1);
    let (_, challenge2) = run.responder(&hello2, 5);
    assert_eq!(
        init2.handle_challenge(late, &challenge2).unwrap_err(),
        ResumeError::Timeout(DEFAULT_TIMEOUT)
    );
    let (confirm, _) = {
        let (mut init3, hello3) = run.initiator(5);
        let (_, c3) = run.responder(&hello3, 5);
        init3.handle_challenge(run.now, &c3).unwrap()
    };
    let _ = challenge;
    assert_eq!(
        resp.handle_confirm(late, &confirm).unwrap_err(),
        ResumeError::Timeout(DEFAULT_TIMEOUT)
    );
}

#[test]
fn finished_attempts_refuse_more_messages() {
    let mut run = Run::new(9);
    let (mut init, hello) = run.initiator(5);
    let (mut resp, challenge) = run.responder(&hello, 5);
    let (confirm, _) = init.handle_challenge(run.now, &challenge).unwrap();
    resp.handle_confirm(run.now, &confirm).unwrap();
    assert!(matches!(
        init.handle_challenge(run.now, &challenge),
        Err(ResumeError::Finished(_))
    ));
    assert!(matches!(
        resp.handle_confirm(run.now, &confirm),
        Err(ResumeError::Finished(_))
    ));
    // Timers after success change nothing.
    resp.handle_timeout(run.now + DEFAULT_TIMEOUT * 2);
    assert_eq!(resp.state(), &ResumeState::Resumed);
}

#[test]
fn compact_codec_golden_bytes_and_exact_lengths() {
    let hello = Hello {
        conn_id: ConnId(0x0102_0304_0506_0708),
        nonce: [0xA0; 8],
    };
    let bytes = hello.to_compact();
    assert_eq!(bytes[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(Hello::from_compact(&bytes), Ok(hello));
    let challenge = Challenge {
        nonce: [1; 8],
        mac: [2; 16],
    };
    assert_eq!(
        Challenge::from_compact(&challenge.to_compact()),
        Ok(challenge)
    );
    let confirm = Confirm { mac: [3; 16] };
    assert_eq!(Confirm::from_compact(&confirm.to_compact()), Ok(confirm));
    // All fit in the 36 bytes an option leaves after kind, length and ExID.
    const { assert!(HELLO_LEN + 4 <= 40 && CHALLENGE_LEN <= 36 && CONFIRM_LEN <= 36) };
    // Truncated or padded input is refused.
    assert_eq!(
        Hello::from_compact(&bytes[..15]),
        Err(CompactError {
            what: "hello",
            expected: 16,
            got: 15
        })
    );
    assert!(Challenge::from_compact(&[0; 25]).is_err());
    assert!(Confirm::from_compact(&[]).is_err());
}

#[test]
fn truncated_challenge_cannot_resume() {
    let mut run = Run::new(10);
    let (mut init, hello) = run.initiator(5);
    let (_, challenge) = run.responder(&hello, 5);
    let wire = challenge.to_compact();
    for cut in 0..wire.len() {
        assert!(Challenge::from_compact(&wire[..cut]).is_err());
    }
    // Zero-filled remainder (a sloppy decoder's mistake) does not verify.
    let mut padded = [0u8; CHALLENGE_LEN];
    padded[..20].copy_from_slice(&wire[..20]);
    let forged = Challenge::from_compact(&padded).unwrap();
    assert_eq!(
        init.handle_challenge(run.now, &forged).unwrap_err(),
        ResumeError::BadMac("challenge")
    );
}
