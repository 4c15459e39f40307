//! The terminal's TLS 1.3 record layer (`deputy::tls`): byte-exact against RFC 8448's
//! traces, round trips for every suite, and every rule and bound of RFC 8446 §5 it
//! enforces, each refused with its own error and alert.

use deputy::crypto::aead::AeadKey;
use deputy::tls::{
    AlertDescription, CipherSuite, RecordConfig, RecordEvent, RecordLayer, TlsError, TrafficKeys,
    complete_records,
};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

// ------------------------------------------------------------------------- helpers

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Keys for `suite` whose bytes are all `b`.
fn keys(suite: CipherSuite, b: u8, seq: u64) -> TrafficKeys {
    TrafficKeys::new(suite, &vec![b; suite.key_len()], [b; 12], seq).unwrap()
}

/// A terminal and its peer with mirrored keys: the terminal sends with key byte `1`
/// and receives with `2`.
struct Pair {
    terminal: RecordLayer,
    peer: RecordLayer,
}

impl Pair {
    fn new(suite: CipherSuite) -> Pair {
        Pair::with(suite, RecordConfig::default())
    }

    fn with(suite: CipherSuite, cfg: RecordConfig) -> Pair {
        Pair {
            terminal: RecordLayer::new(cfg, keys(suite, 1, 0), keys(suite, 2, 0)).unwrap(),
            peer: RecordLayer::new(cfg, keys(suite, 2, 0), keys(suite, 1, 0)).unwrap(),
        }
    }
}

fn events(layer: &mut RecordLayer) -> Vec<RecordEvent> {
    std::iter::from_fn(|| layer.poll_event()).collect()
}

fn sealed(layer: &mut RecordLayer, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    layer.seal_application(data, &mut out).unwrap();
    out
}

/// A record built by hand around `inner` (TLSInnerPlaintext: content, type, padding)
/// under `keys` at `seq`, with any outer type: what a peer breaking a rule sends. The
/// nonce is computed here independently of the layer (RFC 8446 §5.3).
fn raw_record(keys: &TrafficKeys, seq: u64, outer: u8, inner: &[u8]) -> Vec<u8> {
    let len = inner.len() + 16;
    let header = [outer, 3, 3, (len >> 8) as u8, len as u8];
    let mut nonce = *keys.iv;
    for (i, b) in seq.to_be_bytes().iter().enumerate() {
        nonce[4 + i] ^= b;
    }
    let aead = AeadKey::new(keys.suite.aead(), &keys.key).unwrap();
    let mut out = header.to_vec();
    out.extend(aead.seal(&nonce, &header, inner));
    out
}

/// What the peer (key byte 2) sends the terminal at `seq`, built by hand.
fn to_terminal(suite: CipherSuite, seq: u64, inner: &[u8]) -> Vec<u8> {
    raw_record(&keys(suite, 2, 0), seq, 23, inner)
}

const AES: CipherSuite = CipherSuite::Aes128GcmSha256;

fn terminal() -> RecordLayer {
    Pair::new(AES).terminal
}

/// A fresh terminal given `bytes` fails with `want`, which names `alert`.
fn refused(bytes: &[u8], want: TlsError, alert: AlertDescription) {
    let mut t = terminal();
    let got = t.receive(bytes);
    assert_fatal(&mut t, got, want, alert);
}

fn assert_fatal(
    layer: &mut RecordLayer,
    got: Result<(), TlsError>,
    want: TlsError,
    alert: AlertDescription,
) {
    assert_eq!(got, Err(want.clone()));
    assert_eq!(want.alert(), Some(alert));
    assert!(want.is_fatal());
    assert!(layer.is_failed());
    assert_eq!(layer.receive(b""), Err(TlsError::Failed));
    assert_eq!(
        layer.seal_application(b"x", &mut Vec::new()),
        Err(TlsError::Failed)
    );
    // The owner may still send the alert the error names, once.
    let mut out = Vec::new();
    layer.seal_alert(alert, &mut out).unwrap();
    assert!(!out.is_empty());
    assert_eq!(
        layer.seal_alert(alert, &mut Vec::new()),
        Err(TlsError::Failed)
    );
}

// ------------------------------------------------------------------------- RFC 8448 §3

// RFC 8448 §3 ("Simple 1-RTT Handshake"), TLS_AES_128_GCM_SHA256: the application
// traffic keys and IVs of both sides, and the protected records sent under them.
const C_AP_KEY: &str = "17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51";
const C_AP_IV: &str = "5b 78 92 3d ee 08 57 90 33 e5 23 d9";
const S_AP_KEY: &str = "9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56";
const S_AP_IV: &str = "cf 78 2b 88 dd 83 54 9a ad f1 e9 84";
/// {server} send handshake record: the NewSessionTicket, server sequence 0.
const S_TICKET_RECORD: &str = "
    17 03 03 00 de 3a 6b 8f 90 41 4a 97 d6 95 9c 34 87 68 0d e5 13 4a 2b 24
    0e 6c ff ac 11 6e 95 d4 1d 6a f8 f6 b5 80 dc f3 d1 1d 63 c7 58 db 28 9a
    01 59 40 25 2f 55 71 3e 06 1d c1 3e 07 88 91 a3 8e fb cf 57 53 ad 8e f1
    70 ad 3c 73 53 d1 6d 9d a7 73 b9 ca 7f 2b 9f a1 b6 c0 d4 a3 d0 3f 75 e0
    9c 30 ba 1e 62 97 2a c4 6f 75 f7 b9 81 be 63 43 9b 29 99 ce 13 06 46 15
    13 98 91 d5 e4 c5 b4 06 f1 6e 3f c1 81 a7 7c a4 75 84 00 25 db 2f 0a 77
    f8 1b 5a b0 5b 94 c0 13 46 75 5f 69 23 2c 86 51 9d 86 cb ee ac 87 aa c3
    47 d1 43 f9 60 5d 64 f6 50 db 4d 02 3e 70 e9 52 ca 49 fe 51 37 12 1c 74
    bc 26 97 68 7e 24 87 46 d6 df 35 30 05 f3 bc e1 86 96 12 9c 81 53 55 6b
    3b 6c 67 79 b3 7b f1 59 85 68 4f";
/// {client} send application_data record: 00 01 .. 31, client sequence 0.
const C_APP_RECORD: &str = "
    17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea
    42 f9 14 aa 66 bc ab 3f 2b 98 19 a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b
    62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4";
/// {server} send application_data record: the same 50 bytes, server sequence 1.
const S_APP_RECORD: &str = "
    17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc
    32 25 d0 5f 82 aa 1b 36 e3 0e fa f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8
    fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d";
/// {client} send alert record: close_notify, client sequence 1.
const C_ALERT_RECORD: &str =
    "17 03 03 00 13 c9 87 27 60 65 56 66 b7 4d 7f f1 15 3e fd 6d b6 d0 b0 e3";
/// {server} send alert record: close_notify, server sequence 2.
const S_ALERT_RECORD: &str =
    "17 03 03 00 13 b5 8f d6 71 66 eb f5 99 d2 47 20 cf be 7e fa 7a 88 64 a9";

