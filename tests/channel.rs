//! The secure channel (DESIGN.md §4; seed 002 S203/S206), driven byte by byte.
//!
//! Each test wires a client and a server `Connection` together through a small pump that
//! cuts each direction's bytes into wire messages, so a test can watch, drop, replay or
//! alter any single message.

use std::sync::Arc;

use deputy::channel::messages::{self, ClientHello};
use deputy::channel::{
    AlertCode, ChannelError, ClientCertPolicy, ClientConfig, Connection, PeerIdentity, Psk,
    ServerConfig,
};
use deputy::crypto::CertError;
use deputy::crypto::aead::AeadAlg;
use deputy::crypto::cert::{CertificateAuthority, CertifiedKey, TrustStore};
use deputy::crypto::dh::Group;
use deputy::wire::{Deframer, Limits, Message};
use deputy::{Error, Instant, UnixTime};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

mod common;

const ANCHOR: UnixTime = UnixTime(1_800_000_000);
const DAY: u64 = 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    ToServer,
    ToClient,
}

/// A CA, a server identity for "server.home", a client identity for "device-2133".
struct Pki {
    ca: CertificateAuthority,
    rng: ChaCha20Rng,
}

impl Pki {
    fn new(seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let ca = CertificateAuthority::generate("home CA", &mut rng);
        Pki { ca, rng }
    }

    fn identity(&mut self, name: &str, not_before: UnixTime, lifetime: u64) -> CertifiedKey {
        self.ca
            .issue_identity(name, &[], not_before, lifetime, &mut self.rng)
            .unwrap()
    }

    fn trust(&self) -> TrustStore {
        TrustStore::with(self.ca.certificate().clone())
    }

    fn server(&mut self) -> ServerConfig {
        let id = self.identity("server.home", ANCHOR, DAY);
        ServerConfig::with_certificate(id, ANCHOR)
    }

    fn client(&self) -> ClientConfig {
        ClientConfig::with_ca(self.trust(), "server.home", ANCHOR)
    }

    /// A client that presents `identity` when asked.
    fn client_presenting(&self, identity: CertifiedKey) -> ClientConfig {
        ClientConfig::with_client_certificate(self.trust(), "server.home", identity, ANCHOR)
    }
}

fn psk_pair(group: Group) -> (ClientConfig, ServerConfig) {
    let psk = Psk::new("device-2133", &[0x5a; 32]).unwrap();
    let mut client = ClientConfig::with_psk(psk.clone(), ANCHOR);
    client.group = group;
    let server = ServerConfig::with_psks([psk], ANCHOR).unwrap();
    (client, server)
}

type Mutator<'a> = dyn FnMut(Dir, usize, &mut Vec<u8>) -> bool + 'a;

