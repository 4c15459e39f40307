//! The record layer's internals: nonce, framing, accounting, and the pause after a
//! KeyUpdate. The protocol flows are in tests/tls_record.rs.

use alloc::vec;
use alloc::vec::Vec;

use super::*;

fn keys(suite: CipherSuite, b: u8, seq: u64) -> TrafficKeys {
    TrafficKeys::new(suite, &vec![b; suite.key_len()], [b; NONCE_LEN], seq).unwrap()
}

const SUITE: CipherSuite = CipherSuite::Chacha20Poly1305Sha256;

/// (terminal, peer) with mirrored keys.
fn pair() -> (RecordLayer, RecordLayer) {
    let cfg = RecordConfig::default();
    (
        RecordLayer::new(cfg, keys(SUITE, 1, 0), keys(SUITE, 2, 0)).unwrap(),
        RecordLayer::new(cfg, keys(SUITE, 2, 0), keys(SUITE, 1, 0)).unwrap(),
    )
}

#[test]
fn the_nonce_is_the_iv_xor_the_right_aligned_sequence_number() {
    let mut p = Protection::new(&keys(SUITE, 0xff, 0x0102_0304_0506_0708), SUITE).unwrap();
    assert_eq!(
        p.nonce(),
        [
            0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7
        ]
    );
    p.seq = 0;
    assert_eq!(p.nonce(), [0xff; NONCE_LEN]);
}

#[test]
fn record_len_checks_each_header_byte_as_it_arrives() {
    assert_eq!(record_len(&[]), Ok(None));
    assert_eq!(record_len(&[23]), Ok(None));
    assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
    assert_eq!(record_len(&[23, 3, 3, 0, 0]), Ok(Some(5)));
    assert_eq!(record_len(&[23, 3, 0, 0x41, 0]), Ok(Some(5 + 0x4100)));
    assert_eq!(record_len(&[0]), Err(TlsError::UnknownContentType(0)));
    assert_eq!(
        record_len(&[22, 0x16]),
        Err(TlsError::BadRecordVersion(0x1600))
    );
    assert_eq!(
        record_len(&[20, 3, 3, 0x41, 1]),
        Err(TlsError::RecordOverflow(0x4101))
    );
}

#[test]
fn a_sealed_record_is_header_content_type_and_tag() {
    let (mut t, mut p) = pair();
    let mut out = Vec::new();
    t.seal_record(ContentType::Handshake, &[24, 0, 0, 1, 0], &mut out)
        .unwrap();
    assert_eq!(&out[..5], &[23, 3, 3, 0, 5 + 1 + TAG_LEN as u8]);
    assert_eq!(out.len(), HEADER_LEN + 5 + 1 + TAG_LEN);
    // Opened by hand: the inner plaintext ends in the real type, no padding.
    let mut body = out[5..].to_vec();
    p.rx.aead
        .open_in_place(&p.rx.nonce(), &out[..5], &mut body)
        .unwrap();
    assert_eq!(body, [24, 0, 0, 1, 0, 22]);
    p.receive(&out).unwrap();
    assert_eq!(
        p.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: false })
    );
}

#[test]
fn a_second_key_update_is_never_read_under_the_first_ones_key() {
    let (mut t, mut p) = pair();
    let mut wire = Vec::new();
    p.update_tx(keys(SUITE, 3, 0), false, &mut wire).unwrap();
    p.update_tx(keys(SUITE, 4, 0), true, &mut wire).unwrap();
    let first = wire.len() / 2;
    t.receive(&wire).unwrap();
    // One event, one record opened; the second KeyUpdate waits, unopened, as bytes.
    assert_eq!(
        t.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: false })
    );
    assert_eq!(t.poll_event(), None);
    assert_eq!(t.records_opened(), 1);
    assert_eq!(t.rx_buf.len(), wire.len() - first);
    assert_eq!(t.held(), wire.len() - first);
    t.install_rx(keys(SUITE, 3, 0)).unwrap();
    assert_eq!(
        t.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: true })
    );
    assert!(t.awaiting_rx_key());
    assert!(t.rx_buf.is_empty());
    t.install_rx(keys(SUITE, 4, 0)).unwrap();
    assert!(!t.awaiting_rx_key());
}