fn rfc8448_keys(key: &str, iv: &str, seq: u64) -> TrafficKeys {
    TrafficKeys::new(AES, &hex(key), hex(iv).try_into().unwrap(), seq).unwrap()
}

fn rfc8448_payload() -> Vec<u8> {
    (0u8..50).collect()
}

#[test]
fn rfc8448_client_records_are_byte_exact_and_it_opens_the_servers() {
    // The terminal as the RFC's client, from the first application record on each side.
    let mut client = RecordLayer::new(
        RecordConfig::default(),
        rfc8448_keys(C_AP_KEY, C_AP_IV, 0),
        rfc8448_keys(S_AP_KEY, S_AP_IV, 0),
    )
    .unwrap();

    // The server's NewSessionTicket (its sequence 0) comes up whole for relaying.
    client.receive(&hex(S_TICKET_RECORD)).unwrap();
    let ticket = match client.poll_event() {
        Some(RecordEvent::NewSessionTicket(t)) => t,
        other => panic!("expected the ticket, got {other:?}"),
    };
    assert_eq!(&ticket[..4], &[0x04, 0x00, 0x00, 0xc9]);
    assert_eq!(ticket.len(), 4 + 0xc9);

    assert_eq!(sealed(&mut client, &rfc8448_payload()), hex(C_APP_RECORD));

    client.receive(&hex(S_APP_RECORD)).unwrap();
    assert_eq!(
        client.poll_event(),
        Some(RecordEvent::Data(rfc8448_payload()))
    );

    let mut close = Vec::new();
    client.close(&mut close).unwrap();
    assert_eq!(close, hex(C_ALERT_RECORD));

    client.receive(&hex(S_ALERT_RECORD)).unwrap();
    assert_eq!(client.poll_event(), Some(RecordEvent::CloseNotify));
    client.end_of_stream().unwrap();
    assert_eq!((client.records_sealed(), client.records_opened()), (2, 3));
    assert_eq!((client.tx_seq(), client.rx_seq()), (2, 3));
}

#[test]
fn rfc8448_server_records_are_byte_exact_from_a_handed_over_sequence_number() {
    // The terminal as the RFC's server, given its keys after the ticket went out (the
    // delegation hands over sequence numbers, so its first record here is number 1).
    let mut server = RecordLayer::new(
        RecordConfig::default(),
        rfc8448_keys(S_AP_KEY, S_AP_IV, 1),
        rfc8448_keys(C_AP_KEY, C_AP_IV, 0),
    )
    .unwrap();
    server.receive(&hex(C_APP_RECORD)).unwrap();
    assert_eq!(
        server.poll_event(),
        Some(RecordEvent::Data(rfc8448_payload()))
    );
    assert_eq!(sealed(&mut server, &rfc8448_payload()), hex(S_APP_RECORD));
    server.receive(&hex(C_ALERT_RECORD)).unwrap();
    assert_eq!(server.poll_event(), Some(RecordEvent::CloseNotify));
    let mut close = Vec::new();
    server.close(&mut close).unwrap();
    assert_eq!(close, hex(S_ALERT_RECORD));
}

#[test]
fn rfc8448_records_refused_under_the_wrong_sequence_number() {
    // The server's application record is its number 1: read as number 0 it fails.
    let mut client = RecordLayer::new(
        RecordConfig::default(),
        rfc8448_keys(C_AP_KEY, C_AP_IV, 0),
        rfc8448_keys(S_AP_KEY, S_AP_IV, 0),
    )
    .unwrap();
    let got = client.receive(&hex(S_APP_RECORD));
    assert_fatal(
        &mut client,
        got,
        TlsError::BadRecordMac,
        AlertDescription::BadRecordMac,
    );
}

// ------------------------------------------------------------------------- round trips

/// Feed `bytes` to `layer` in random pieces (sizes 0 to 300).
fn feed_in_pieces(layer: &mut RecordLayer, bytes: &[u8], rng: &mut ChaCha20Rng) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = (rng.next_u32() as usize % 301).min(rest.len());
        layer.receive(&rest[..n]).unwrap();
        rest = &rest[n..];
    }
}

