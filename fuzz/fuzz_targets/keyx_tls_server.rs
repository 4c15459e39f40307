#![no_main]
//! Seed 004's TLS 1.3 substitution server (`keyx::Dispatcher<TlsSubstitute>`, S351-S358
//! with rustls behind them), provisioned with the fixture certificates in
//! tests/fixtures/tls, fed arbitrary delegation messages from two terminals (one allowed
//! to reach peer.example and to be reached by anyone with a certificate, one with no
//! policy) while time advances.
//!
//! The first input byte picks a genuine prefix so the fuzzer starts from deep states: a
//! client-role start toward peer.example and its key generation (a real ClientHello is
//! built), or a server-role start carrying a real ClientHello from a rustls client (then
//! the key generation that hands out the server's flight). The rest are records of
//! arbitrary messages; a record may be re-addressed to the prefix's session and its next
//! sequence number, and a record may be wrapped as that session's authentication request
//! or relay, so arbitrary TLS records reach rustls and arbitrary relays reach the kernel
//! connection.
//!
//! Invariants: no panic; every answer decodes as a delegation message; no key response
//! ever leaves for a session whose authentication response did not say authenticated and
//! allowed; the session table stays within its bound.

#[path = "keyx_common.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use deputy::ikev2::Identity;
use common::{PREFIX_SESSION, TERMINALS};
use deputy::keyx::tls::{ClientAuth, TlsCredential, TlsProfile, TlsSubstitute, suite_transform};
use deputy::keyx::{
    AuthRequest, Body, Bounds, DelegationKey, Direction, Dispatcher, KeyGenRequest, Message,
    PeerPattern, PolicyDb, Protocol, Relay, Role, StartRequest,
};
use deputy::tls::CipherSuite;
use deputy::wire::Limits;
use deputy::UnixTime;
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

const CA: &[u8] = include_bytes!("../../tests/fixtures/tls/ca.der");
const LEAF: &[u8] = include_bytes!("../../tests/fixtures/tls/leaf.der");
const LEAF_KEY: &[u8] = include_bytes!("../../tests/fixtures/tls/leaf.key.der");
const PEER: &str = "peer.example";
const MAX_SESSIONS: usize = 3;
const ANCHOR: UnixTime = UnixTime(1_800_000_000);

fn roots() -> rustls::RootCertStore {
    let mut r = rustls::RootCertStore::empty();
    r.add(CertificateDer::from(CA.to_vec()))
        .expect("fixture CA");
    r
}

fn dispatcher() -> Dispatcher<TlsSubstitute> {
    let mut policy = PolicyDb::new();
    policy
        .allow(
            &TERMINALS[0].into(),
            Direction::FromTerminal,
            PeerPattern::Exactly(Identity::Fqdn(PEER.into())),
        )
        .expect("policy");
    policy
        .allow(
            &TERMINALS[0].into(),
            Direction::ToTerminal,
            PeerPattern::AnyAuthenticated,
        )
        .expect("policy");
    let mut tls = TlsSubstitute::new(policy, 2, ANCHOR, Box::new(ChaCha20Rng::seed_from_u64(7)));
    for (i, name) in TERMINALS.iter().enumerate() {
        tls.provision(
            (*name).into(),
            TlsProfile {
                delegation_key: DelegationKey::new([0x24; 32]),
                roots: roots(),
                client_credential: None,
                server_credential: Some(TlsCredential {
                    chain: vec![CertificateDer::from(LEAF.to_vec())],
                    key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(LEAF_KEY.to_vec())),
                }),
                client_auth: if i == 0 {
                    ClientAuth::None
                } else {
                    ClientAuth::Required
                },
                alpn: vec![],
            },
        )
        .expect("provision");
    }
    let bounds = Bounds {
        terminals: 2,
        sessions_per_terminal: 2,
        sessions: MAX_SESSIONS,
        idle: Duration::from_secs(5),
    };
    Dispatcher::new(tls, bounds, Limits::default())
}

/// A real ClientHello from a rustls client trusting the fixture CA.
fn client_hello() -> Vec<u8> {
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots())
        .with_no_client_auth();
    let mut c = rustls::ClientConnection::new(
        Arc::new(config),
        ServerName::try_from("terminal.example").expect("name"),
    )
    .expect("client");
    let mut out = Vec::new();
    while c.wants_write() {
        if c.write_tls(&mut out).is_err() {
            break;
        }
    }
    out
}

type Run = common::Run<TlsSubstitute>;

/// The genuine prefix picked by `mode`; returns the next sequence number of its session.
fn prefix(run: &mut Run, who: usize, mode: u8) -> u32 {
    let local = "192.0.2.20:443".parse().expect("address");
    let remote = "192.0.2.10:443".parse().expect("address");
    let transforms = CipherSuite::ALL
        .iter()
        .map(|s| suite_transform(*s))
        .collect();
    let (role, peer_message, peer_id) = match mode % 5 {
        1 | 2 => (Role::Initiator, None, Some(PEER.as_bytes().to_vec())),
        3 | 4 => (Role::Responder, Some(client_hello()), None),
        _ => return 0,
    };
    let start = StartRequest {
        protocol: Protocol::Tls13,
        role,
        local,
        remote,
        peer_message,
        transforms,
        peer_id,
    };
    run.request(who, 0, Body::StartRequest(start));
    if mode % 5 == 1 || mode % 5 == 3 {
        return 1;
    }
    run.request(
        who,
        1,
        Body::KeyGenRequest(KeyGenRequest { peer_message: None }),
    );
    2
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut run = Run::new(dispatcher(), MAX_SESSIONS);
    let prefix_who = usize::from(mode >> 7);
    let mut next_seq = prefix(&mut run, prefix_who, mode & 0x7f);
    // Records: [flags, length (u16), bytes]. Flags: bit 0 the terminal; bits 1-2: 0 the
    // bytes are a whole delegation message, 1 the same re-addressed to the prefix's
    // session and next sequence number, 2 the bytes are TLS records in an authentication
    // request of that session, 3 the bytes are a relay of that session; the rest a delay
    // in 100 ms steps.
    for (flags, msg) in common::records(rest) {
        let who = usize::from(flags & 1);
        run.now += Duration::from_millis(u64::from(flags >> 3) * 100);
        let wrap = |body| {
            Message {
                session: PREFIX_SESSION,
                seq: next_seq,
                body,
            }
            .encode()
            .ok()
        };
        let built = match (flags >> 1) & 3 {
            1 => Message::decode(msg, &run.limits).ok().and_then(|mut m| {
                m.session = PREFIX_SESSION;
                m.seq = next_seq;
                m.encode().ok()
            }),
            2 => wrap(Body::AuthRequest(AuthRequest {
                first_payload: 0,
                payloads: msg.to_vec(),
            })),
            3 => wrap(Body::Relay(Relay { data: msg.to_vec() })),
            _ => None,
        };
        let bytes = built.as_deref().unwrap_or(msg);
        let answer = run.handle(who, bytes);
        if Run::advances(&answer, who, prefix_who, next_seq) {
            next_seq = next_seq.wrapping_add(1);
        }
    }
});