struct Pair {
    client: Connection,
    server: Connection,
    rng: ChaCha20Rng,
    now: Instant,
    /// Messages seen per direction (after mutation), for tests that replay them.
    seen: Vec<(Dir, Vec<u8>)>,
    count: [usize; 2],
    client_err: Option<Error>,
    server_err: Option<Error>,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig, seed: u64) -> Pair {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let now = Instant::from_secs(100);
        let client = Connection::client(Arc::new(client), now, &mut rng).unwrap();
        let server = Connection::server(Arc::new(server), now);
        Pair {
            client,
            server,
            rng,
            now,
            seen: Vec::new(),
            count: [0; 2],
            client_err: None,
            server_err: None,
        }
    }

    /// Move bytes until nothing moves; `mutate` may change or drop (return false) each
    /// whole message.
    fn pump_with(&mut self, mutate: &mut Mutator<'_>) {
        loop {
            let mut moved = false;
            for dir in [Dir::ToServer, Dir::ToClient] {
                let bytes = match dir {
                    Dir::ToServer => self.client.take_outgoing(),
                    Dir::ToClient => self.server.take_outgoing(),
                };
                if bytes.is_empty() {
                    continue;
                }
                moved = true;
                for mut msg in split(&bytes) {
                    let k = &mut self.count[dir as usize];
                    let index = *k;
                    *k += 1;
                    if !mutate(dir, index, &mut msg) {
                        continue;
                    }
                    self.seen.push((dir, msg.clone()));
                    let (conn, err) = match dir {
                        Dir::ToServer => (&mut self.server, &mut self.server_err),
                        Dir::ToClient => (&mut self.client, &mut self.client_err),
                    };
                    if let Err(e) = conn.feed(self.now, &msg, &mut self.rng) {
                        err.get_or_insert(e);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn pump(&mut self) {
        self.pump_with(&mut |_, _, _| true);
    }

    fn established(&self) -> bool {
        self.client.is_established() && self.server.is_established()
    }

    fn handshake(mut self) -> Pair {
        self.pump();
        assert!(
            self.established(),
            "client: {:?} / server: {:?}",
            self.client_err,
            self.server_err
        );
        self
    }

    /// Feed `bytes` to the server (as if read from its stream), returning its verdict.
    fn server_reads(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.server.feed(self.now, bytes, &mut self.rng)
    }

    /// Send `data` one way and return what the other side received.
    fn transfer(&mut self, dir: Dir, data: &[u8]) -> Vec<u8> {
        match dir {
            Dir::ToServer => self.client.send(data).unwrap(),
            Dir::ToClient => self.server.send(data).unwrap(),
        }
        self.pump();
        match dir {
            Dir::ToServer => self.server.take_received(),
            Dir::ToClient => self.client.take_received(),
        }
        .expect("message delivered")
    }
}

/// Cut a byte stream into whole wire messages.
fn split(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut deframer = Deframer::new(Limits::default());
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let used = deframer.fill(rest).expect("well-formed stream");
        rest = &rest[used..];
        while let Some(m) = deframer.take() {
            out.push(m);
        }
    }
    out
}

fn channel_err(e: &Option<Error>) -> Option<&ChannelError> {
    match e {
        Some(Error::Channel(c)) => Some(c),
        _ => None,
    }
}

#[test]
fn certificate_mode_handshake_with_x25519_and_modp2048() {
    for group in [Group::X25519, Group::Modp2048] {
        let mut pki = Pki::new(1);
        let server = pki.server();
        let mut client = pki.client();
        client.group = group;
        let mut pair = Pair::new(client, server, 2).handshake();

        match pair.client.peer() {
            PeerIdentity::Certificate(c) => assert_eq!(c.subject(), "server.home"),
            other => panic!("client sees {other:?}"),
        }
        assert_eq!(pair.server.peer(), &PeerIdentity::Anonymous);
        assert_eq!(pair.client.session_id(), pair.server.session_id());
        assert_ne!(pair.client.session_id(), 0);
        assert_eq!(pair.client.suite(), Some(AeadAlg::ChaCha20Poly1305));

        assert_eq!(
            pair.transfer(Dir::ToServer, b"connection request"),
            b"connection request"
        );
        assert_eq!(pair.transfer(Dir::ToClient, b"notice"), b"notice");

        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        pair.client
            .export_keying_material("test", b"ctx", &mut a)
            .unwrap();
        pair.server
            .export_keying_material("test", b"ctx", &mut b)
            .unwrap();
        assert_eq!(a, b);
        pair.server
            .export_keying_material("test", b"other", &mut b)
            .unwrap();
        assert_ne!(a, b);
        // Label and context are kept apart: moving a byte from one to the other is
        // another key.
        pair.server
            .export_keying_material("testc", b"tx", &mut b)
            .unwrap();
        assert_ne!(a, b);
    }
}

#[test]
fn psk_mode_handshake_with_x25519_and_modp2048() {
    for group in [Group::X25519, Group::Modp2048] {
        let (client, server) = psk_pair(group);
        let mut pair = Pair::new(client, server, 3).handshake();
        assert_eq!(
            pair.server.peer(),
            &PeerIdentity::Psk(b"device-2133".to_vec())
        );
        assert_eq!(
            pair.client.peer(),
            &PeerIdentity::Psk(b"device-2133".to_vec())
        );
        assert_eq!(pair.transfer(Dir::ToServer, b"hello"), b"hello");
        assert_eq!(pair.transfer(Dir::ToClient, b"world"), b"world");
    }
}

#[test]
fn every_suite_negotiates_and_client_preference_wins() {
    for suite in AeadAlg::ALL {
        let (mut client, server) = psk_pair(Group::X25519);
        client.common.suites = vec![suite];
        let mut pair = Pair::new(client, server, 4).handshake();
        assert_eq!(pair.client.suite(), Some(suite));
        assert_eq!(pair.transfer(Dir::ToServer, &[7; 100]), [7; 100]);
    }
    let (mut client, mut server) = psk_pair(Group::X25519);
    client.common.suites = vec![AeadAlg::ChaCha20Poly1305, AeadAlg::Aes256Gcm];
    server.common.suites = vec![AeadAlg::Aes256Gcm, AeadAlg::ChaCha20Poly1305];
    let pair = Pair::new(client, server, 5).handshake();
    // The client (the weak end) states its preference and the server follows it.
    assert_eq!(pair.server.suite(), Some(AeadAlg::ChaCha20Poly1305));
    assert_eq!(pair.client.suite(), Some(AeadAlg::ChaCha20Poly1305));
    // A suite the server does not accept is skipped, whatever the client's order.
    let (mut client, mut server) = psk_pair(Group::X25519);
    client.common.suites = vec![AeadAlg::Aes128Gcm, AeadAlg::Aes256Gcm];
    server.common.suites = vec![AeadAlg::ChaCha20Poly1305, AeadAlg::Aes256Gcm];
    let pair = Pair::new(client, server, 5).handshake();
    assert_eq!(pair.server.suite(), Some(AeadAlg::Aes256Gcm));
}

#[test]
fn client_certificate_required_and_present() {
    let mut pki = Pki::new(6);
    let device = pki.identity("device-2133", ANCHOR, DAY);
    let mut server = pki.server();
    server.client_certs = ClientCertPolicy::Required(pki.trust());
    let client = pki.client_presenting(device);
    let pair = Pair::new(client, server, 7).handshake();
    let cert = pair.server.peer_certificate().expect("client certificate");
    assert_eq!(cert.subject(), "device-2133");
}

#[test]
fn client_certificate_required_and_missing_is_refused() {
    let mut pki = Pki::new(8);
    let mut server = pki.server();
    server.client_certs = ClientCertPolicy::Required(pki.trust());
    let mut pair = Pair::new(pki.client(), server, 9);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::ClientCertificateRequired)
    );
    assert!(!pair.server.is_established());
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::PeerAlert(AlertCode::CertificateRequired))
    );
}

#[test]
fn optional_client_certificate_may_be_absent() {
    let mut pki = Pki::new(10);
    let mut server = pki.server();
    server.client_certs = ClientCertPolicy::Optional(pki.trust());
    let pair = Pair::new(pki.client(), server, 11).handshake();
    assert_eq!(pair.server.peer(), &PeerIdentity::Anonymous);
}

#[test]
fn client_certificate_from_another_ca_is_refused() {
    let mut pki = Pki::new(12);
    let mut rogue = Pki::new(13);
    let device = rogue.identity("device-2133", ANCHOR, DAY);
    let mut server = pki.server();
    server.client_certs = ClientCertPolicy::Required(pki.trust());
    let mut pair = Pair::new(pki.client_presenting(device), server, 14);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::Certificate(CertError::UnknownIssuer(
            "home CA".into()
        )))
    );
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::PeerAlert(AlertCode::UnknownCa))
    );
}

#[test]
fn server_certificate_from_the_wrong_ca_is_refused() {
    let mut rogue = Pki::new(15);
    let pki = Pki::new(16);
    let mut pair = Pair::new(pki.client(), rogue.server(), 17);
    pair.pump();
    assert!(matches!(
        channel_err(&pair.client_err),
        Some(ChannelError::Certificate(CertError::UnknownIssuer(_)))
    ));
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::PeerAlert(AlertCode::UnknownCa))
    );
    assert!(!pair.client.is_established());
}

#[test]
fn expired_and_not_yet_valid_server_certificates_are_refused() {
    for (not_before, expect) in [
        (
            UnixTime(ANCHOR.0 - 2 * DAY),
            CertError::Expired(ANCHOR.0 - DAY),
        ),
        (
            UnixTime(ANCHOR.0 + DAY),
            CertError::NotYetValid(ANCHOR.0 + DAY),
        ),
    ] {
        let mut pki = Pki::new(18);
        let id = pki.identity("server.home", not_before, DAY);
        let server = ServerConfig::with_certificate(id, ANCHOR);
        let mut pair = Pair::new(pki.client(), server, 19);
        pair.pump();
        assert_eq!(
            channel_err(&pair.client_err),
            Some(&ChannelError::Certificate(expect))
        );
        assert_eq!(
            channel_err(&pair.server_err),
            Some(&ChannelError::PeerAlert(AlertCode::CertificateExpired))
        );
    }
}