#[test]
fn every_suite_round_trips_both_ways_in_any_segmentation() {
    let mut rng = ChaCha20Rng::seed_from_u64(8446);
    for suite in CipherSuite::ALL {
        let cfg = RecordConfig {
            max_fragment: 1000,
            ..RecordConfig::default()
        };
        let mut pair = Pair::with(suite, cfg);
        for round in 0..20 {
            let len = rng.next_u32() as usize % 5000;
            let data: Vec<u8> = (0..len).map(|i| (i * 7 + round) as u8).collect();

            let wire = sealed(&mut pair.terminal, &data);
            assert_eq!(wire.len(), data.len() + data.len().div_ceil(1000) * 22);
            feed_in_pieces(&mut pair.peer, &wire, &mut rng);
            let got: Vec<u8> = events(&mut pair.peer)
                .into_iter()
                .flat_map(|e| match e {
                    RecordEvent::Data(d) => {
                        assert!(d.len() <= 1000);
                        d
                    }
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, data, "{suite:?} terminal to peer, round {round}");

            let wire = sealed(&mut pair.peer, &data);
            feed_in_pieces(&mut pair.terminal, &wire, &mut rng);
            let got: Vec<u8> = events(&mut pair.terminal)
                .into_iter()
                .flat_map(|e| match e {
                    RecordEvent::Data(d) => d,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(got, data, "{suite:?} peer to terminal, round {round}");
        }
        assert_eq!(pair.terminal.records_sealed(), pair.peer.records_opened());
        assert_eq!(pair.peer.records_sealed(), pair.terminal.records_opened());
        assert_eq!(pair.terminal.suite(), suite);
    }
}

#[test]
fn full_size_records_use_the_whole_fragment() {
    let mut pair = Pair::new(CipherSuite::Aes256GcmSha384);
    let data = vec![0xa5; (1 << 14) * 2 + 1];
    let wire = sealed(&mut pair.terminal, &data);
    assert_eq!(complete_records(&wire), Ok(wire.len()));
    assert_eq!(pair.terminal.records_sealed(), 3);
    pair.peer.receive(&wire).unwrap();
    let got = events(&mut pair.peer);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0], RecordEvent::Data(vec![0xa5; 1 << 14]));
}

// ------------------------------------------------------------------------- padding, sizes

#[test]
fn padding_is_stripped_and_an_all_zero_plaintext_is_refused() {
    let mut t = terminal();
    // Content "hi", type 23, 100 bytes of padding.
    let mut inner = b"hi\x17".to_vec();
    inner.extend([0u8; 100]);
    t.receive(&to_terminal(AES, 0, &inner)).unwrap();
    // Content ending in zero bytes keeps them: only the zeros after the type go.
    t.receive(&to_terminal(AES, 1, b"a\0\0\x17\0")).unwrap();
    // Padding up to the most inner plaintext allowed, 2^14 + 1 bytes.
    let mut inner = b"z\x17".to_vec();
    inner.resize((1 << 14) + 1, 0);
    t.receive(&to_terminal(AES, 2, &inner)).unwrap();
    assert_eq!(
        events(&mut t),
        vec![
            RecordEvent::Data(b"hi".to_vec()),
            RecordEvent::Data(b"a\0\0".to_vec()),
            RecordEvent::Data(b"z".to_vec()),
        ]
    );
    let got = t.receive(&to_terminal(AES, 3, &[0u8; 40]));
    assert_fatal(
        &mut t,
        got,
        TlsError::NoContentType,
        AlertDescription::UnexpectedMessage,
    );
}

#[test]
fn an_inner_plaintext_over_2_14_plus_1_is_record_overflow() {
    let mut t = terminal();
    let mut inner = b"z\x17".to_vec();
    inner.resize((1 << 14) + 2, 0);
    let got = t.receive(&to_terminal(AES, 0, &inner));
    assert_fatal(
        &mut t,
        got,
        TlsError::PlaintextOverflow((1 << 14) + 2),
        AlertDescription::RecordOverflow,
    );
}

#[test]
fn a_record_over_2_14_plus_256_is_refused_at_its_header() {
    let mut t = terminal();
    // Only the header: the layer does not wait for 16 KiB it will refuse.
    let len = (1u16 << 14) + 257;
    let got = t.receive(&[23, 3, 3, (len >> 8) as u8, len as u8]);
    assert_fatal(
        &mut t,
        got,
        TlsError::RecordOverflow(len as usize),
        AlertDescription::RecordOverflow,
    );
    // The largest allowed length is waited for.
    let mut t = terminal();
    let len = (1u16 << 14) + 256;
    t.receive(&[23, 3, 3, (len >> 8) as u8, len as u8]).unwrap();
}

#[test]
fn zero_length_application_data_is_legal_and_silent() {
    let mut t = terminal();
    t.receive(&to_terminal(AES, 0, &[23])).unwrap();
    t.receive(&to_terminal(AES, 1, &[23, 0, 0])).unwrap();
    assert_eq!(t.poll_event(), None);
    assert_eq!(t.records_opened(), 2);
}

// ------------------------------------------------------------------------- tampering

#[test]
fn a_changed_byte_anywhere_is_bad_record_mac_and_fails_the_layer() {
    let mut pair = Pair::new(CipherSuite::Chacha20Poly1305Sha256);
    let wire = sealed(&mut pair.terminal, b"attack at dawn");
    // Header bytes 1, 2 (the version's minor byte is authenticated, not checked) and the
    // body; changing the type, the major version or the length breaks framing instead.
    for i in [2].into_iter().chain(5..wire.len()) {
        let mut bad = wire.clone();
        bad[i] ^= 0x01;
        let mut peer = Pair::new(CipherSuite::Chacha20Poly1305Sha256).peer;
        let got = peer.receive(&bad);
        assert_fatal(
            &mut peer,
            got,
            TlsError::BadRecordMac,
            AlertDescription::BadRecordMac,
        );
    }
    // A record too short to hold a tag cannot authenticate either.
    let mut peer = Pair::new(CipherSuite::Chacha20Poly1305Sha256).peer;
    let got = peer.receive(&[23, 3, 3, 0, 3, 1, 2, 3]);
    assert_fatal(
        &mut peer,
        got,
        TlsError::BadRecordMac,
        AlertDescription::BadRecordMac,
    );
}

#[test]
fn data_before_a_fatal_error_stays_delivered() {
    let mut pair = Pair::new(AES);
    let mut wire = sealed(&mut pair.peer, b"first");
    let mut second = sealed(&mut pair.peer, b"second");
    second[10] ^= 0xff;
    wire.extend(second);
    assert_eq!(pair.terminal.receive(&wire), Err(TlsError::BadRecordMac));
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::Data(b"first".to_vec()))
    );
    assert_eq!(pair.terminal.poll_event(), None);
}

// ------------------------------------------------------------------------- framing

#[test]
fn records_that_break_the_framing_rules_are_refused_each_with_its_own_error() {
    let cases: Vec<(Vec<u8>, TlsError, AlertDescription)> = vec![
        (
            vec![20, 3, 3, 0, 1, 1],
            TlsError::ChangeCipherSpec,
            AlertDescription::UnexpectedMessage,
        ),
        (
            to_terminal(AES, 0, &[1, 20]),
            TlsError::ChangeCipherSpec,
            AlertDescription::UnexpectedMessage,
        ),
        (
            vec![21, 3, 3, 0, 2, 2, 40],
            TlsError::UnprotectedRecord(21),
            AlertDescription::UnexpectedMessage,
        ),
        (
            vec![22, 3, 3, 0, 1, 1],
            TlsError::UnprotectedRecord(22),
            AlertDescription::UnexpectedMessage,
        ),
        (
            vec![24],
            TlsError::UnknownContentType(24),
            AlertDescription::UnexpectedMessage,
        ),
        (
            to_terminal(AES, 0, &[1, 2, 3, 99]),
            TlsError::UnknownContentType(99),
            AlertDescription::UnexpectedMessage,
        ),
        (
            vec![23, 4],
            TlsError::BadRecordVersion(0x0400),
            AlertDescription::DecodeError,
        ),
        (
            vec![23, 0x16, 0x03],
            TlsError::BadRecordVersion(0x1603),
            AlertDescription::DecodeError,
        ),
        (
            to_terminal(AES, 0, &[22]),
            TlsError::EmptyHandshakeRecord,
            AlertDescription::DecodeError,
        ),
        (
            to_terminal(AES, 0, &[21]),
            TlsError::BadAlertLength(0),
            AlertDescription::DecodeError,
        ),
        (
            to_terminal(AES, 0, &[2, 40, 0, 21]),
            TlsError::BadAlertLength(3),
            AlertDescription::DecodeError,
        ),
        (
            to_terminal(AES, 0, &[2, 10, 2, 10, 21]),
            TlsError::BadAlertLength(4),
            AlertDescription::DecodeError,
        ),
    ];
    for (bytes, want, alert) in cases {
        refused(&bytes, want, alert);
    }
}

#[test]
fn any_legacy_version_minor_byte_is_framed_but_authenticated() {
    // §5.1: the version is ignored, but it is additional data: a record sealed with
    // 0x0301 in its header opens, and the same body under 0x0303 does not.
    let k = keys(AES, 2, 0);
    let mut record = raw_record(&k, 0, 23, b"ok\x17");
    let aead = AeadKey::new(AES.aead(), &k.key).unwrap();
    record[2] = 0x01;
    let body = aead.seal(&k.iv, &record[..5], b"ok\x17");
    record.truncate(5);
    record.extend(body);
    let mut t = terminal();
    t.receive(&record).unwrap();
    assert_eq!(t.poll_event(), Some(RecordEvent::Data(b"ok".to_vec())));
    let mut t = terminal();
    record[2] = 0x03;
    assert_eq!(t.receive(&record), Err(TlsError::BadRecordMac));
}

