//! The substitution server's message loop (the seed's S33-S49), independent of the
//! protocol being delegated.
//!
//! What every delegated protocol shares lives here, so that IKEv2 and TLS cannot differ on
//! it:
//!
//! - S33-S45 dispatch on the decoded message; S49: a message of unknown type is discarded
//!   and counted, with no answer;
//! - sessions are per terminal: a terminal names its sessions, and another terminal's id
//!   of the same number is another session (the seed's ¶0043, many terminals);
//! - a start opens a session; any other request names an existing one
//!   ([`ErrorCode::UnknownSession`] otherwise);
//! - sequence numbers: the request that repeats the last one is answered from the cache,
//!   byte for byte, and never recomputed (no second Diffie-Hellman, no second signature);
//!   the next one is processed; anything else is [`ErrorCode::BadSequence`];
//! - **a key request is refused unless this session's authentication response said both
//!   "authenticated" and "allowed"** ([`ErrorCode::OutOfState`]), whatever the protocol
//!   code would do;
//! - bounds: terminals, sessions per terminal, sessions in all; idle sessions expire
//!   (S37), found through a deadline index so that expiry costs do not grow with the
//!   table.
//!
//! The protocol's own work — choosing the method, the key exchange, verifying the peer,
//! producing keys — is a [`Substitute`].

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;

use super::messages::{Body, ErrorCode, Message, StartOutcome, StartRequest, StartResponse};
use crate::Instant;
use crate::wire::Limits;

/// The terminal a request came from, as the secure channel authenticated it (its PSK
/// identity or its certificate's name). Never taken from the message itself.
pub type TerminalId = String;

/// Where one answer travels: the delegation session and the request's sequence number,
/// which the answer echoes (and a sealed body is bound to, see [`super::seal`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The delegation session (the header's session id).
    pub session: u64,
    /// The sequence number of the request being answered.
    pub seq: u32,
}

impl Place {
    /// The sealing context of a body carried in an answer of type `msg_type` here.
    pub fn seal_context(self, msg_type: u8) -> super::SealContext {
        super::SealContext {
            msg_type,
            session: self.session,
            seq: self.seq,
        }
    }
}

/// The protocol work behind the four pairs, for one kind of key exchange.
pub trait Substitute {
    /// What the protocol keeps per delegated session.
    type Session;

    /// S34-S35: open a session for `terminal` and decide the method. An `Err` refuses the
    /// start with that code and opens nothing; so does a start response whose outcome
    /// does not proceed (there is nothing more to ask in that session).
    fn start(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        at: Place,
        request: &StartRequest,
    ) -> Result<(Self::Session, Body), ErrorCode>;

    /// S38-S48: answer one further request of an open session. Called only for requests
    /// in sequence; for a key request, only after the session's authentication succeeded.
    fn step(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        at: Place,
        session: &mut Self::Session,
        request: &Body,
    ) -> Result<Body, ErrorCode>;

    /// How long `session` may stay idle before it ends (S37): by default the dispatcher's
    /// [`Bounds::idle`]. A protocol whose sessions outlive the handshake gives its own (a
    /// TLS 1.3 session lasts as long as its connection, for key updates and tickets).
    fn idle(&self, session: &Self::Session, default: Duration) -> Duration {
        let _ = session;
        default
    }

    /// Whether `session` is over once the answer just given has gone (the terminal said
    /// its connection ended): the dispatcher then forgets it at once instead of waiting
    /// for its idle deadline.
    fn finished(&self, session: &Self::Session) -> bool {
        let _ = session;
        false
    }
}

/// The dispatcher's bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Terminals with at least one open session.
    pub terminals: usize,
    /// Open sessions of one terminal.
    pub sessions_per_terminal: usize,
    /// Open sessions in all.
    pub sessions: usize,
    /// A session with no request for this long is ended (S37).
    pub idle: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            terminals: 1024,
            sessions_per_terminal: 8,
            sessions: 4096,
            // Shorter than a peer's patience for one exchange (strongSwan gives up on an
            // IKE_SA_INIT after about 165 s), so a stuck session is gone before the peer
            // tries again from scratch.
            idle: Duration::from_secs(120),
        }
    }
}

/// Where a session is in the generic rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    /// Authentication has not succeeded (yet): key requests are refused.
    Closed,
    /// An authentication response said authenticated and allowed.
    Open,
}