#[test]
fn a_server_certificate_naming_another_server_is_refused() {
    // An honest server refuses a name it does not hold.
    let mut pki = Pki::new(20);
    let other = pki.identity("other.home", ANCHOR, DAY);
    let mut pair = Pair::new(
        pki.client(),
        ServerConfig::with_certificate(other, ANCHOR),
        21,
    );
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::UnrecognizedName)
    );
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::PeerAlert(AlertCode::UnrecognizedName))
    );

    // A man in the middle who rewrites the name in the hello changes the transcript, and
    // with it the handshake keys: the client cannot even read the server's flight.
    let mut pki = Pki::new(22);
    let impostor = pki.identity("other.home", ANCHOR, DAY);
    let mut pair = Pair::new(
        pki.client(),
        ServerConfig::with_certificate(impostor, ANCHOR),
        23,
    );
    pair.pump_with(&mut |dir, index, msg| {
        if dir == Dir::ToServer && index == 0 {
            let decoded = Message::decode(msg, &Limits::default()).unwrap();
            let mut hello = ClientHello::decode(&decoded, &Limits::default()).unwrap();
            hello.server_name = Some("other.home".into());
            *msg = hello.encode().unwrap();
        }
        true
    });
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::DecryptFailed)
    );
    assert!(!pair.client.is_established());

    // A client that keeps the name private relies on its own check of the certificate.
    let mut pki = Pki::new(22);
    let impostor = pki.identity("other.home", ANCHOR, DAY);
    let mut client = pki.client();
    client.send_server_name = false;
    let mut pair = Pair::new(client, ServerConfig::with_certificate(impostor, ANCHOR), 23);
    pair.pump();
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::Certificate(CertError::NameMismatch {
            expected: "server.home".into()
        }))
    );
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::PeerAlert(AlertCode::BadCertificate))
    );
    assert!(!pair.client.is_established() && !pair.server.is_established());
    // A refused identity, on both sides, and not damage.
    for e in [&pair.client_err, &pair.server_err] {
        let e = channel_err(e).unwrap();
        assert!(e.is_identity_refusal() && !e.is_transport_damage(), "{e:?}");
    }
}

#[test]
fn wrong_or_unknown_psk_is_refused() {
    let (_, server) = psk_pair(Group::X25519);
    let wrong = Psk::new("device-2133", &[0x5b; 32]).unwrap();
    let mut pair = Pair::new(ClientConfig::with_psk(wrong, ANCHOR), server, 24);
    pair.pump();
    assert!(!pair.client.is_established() && !pair.server.is_established());
    // Different PSKs give different handshake keys: each side fails to authenticate what
    // the other sent (the client's alert included).
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::DecryptFailed)
    );
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::DecryptFailed)
    );

    let (_, server) = psk_pair(Group::X25519);
    let stranger = Psk::new("device-9999", &[0x5a; 32]).unwrap();
    let mut pair = Pair::new(ClientConfig::with_psk(stranger, ANCHOR), server, 25);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::UnknownPskIdentity)
    );
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::PeerAlert(AlertCode::UnknownPskIdentity))
    );
}

#[test]
fn parameter_mismatches_are_refused() {
    let (mut client, server) = psk_pair(Group::X25519);
    client.common.suites = vec![AeadAlg::Aes128Gcm];
    let mut server = server;
    server.common.suites = vec![AeadAlg::ChaCha20Poly1305];
    let mut pair = Pair::new(client, server, 26);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::NoCommonSuite)
    );

    let (client, mut server) = psk_pair(Group::Modp2048);
    server.groups = vec![Group::X25519];
    let mut pair = Pair::new(client, server, 27);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::UnsupportedGroup(14))
    );
    assert_eq!(
        channel_err(&pair.client_err),
        Some(&ChannelError::PeerAlert(AlertCode::HandshakeFailure))
    );

    let mut pki = Pki::new(28);
    let (_, psk_server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(pki.client(), psk_server, 29);
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::AuthModeUnavailable)
    );
    let _ = pki.server();
}

/// Run a handshake in which byte `byte` of message `index` in direction `dir` has one bit
/// flipped; return the channel errors of both sides (client, server) if it failed.
fn flipped_handshake_fails(
    configs: &dyn Fn() -> (ClientConfig, ServerConfig),
    dir: Dir,
    index: usize,
    byte: usize,
    bit: u8,
) -> Option<[Option<ChannelError>; 2]> {
    let (client, server) = configs();
    let mut pair = Pair::new(client, server, 30);
    pair.pump_with(&mut |d, i, msg| {
        if d == dir && i == index {
            msg[byte] ^= bit;
        }
        true
    });
    // A flipped length can leave one side waiting for bytes that never come: the
    // handshake deadline turns that into a typed error too.
    let later = pair.now + std::time::Duration::from_secs(60);
    for (conn, err) in [
        (&mut pair.client, &mut pair.client_err),
        (&mut pair.server, &mut pair.server_err),
    ] {
        if let Err(e) = conn.handle_timeout(later) {
            err.get_or_insert(e);
        }
    }
    let errors = [
        channel_err(&pair.client_err).cloned(),
        channel_err(&pair.server_err).cloned(),
    ];
    (!pair.established() && errors.iter().any(Option::is_some)).then_some(errors)
}