#[test]
fn complete_records_splits_without_keys() {
    let mut pair = Pair::new(AES);
    let mut wire = sealed(&mut pair.terminal, b"one");
    let first = wire.len();
    wire.extend(sealed(&mut pair.terminal, b"two"));
    let both = wire.len();
    // A plaintext handshake record (the relay sees those) and a partial one.
    wire.extend([22, 3, 1, 0, 4, 1, 0, 0, 0]);
    let three = wire.len();
    wire.extend([22, 3, 3, 0, 10, 1]);
    assert_eq!(complete_records(&[]), Ok(0));
    assert_eq!(complete_records(&wire[..first - 1]), Ok(0));
    assert_eq!(complete_records(&wire[..first]), Ok(first));
    assert_eq!(complete_records(&wire[..both + 2]), Ok(both));
    assert_eq!(complete_records(&wire), Ok(three));
    wire.extend([0; 9]);
    assert_eq!(complete_records(&wire), Ok(wire.len()));
    // Bad headers, the partial one included.
    assert_eq!(
        complete_records(&[23, 3, 3, 0, 1, 0, 9]),
        Err(TlsError::UnknownContentType(9))
    );
    assert_eq!(
        complete_records(&[23, 2]),
        Err(TlsError::BadRecordVersion(0x0200))
    );
    assert_eq!(
        complete_records(&[22, 3, 3, 0x41, 1]),
        Err(TlsError::RecordOverflow(0x4101))
    );
}

// ------------------------------------------------------------------------- KeyUpdate

/// The peer updates its send key to key byte `b` (the terminal's next receive key).
fn peer_updates(pair: &mut Pair, b: u8, request: bool) -> Vec<u8> {
    let mut out = Vec::new();
    pair.peer
        .update_tx(keys(pair.peer.suite(), b, 0), request, &mut out)
        .unwrap();
    out
}

#[test]
fn a_peer_key_update_pauses_receiving_until_the_next_key_is_installed() {
    let mut pair = Pair::new(AES);
    let mut wire = sealed(&mut pair.peer, b"before");
    wire.extend(peer_updates(&mut pair, 3, false));
    assert_eq!(pair.peer.tx_seq(), 0);
    wire.extend(sealed(&mut pair.peer, b"after"));
    // All in one call: the record after the KeyUpdate is held, unopened.
    pair.terminal.receive(&wire).unwrap();
    assert!(pair.terminal.awaiting_rx_key());
    assert_eq!(
        events(&mut pair.terminal),
        vec![
            RecordEvent::Data(b"before".to_vec()),
            RecordEvent::KeyUpdate { requested: false }
        ]
    );
    assert_eq!(pair.terminal.rx_seq(), 2);
    // More arrives while paused: held too.
    let later = sealed(&mut pair.peer, b"later");
    pair.terminal.receive(&later).unwrap();
    assert_eq!(pair.terminal.poll_event(), None);
    assert!(!pair.terminal.owes_key_update());

    // A key of another suite is refused and changes nothing.
    assert_eq!(
        pair.terminal
            .install_rx(keys(CipherSuite::Chacha20Poly1305Sha256, 3, 0)),
        Err(TlsError::SuiteMismatch {
            expected: 0x1301,
            got: 0x1303
        })
    );
    assert!(pair.terminal.awaiting_rx_key());

    pair.terminal.install_rx(keys(AES, 3, 0)).unwrap();
    assert!(!pair.terminal.awaiting_rx_key());
    assert_eq!(
        events(&mut pair.terminal),
        vec![
            RecordEvent::Data(b"after".to_vec()),
            RecordEvent::Data(b"later".to_vec())
        ]
    );
    assert_eq!(pair.terminal.rx_seq(), 2);
    // Not paused any more.
    assert_eq!(
        pair.terminal.install_rx(keys(AES, 3, 0)),
        Err(TlsError::NoKeyUpdatePending)
    );
    assert_eq!(TlsError::NoKeyUpdatePending.alert(), None);
}

#[test]
fn a_requested_key_update_is_owed_before_the_next_application_data() {
    let mut pair = Pair::new(CipherSuite::Chacha20Poly1305Sha256);
    let suite = pair.terminal.suite();
    let wire = peer_updates(&mut pair, 3, true);
    pair.terminal.receive(&wire).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: true })
    );
    assert!(pair.terminal.owes_key_update());
    assert_eq!(
        pair.terminal.seal_application(b"x", &mut Vec::new()),
        Err(TlsError::KeyUpdateOwed)
    );
    pair.terminal.install_rx(keys(suite, 3, 0)).unwrap();
    // Still owed: installing the receive key does not send ours.
    assert!(pair.terminal.owes_key_update());

    let mut out = Vec::new();
    pair.terminal
        .update_tx(keys(suite, 4, 0), false, &mut out)
        .unwrap();
    assert!(!pair.terminal.owes_key_update());
    assert_eq!(pair.terminal.tx_seq(), 0);
    pair.terminal
        .seal_application(b"under the new key", &mut out)
        .unwrap();

    pair.peer.receive(&out).unwrap();
    assert_eq!(
        pair.peer.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: false })
    );
    assert!(!pair.peer.owes_key_update());
    pair.peer.install_rx(keys(suite, 4, 0)).unwrap();
    assert_eq!(
        pair.peer.poll_event(),
        Some(RecordEvent::Data(b"under the new key".to_vec()))
    );
    // Both sides' counters span the keys.
    assert_eq!(pair.terminal.records_sealed(), 2);
    assert_eq!(pair.peer.records_opened(), 2);
}

#[test]
fn the_terminal_may_update_and_request_on_its_own() {
    let mut pair = Pair::new(AES);
    let mut out = Vec::new();
    pair.terminal
        .update_tx(keys(AES, 5, 0), true, &mut out)
        .unwrap();
    pair.peer.receive(&out).unwrap();
    assert_eq!(
        pair.peer.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: true })
    );
    pair.peer.install_rx(keys(AES, 5, 0)).unwrap();
    let mut back = Vec::new();
    pair.peer
        .update_tx(keys(AES, 6, 0), false, &mut back)
        .unwrap();
    pair.peer.seal_application(b"fresh", &mut back).unwrap();
    pair.terminal.receive(&back).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: false })
    );
    pair.terminal.install_rx(keys(AES, 6, 0)).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::Data(b"fresh".to_vec()))
    );
    // A next key with the wrong length is refused and the old key stays.
    let bad = TrafficKeys {
        key: zeroize::Zeroizing::new(vec![0; 5]),
        ..keys(AES, 7, 0)
    };
    assert_eq!(
        pair.terminal.update_tx(bad, false, &mut Vec::new()),
        Err(TlsError::BadKeyLength { got: 5, want: 16 })
    );
    pair.terminal
        .seal_application(b"x", &mut Vec::new())
        .unwrap();
    assert_eq!(pair.terminal.tx_seq(), 1);
}