#[test]
fn what_is_held_counts_bytes_a_partial_message_and_events() {
    let (mut t, mut p) = pair();
    let mut wire = Vec::new();
    p.seal_application(b"12345", &mut wire).unwrap();
    t.receive(&wire[..4]).unwrap();
    assert_eq!(t.held(), 4);
    t.receive(&wire[4..]).unwrap();
    assert_eq!((t.rx_buf.len(), t.event_bytes, t.held()), (0, 5, 5));
    // A partial NewSessionTicket sits in hs_buf.
    let ticket = [NEW_SESSION_TICKET, 0, 0, 10, 1, 2];
    let mut record = Vec::new();
    p.seal_record(ContentType::Handshake, &ticket[..6], &mut record)
        .unwrap();
    t.receive(&record).unwrap();
    assert_eq!((t.hs_buf.len(), t.held()), (6, 11));
    assert_eq!(t.receive_capacity(), t.cfg.max_held - 11);
    assert_eq!(t.poll_event(), Some(RecordEvent::Data(b"12345".to_vec())));
    assert_eq!(t.held(), 6);
    // Events without bytes still weigh one.
    assert_eq!(RecordEvent::CloseNotify.weight(), 1);
    assert_eq!(RecordEvent::Data(Vec::new()).weight(), 1);
    assert_eq!(
        RecordEvent::Alert(AlertDescription::UserCanceled).weight(),
        1
    );
}

#[test]
fn the_defaults_are_the_documented_ones_and_valid_for_every_suite() {
    let d = RecordConfig::default();
    assert_eq!(d.max_fragment, 1 << 14);
    assert_eq!(d.max_held, 64 * 1024);
    assert_eq!(d.max_key_updates, 8);
    assert_eq!(d.max_handshake_message, 16 * 1024 + 4);
    assert_eq!(d.tx_update_margin, 1 << 16);
    for suite in CipherSuite::ALL {
        d.check(suite).unwrap();
    }
    assert_eq!(MAX_RECORD, 5 + (1 << 14) + 256);
}

#[test]
fn alert_descriptions_round_trip_their_bytes() {
    for code in 0..=255u8 {
        let d = AlertDescription::from_code(code);
        assert_eq!(d.code(), code);
        assert_eq!(
            d.is_fatal(),
            code != 0 && code != 90,
            "{d:?} fatal only if not close_notify or user_canceled"
        );
    }
    assert_eq!(
        AlertDescription::from_code(21),
        AlertDescription::Unknown(21)
    );
    assert_eq!(
        AlertDescription::from_code(120),
        AlertDescription::NoApplicationProtocol
    );
}

#[test]
fn every_fatal_error_names_an_alert_and_every_refusal_none() {
    let fatal = [
        (
            TlsError::UnknownContentType(1),
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::BadRecordVersion(0x0200),
            AlertDescription::DecodeError,
        ),
        (
            TlsError::RecordOverflow(1),
            AlertDescription::RecordOverflow,
        ),
        (
            TlsError::PlaintextOverflow(1),
            AlertDescription::RecordOverflow,
        ),
        (TlsError::BadRecordMac, AlertDescription::BadRecordMac),
        (
            TlsError::ChangeCipherSpec,
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::UnprotectedRecord(22),
            AlertDescription::UnexpectedMessage,
        ),
        (TlsError::NoContentType, AlertDescription::UnexpectedMessage),
        (
            TlsError::EmptyHandshakeRecord,
            AlertDescription::DecodeError,
        ),
        (TlsError::BadAlertLength(3), AlertDescription::DecodeError),
        (
            TlsError::InterleavedHandshake(23),
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::UnexpectedHandshake(1),
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::HandshakeTooLarge { len: 2, bound: 1 },
            AlertDescription::DecodeError,
        ),
        (
            TlsError::BadKeyUpdateLength(2),
            AlertDescription::DecodeError,
        ),
        (
            TlsError::BadKeyUpdateValue(2),
            AlertDescription::IllegalParameter,
        ),
        (
            TlsError::KeyUpdateNotLast,
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::KeyUpdateFlood(1),
            AlertDescription::UnexpectedMessage,
        ),
        (
            TlsError::RxSeqExhausted,
            AlertDescription::UnexpectedMessage,
        ),
    ];
    for (e, alert) in fatal {
        assert_eq!(e.alert(), Some(alert), "{e:?}");
        assert!(e.is_fatal(), "{e:?}");
    }
    let refusals = [
        TlsError::SuiteMismatch {
            expected: 1,
            got: 2,
        },
        TlsError::BadKeyLength { got: 1, want: 2 },
        TlsError::BoundTooSmall {
            field: "x",
            got: 0,
            min: 1,
        },
        TlsError::FragmentTooLarge(1),
        TlsError::MarginTooLarge {
            margin: 1,
            limit: 1,
        },
        TlsError::Closed,
        TlsError::KeyUpdateOwed,
        TlsError::TxKeyExhausted { seq: 1, limit: 1 },
        TlsError::NoKeyUpdatePending,
        TlsError::ReceiveBacklogFull {
            held: 1,
            incoming: 1,
            bound: 1,
        },
        TlsError::DataAfterCloseNotify(1),
        TlsError::Failed,
    ];
    for e in refusals {
        assert_eq!(e.alert(), None, "{e:?}");
        assert!(!e.is_fatal(), "{e:?}");
    }
    assert_eq!(TlsError::Truncated.alert(), None);
    assert!(TlsError::Truncated.is_fatal());
}