fn check_every_flip(configs: &dyn Fn() -> (ClientConfig, ServerConfig)) -> usize {
    let (client, server) = configs();
    let mut clean = Pair::new(client, server, 30).handshake();
    clean.pump();
    let mut index = [0usize; 2];
    let mut checked = 0;
    for (dir, msg) in clean.seen.clone() {
        let i = index[dir as usize];
        index[dir as usize] += 1;
        for byte in 0..msg.len() {
            for bit in [0x01, 0x80] {
                let errors = flipped_handshake_fails(configs, dir, i, byte, bit);
                let name = messages::type_name(msg[3]);
                let Some(errors) = errors else {
                    panic!(
                        "{dir:?} message {i} ({name:?}) byte {byte} bit {bit:#x} went unnoticed"
                    );
                };
                // Issue 13, item 5: damage to an authenticated message is reported as
                // damage on both sides, never as a refused identity (the hellos are
                // plaintext: damage there may be refused as what it reads).
                if msg[3] == messages::RECORD {
                    for e in errors.iter().flatten() {
                        assert!(
                            e.is_transport_damage() || *e == ChannelError::HandshakeTimeout,
                            "{dir:?} message {i} byte {byte} bit {bit:#x}: {e:?}"
                        );
                        assert!(!e.is_identity_refusal());
                    }
                }
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn any_flipped_handshake_byte_fails_the_handshake_certificate_mode() {
    let n = check_every_flip(&|| {
        let mut pki = Pki::new(31);
        let device = pki.identity("device-2133", ANCHOR, DAY);
        let mut server = pki.server();
        server.client_certs = ClientCertPolicy::Required(pki.trust());
        (pki.client_presenting(device), server)
    });
    assert!(n > 1000, "only {n} flips checked");
}

#[test]
fn any_flipped_handshake_byte_fails_the_handshake_psk_mode() {
    let n = check_every_flip(&|| psk_pair(Group::X25519));
    assert!(n > 500, "only {n} flips checked");
}

/// An established pair and two records the client sent, not yet delivered.
fn two_records() -> (Pair, Vec<u8>, Vec<u8>) {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 32).handshake();
    pair.client.send(b"first").unwrap();
    let first = pair.client.take_outgoing();
    pair.client.send(b"second").unwrap();
    let second = pair.client.take_outgoing();
    (pair, first, second)
}

/// The server refuses `record` as out of order (`got` where `expected` was due) and
/// delivers nothing.
fn assert_out_of_order(pair: &mut Pair, record: &[u8], expected: u64, got: u64) {
    let err = pair.server_reads(record).unwrap_err();
    assert_eq!(
        err,
        Error::Channel(ChannelError::RecordOutOfOrder { expected, got })
    );
    assert_eq!(pair.server.take_received(), None);
}

#[test]
fn a_replayed_record_is_rejected() {
    let (mut pair, first, _) = two_records();
    pair.server_reads(&first).unwrap();
    assert_eq!(pair.server.take_received().unwrap(), b"first");
    assert_out_of_order(&mut pair, &first, 1, 0);
}

#[test]
fn a_reordered_record_is_rejected() {
    let (mut pair, _, second) = two_records();
    assert_out_of_order(&mut pair, &second, 0, 1);
}

#[test]
fn a_truncated_record_is_rejected() {
    // Shortened ciphertext, re-framed so the framing itself is valid.
    let (mut pair, first, _) = two_records();
    let msg = Message::decode(&first, &Limits::default()).unwrap();
    let mut env = messages::RecordEnvelope::decode(&msg, &Limits::default()).unwrap();
    env.ciphertext.truncate(env.ciphertext.len() - 1);
    let err = pair.server_reads(&env.encode().unwrap()).unwrap_err();
    assert_eq!(err, Error::Channel(ChannelError::DecryptFailed));

    // The stream ends in the middle of a record.
    let (mut pair, first, _) = two_records();
    pair.server_reads(&first[..first.len() - 3]).unwrap();
    assert_eq!(pair.server.take_received(), None);
    assert_eq!(
        pair.server.stream_closed(),
        Err(Error::Channel(ChannelError::TruncatedStream))
    );
}

#[test]
fn records_round_trip_up_to_the_bound_and_no_further() {
    let (client, server) = psk_pair(Group::X25519);
    let max = client.common.max_record_len;
    let mut pair = Pair::new(client, server, 33).handshake();
    for len in [0, 1, 1000, max] {
        let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(pair.transfer(Dir::ToServer, &data), data);
        assert_eq!(pair.transfer(Dir::ToClient, &data), data);
    }
    assert_eq!(
        pair.client.send(&vec![0; max + 1]),
        Err(Error::Channel(ChannelError::RecordTooLarge {
            len: max + 1,
            max
        }))
    );
    assert!(
        pair.client.take_outgoing().is_empty(),
        "refused send left no trace"
    );
    assert_eq!(pair.transfer(Dir::ToServer, b"still fine"), b"still fine");

    // A peer configured with a larger bound cannot push an oversize record on us.
    let (mut client, server) = psk_pair(Group::X25519);
    client.common.max_record_len = 2 * max;
    let mut pair = Pair::new(client, server, 34).handshake();
    pair.client.send(&vec![1; max + 1]).unwrap();
    pair.pump();
    assert!(matches!(
        channel_err(&pair.server_err),
        Some(ChannelError::RecordTooLarge { .. })
    ));
}

#[test]
fn graceful_close_versus_truncation() {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 35).handshake();
    pair.client.send(b"last words").unwrap();
    pair.client.close().unwrap();
    assert_eq!(
        pair.client.send(b"more"),
        Err(Error::Channel(ChannelError::Closed))
    );
    pair.pump();
    assert_eq!(pair.server.take_received().unwrap(), b"last words");
    assert!(pair.server.peer_closed());
    assert_eq!(pair.server.stream_closed(), Ok(()));

    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 36).handshake();
    assert_eq!(
        pair.server.stream_closed(),
        Err(Error::Channel(ChannelError::TruncatedStream))
    );
}

#[test]
fn handshake_times_out() {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 37);
    let deadline = pair.client.poll_timeout().expect("handshake deadline");
    assert_eq!(
        pair.client
            .handle_timeout(deadline - std::time::Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(
        pair.client.handle_timeout(deadline),
        Err(Error::Channel(ChannelError::HandshakeTimeout))
    );
    assert_eq!(pair.client.poll_timeout(), None);
}

#[test]
fn sending_before_the_handshake_changes_nothing() {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 38);
    assert_eq!(
        pair.client.send(b"too early"),
        Err(Error::Channel(ChannelError::NotEstablished))
    );
    let pair = pair.handshake();
    assert!(pair.established());
}

#[test]
fn receive_queue_and_outgoing_buffer_are_bounded() {
    let (client, mut server) = psk_pair(Group::X25519);
    server.common.max_received = 3;
    let mut pair = Pair::new(client, server, 39).handshake();
    for i in 0..4u8 {
        pair.client.send(&[i]).unwrap();
    }
    pair.pump();
    assert_eq!(
        channel_err(&pair.server_err),
        Some(&ChannelError::ReceiveQueueFull(3))
    );

    let (mut client, server) = psk_pair(Group::X25519);
    client.common.max_outgoing = 4096;
    let mut pair = Pair::new(client, server, 40).handshake();
    let mut sent = 0;
    let err = loop {
        match pair.client.send(&[0; 1000]) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(sent, 3);
    assert_eq!(
        err,
        Error::CapacityExceeded {
            what: "channel outgoing buffer",
            bound: 4096
        }
    );
    assert!(
        pair.client.is_established(),
        "a full buffer is not a failure"
    );
}

#[test]
fn garbage_fails_the_connection_with_a_typed_error_and_it_stays_failed() {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 41);
    let err = pair.server_reads(b"GET / HTTP/1.1\r\n\r\n").unwrap_err();
    assert_eq!(
        err,
        Error::Channel(ChannelError::Decode(deputy::wire::WireError::BadMagic))
    );
    let alert = pair.server.take_outgoing();
    assert_eq!(alert[3], messages::ALERT, "the peer is told");
    assert_eq!(
        pair.server_reads(b"anything"),
        Err(Error::Channel(ChannelError::Failed))
    );
}

/// A driver that reads a stream in large chunks hands the server actor many records in one
/// `StreamData`; the actor drains its connection as it goes, so a burst of small messages
/// from a well-behaved client is delivered rather than tripping the receive-queue bound.
#[test]
fn a_burst_of_records_in_one_read_reaches_the_server_actor() {
    use deputy::channel::{ChannelEvent, ChannelServer, ChannelServerConfig};
    use deputy::{Actor, Input, Output, StreamId};

    let (client_cfg, server_cfg) = psk_pair(Group::X25519);
    let bound = server_cfg.common.max_received;
    let mut rng = ChaCha20Rng::seed_from_u64(50);
    let now = Instant::from_secs(1);
    let mut server = ChannelServer::new(
        ChannelServerConfig {
            channel: Arc::new(server_cfg),
            max_sessions: 1,
        },
        Box::new(ChaCha20Rng::seed_from_u64(51)),
    );
    let id = StreamId::inbound(1);
    server
        .handle_input(
            now,
            Input::StreamAccepted {
                id,
                local: "198.51.100.10:443".parse().unwrap(),
                remote: "198.51.100.2:5000".parse().unwrap(),
            },
        )
        .unwrap();
    let mut client = Connection::client(Arc::new(client_cfg), now, &mut rng).unwrap();
    let mut events = Vec::new();
    let mut to_server = |server: &mut ChannelServer, data: &[u8]| {
        let result = server.handle_input(now, Input::StreamData { id, data });
        let mut back = Vec::new();
        while let Some(out) = server.poll_output() {
            match out {
                Output::StreamSend { data, .. } => back.extend(data),
                Output::Event(e) => events.push(e),
                _ => {}
            }
        }
        (result, back)
    };
    let (result, back) = to_server(&mut server, &client.take_outgoing());
    result.unwrap();
    client.feed(now, &back, &mut rng).unwrap();
    let (result, _) = to_server(&mut server, &client.take_outgoing());
    result.unwrap();
    assert!(client.is_established());

    let n = 3 * bound;
    for i in 0..n {
        client.send(&(i as u32).to_be_bytes()).unwrap();
    }
    let (result, _) = to_server(&mut server, &client.take_outgoing());
    result.unwrap();
    let received: Vec<Vec<u8>> = events
        .into_iter()
        .filter_map(|e| match e {
            ChannelEvent::Received { data, .. } => Some(data),
            _ => None,
        })
        .collect();
    assert_eq!(received.len(), n);
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, d)| d[..] == (i as u32).to_be_bytes())
    );
}