struct Open<S> {
    state: S,
    gate: Gate,
    /// The last request's sequence number and the bytes that answered it.
    last_seq: u32,
    last_answer: Vec<u8>,
    /// When the session ends if nothing more arrives; also its key in `deadlines`.
    expires: Instant,
}

/// What the dispatcher counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// S49: messages of unknown type, discarded.
    pub unknown_discarded: u64,
    /// Messages whose header did not decode, discarded (nothing to answer to).
    pub undecodable: u64,
    /// Requests answered from the cache.
    pub answered_from_cache: u64,
    /// Requests refused with an error response.
    pub refused: u64,
    /// Sessions ended by the idle timer.
    pub expired: u64,
}

/// The server's S33-S49 loop over every terminal's sessions.
pub struct Dispatcher<P: Substitute> {
    protocol: P,
    bounds: Bounds,
    limits: Limits,
    sessions: BTreeMap<(TerminalId, u64), Open<P::Session>>,
    per_terminal: BTreeMap<TerminalId, usize>,
    deadlines: BTreeSet<(Instant, TerminalId, u64)>,
    counters: Counters,
}

impl<P: Substitute> Dispatcher<P> {
    /// A dispatcher running `protocol` within `bounds`.
    pub fn new(protocol: P, bounds: Bounds, limits: Limits) -> Dispatcher<P> {
        Dispatcher {
            protocol,
            bounds,
            limits,
            sessions: BTreeMap::new(),
            per_terminal: BTreeMap::new(),
            deadlines: BTreeSet::new(),
            counters: Counters::default(),
        }
    }

    /// The protocol's own state (its databases, for instance).
    pub fn protocol(&self) -> &P {
        &self.protocol
    }

    /// What was counted so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The protocol, mutably (to provision terminals).
    pub fn protocol_mut(&mut self) -> &mut P {
        &mut self.protocol
    }

    /// Open sessions in all.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The protocol state of one session, if open.
    pub fn session(&self, terminal: &TerminalId, session: u64) -> Option<&P::Session> {
        self.sessions
            .get(&(terminal.clone(), session))
            .map(|o| &o.state)
    }

    /// S33: one message from `terminal`. Returns the encoded answer to send back, or
    /// `None` when the message is discarded without one (S49, or a message that only a
    /// server sends).
    pub fn handle(&mut self, now: Instant, terminal: &TerminalId, bytes: &[u8]) -> Option<Vec<u8>> {
        let msg = match Message::decode(bytes, &self.limits) {
            Ok(m) => m,
            Err(super::KeyxError::UnknownMessage(_)) => {
                self.counters.unknown_discarded += 1;
                return None;
            }
            Err(_) => {
                // A known type that does not decode: answer for the session the header
                // names, if the header is readable at all.
                let Ok(header) = crate::wire::Header::parse(bytes, &self.limits) else {
                    self.counters.undecodable += 1;
                    return None;
                };
                return self.refuse(header.session, 0, ErrorCode::BadRequest);
            }
        };
        if !msg.body.is_request() {
            // Responses travel only from the server: one arriving here is discarded like
            // an unknown message (answering it could start a loop between two servers).
            self.counters.unknown_discarded += 1;
            return None;
        }
        if msg.session == 0 {
            return self.refuse(0, msg.seq, ErrorCode::BadRequest);
        }
        let key = (terminal.clone(), msg.session);
        match self.sessions.get_mut(&key) {
            None => match &msg.body {
                Body::StartRequest(req) => self.open(now, key, msg.seq, req),
                _ => self.refuse(msg.session, msg.seq, ErrorCode::UnknownSession),
            },
            Some(open) if msg.seq == open.last_seq => {
                // A retransmission (the terminal lost our answer, or its channel broke):
                // the same bytes again, nothing recomputed.
                self.counters.answered_from_cache += 1;
                let idle = self.protocol.idle(&open.state, self.bounds.idle);
                rearm(&mut self.deadlines, open, &key, now + idle);
                Some(open.last_answer.clone())
            }
            Some(open) if Some(msg.seq) != open.last_seq.checked_add(1) => {
                self.refuse(msg.session, msg.seq, ErrorCode::BadSequence)
            }
            Some(_) => self.next(now, key, msg),
        }
    }