#[test]
fn a_key_update_must_end_its_record() {
    let mut t = terminal();
    // KeyUpdate then a NewSessionTicket in the same record.
    let inner = [24, 0, 0, 1, 0, 4, 0, 0, 0, 22];
    let got = t.receive(&to_terminal(AES, 0, &inner));
    assert_fatal(
        &mut t,
        got,
        TlsError::KeyUpdateNotLast,
        AlertDescription::UnexpectedMessage,
    );
    // Even a partial message after it.
    refused(
        &to_terminal(AES, 0, &[24, 0, 0, 1, 1, 4, 22]),
        TlsError::KeyUpdateNotLast,
        AlertDescription::UnexpectedMessage,
    );
    // A KeyUpdate split over two records under one key is fine: it ends the second.
    let mut t = terminal();
    t.receive(&to_terminal(AES, 0, &[24, 0, 22])).unwrap();
    t.receive(&to_terminal(AES, 1, &[0, 1, 1, 22])).unwrap();
    assert_eq!(
        t.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: true })
    );
}

#[test]
fn a_key_update_with_a_bad_body_is_refused() {
    refused(
        &to_terminal(AES, 0, &[24, 0, 0, 1, 2, 22]),
        TlsError::BadKeyUpdateValue(2),
        AlertDescription::IllegalParameter,
    );
    refused(
        &to_terminal(AES, 0, &[24, 0, 0, 2, 0, 0, 22]),
        TlsError::BadKeyUpdateLength(2),
        AlertDescription::DecodeError,
    );
    refused(
        &to_terminal(AES, 0, &[24, 0, 0, 0, 22]),
        TlsError::BadKeyUpdateLength(0),
        AlertDescription::DecodeError,
    );
}

#[test]
fn a_key_update_flood_is_bounded_and_data_resets_the_count() {
    let cfg = RecordConfig {
        max_key_updates: 3,
        ..RecordConfig::default()
    };
    let mut pair = Pair::with(AES, cfg);
    // The peer moves to key byte `b`; the terminal installs it if it took the update.
    let update = |pair: &mut Pair, b: u8| {
        let wire = peer_updates(pair, b, false);
        let got = pair.terminal.receive(&wire);
        if got.is_ok() {
            pair.terminal.install_rx(keys(AES, b, 0)).unwrap();
        }
        got
    };
    for b in 10..13 {
        update(&mut pair, b).unwrap();
    }
    // Application data resets the count ...
    let wire = sealed(&mut pair.peer, b"progress");
    pair.terminal.receive(&wire).unwrap();
    for b in 13..16 {
        update(&mut pair, b).unwrap();
    }
    // ... an empty record does not (the layer never sends one: built by hand under the
    // peer's current key, byte 15, at its sequence 0), and so is the KeyUpdate after it.
    let empty = raw_record(&keys(AES, 15, 0), 0, 23, &[23]);
    pair.terminal.receive(&empty).unwrap();
    let got = pair
        .terminal
        .receive(&raw_record(&keys(AES, 15, 0), 1, 23, &[24, 0, 0, 1, 0, 22]));
    assert_fatal(
        &mut pair.terminal,
        got,
        TlsError::KeyUpdateFlood(3),
        AlertDescription::UnexpectedMessage,
    );
}

// ------------------------------------------------------------------------- bounds

#[test]
fn records_held_while_awaiting_a_key_are_bounded_by_max_held() {
    let cfg = RecordConfig {
        max_held: 20_000,
        max_handshake_message: 1000,
        ..RecordConfig::default()
    };
    let mut pair = Pair::with(AES, cfg);
    let wire = peer_updates(&mut pair, 3, false);
    pair.terminal.receive(&wire).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::KeyUpdate { requested: false })
    );
    assert_eq!(pair.terminal.receive_capacity(), 20_000);
    let mut taken = 0;
    let (refused, record) = loop {
        let record = sealed(&mut pair.peer, &[7; 4000]);
        match pair.terminal.receive(&record) {
            Ok(()) => taken += 1,
            Err(e) => break (e, record),
        }
    };
    assert_eq!(taken, 4);
    assert_eq!(
        refused,
        TlsError::ReceiveBacklogFull {
            held: 4 * record.len(),
            incoming: record.len(),
            bound: 20_000
        }
    );
    assert!(!refused.is_fatal());
    assert_eq!(refused.alert(), None);
    assert!(!pair.terminal.is_failed());
    assert_eq!(pair.terminal.receive_capacity(), 20_000 - 4 * record.len());
    // The key releases the held records; the refused one is offered again.
    pair.terminal.install_rx(keys(AES, 3, 0)).unwrap();
    assert_eq!(events(&mut pair.terminal).len(), 4);
    pair.terminal.receive(&record).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::Data(vec![7; 4000]))
    );
    assert_eq!(pair.terminal.receive_capacity(), 20_000);
}

#[test]
fn undelivered_events_count_against_max_held() {
    let cfg = RecordConfig {
        max_held: 20_000,
        max_handshake_message: 1000,
        ..RecordConfig::default()
    };
    let mut pair = Pair::with(AES, cfg);
    for _ in 0..3 {
        let record = sealed(&mut pair.peer, &[1; 5000]);
        pair.terminal.receive(&record).unwrap();
    }
    // 5,000 bytes of data per event; 15,000 held.
    assert_eq!(pair.terminal.receive_capacity(), 5000);
    let record = sealed(&mut pair.peer, &[1; 5000]);
    assert!(matches!(
        pair.terminal.receive(&record),
        Err(TlsError::ReceiveBacklogFull { held: 15_000, .. })
    ));
    pair.terminal.poll_event().unwrap();
    pair.terminal.receive(&record).unwrap();
    assert_eq!(events(&mut pair.terminal).len(), 3);
    // One call larger than the bound is refused even when nothing is held.
    assert!(matches!(
        pair.terminal.receive(&vec![23; 20_001]),
        Err(TlsError::ReceiveBacklogFull {
            held: 0,
            incoming: 20_001,
            ..
        })
    ));
}

#[test]
fn a_new_session_ticket_may_span_records_or_share_one() {
    let mut t = terminal();
    let ticket = |n: u8, len: usize| {
        let mut m = vec![4, 0, (len >> 8) as u8, len as u8];
        m.extend(vec![n; len]);
        m
    };
    // One ticket split over two records, the split inside its header.
    let one = ticket(1, 300);
    let mut first = one[..2].to_vec();
    first.push(22);
    let mut second = one[2..].to_vec();
    second.push(22);
    t.receive(&to_terminal(AES, 0, &first)).unwrap();
    assert_eq!(t.poll_event(), None);
    t.receive(&to_terminal(AES, 1, &second)).unwrap();
    assert_eq!(t.poll_event(), Some(RecordEvent::NewSessionTicket(one)));
    // Two tickets in one record, and a third started in it.
    let (a, b, c) = (ticket(2, 10), ticket(3, 20), ticket(4, 30));
    let mut inner = [a.clone(), b.clone(), c[..7].to_vec()].concat();
    inner.push(22);
    t.receive(&to_terminal(AES, 2, &inner)).unwrap();
    let mut rest = c[7..].to_vec();
    rest.extend([22, 0, 0]);
    t.receive(&to_terminal(AES, 3, &rest)).unwrap();
    assert_eq!(
        events(&mut t),
        vec![
            RecordEvent::NewSessionTicket(a),
            RecordEvent::NewSessionTicket(b),
            RecordEvent::NewSessionTicket(c),
        ]
    );
}