mod through_the_simulator {
    //! The ready-made actors, over simulated TCP through a NAPT router.

    use super::*;
    use common::Build;
    use deputy::channel::{ChannelClient, ChannelEvent, ChannelServer, ChannelServerConfig};
    use deputy::sim::{LinkConfig, NatConfig, NodeId, Sim};
    use std::time::Duration;

    struct World {
        sim: Sim,
        server: NodeId,
        clients: Vec<NodeId>,
    }

    /// `n` clients on a LAN behind a NAPT, a PSK server on the internet allowing
    /// `max_sessions` connections.
    fn world(n: usize, max_sessions: usize) -> World {
        let mut sim = Sim::new(77);
        let lan = sim.net_with(
            "lan",
            "10.1.0.0/24",
            LinkConfig::with_latency(Duration::from_millis(2)),
        );
        let wan = sim.net_with(
            "wan",
            "198.51.100.0/24",
            LinkConfig::with_latency(Duration::from_millis(10)),
        );
        sim.napt(
            "nat",
            (lan, "10.1.0.1"),
            (wan, "198.51.100.2"),
            NatConfig::default(),
        );
        let (_, server_cfg) = psk_pair(Group::X25519);
        let server = sim.host(
            "server",
            wan,
            "198.51.100.10",
            ChannelServer::new(
                ChannelServerConfig {
                    channel: Arc::new(server_cfg),
                    max_sessions,
                },
                Box::new(sim.rng("server")),
            ),
        );
        sim.listen(server, 443).unwrap();
        let clients = (0..n)
            .map(|i| {
                let (client_cfg, _) = psk_pair(Group::X25519);
                let ip = format!("10.1.0.{}", 10 + i);
                sim.host(
                    &format!("client{i}"),
                    lan,
                    &ip,
                    ChannelClient::new(
                        Arc::new(client_cfg),
                        format!("{ip}:0").parse().unwrap(),
                        "198.51.100.10:443".parse().unwrap(),
                        Box::new(sim.rng(&format!("client{i}"))),
                    ),
                )
            })
            .collect();
        World {
            sim,
            server,
            clients,
        }
    }

