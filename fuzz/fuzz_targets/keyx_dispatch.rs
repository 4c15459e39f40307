#![no_main]
//! The substitution server's message loop (`keyx::Dispatcher`, the seed's S33-S49) and the
//! delegation message decoder, fed arbitrary messages from two terminals.
//!
//! The protocol behind the loop is a stand-in that answers every step (it is the generic
//! rules under test, not IKE): whatever arrives, the loop must not panic, every answer must
//! decode, a message that decodes must encode back to itself, and no key response may ever
//! leave for a session whose authentication response did not say authenticated and allowed.

use std::collections::BTreeSet;
use std::time::Duration;

use deputy::Instant;
use deputy::keyx::messages::{
    AuthResponse, AuthResult, KeyGenResponse, KeyResponse, Method, PolicyResult, StartOutcome,
    StartResponse,
};
use deputy::keyx::{
    Body, Bounds, Dispatcher, ErrorCode, Message, Place, StartRequest, Substitute, TerminalId,
};
use deputy::wire::Limits;
use libfuzzer_sys::fuzz_target;

struct AnswersEverything;

impl Substitute for AnswersEverything {
    type Session = ();

    fn start(
        &mut self,
        _: Instant,
        _: &TerminalId,
        _: Place,
        _: &StartRequest,
    ) -> Result<((), Body), ErrorCode> {
        // A start that does not proceed opens no session, so the stand-in proceeds.
        Ok((
            (),
            Body::StartResponse(StartResponse {
                outcome: StartOutcome::Proceed {
                    method: Method::IkePsk,
                    transforms: Vec::new(),
                    sa: Vec::new(),
                },
            }),
        ))
    }

    fn step(
        &mut self,
        _: Instant,
        _: &TerminalId,
        _: Place,
        _: &mut (),
        request: &Body,
    ) -> Result<Body, ErrorCode> {
        Ok(match request {
            Body::KeyGenRequest(_) => Body::KeyGenResponse(KeyGenResponse {
                message: None,
                sealed: None,
                local_auth: None,
            }),
            // The first payload type byte decides the verdict, so the fuzzer reaches both.
            Body::AuthRequest(a) if a.first_payload % 2 == 0 => Body::AuthResponse(AuthResponse {
                auth: AuthResult::Authenticated,
                policy: PolicyResult::Allowed,
                local_auth: None,
                consumed: None,
            }),
            Body::AuthRequest(_) => Body::AuthResponse(AuthResponse {
                auth: AuthResult::BadAuth,
                policy: PolicyResult::NotChecked,
                local_auth: None,
                consumed: None,
            }),
            Body::KeyRequest => Body::KeyResponse(KeyResponse {
                sealed: vec![0; 40],
            }),
            _ => return Err(ErrorCode::OutOfState),
        })
    }
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let bounds = Bounds {
        terminals: 2,
        sessions_per_terminal: 2,
        sessions: 3,
        idle: Duration::from_secs(5),
    };
    let mut d = Dispatcher::new(AnswersEverything, bounds, limits);
    let terminals: [TerminalId; 2] = ["a".into(), "b".into()];
    // Sessions whose last authentication answer was accepted, per terminal.
    let mut open: BTreeSet<(usize, u64)> = BTreeSet::new();
    let mut now = Instant::ZERO;
    // Input: records of [terminal/time byte, length (u16), message bytes].
    let mut rest = data;
    while rest.len() >= 3 {
        let who = usize::from(rest[0] & 1);
        now += Duration::from_millis(u64::from(rest[0] >> 1) * 100);
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let msg = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if let Ok(m) = Message::decode(msg, &limits) {
            let again = m.encode().expect("a decoded message encodes");
            assert_eq!(
                Message::decode(&again, &limits).expect("and decodes again"),
                m
            );
        }
        d.handle_timeout(now);
        if let Some(answer) = d.handle(now, &terminals[who], msg) {
            let answer = Message::decode(&answer, &limits).expect("every answer decodes");
            match &answer.body {
                // A start is answered only while a session has done nothing else (a new
                // one, or its start repeated), so nothing of an earlier one carries over.
                Body::StartResponse(_) => {
                    open.remove(&(who, answer.session));
                }
                Body::AuthResponse(a) if a.accepted() => {
                    open.insert((who, answer.session));
                }
                Body::AuthResponse(_) => {
                    open.remove(&(who, answer.session));
                }
                Body::KeyResponse(_) => assert!(
                    open.contains(&(who, answer.session)),
                    "a key response for a session that was not authenticated and allowed"
                ),
                _ => {}
            }
        }
        assert!(d.len() <= 3);
    }
});