#[test]
fn a_split_handshake_message_admits_no_other_record_between_its_pieces() {
    for (inner, typ) in [(vec![b'x', 23], 23u8), (vec![1, 0, 21], 21)] {
        let mut t = terminal();
        t.receive(&to_terminal(AES, 0, &[4, 0, 0, 9, 1, 22]))
            .unwrap();
        let got = t.receive(&to_terminal(AES, 1, &inner));
        assert_fatal(
            &mut t,
            got,
            TlsError::InterleavedHandshake(typ),
            AlertDescription::UnexpectedMessage,
        );
    }
}

#[test]
fn handshake_messages_are_bounded_and_only_two_types_accepted() {
    let cfg = RecordConfig {
        max_handshake_message: 104,
        ..RecordConfig::default()
    };
    let mut pair = Pair::with(AES, cfg);
    let mut ok = vec![4, 0, 0, 100];
    ok.extend([9; 100]);
    ok.push(22);
    pair.terminal.receive(&to_terminal(AES, 0, &ok)).unwrap();
    assert!(
        matches!(pair.terminal.poll_event(), Some(RecordEvent::NewSessionTicket(m)) if m.len() == 104)
    );
    // Refused at the header, before its body is held.
    let got = pair
        .terminal
        .receive(&to_terminal(AES, 1, &[4, 0, 0, 101, 22]));
    assert_fatal(
        &mut pair.terminal,
        got,
        TlsError::HandshakeTooLarge {
            len: 105,
            bound: 104,
        },
        AlertDescription::DecodeError,
    );
    // Any other post-handshake message, refused at its type byte.
    for typ in [1, 2, 8, 11, 13, 15, 20, 5, 255] {
        refused(
            &to_terminal(AES, 0, &[typ, 22]),
            TlsError::UnexpectedHandshake(typ),
            AlertDescription::UnexpectedMessage,
        );
    }
}

#[test]
fn a_message_at_its_bound_completes_under_the_least_max_held() {
    // The least max_held holds a message one record short of complete and the record
    // completing it: receiving never stalls behind its own bound.
    let cfg = RecordConfig {
        max_handshake_message: 20_004,
        max_held: 20_004 + deputy::tls::record::MAX_RECORD,
        ..RecordConfig::default()
    };
    let mut pair = Pair::with(AES, cfg);
    let mut ticket = vec![4, 0, 0x4e, 0x20];
    ticket.extend((0..20_000u32).map(|i| i as u8));
    let (a, b) = ticket.split_at(1 << 14);
    let first = to_terminal(AES, 0, &[a, &[22]].concat());
    // The second record's inner plaintext is padded to the most allowed.
    let mut inner = [b, &[22]].concat();
    inner.resize((1 << 14) + 1, 0);
    let second = to_terminal(AES, 1, &inner);
    pair.terminal.receive(&first).unwrap();
    assert!(pair.terminal.receive_capacity() >= second.len());
    pair.terminal.receive(&second).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::NewSessionTicket(ticket))
    );
}

// ------------------------------------------------------------------------- limits

#[test]
fn the_confidentiality_limit_asks_for_a_key_in_time_and_then_refuses() {
    let limit = AES.confidentiality_limit();
    assert_eq!(limit, 1 << 24);
    let margin = 4;
    let cfg = RecordConfig {
        tx_update_margin: margin,
        ..RecordConfig::default()
    };
    // Application data may use sequence numbers up to limit - 2; limit - 1 is kept for
    // the KeyUpdate. Start one record before the margin.
    let start = limit - margin - 2;
    let mut t = RecordLayer::new(cfg, keys(AES, 1, start), keys(AES, 2, 0)).unwrap();
    assert!(!t.wants_tx_update());
    t.seal_application(b"a", &mut Vec::new()).unwrap();
    assert!(t.wants_tx_update());
    // Four records are left for application data: five are refused whole.
    assert_eq!(
        t.seal_application(&[0; 5 * (1 << 14)], &mut Vec::new()),
        Err(TlsError::TxKeyExhausted {
            seq: limit - margin - 1,
            limit
        })
    );
    let mut out = Vec::new();
    t.seal_application(&[0; 4 * (1 << 14)], &mut out).unwrap();
    assert_eq!(t.tx_seq(), limit - 1);
    let err = t.seal_application(b"b", &mut out).unwrap_err();
    assert_eq!(
        err,
        TlsError::TxKeyExhausted {
            seq: limit - 1,
            limit
        }
    );
    assert!(!err.is_fatal());
    // The kept sequence number carries the KeyUpdate.
    t.update_tx(keys(AES, 3, 0), false, &mut out).unwrap();
    assert!(!t.wants_tx_update());
    t.seal_application(b"c", &mut out).unwrap();

    // The records made it, readable by a peer starting at the same number.
    let peer_cfg = RecordConfig {
        max_held: 128 * 1024,
        ..cfg
    };
    let mut peer =
        RecordLayer::new(peer_cfg, keys(AES, 2, 0), keys(AES, 1, limit - margin - 1)).unwrap();
    peer.receive(&out).unwrap();
    assert_eq!(events(&mut peer).len(), 5);
    assert!(peer.awaiting_rx_key());
    peer.install_rx(keys(AES, 3, 0)).unwrap();
    assert_eq!(peer.poll_event(), Some(RecordEvent::Data(b"c".to_vec())));
}

#[test]
fn sequence_numbers_never_wrap() {
    let chacha = CipherSuite::Chacha20Poly1305Sha256;
    assert_eq!(chacha.confidentiality_limit(), u64::MAX);
    // Sending: the last number is kept for closing, application data is refused.
    let mut t = RecordLayer::new(
        RecordConfig::default(),
        keys(chacha, 1, u64::MAX - 1),
        keys(chacha, 2, 0),
    )
    .unwrap();
    assert!(t.wants_tx_update());
    assert_eq!(
        t.seal_application(b"x", &mut Vec::new()),
        Err(TlsError::TxKeyExhausted {
            seq: u64::MAX - 1,
            limit: u64::MAX
        })
    );
    let mut out = Vec::new();
    t.close(&mut out).unwrap();
    assert_eq!(t.tx_seq(), u64::MAX);
    // A key handed over with no number left is refused.
    assert_eq!(
        RecordLayer::new(
            RecordConfig::default(),
            keys(chacha, 1, u64::MAX),
            keys(chacha, 2, 0)
        )
        .unwrap_err(),
        TlsError::TxKeyExhausted {
            seq: u64::MAX,
            limit: u64::MAX
        }
    );
    // Receiving: the record at u64::MAX - 1 opens, the next would need the number after.
    let mut r = RecordLayer::new(
        RecordConfig::default(),
        keys(chacha, 2, 0),
        keys(chacha, 1, u64::MAX - 1),
    )
    .unwrap();
    r.receive(&out).unwrap();
    assert_eq!(r.poll_event(), Some(RecordEvent::CloseNotify));
    let mut r = RecordLayer::new(
        RecordConfig::default(),
        keys(chacha, 2, 0),
        keys(chacha, 1, u64::MAX),
    )
    .unwrap();
    let got = r.receive(&raw_record(&keys(chacha, 1, 0), u64::MAX, 23, b"x\x17"));
    assert_fatal(
        &mut r,
        got,
        TlsError::RxSeqExhausted,
        AlertDescription::UnexpectedMessage,
    );
}