    #[test]
    fn client_and_server_actors_exchange_messages_through_a_napt() {
        let mut w = world(1, 8);
        let client = w.clients[0];
        w.sim
            .with_actor(client, |c: &mut ChannelClient, now| {
                c.connect(now).unwrap();
                // Queued until the handshake completes.
                c.send(b"early reading").unwrap();
            })
            .unwrap();
        w.sim.run_for(Duration::from_secs(1)).unwrap();

        let server_saw = common::events::<ChannelEvent>(&mut w.sim, w.server);
        let (stream, peer) = match &server_saw[0] {
            ChannelEvent::Established { stream, peer, .. } => (*stream, peer.clone()),
            other => panic!("server saw {other:?}"),
        };
        assert_eq!(peer, PeerIdentity::Psk(b"device-2133".to_vec()));
        assert_eq!(
            server_saw[1],
            ChannelEvent::Received {
                stream,
                data: b"early reading".to_vec()
            }
        );
        assert_eq!(server_saw.len(), 2);

        w.sim
            .command(w.server, |s: &mut ChannelServer, _| s.send(stream, b"ack"))
            .unwrap();
        w.sim.run_for(Duration::from_secs(1)).unwrap();
        let client_saw = common::events::<ChannelEvent>(&mut w.sim, client);
        assert!(matches!(client_saw[0], ChannelEvent::Established { .. }));
        assert!(matches!(&client_saw[1], ChannelEvent::Received { data, .. } if data == b"ack"));

        w.sim
            .command(client, |c: &mut ChannelClient, _| c.close())
            .unwrap();
        w.sim.run_for(Duration::from_secs(1)).unwrap();
        assert!(matches!(
            common::events::<ChannelEvent>(&mut w.sim, w.server)[..],
            [ChannelEvent::Closed { .. }]
        ));
        assert!(matches!(
            common::events::<ChannelEvent>(&mut w.sim, client)[..],
            [ChannelEvent::Closed { .. }]
        ));
        let server_sessions = w
            .sim
            .actor::<ChannelServer>(w.server)
            .unwrap()
            .session_count();
        assert_eq!(server_sessions, 0);
        // Nothing in the clear: the payload never appears in any recorded packet.
        assert!(
            !w.sim
                .pcap_bytes()
                .windows(13)
                .any(|x| x == b"early reading")
        );
    }

    #[test]
    fn server_session_bound_is_enforced() {
        let mut w = world(3, 2);
        for &c in &w.clients {
            w.sim
                .command(c, |c: &mut ChannelClient, now| c.connect(now).map(|_| ()))
                .unwrap();
        }
        w.sim.run_for(Duration::from_secs(2)).unwrap();
        let established = common::events::<ChannelEvent>(&mut w.sim, w.server)
            .iter()
            .filter(|e| matches!(e, ChannelEvent::Established { .. }))
            .count();
        assert_eq!(established, 2);
        let faults = w.sim.faults(w.server).unwrap();
        assert!(faults.iter().any(|f| f.error
            == Error::CapacityExceeded {
                what: "channel server sessions",
                bound: 2
            }));
        // The refused client learns its stream is gone (a truncated handshake).
        let refused: Vec<_> = w
            .clients
            .clone()
            .into_iter()
            .filter(|&c| {
                common::events::<ChannelEvent>(&mut w.sim, c)
                    .iter()
                    .any(|e| matches!(e, ChannelEvent::Failed { .. }))
            })
            .collect();
        assert_eq!(refused.len(), 1);
    }
}

#[test]
fn messages_authenticated_before_a_failure_are_delivered_whatever_the_read_size() {
    // Two good records then a tampered one, delivered in one read and byte by byte: the
    // application gets the same two messages and the same error either way.
    for byte_by_byte in [false, true] {
        let (client, server) = psk_pair(Group::X25519);
        let mut pair = Pair::new(client, server, 42).handshake();
        pair.client.send(b"one").unwrap();
        pair.client.send(b"two").unwrap();
        pair.client.send(b"three").unwrap();
        let mut bytes = pair.client.take_outgoing();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let mut error = None;
        let reads: Vec<&[u8]> = if byte_by_byte {
            bytes.chunks(1).collect()
        } else {
            vec![&bytes[..]]
        };
        for read in reads {
            if let Err(e) = pair.server_reads(read) {
                error = Some(e);
                break;
            }
        }
        assert_eq!(error, Some(Error::Channel(ChannelError::DecryptFailed)));
        assert_eq!(pair.server.take_received().unwrap(), b"one");
        assert_eq!(pair.server.take_received().unwrap(), b"two");
        assert_eq!(pair.server.take_received(), None);
    }
}

// ----- progress and liveness (issue 13, item 3) -----

/// One application record from the client, as bytes on the stream.
fn one_record(pair: &mut Pair, data: &[u8]) -> Vec<u8> {
    pair.client.send(data).unwrap();
    pair.client.take_outgoing()
}

/// A record whose length field was damaged in transit (lengthened), or whose tail never
/// arrived, leaves a partial message in the reader: the progress timer fails the
/// connection with a typed error instead of waiting for bytes that never come, and the
/// peer is told.
#[test]
fn corrupted_record_length_is_detected_not_stalled() {
    let progress = deputy::channel::Common::DEFAULT_PROGRESS_TIMEOUT;
    // Lengthened: the header claims 16 more body bytes than follow.
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 60).handshake();
    let mut record = one_record(&mut pair, b"status");
    record[7] = record[7].wrapping_add(16);
    let started = pair.now;
    pair.server_reads(&record).unwrap();
    assert_eq!(pair.server.take_received(), None);
    assert_eq!(pair.server.poll_timeout(), Some(started + progress));
    // More bytes of the same message do not restart its clock.
    pair.now = started + std::time::Duration::from_secs(5);
    pair.server_reads(&[0; 4]).unwrap();
    let deadline = started + progress;
    assert_eq!(pair.server.poll_timeout(), Some(deadline));
    assert_eq!(
        pair.server
            .handle_timeout(deadline - std::time::Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(
        pair.server.handle_timeout(deadline),
        Err(Error::Channel(ChannelError::IncompleteRecord {
            buffered: record.len() + 4
        }))
    );
    // The alert reaches the client, whose direction's framing is intact.
    let alert = pair.server.take_outgoing();
    assert_eq!(
        pair.client.feed(deadline, &alert, &mut pair.rng),
        Err(Error::Channel(ChannelError::PeerAlert(
            AlertCode::DecodeError
        )))
    );
    assert!(pair.server.error().unwrap().is_transport_damage());

    // Truncated: only the first half of a message arrives, during the handshake too (with
    // a progress timeout shorter than the handshake's, so it is the one that fires).
    let (client, mut server) = psk_pair(Group::X25519);
    server.common.progress_timeout = std::time::Duration::from_secs(1);
    let mut pair = Pair::new(client, server, 61);
    let hello = pair.client.take_outgoing();
    pair.server_reads(&hello[..hello.len() / 2]).unwrap();
    let at = pair.now + std::time::Duration::from_secs(1);
    assert_eq!(pair.server.poll_timeout(), Some(at));
    assert_eq!(
        pair.server.handle_timeout(at),
        Err(Error::Channel(ChannelError::IncompleteRecord {
            buffered: hello.len() / 2
        }))
    );

    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 62).handshake();
    let record = one_record(&mut pair, b"status");
    pair.server_reads(&record[..record.len() / 2]).unwrap();
    let deadline = pair.server.poll_timeout().unwrap();
    assert_eq!(deadline, pair.now + progress);
    assert_eq!(
        pair.server.handle_timeout(deadline),
        Err(Error::Channel(ChannelError::IncompleteRecord {
            buffered: record.len() / 2
        }))
    );
}

