//! Seed 004's world for the keyx targets, as tests/common/keyx.rs builds it: the IKEv2
//! substitution server's dispatcher (PSK profile, a policy letting terminal-1 and
//! peer.example reach each other), the peer's IKE configuration, the delegation key.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use deputy::crypto::dh::Group;
use deputy::ikev2::consts::transform as t;
use deputy::ikev2::{Identity, IkeConfig, IkeProposal, SecretBytes};
use deputy::keyx::ike::{IkeProfile, IkeSubstitute};
use deputy::keyx::{
    Body, Bounds, DelegationKey, Direction, Dispatcher, Message, PeerPattern, PolicyDb,
    Substitute, Transform,
};
use deputy::Instant;
use std::collections::BTreeSet;
use deputy::wire::Limits;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const IKE_PSK: &[u8] = b"ike psk between peer and terminal";
pub const CHANNEL_PSK: &[u8] = b"pre-arranged key, terminal<->server";
pub const PEER_ID: &str = "peer.example";
pub const TERMINAL_ID: &str = "terminal.example";
/// terminal-1 is allowed to reach peer.example both ways; terminal-2 is provisioned but
/// the policy database lets it reach no one.
pub const TERMINALS: [&str; 2] = ["terminal-1", "terminal-2"];

pub fn addr(s: &str) -> SocketAddr {
    s.parse().expect("address")
}

pub fn delegation_key() -> DelegationKey {
    DelegationKey::new([0x42; 32])
}

/// The peer's IKE configuration (the terminal's PSK, X25519 only: a MODP-2048 key share
/// would make every case slow).
pub fn peer_ike() -> IkeConfig {
    let mut ike = IkeConfig::new(Identity::Fqdn(PEER_ID.into()), IKE_PSK);
    ike.ike_proposals = vec![
        IkeProposal::aes128_sha256(&[Group::X25519]),
        IkeProposal::chacha20poly1305(&[Group::X25519]),
    ];
    ike
}

/// The substitution server's message loop with the IKE substitute behind it.
pub fn dispatcher(bounds: Bounds, seed: u64) -> Dispatcher<IkeSubstitute> {
    let mut policy = PolicyDb::new();
    let allowed = PeerPattern::Exactly(Identity::Fqdn(PEER_ID.into()));
    for dir in [Direction::ToTerminal, Direction::FromTerminal] {
        policy
            .allow(&TERMINALS[0].into(), dir, allowed.clone())
            .expect("policy");
    }
    let mut ike = IkeSubstitute::new(
        policy,
        2,
        deputy::UnixTime(1_800_000_000),
        Box::new(ChaCha20Rng::seed_from_u64(seed)),
    );
    for name in TERMINALS {
        ike.provision(
            name.into(),
            IkeProfile {
                local_id: Identity::Fqdn(TERMINAL_ID.into()),
                credential: deputy::ikev2::auth::Credential::Psk(SecretBytes::from_slice(IKE_PSK)),
                auth_db: {
                    let mut db = deputy::ikev2::auth::AuthKeyDb::new();
                    db.set_any_peer_psk(Some(IKE_PSK));
                    db
                },
                ike_proposals: IkeConfig::new(Identity::Fqdn("x".into()), b"x").ike_proposals,
                delegation_key: delegation_key(),
                force_encap: false,
            },
        )
        .expect("provision");
    }
    Dispatcher::new(ike, bounds, Limits::default())
}

/// Small bounds, so the fuzzer reaches them.
pub fn small_bounds() -> Bounds {
    Bounds {
        terminals: 2,
        sessions_per_terminal: 2,
        sessions: 3,
        idle: Duration::from_secs(5),
    }
}

/// The symmetric transforms of the default IKE proposals, as a terminal lists them.
pub fn transforms() -> Vec<Transform> {
    let mut out: Vec<Transform> = Vec::new();
    for p in IkeConfig::new(Identity::Fqdn("x".into()), b"x").ike_proposals {
        let encr = p.encr.transform();
        let mut add = |kind, id, key_bits| {
            let tr = Transform { kind, id, key_bits };
            if !out.contains(&tr) {
                out.push(tr);
            }
        };
        add(t::ENCR, encr.id, encr.key_len().unwrap_or(0));
        add(t::PRF, p.prf.id(), 0);
        if let Some(i) = p.integ {
            add(t::INTEG, i.id(), 0);
        }
    }
    out
}

/// The session the server targets' genuine prefixes use.
pub const PREFIX_SESSION: u64 = 1;

/// A substitution server's message loop under the fuzzer, with the invariants every
/// server target checks: every answer decodes; no key response for a session whose
/// authentication response did not say authenticated and allowed; the session bound.
pub struct Run<P: Substitute> {
    pub d: Dispatcher<P>,
    pub limits: Limits,
    /// Sessions whose last authentication answer was accepted, per terminal.
    pub open: BTreeSet<(usize, u64)>,
    pub now: Instant,
    pub max_sessions: usize,
}

impl<P: Substitute> Run<P> {
    pub fn new(d: Dispatcher<P>, max_sessions: usize) -> Self {
        Run {
            d,
            limits: Limits::default(),
            open: BTreeSet::new(),
            now: Instant::from_secs(1),
            max_sessions,
        }
    }

    /// One message from terminal `who`; returns the answer, decoded.
    pub fn handle(&mut self, who: usize, bytes: &[u8]) -> Option<Message> {
        self.d.handle_timeout(self.now);
        let answer = self.d.handle(self.now, &TERMINALS[who].into(), bytes)?;
        let answer = Message::decode(&answer, &self.limits).expect("every answer decodes");
        match &answer.body {
            // A start is answered only while a session has done nothing else (a new one,
            // or its start repeated), so nothing of an earlier one carries over.
            Body::StartResponse(_) => {
                self.open.remove(&(who, answer.session));
            }
            Body::AuthResponse(a) if a.accepted() => {
                self.open.insert((who, answer.session));
            }
            Body::AuthResponse(_) => {
                self.open.remove(&(who, answer.session));
            }
            Body::KeyResponse(_) => assert!(
                self.open.contains(&(who, answer.session)),
                "a key response for a session that was not authenticated and allowed"
            ),
            _ => {}
        }
        assert!(self.d.len() <= self.max_sessions, "session bound");
        Some(answer)
    }

    /// A request of the prefix's session.
    pub fn request(&mut self, who: usize, seq: u32, body: Body) -> Option<Message> {
        let bytes = Message {
            session: PREFIX_SESSION,
            seq,
            body,
        }
        .encode()
        .expect("a request encodes");
        self.handle(who, &bytes)
    }

    /// The answer to a record of the loop counts for the prefix's session: its sequence
    /// moves on when the answer is for that session, that terminal and that number.
    pub fn advances(answer: &Option<Message>, who: usize, prefix_who: usize, seq: u32) -> bool {
        answer.as_ref().is_some_and(|a| {
            a.session == PREFIX_SESSION
                && who == prefix_who
                && a.seq == seq
                && !matches!(a.body, Body::ErrorResponse(_))
        })
    }
}

/// The fuzz input after its first byte, as records `[flags, length (u16), bytes]` (a
/// length past the end takes what is left); each comes out as (flags, bytes).
pub fn records(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        if input.len() < 3 {
            return None;
        }
        let flags = input[0];
        let len = usize::from(u16::from_be_bytes([input[1], input[2]])).min(input.len() - 3);
        let msg = &input[3..3 + len];
        input = &input[3 + len..];
        Some((flags, msg))
    })
}