// ------------------------------------------------------------------------- closing

#[test]
fn close_notify_ends_one_direction_each_way() {
    let mut pair = Pair::new(AES);
    let mut out = Vec::new();
    pair.terminal.close(&mut out).unwrap();
    assert_eq!(
        pair.terminal.seal_application(b"x", &mut Vec::new()),
        Err(TlsError::Closed)
    );
    assert_eq!(pair.terminal.close(&mut Vec::new()), Err(TlsError::Closed));
    assert_eq!(
        pair.terminal
            .update_tx(keys(AES, 3, 0), false, &mut Vec::new()),
        Err(TlsError::Closed)
    );
    assert!(!pair.terminal.wants_tx_update());
    pair.peer.receive(&out).unwrap();
    assert_eq!(pair.peer.poll_event(), Some(RecordEvent::CloseNotify));
    assert!(pair.peer.peer_closed());
    // Half-closed: the peer still sends and the terminal still receives.
    let wire = sealed(&mut pair.peer, b"last words");
    pair.terminal.receive(&wire).unwrap();
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::Data(b"last words".to_vec()))
    );
    // A KeyUpdate request after our close is not owed: we send nothing more.
    let wire = peer_updates(&mut pair, 3, true);
    pair.terminal.receive(&wire).unwrap();
    assert!(!pair.terminal.owes_key_update());
    pair.terminal.install_rx(keys(AES, 3, 0)).unwrap();
    let mut out = Vec::new();
    pair.peer
        .seal_alert(AlertDescription::CloseNotify, &mut out)
        .unwrap();
    pair.terminal.receive(&out).unwrap();
    assert_eq!(
        events(&mut pair.terminal),
        vec![
            RecordEvent::KeyUpdate { requested: true },
            RecordEvent::CloseNotify
        ]
    );
    pair.terminal.end_of_stream().unwrap();
    pair.peer.end_of_stream().unwrap();
}

#[test]
fn a_stream_ending_without_close_notify_is_truncated() {
    // Between records.
    let mut pair = Pair::new(AES);
    let wire = sealed(&mut pair.peer, b"all of it?");
    pair.terminal.receive(&wire).unwrap();
    assert_eq!(pair.terminal.end_of_stream(), Err(TlsError::Truncated));
    assert!(TlsError::Truncated.is_fatal());
    assert_eq!(TlsError::Truncated.alert(), None);
    assert!(pair.terminal.is_failed());
    assert_eq!(
        pair.terminal.poll_event(),
        Some(RecordEvent::Data(b"all of it?".to_vec()))
    );
    assert_eq!(pair.terminal.end_of_stream(), Err(TlsError::Failed));
    // Inside a record.
    let mut pair = Pair::new(AES);
    let wire = sealed(&mut pair.peer, b"cut");
    pair.terminal.receive(&wire[..wire.len() - 1]).unwrap();
    assert_eq!(pair.terminal.end_of_stream(), Err(TlsError::Truncated));
    // While waiting for a receive key.
    let mut pair = Pair::new(AES);
    let wire = peer_updates(&mut pair, 3, false);
    pair.terminal.receive(&wire).unwrap();
    assert_eq!(pair.terminal.end_of_stream(), Err(TlsError::Truncated));
}

#[test]
fn bytes_after_close_notify_are_reported_and_discarded() {
    let mut pair = Pair::new(AES);
    let mut wire = Vec::new();
    pair.peer.close(&mut wire).unwrap();
    let close_len = wire.len();
    // A record the peer should not have sent, in the same call.
    wire.extend(to_terminal(AES, 1, b"zombie\x17"));
    let after = wire.len() - close_len;
    assert_eq!(
        pair.terminal.receive(&wire),
        Err(TlsError::DataAfterCloseNotify(after))
    );
    assert_eq!(pair.terminal.poll_event(), Some(RecordEvent::CloseNotify));
    assert_eq!(pair.terminal.poll_event(), None);
    // And in a later call. Not fatal: the terminal's direction stays open.
    assert_eq!(
        pair.terminal.receive(&[1, 2, 3]),
        Err(TlsError::DataAfterCloseNotify(3))
    );
    assert!(!TlsError::DataAfterCloseNotify(3).is_fatal());
    assert!(!pair.terminal.is_failed());
    pair.terminal.receive(b"").unwrap();
    pair.terminal
        .seal_application(b"still here", &mut Vec::new())
        .unwrap();
    pair.terminal.end_of_stream().unwrap();
}

// ------------------------------------------------------------------------- alerts

#[test]
fn every_alert_but_close_notify_and_user_canceled_fails_the_layer() {
    for code in 1..=255u8 {
        let alert = AlertDescription::from_code(code);
        assert_eq!(alert.code(), code);
        let mut pair = Pair::new(AES);
        // The level byte is ignored: a "warning" handshake_failure is still fatal.
        let level = if code % 2 == 0 { 1 } else { 2 };
        let mut wire = to_terminal(AES, 0, &[level, code, 21]);
        wire.extend(to_terminal(AES, 1, b"after\x17"));
        pair.terminal.receive(&wire).unwrap();
        assert_eq!(pair.terminal.poll_event(), Some(RecordEvent::Alert(alert)));
        if alert == AlertDescription::UserCanceled {
            // Not fatal (§6.1): reported, and the next record is read.
            assert_eq!(
                pair.terminal.poll_event(),
                Some(RecordEvent::Data(b"after".to_vec()))
            );
            assert!(!pair.terminal.is_failed());
            continue;
        }
        assert!(alert.is_fatal());
        assert_eq!(
            pair.terminal.poll_event(),
            None,
            "nothing after a fatal alert is read"
        );
        assert!(pair.terminal.is_failed());
        assert_eq!(pair.terminal.receive(b""), Err(TlsError::Failed));
        assert_eq!(
            pair.terminal.seal_application(b"x", &mut Vec::new()),
            Err(TlsError::Failed)
        );
        // The peer ended the connection: no alert goes back.
        assert_eq!(
            pair.terminal
                .seal_alert(AlertDescription::InternalError, &mut Vec::new()),
            Err(TlsError::Failed)
        );
    }
}

#[test]
fn a_fatal_alert_sent_ends_the_layer_and_reaches_the_peer() {
    let mut pair = Pair::new(AES);
    let mut out = Vec::new();
    pair.terminal
        .seal_alert(AlertDescription::InternalError, &mut out)
        .unwrap();
    assert!(pair.terminal.is_failed());
    assert_eq!(pair.terminal.receive(b""), Err(TlsError::Failed));
    assert_eq!(pair.terminal.close(&mut Vec::new()), Err(TlsError::Failed));
    pair.peer.receive(&out).unwrap();
    assert_eq!(
        pair.peer.poll_event(),
        Some(RecordEvent::Alert(AlertDescription::InternalError))
    );
    assert!(pair.peer.is_failed());
    // Not after our own close_notify.
    let mut pair = Pair::new(AES);
    pair.terminal.close(&mut Vec::new()).unwrap();
    assert_eq!(
        pair.terminal
            .seal_alert(AlertDescription::DecodeError, &mut Vec::new()),
        Err(TlsError::Closed)
    );
}