    /// When the next session expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _, _)| *at)
    }

    /// End every session whose idle deadline has passed (S37).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, terminal, session)) = self.deadlines.first().cloned() {
            if at > now {
                break;
            }
            self.close(&(terminal, session));
            self.counters.expired += 1;
        }
    }

    /// End one session now (its IKE SA was deleted, its terminal went away).
    pub fn close_session(&mut self, terminal: &TerminalId, session: u64) -> bool {
        self.close(&(terminal.clone(), session))
    }

    fn open(
        &mut self,
        now: Instant,
        key: (TerminalId, u64),
        seq: u32,
        req: &StartRequest,
    ) -> Option<Vec<u8>> {
        let known_terminal = self.per_terminal.get(&key.0).copied();
        if known_terminal.is_none() && self.per_terminal.len() >= self.bounds.terminals {
            return self.refuse(key.1, seq, ErrorCode::Busy);
        }
        if known_terminal.unwrap_or(0) >= self.bounds.sessions_per_terminal {
            return self.refuse(key.1, seq, ErrorCode::SessionLimit);
        }
        if self.sessions.len() >= self.bounds.sessions {
            return self.refuse(key.1, seq, ErrorCode::Busy);
        }
        let at = Place {
            session: key.1,
            seq,
        };
        let (state, body) = match self.protocol.start(now, &key.0, at, req) {
            Ok(r) => r,
            Err(code) => return self.refuse(key.1, seq, code),
        };
        let proceeds = matches!(
            &body,
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::Proceed { .. }
            })
        );
        let answer = encode(key.1, seq, body)?;
        if !proceeds {
            // NO_PROPOSAL_CHOSEN, INVALID_KE_PAYLOAD, a policy refusal: the terminal
            // answers the peer itself, and nothing more will be asked in this session.
            return Some(answer);
        }
        let expires = now + self.bounds.idle;
        *self.per_terminal.entry(key.0.clone()).or_insert(0) += 1;
        self.deadlines.insert((expires, key.0.clone(), key.1));
        self.sessions.insert(
            key,
            Open {
                state,
                gate: Gate::Closed,
                last_seq: seq,
                last_answer: answer.clone(),
                expires,
            },
        );
        Some(answer)
    }

    fn next(&mut self, now: Instant, key: (TerminalId, u64), msg: Message) -> Option<Vec<u8>> {
        let open = self.sessions.get_mut(&key)?;
        let result = match (&msg.body, open.gate) {
            // A second start for an open session, or a key request before authentication
            // and policy both succeeded: refused here, whatever the protocol would do.
            (Body::StartRequest(_), _) | (Body::KeyRequest, Gate::Closed) => {
                Err(ErrorCode::OutOfState)
            }
            (body, _) => {
                let at = Place {
                    session: msg.session,
                    seq: msg.seq,
                };
                self.protocol.step(now, &key.0, at, &mut open.state, body)
            }
        };
        let body = match result {
            Ok(body) => body,
            // A refused request does not move the sequence: the terminal may try the
            // step again (after fixing what was wrong) with the same number.
            Err(code) => return self.refuse(msg.session, msg.seq, code),
        };
        if let Body::AuthResponse(a) = &body {
            open.gate = if a.accepted() {
                Gate::Open
            } else {
                Gate::Closed
            };
        }
        let answer = encode(msg.session, msg.seq, body)?;
        if self.protocol.finished(&open.state) {
            self.close(&key);
            return Some(answer);
        }
        open.last_seq = msg.seq;
        open.last_answer = answer.clone();
        let idle = self.protocol.idle(&open.state, self.bounds.idle);
        rearm(&mut self.deadlines, open, &key, now + idle);
        Some(answer)
    }

    fn close(&mut self, key: &(TerminalId, u64)) -> bool {
        let Some(open) = self.sessions.remove(key) else {
            return false;
        };
        self.deadlines.remove(&(open.expires, key.0.clone(), key.1));
        if let Some(n) = self.per_terminal.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.per_terminal.remove(&key.0);
            }
        }
        true
    }

    fn refuse(&mut self, session: u64, seq: u32, code: ErrorCode) -> Option<Vec<u8>> {
        self.counters.refused += 1;
        encode(session, seq, Body::ErrorResponse(code))
    }
}

/// Move one session's idle deadline to `at`, in its entry and in the deadline index.
fn rearm<S>(
    deadlines: &mut BTreeSet<(Instant, TerminalId, u64)>,
    open: &mut Open<S>,
    key: &(TerminalId, u64),
    at: Instant,
) {
    deadlines.remove(&(open.expires, key.0.clone(), key.1));
    open.expires = at;
    deadlines.insert((at, key.0.clone(), key.1));
}