/// A record that arrives slowly but completes before the progress timeout is delivered;
/// each message has its own clock.
#[test]
fn a_slow_record_that_completes_is_not_a_stall() {
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 63).handshake();
    let record = one_record(&mut pair, b"slowly");
    let start = pair.now;
    for (i, byte) in record.chunks(1).enumerate() {
        pair.now = start + std::time::Duration::from_millis(100 * i as u64);
        pair.server.handle_timeout(pair.now).unwrap();
        pair.server_reads(byte).unwrap();
    }
    assert_eq!(pair.server.take_received().unwrap(), b"slowly");
    // Nothing partial is left: the next deadline is the keepalive, counted from the
    // record's arrival.
    assert_eq!(
        pair.server.poll_timeout(),
        Some(pair.now + deputy::channel::Common::DEFAULT_KEEPALIVE_INTERVAL)
    );
}

/// An idle established connection asks its peer with a keepalive request; a peer that
/// never answers fails the connection within interval + timeout of when it was last
/// heard.
#[test]
fn silent_peer_is_detected_by_keepalive() {
    use deputy::channel::Common;
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 64).handshake();
    let heard = pair.now;
    let ask = heard + Common::DEFAULT_KEEPALIVE_INTERVAL;
    assert_eq!(pair.client.poll_timeout(), Some(ask));
    pair.client.handle_timeout(ask).unwrap();
    let request = pair.client.take_outgoing();
    assert_eq!(
        request[3],
        messages::RECORD,
        "a keepalive is a sealed record"
    );
    // The request is lost (the peer is gone): no answer comes.
    let deadline = ask + Common::DEFAULT_KEEPALIVE_TIMEOUT;
    assert_eq!(pair.client.poll_timeout(), Some(deadline));
    assert_eq!(
        pair.client.handle_timeout(deadline),
        Err(Error::Channel(ChannelError::PeerSilent))
    );
    assert_eq!(pair.client.poll_timeout(), None);

    // After our close-notify the peer owes its own; nothing may follow ours, so the
    // keepalive timer only starts the wait, which the same timeout bounds.
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 65).handshake();
    pair.client.close().unwrap();
    let _lost = pair.client.take_outgoing();
    let ask = pair.now + Common::DEFAULT_KEEPALIVE_INTERVAL;
    assert_eq!(pair.client.poll_timeout(), Some(ask));
    pair.client.handle_timeout(ask).unwrap();
    assert!(
        pair.client.take_outgoing().is_empty(),
        "nothing after close-notify"
    );
    let deadline = ask + Common::DEFAULT_KEEPALIVE_TIMEOUT;
    assert_eq!(
        pair.client.handle_timeout(deadline),
        Err(Error::Channel(ChannelError::PeerSilent))
    );
}

/// A keepalive request is answered by the peer at once; neither reaches an application,
/// both sides stay up, and the peer's activity clock does not count it.
#[test]
fn keepalives_are_answered_and_never_delivered() {
    use deputy::channel::Common;
    let (client, server) = psk_pair(Group::X25519);
    let mut pair = Pair::new(client, server, 66).handshake();
    let start = pair.now;
    for round in 1..=3u32 {
        let ask = pair.client.poll_timeout().unwrap();
        pair.now = ask;
        pair.client.handle_timeout(ask).unwrap();
        pair.pump();
        assert_eq!(pair.server.take_received(), None);
        assert_eq!(pair.client.take_received(), None);
        assert!(pair.established(), "round {round}");
        assert_eq!(pair.client_err, None);
        assert_eq!(pair.server_err, None);
        // Answered: the next request is due an interval after the answer.
        assert_eq!(
            pair.client.poll_timeout(),
            Some(ask + Common::DEFAULT_KEEPALIVE_INTERVAL)
        );
    }
    assert_eq!(pair.server.last_activity(), start);
    assert_eq!(pair.client.last_activity(), start);
    // Application data still flows after them (sequence numbers stayed in step).
    assert_eq!(pair.transfer(Dir::ToServer, b"after"), b"after");
    assert_eq!(pair.server.last_activity(), pair.now);
}

/// The channel client's connect has a deadline too: a stream that never opens fails with
/// a typed error, and a late report of it is refused.
#[test]
fn client_connect_times_out_with_a_typed_error() {
    use deputy::channel::{ChannelClient, ChannelEvent};
    use deputy::{Actor, Input, Output};

    let (client_cfg, _) = psk_pair(Group::X25519);
    let timeout = client_cfg.common.handshake_timeout;
    let mut client = ChannelClient::new(
        Arc::new(client_cfg),
        "10.0.0.7:0".parse().unwrap(),
        "198.51.100.1:443".parse().unwrap(),
        Box::new(ChaCha20Rng::seed_from_u64(67)),
    );
    let now = Instant::from_secs(3);
    let id = client.connect(now).unwrap();
    assert!(matches!(client.poll_output(), Some(Output::Connect { .. })));
    assert_eq!(client.poll_timeout(), Some(now + timeout));
    client.handle_timeout(now + timeout);
    assert_eq!(client.poll_output(), Some(Output::StreamClose { id }));
    assert_eq!(
        client.poll_output(),
        Some(Output::Event(ChannelEvent::Failed {
            stream: id,
            error: ChannelError::ConnectTimeout
        }))
    );
    assert_eq!(client.poll_output(), None);
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(
        client.handle_input(
            now + timeout,
            Input::StreamConnected {
                id,
                local: "10.0.0.7:4000".parse().unwrap(),
            }
        ),
        Err(Error::UnknownStream(id))
    );

    // A connect the driver reports failed is a typed failure too.
    let id = client.connect(now + timeout).unwrap();
    assert!(matches!(client.poll_output(), Some(Output::Connect { .. })));
    assert_eq!(
        client.handle_input(now + timeout, Input::StreamClosed { id }),
        Err(Error::Channel(ChannelError::ConnectFailed))
    );
    assert_eq!(
        client.poll_output(),
        Some(Output::Event(ChannelEvent::Failed {
            stream: id,
            error: ChannelError::ConnectFailed
        }))
    );
}