// ------------------------------------------------------------------------- construction

#[test]
fn bad_keys_and_bounds_are_refused_at_construction() {
    let d = RecordConfig::default();
    assert_eq!(
        RecordLayer::new(d, keys(AES, 1, 0), keys(CipherSuite::Aes256GcmSha384, 2, 0)).unwrap_err(),
        TlsError::SuiteMismatch {
            expected: 0x1301,
            got: 0x1302
        }
    );
    let short = TrafficKeys {
        key: zeroize::Zeroizing::new(vec![1; 32]),
        ..keys(AES, 2, 0)
    };
    assert_eq!(
        RecordLayer::new(d, keys(AES, 1, 0), short).unwrap_err(),
        TlsError::BadKeyLength { got: 32, want: 16 }
    );
    assert_eq!(
        TrafficKeys::new(CipherSuite::Chacha20Poly1305Sha256, &[0; 16], [0; 12], 0).unwrap_err(),
        TlsError::BadKeyLength { got: 16, want: 32 }
    );
    let refused_cfg =
        |cfg: RecordConfig| RecordLayer::new(cfg, keys(AES, 1, 0), keys(AES, 2, 0)).unwrap_err();
    assert_eq!(
        refused_cfg(RecordConfig {
            max_fragment: 0,
            ..d
        }),
        TlsError::BoundTooSmall {
            field: "max_fragment",
            got: 0,
            min: 1
        }
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            max_fragment: (1 << 14) + 1,
            ..d
        }),
        TlsError::FragmentTooLarge(16385)
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            max_held: 33_032,
            ..d
        }),
        TlsError::BoundTooSmall {
            field: "max_held",
            got: 33_032,
            min: 16_388 + 16_645
        }
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            max_key_updates: 0,
            ..d
        }),
        TlsError::BoundTooSmall {
            field: "max_key_updates",
            got: 0,
            min: 1
        }
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            max_handshake_message: 4,
            ..d
        }),
        TlsError::BoundTooSmall {
            field: "max_handshake_message",
            got: 4,
            min: 5
        }
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            tx_update_margin: 0,
            ..d
        }),
        TlsError::BoundTooSmall {
            field: "tx_update_margin",
            got: 0,
            min: 1
        }
    );
    assert_eq!(
        refused_cfg(RecordConfig {
            tx_update_margin: (1 << 24) - 1,
            ..d
        }),
        TlsError::MarginTooLarge {
            margin: (1 << 24) - 1,
            limit: 1 << 24
        }
    );
    for e in [
        TlsError::SuiteMismatch {
            expected: 1,
            got: 2,
        },
        TlsError::FragmentTooLarge(1),
        TlsError::MarginTooLarge {
            margin: 1,
            limit: 1,
        },
    ] {
        assert_eq!(e.alert(), None);
        assert!(!e.is_fatal());
    }
    // Errors convert into the crate's aggregate.
    let e: deputy::Error = TlsError::BadRecordMac.into();
    assert_eq!(e, deputy::Error::Tls(TlsError::BadRecordMac));
}

#[test]
fn traffic_keys_do_not_show_their_secrets() {
    let k = keys(AES, 0xab, 7);
    let shown = format!("{k:?}");
    assert!(
        shown.contains("Aes128GcmSha256") && shown.contains('7'),
        "{shown}"
    );
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab"),
        "{shown}"
    );
    let layer = RecordLayer::new(RecordConfig::default(), k.clone(), k).unwrap();
    let shown = format!("{layer:?}");
    assert!(!shown.contains("171"), "{shown}");
}

#[test]
fn cipher_suites_map_their_code_points() {
    for suite in CipherSuite::ALL {
        assert_eq!(CipherSuite::from_code(suite.code()), Some(suite));
        assert_eq!(suite.key_len(), suite.aead().key_len());
    }
    assert_eq!(CipherSuite::from_code(0x1304), None);
    assert_eq!(
        CipherSuite::ALL.map(CipherSuite::code),
        [0x1301, 0x1302, 0x1303]
    );
}

// ------------------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_data_round_trips_in_arbitrary_segmentation(
        suite in prop::sample::select(CipherSuite::ALL.to_vec()),
        fragment in prop_oneof![1usize..=64, 1usize..=(1 << 14)],
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 0..6),
        cuts in prop::collection::vec(1usize..2000, 0..40),
    ) {
        let cfg = RecordConfig { max_fragment: fragment, ..RecordConfig::default() };
        let mut pair = Pair::with(suite, cfg);
        let mut wire = Vec::new();
        for c in &chunks {
            pair.terminal.seal_application(c, &mut wire).unwrap();
        }
        // Pieces as cut (the rest whole), never more than the layer takes now, taking
        // the events after each: what a driver does.
        let mut got = Vec::new();
        let mut rest = &wire[..];
        let mut cuts = cuts.into_iter();
        while !rest.is_empty() {
            let cut = cuts.next().unwrap_or(usize::MAX);
            let n = cut.min(rest.len()).min(pair.peer.receive_capacity());
            pair.peer.receive(&rest[..n]).unwrap();
            rest = &rest[n..];
            for e in events(&mut pair.peer) {
                match e {
                    RecordEvent::Data(d) => got.extend(d),
                    other => panic!("{other:?}"),
                }
            }
        }
        prop_assert_eq!(got, chunks.concat());
        pair.peer.end_of_stream().unwrap_err();
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        valid_prefix in any::<bool>(),
        pieces in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..400), 0..8),
        install in prop::collection::vec(any::<bool>(), 8),
    ) {
        let cfg = RecordConfig { max_held: 17_000, max_handshake_message: 300, ..RecordConfig::default() };
        let mut pair = Pair::with(AES, cfg);
        if valid_prefix {
            // A genuine conversation up to a KeyUpdate, then the arbitrary bytes.
            let wire = sealed(&mut pair.peer, b"hello");
            pair.terminal.receive(&wire).unwrap();
            let wire = peer_updates(&mut pair, 3, true);
            pair.terminal.receive(&wire).unwrap();
        }
        for (piece, install) in pieces.iter().zip(install) {
            let before = pair.terminal.receive_capacity();
            match pair.terminal.receive(piece) {
                Ok(()) => {}
                Err(e @ TlsError::ReceiveBacklogFull { .. }) => {
                    prop_assert!(!e.is_fatal());
                    prop_assert_eq!(before, pair.terminal.receive_capacity());
                }
                Err(e) => prop_assert!(e.is_fatal() || e == TlsError::Failed || matches!(e, TlsError::DataAfterCloseNotify(_))),
            }
            if install {
                let _ = pair.terminal.install_rx(keys(AES, 3, 0));
            }
            while pair.terminal.poll_event().is_some() {}
            prop_assert!(pair.terminal.receive_capacity() <= 17_000);
        }
        let _ = pair.terminal.end_of_stream();
    }
}