/// One answer as bytes.
fn encode(session: u64, seq: u32, body: Body) -> Option<Vec<u8>> {
    match (Message { session, seq, body }).encode() {
        Ok(bytes) => Some(bytes),
        // The protocol produced something too large for a record: tell the terminal
        // rather than drop the request silently.
        Err(_) => Message {
            session,
            seq,
            body: Body::ErrorResponse(ErrorCode::Internal),
        }
        .encode()
        .ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyx::messages::{
        AuthRequest, AuthResponse, AuthResult, KeyGenRequest, KeyGenResponse, KeyResponse, Method,
        PolicyResult, Protocol, Role, StartOutcome, StartResponse,
    };
    use crate::wire::{self, FieldWriter};
    use alloc::vec;

    /// A stand-in protocol that records how often each step really ran, so the tests can
    /// tell a cached answer from a recomputed one. The authentication request's first
    /// payload byte says what the "peer" deserves: 0 authenticated and allowed, 1 bad
    /// AUTH, 2 authenticated but denied by policy.
    #[derive(Default)]
    struct Counting {
        starts: usize,
        keygens: usize,
        auths: usize,
        keys: usize,
        refuse_start: Option<ErrorCode>,
    }

    impl Substitute for Counting {
        type Session = u32;

        fn start(
            &mut self,
            _: Instant,
            _: &TerminalId,
            _: Place,
            _: &StartRequest,
        ) -> Result<(u32, Body), ErrorCode> {
            if let Some(code) = self.refuse_start {
                return Err(code);
            }
            self.starts += 1;
            Ok((
                0,
                Body::StartResponse(StartResponse {
                    outcome: StartOutcome::Proceed {
                        method: Method::IkePsk,
                        transforms: Vec::new(),
                        sa: vec![1, 2, 3],
                    },
                }),
            ))
        }

        fn step(
            &mut self,
            _: Instant,
            _: &TerminalId,
            _: Place,
            steps: &mut u32,
            request: &Body,
        ) -> Result<Body, ErrorCode> {
            *steps += 1;
            Ok(match request {
                Body::KeyGenRequest(_) => {
                    self.keygens += 1;
                    Body::KeyGenResponse(KeyGenResponse {
                        message: Some(vec![self.keygens as u8]),
                        sealed: None,
                        local_auth: None,
                    })
                }
                Body::AuthRequest(a) => {
                    self.auths += 1;
                    let (auth, policy) = match a.first_payload {
                        0 => (AuthResult::Authenticated, PolicyResult::Allowed),
                        1 => (AuthResult::BadAuth, PolicyResult::NotChecked),
                        _ => (AuthResult::Authenticated, PolicyResult::Denied),
                    };
                    Body::AuthResponse(AuthResponse {
                        auth,
                        policy,
                        local_auth: None,
                        consumed: None,
                    })
                }
                Body::KeyRequest => {
                    self.keys += 1;
                    Body::KeyResponse(KeyResponse {
                        sealed: vec![0xAA; 40],
                    })
                }
                _ => return Err(ErrorCode::OutOfState),
            })
        }
    }

    fn dispatcher(bounds: Bounds) -> Dispatcher<Counting> {
        Dispatcher::new(Counting::default(), bounds, Limits::default())
    }

    fn t(name: &str) -> TerminalId {
        name.into()
    }

    fn req(session: u64, seq: u32, body: Body) -> Vec<u8> {
        Message { session, seq, body }.encode().unwrap()
    }

    fn start() -> Body {
        Body::StartRequest(StartRequest {
            protocol: Protocol::Ikev2,
            role: Role::Responder,
            local: "192.0.2.10:500".parse().unwrap(),
            remote: "192.0.2.20:500".parse().unwrap(),
            peer_message: Some(vec![0; 64]),
            transforms: Vec::new(),
            peer_id: None,
        })
    }

    fn keygen() -> Body {
        Body::KeyGenRequest(KeyGenRequest { peer_message: None })
    }

    fn auth(verdict: u8) -> Body {
        Body::AuthRequest(AuthRequest {
            first_payload: verdict,
            payloads: vec![0; 8],
        })
    }

    fn answer(bytes: Option<Vec<u8>>) -> Message {
        Message::decode(&bytes.expect("an answer"), &Limits::default()).unwrap()
    }

    fn error(bytes: Option<Vec<u8>>) -> ErrorCode {
        match answer(bytes).body {
            Body::ErrorResponse(code) => code,
            other => panic!("expected an error response, got {other:?}"),
        }
    }

    /// S33 → S34 → S38 → S41 → S45 → S48 for one session, in order.
    fn run_to_key(d: &mut Dispatcher<Counting>, who: &TerminalId, session: u64) -> Message {
        let now = Instant::ZERO;
        answer(d.handle(now, who, &req(session, 0, start())));
        answer(d.handle(now, who, &req(session, 1, keygen())));
        answer(d.handle(now, who, &req(session, 2, auth(0))));
        answer(d.handle(now, who, &req(session, 3, Body::KeyRequest)))
    }

    #[test]
    fn four_pairs_in_order_give_the_key() {
        let mut d = dispatcher(Bounds::default());
        let m = run_to_key(&mut d, &t("fridge"), 7);
        assert_eq!((m.session, m.seq), (7, 3));
        assert!(matches!(m.body, Body::KeyResponse(_)));
        assert_eq!(d.session(&t("fridge"), 7), Some(&3));
    }

    #[test]
    fn key_request_before_authentication_is_refused() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        answer(d.handle(now, &who, &req(1, 0, start())));
        answer(d.handle(now, &who, &req(1, 1, keygen())));
        assert_eq!(
            error(d.handle(now, &who, &req(1, 2, Body::KeyRequest))),
            ErrorCode::OutOfState
        );
        assert_eq!(d.protocol().keys, 0);
        // After a failed authentication, and after a policy denial, still refused.
        for (session, verdict) in [(2, 1), (3, 2)] {
            answer(d.handle(now, &who, &req(session, 0, start())));
            answer(d.handle(now, &who, &req(session, 1, keygen())));
            let a = answer(d.handle(now, &who, &req(session, 2, auth(verdict))));
            assert!(matches!(a.body, Body::AuthResponse(ref r) if !r.accepted()));
            assert_eq!(
                error(d.handle(now, &who, &req(session, 3, Body::KeyRequest))),
                ErrorCode::OutOfState
            );
        }
        assert_eq!(d.protocol().keys, 0);
    }

    #[test]
    fn repeated_request_is_answered_from_cache() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        let started = d.handle(now, &who, &req(1, 0, start()));
        assert_eq!(d.handle(now, &who, &req(1, 0, start())), started);
        let first = d.handle(now, &who, &req(1, 1, keygen()));
        let again = d.handle(now, &who, &req(1, 1, keygen()));
        assert_eq!(first, again);
        assert_eq!(d.protocol().keygens, 1, "no second key generation");
        // The repeated start was the cached start response too.
        assert_eq!(d.protocol().starts, 1);
        assert_eq!(d.counters().answered_from_cache, 2);
    }

    #[test]
    fn sequence_must_move_by_one() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        answer(d.handle(now, &who, &req(1, 0, start())));
        assert_eq!(
            error(d.handle(now, &who, &req(1, 5, keygen()))),
            ErrorCode::BadSequence
        );
        answer(d.handle(now, &who, &req(1, 1, keygen())));
        // Backwards (not the last one): refused, the session intact.
        assert_eq!(
            error(d.handle(now, &who, &req(1, 0, keygen()))),
            ErrorCode::BadSequence
        );
        answer(d.handle(now, &who, &req(1, 2, auth(0))));
    }

    #[test]
    fn a_second_start_on_an_open_session_is_out_of_state() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        answer(d.handle(now, &who, &req(1, 0, start())));
        assert_eq!(
            error(d.handle(now, &who, &req(1, 1, start()))),
            ErrorCode::OutOfState
        );
    }

    #[test]
    fn another_terminals_session_is_not_reachable() {
        let mut d = dispatcher(Bounds::default());
        run_to_key(&mut d, &t("fridge"), 7);
        // The same session number from another terminal names no session of its own.
        assert_eq!(
            error(d.handle(Instant::ZERO, &t("oven"), &req(7, 4, Body::KeyRequest))),
            ErrorCode::UnknownSession
        );
        assert_eq!(d.protocol().keys, 1);
    }

    #[test]
    fn unknown_types_are_discarded_and_counted_s49() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        answer(d.handle(now, &who, &req(1, 0, start())));
        let unknown = wire::encode(0x6E, 1, FieldWriter::new()).unwrap();
        assert_eq!(d.handle(now, &who, &unknown), None);
        // A response sent to the server is discarded the same way.
        let stray = req(
            1,
            1,
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::NoProposalChosen,
            }),
        );
        assert_eq!(d.handle(now, &who, &stray), None);
        assert_eq!(d.counters().unknown_discarded, 2);
        // The session is intact: the next request in sequence goes through.
        assert!(matches!(
            answer(d.handle(now, &who, &req(1, 1, keygen()))).body,
            Body::KeyGenResponse(_)
        ));
    }

    #[test]
    fn garbage_is_answered_or_counted_never_fatal() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        assert_eq!(d.handle(now, &who, b"not a deputy message"), None);
        assert_eq!(d.counters().undecodable, 1);
        // A known type with a broken body: a typed answer for the header's session.
        let broken = wire::encode(0x60, 9, FieldWriter::new()).unwrap();
        let m = answer(d.handle(now, &who, &broken));
        assert_eq!(
            (m.session, m.body),
            (9, Body::ErrorResponse(ErrorCode::BadRequest))
        );
        // Session 0 is never a session.
        assert_eq!(
            error(d.handle(now, &who, &req(0, 0, start()))),
            ErrorCode::BadRequest
        );
        assert!(d.is_empty());
    }

    #[test]
    fn every_bound_is_enforced() {
        let mut d = dispatcher(Bounds {
            terminals: 2,
            sessions_per_terminal: 2,
            sessions: 3,
            idle: Duration::from_secs(10),
        });
        let now = Instant::ZERO;
        answer(d.handle(now, &t("a"), &req(1, 0, start())));
        answer(d.handle(now, &t("a"), &req(2, 0, start())));
        assert_eq!(
            error(d.handle(now, &t("a"), &req(3, 0, start()))),
            ErrorCode::SessionLimit
        );
        answer(d.handle(now, &t("b"), &req(1, 0, start())));
        assert_eq!(
            error(d.handle(now, &t("c"), &req(1, 0, start()))),
            ErrorCode::Busy,
            "a third terminal"
        );
        assert_eq!(
            error(d.handle(now, &t("b"), &req(2, 0, start()))),
            ErrorCode::Busy,
            "sessions in all"
        );
        assert_eq!(d.len(), 3);
        // Closing one frees its place.
        assert!(d.close_session(&t("a"), 1));
        answer(d.handle(now, &t("b"), &req(2, 0, start())));
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn idle_sessions_expire_s37_and_activity_postpones_it() {
        let mut d = dispatcher(Bounds {
            idle: Duration::from_secs(10),
            ..Bounds::default()
        });
        let who = t("fridge");
        answer(d.handle(Instant::ZERO, &who, &req(1, 0, start())));
        answer(d.handle(Instant::ZERO, &who, &req(2, 0, start())));
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(10)));
        answer(d.handle(Instant::from_secs(6), &who, &req(2, 1, keygen())));
        d.handle_timeout(Instant::from_secs(10));
        assert_eq!(d.counters().expired, 1);
        assert!(d.session(&who, 1).is_none());
        assert!(d.session(&who, 2).is_some());
        assert_eq!(d.poll_timeout(), Some(Instant::from_secs(16)));
        assert_eq!(
            error(d.handle(Instant::from_secs(11), &who, &req(1, 1, keygen()))),
            ErrorCode::UnknownSession
        );
        d.handle_timeout(Instant::from_secs(16));
        assert!(d.is_empty());
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_refused_start_opens_nothing_and_a_refused_step_keeps_the_sequence() {
        let mut d = dispatcher(Bounds::default());
        let (now, who) = (Instant::ZERO, t("fridge"));
        d.protocol.refuse_start = Some(ErrorCode::NotProvisioned);
        assert_eq!(
            error(d.handle(now, &who, &req(1, 0, start()))),
            ErrorCode::NotProvisioned
        );
        assert!(d.is_empty());
        d.protocol.refuse_start = None;
        answer(d.handle(now, &who, &req(1, 0, start())));
        // The protocol refuses a relay here; the same sequence number then works for the
        // step that fits.
        let relay = Body::Relay(crate::keyx::messages::Relay { data: vec![1] });
        assert_eq!(
            error(d.handle(now, &who, &req(1, 1, relay))),
            ErrorCode::OutOfState
        );
        assert!(matches!(
            answer(d.handle(now, &who, &req(1, 1, keygen()))).body,
            Body::KeyGenResponse(_)
        ));
    }
}