/// Issue 13, item 4: events raised inside `handle_timeout` while the outbox is full are
/// not silently lost: every output is either queued or counted in an `Output::Lost`
/// report, and every session is settled.
#[test]
fn events_raised_in_handle_timeout_with_a_full_outbox_are_counted_not_lost() {
    use deputy::channel::{ChannelEvent, ChannelServer, ChannelServerConfig};
    use deputy::{Actor, Input, Outbox, Output, StreamId};

    let (_, server_cfg) = psk_pair(Group::X25519);
    let timeout = server_cfg.common.handshake_timeout;
    // Each handshake that times out queues three outputs (its alert, the stream close and
    // the Failed event): enough sessions to overflow the outbox from one timeout.
    let n = Outbox::<ChannelEvent>::DEFAULT_BOUND / 2;
    let mut server = ChannelServer::new(
        ChannelServerConfig {
            channel: Arc::new(server_cfg),
            max_sessions: n,
        },
        Box::new(ChaCha20Rng::seed_from_u64(70)),
    );
    let now = Instant::from_secs(1);
    for i in 0..n {
        server
            .handle_input(
                now,
                Input::StreamAccepted {
                    id: StreamId::inbound(i as u64),
                    local: "198.51.100.10:443".parse().unwrap(),
                    remote: "198.51.100.2:5000".parse().unwrap(),
                },
            )
            .unwrap();
    }
    server.handle_timeout(now + timeout);
    let (mut queued, mut failed, mut lost) = (0, 0, 0);
    while let Some(out) = server.poll_output() {
        match out {
            Output::Lost { count } => lost += count,
            Output::Event(ChannelEvent::Failed { error, .. }) => {
                assert_eq!(error, ChannelError::HandshakeTimeout);
                failed += 1;
                queued += 1;
            }
            _ => queued += 1,
        }
    }
    assert_eq!(queued, Outbox::<ChannelEvent>::DEFAULT_BOUND);
    assert!(lost > 0 && failed > 0);
    assert_eq!(
        queued as u64 + lost,
        3 * n as u64,
        "every output queued or counted"
    );
    assert_eq!(server.session_count(), 0, "every session settled");
    assert_eq!(server.poll_timeout(), None);
}

/// Each rule a server hello can break has its own error on the client.
#[test]
fn a_server_hello_breaking_a_rule_gets_its_own_error() {
    use messages::ServerHello;
    type Case = (fn(&mut ServerHello), ChannelError);
    let cases: [Case; 3] = [
        (|h| h.suite = 0x7777, ChannelError::SuiteNotOffered(0x7777)),
        (
            |h| h.group = 14,
            ChannelError::GroupChanged {
                offered: Group::X25519.id(),
                chosen: 14,
            },
        ),
        (|h| h.session_id = 0, ChannelError::ZeroSessionId),
    ];
    for (i, (change, expected)) in cases.into_iter().enumerate() {
        let (client, server) = psk_pair(Group::X25519);
        let mut pair = Pair::new(client, server, 80 + i as u64);
        pair.pump_with(&mut |dir, index, msg| {
            if dir == Dir::ToClient && index == 0 {
                let limits = Limits::default();
                let mut hello =
                    ServerHello::decode(&Message::decode(msg, &limits).unwrap(), &limits).unwrap();
                change(&mut hello);
                *msg = hello.encode().unwrap();
            }
            true
        });
        assert_eq!(channel_err(&pair.client_err), Some(&expected));
        assert!(expected.is_transport_damage());
        // The client has no keys yet, so its alert is plaintext; the server already has
        // keys and refuses a plaintext alert as out of step.
        assert_eq!(
            channel_err(&pair.server_err),
            Some(&ChannelError::UnexpectedMessage(messages::ALERT))
        );
    }
}

/// Local misconfiguration and misdirected input are refused with one error per rule.
#[test]
fn misconfiguration_and_misdirected_input_get_their_own_errors() {
    use deputy::channel::{ChannelClient, ChannelServer, ChannelServerConfig};
    use deputy::{Actor, Input, Output, StreamId};

    assert_eq!(
        Psk::new("id", &[0; 15]).unwrap_err(),
        Error::Channel(ChannelError::PskLength(15))
    );
    assert_eq!(
        Psk::new("id", &[0; 1025]).unwrap_err(),
        Error::Channel(ChannelError::PskLength(1025))
    );
    assert_eq!(
        Psk::new(vec![b'x'; 1025], &[0; 16]).unwrap_err(),
        Error::Channel(ChannelError::PskIdentityTooLong(1025))
    );
    let (mut client_cfg, server_cfg) = psk_pair(Group::X25519);
    client_cfg.common.suites.clear();
    let mut rng = ChaCha20Rng::seed_from_u64(90);
    assert_eq!(
        Connection::client(Arc::new(client_cfg), Instant::ZERO, &mut rng).unwrap_err(),
        Error::Channel(ChannelError::NoSuitesConfigured)
    );

    let (client_cfg, _) = psk_pair(Group::X25519);
    let local = "10.0.0.7:4000".parse().unwrap();
    let remote = "198.51.100.1:443".parse().unwrap();
    let mut client = ChannelClient::new(
        Arc::new(client_cfg),
        local,
        remote,
        Box::new(ChaCha20Rng::seed_from_u64(91)),
    );
    let mut server = ChannelServer::new(
        ChannelServerConfig {
            channel: Arc::new(server_cfg),
            max_sessions: 1,
        },
        Box::new(ChaCha20Rng::seed_from_u64(92)),
    );
    let datagram = Input::Datagram {
        from: remote,
        to: local,
        data: b"hello",
    };
    assert_eq!(
        client.handle_input(Instant::ZERO, datagram),
        Err(Error::Channel(ChannelError::NotStreamInput))
    );
    assert_eq!(
        server.handle_input(Instant::ZERO, datagram),
        Err(Error::Channel(ChannelError::NotStreamInput))
    );
    let id = StreamId::inbound(1);
    assert_eq!(
        client.handle_input(Instant::ZERO, Input::StreamAccepted { id, local, remote }),
        Err(Error::Channel(ChannelError::UnexpectedStreamAccepted))
    );
    assert_eq!(client.poll_output(), Some(Output::StreamClose { id }));
}
