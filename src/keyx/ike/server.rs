//! The substitution server's IKEv2 work (seed 004, S34-S48), behind the protocol-independent
//! [`Dispatcher`](crate::keyx::Dispatcher).
//!
//! Per terminal the server is provisioned with an [`IkeProfile`]: the identity and
//! credential it acts with, the IKE proposals it may use, and the terminal's delegation
//! key; the policy database ([`PolicyDb`]) says which authenticated peers may reach which
//! terminal, both ways.
//!
//! Each delegated exchange is one [`IkeSession`], one variant per step:
//!
//! ```text
//!  responder:  start ─► Chosen ─keygen─► Keyed ─auth ok─► Authenticated ─key─► Released
//!  initiator:  start ─► Offering ─keygen (×n: COOKIE, INVALID_KE)─► Keyed ─► … the same
//!                                                    auth refused ─► Refused
//! ```
//!
//! What the server signs or MACs is never bytes a terminal chose: AUTH covers an
//! IKE_SA_INIT message this server built (with its own nonce and key share), the peer's
//! nonce from the other IKE_SA_INIT message it parsed itself, and the identity provisioned
//! for the terminal (docs/keyx.md, "No signing oracle").

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::SocketAddr;

use crate::crypto::dh::KeyPair;
use crate::ikev2::auth::{
    AuthKeyDb, Credential, Proof, cert_payloads, prove, sa_init_payloads, verify,
};
use crate::ikev2::codec::{
    ExchangeType, Header, Identity, KePayload, Limits, Message, Notify, Payload, decode_chain,
    encode_chain,
};
use crate::ikev2::consts::{notify, transform as t};
use crate::ikev2::keys::{IkeKeys, skeyseed};
use crate::ikev2::nat::{nat_detected, natd_notifies, natd_source};
use crate::ikev2::proposal::{
    IkeChoice, IkeProposal, IkeSuite, accept_ike, accept_ike_rekey, ike_offer, invalid_ke_group,
    select_ike, select_ike_rekey,
};
use crate::ikev2::session::{Found, nonce};
use crate::keyx::dispatch::{Place, Substitute, TerminalId};
use crate::keyx::messages::{
    AuthRequest, AuthResponse, AuthResult, Body, ErrorCode, KEY_RESPONSE, KEYGEN_RESPONSE,
    KeyGenRequest, KeyGenResponse, KeyResponse, Method, PolicyResult, Protocol, Role, StartOutcome,
    StartRequest, StartResponse, Transform,
};
use crate::keyx::policy::{Direction, PolicyDb};
use crate::keyx::seal::{DelegationKey, seal};
use crate::{Instant, Rng, UnixTime};

/// COOKIE and INVALID_KE_PAYLOAD rounds tolerated in one delegated IKE_SA_INIT (the plain
/// initiator's bound).
const MAX_INIT_ROUNDS: u8 = 4;

/// What the server holds for one terminal.
#[derive(Clone, Debug)]
pub struct IkeProfile {
    /// The identity the server authenticates as, on the terminal's behalf (its IDi or IDr).
    pub local_id: Identity,
    /// The credential the server proves the terminal's identity with: an IKE pre-shared
    /// key, or a private key with its certificate chain. It never leaves the server.
    pub credential: Credential,
    /// The authentication-key database the peers of this terminal are checked against
    /// (S42): trust anchors, pinned peer keys, peer PSKs.
    pub auth_db: AuthKeyDb,
    /// IKE SA proposals in preference order; only those whose symmetric transforms the
    /// terminal can run are used.
    pub ike_proposals: Vec<IkeProposal>,
    /// The terminal's delegation key: every key the server hands over is sealed with it.
    pub delegation_key: DelegationKey,
    /// Fake the NAT detection source hash so ESP is always UDP-encapsulated (strongSwan's
    /// `encap = yes`); the terminal is configured the same way.
    pub force_encap: bool,
}

/// The IKE step of one delegated exchange.
pub enum IkeSession {
    /// Responder, S35 done: the peer's IKE_SA_INIT request and the proposal chosen.
    Chosen(Box<Chosen>),
    /// Initiator, S35 done: what we offer; the IKE_SA_INIT request once built.
    Offering(Box<Offering>),
    /// S39 done: the IKE SA's keys exist here; the peer is not authenticated yet.
    Keyed(Box<Keyed>),
    /// S42 and S43 said yes: SK_d may be released.
    Authenticated(Box<Keyed>),
    /// S48 done: SK_d was released (kept for the session's life, until S37).
    Released(Box<Keyed>),
    /// S42 or S43 said no: nothing more is answered in this session.
    Refused,
    /// A delegated IKE SA rekey (the peer's CREATE_CHILD_SA, opened by the terminal):
    /// the proposal chosen and the peer's key share.
    RekeyChosen(Box<RekeyChosen>),
    /// The terminal rekeys its IKE SA: what it may offer and the server's key share
    /// (handed out by key generation; again in another group after INVALID_KE_PAYLOAD).
    RekeyOffering(Box<RekeyOffer>),
    /// The rekey's share and g^ir were handed over: nothing more.
    RekeyDone,
}

/// A delegated IKE SA rekey the terminal starts.
pub struct RekeyOffer {
    proposals: Vec<IkeProposal>,
    kp: KeyPair,
    rounds: u8,
}

/// A delegated IKE SA rekey, S35 done.
pub struct RekeyChosen {
    choice: IkeChoice,
    ke: KePayload,
}

/// Responder: what S35 decided.
pub struct Chosen {
    request: Vec<u8>,
    local: SocketAddr,
    remote: SocketAddr,
    spi_i: [u8; 8],
    ni: Vec<u8>,
    ke: KePayload,
    choice: IkeChoice,
    /// The request's payloads carried NAT detection (answered in kind).
    natd: bool,
}

/// Initiator: the offer and its current IKE_SA_INIT request.
pub struct Offering {
    proposals: Vec<IkeProposal>,
    remote: SocketAddr,
    spi_i: [u8; 8],
    ni: Vec<u8>,
    kp: KeyPair,
    cookie: Option<Vec<u8>>,
    natd_src: [u8; 20],
    rounds: u8,
    /// The request as last built (empty before the first key generation).
    request: Vec<u8>,
    peer_id: Identity,
}

/// An IKE SA whose keys exist at the server.
pub struct Keyed {
    initiator: bool,
    keys: IkeKeys,
    ni: Vec<u8>,
    nr: Vec<u8>,
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    /// Initiator: the peer the terminal asked for (checked again once authenticated).
    wanted: Option<Identity>,
    /// The peer's identity, once authenticated.
    peer_id: Option<Identity>,
}

impl Keyed {
    /// The peer's authenticated identity.
    pub fn peer_id(&self) -> Option<&Identity> {
        self.peer_id.as_ref()
    }
}

impl IkeSession {
    /// The peer's identity, once the server authenticated it.
    pub fn peer_id(&self) -> Option<&Identity> {
        match self {
            IkeSession::Authenticated(k) | IkeSession::Released(k) => k.peer_id(),
            _ => None,
        }
    }

    /// The step's name, for traces and tests.
    pub fn step(&self) -> &'static str {
        match self {
            IkeSession::Chosen(_) => "chosen",
            IkeSession::Offering(_) => "offering",
            IkeSession::Keyed(_) => "keyed",
            IkeSession::Authenticated(_) => "authenticated",
            IkeSession::Released(_) => "released",
            IkeSession::Refused => "refused",
            IkeSession::RekeyChosen(_) => "rekey chosen",
            IkeSession::RekeyOffering(_) => "rekey offering",
            IkeSession::RekeyDone => "rekey done",
        }
    }
}

/// What the IKE substitute counted (the seed's operator would watch these).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IkeSubstituteCounters {
    /// Diffie-Hellman computations (one per delegated IKE SA; never repeated for a
    /// retransmitted request, which the dispatcher answers from its cache).
    pub diffie_hellman: u64,
    /// AUTH values computed (our proof).
    pub proofs: u64,
    /// Peers authenticated (S42 yes).
    pub authenticated: u64,
    /// Peers refused at S42.
    pub auth_refused: u64,
    /// Authenticated peers the policy database refused (S43 no).
    pub policy_refused: u64,
    /// SK_d released (S48).
    pub keys_released: u64,
    /// IKE SA rekeys served (a Diffie-Hellman share and g^ir for a terminal's IKE SA).
    pub ike_rekeys: u64,
}

/// Seed 004's substitution server, IKEv2 part: a [`Substitute`] for the dispatcher.
pub struct IkeSubstitute {
    time_anchor: UnixTime,
    /// Shared, so that a request takes its terminal's profile by a reference count, not a
    /// copy of its authentication-key database.
    profiles: BTreeMap<TerminalId, Arc<IkeProfile>>,
    max_terminals: usize,
    policy: PolicyDb,
    limits: Limits,
    rng: Rng,
    counters: IkeSubstituteCounters,
}

impl core::fmt::Debug for IkeSubstitute {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IkeSubstitute")
            .field("terminals", &self.profiles.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl IkeSubstitute {
    /// A server for at most `max_terminals` provisioned terminals, with `policy`.
    ///
    /// `time_anchor` is the wall-clock time at the driver's `Instant::ZERO`: certificates
    /// are judged at `UnixTime::at(time_anchor, now)`.
    pub fn new(
        policy: PolicyDb,
        max_terminals: usize,
        time_anchor: UnixTime,
        rng: Rng,
    ) -> IkeSubstitute {
        IkeSubstitute {
            time_anchor,
            profiles: BTreeMap::new(),
            max_terminals,
            policy,
            limits: Limits::default(),
            rng,
            counters: IkeSubstituteCounters::default(),
        }
    }

    /// Provision (or replace) a terminal's profile. Refused at the bound of terminals.
    pub fn provision(
        &mut self,
        terminal: TerminalId,
        profile: IkeProfile,
    ) -> Result<(), crate::Error> {
        if !self.profiles.contains_key(&terminal) && self.profiles.len() >= self.max_terminals {
            return Err(crate::Error::CapacityExceeded {
                what: "provisioned terminals",
                bound: self.max_terminals,
            });
        }
        if profile.ike_proposals.is_empty() || profile.ike_proposals.iter().any(|p| !p.is_valid()) {
            return Err(crate::ikev2::IkeError::BadIkeProposals.into());
        }
        self.profiles.insert(terminal, Arc::new(profile));
        Ok(())
    }

    /// The policy database (S43).
    pub fn policy_mut(&mut self) -> &mut PolicyDb {
        &mut self.policy
    }

    /// What was counted.
    pub fn counters(&self) -> IkeSubstituteCounters {
        self.counters
    }

    fn responder_start(
        &mut self,
        profile: &IkeProfile,
        request: &StartRequest,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        let bytes = request
            .peer_message
            .as_deref()
            .ok_or(ErrorCode::BadRequest)?;
        let m = Message::decode(bytes, &self.limits).map_err(|_| ErrorCode::BadRequest)?;
        let h = m.header;
        if h.exchange == ExchangeType::CreateChildSa {
            return self.rekey_start(profile, request, &m.payloads);
        }
        if h.exchange != ExchangeType::IkeSaInit
            || h.flags.response
            || !h.flags.initiator
            || h.message_id != 0
            || h.spi_r != [0; 8]
        {
            return Err(ErrorCode::BadRequest);
        }
        let (sa, ke, ni) = Found::of(&m.payloads)
            .sa_ke_nonce()
            .ok_or(ErrorCode::BadRequest)?;
        let ours = runnable(&profile.ike_proposals, &request.transforms);
        let Some(choice) = select_ike(sa, &ours, Some(ke.group)) else {
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::NoProposalChosen),
            ));
        };
        if ke.group != choice.suite.group.id() {
            let group = choice.suite.group.id();
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::InvalidKe { group }),
            ));
        }
        let nat = nat_detected(
            &m.payloads,
            &h.spi_i,
            &[0; 8],
            request.remote,
            request.local,
        );
        let outcome = chosen(profile, &choice)?;
        let chosen = Chosen {
            request: bytes.to_vec(),
            local: request.local,
            remote: request.remote,
            spi_i: h.spi_i,
            ni: ni.to_vec(),
            ke: ke.clone(),
            choice,
            natd: nat.is_some(),
        };
        Ok((
            IkeSession::Chosen(Box::new(chosen)),
            Body::StartResponse(StartResponse { outcome }),
        ))
    }

    fn initiator_start(
        &mut self,
        terminal: &TerminalId,
        profile: &IkeProfile,
        request: &StartRequest,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        if let Some(m) = request.peer_message.as_deref() {
            // Only a rekey carries a message when the terminal starts: an unencrypted
            // CREATE_CHILD_SA header that says so.
            let h = Header::decode(m, &self.limits).map_err(|_| ErrorCode::BadRequest)?;
            if h.header.exchange != ExchangeType::CreateChildSa {
                return Err(ErrorCode::BadRequest);
            }
            return self.rekey_offer(profile, request);
        }
        let wanted = request.peer_id.as_deref().ok_or(ErrorCode::BadRequest)?;
        let peer_id = Identity::from_payload_body(wanted).map_err(|_| ErrorCode::BadRequest)?;
        // S43 before anything is spent: may this terminal reach that peer at all? (Checked
        // again against the identity the peer proves.)
        if !self
            .policy
            .permits(terminal, Direction::FromTerminal, &peer_id)
        {
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::PolicyDenied),
            ));
        }
        let proposals = runnable(&profile.ike_proposals, &request.transforms);
        let Some(group) = proposals.first().and_then(|p| p.groups.first().copied()) else {
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::NoProposalChosen),
            ));
        };
        let mut spi_i = [0u8; 8];
        while spi_i == [0; 8] {
            self.rng.fill_bytes(&mut spi_i);
        }
        let natd_src = natd_source(
            profile.force_encap,
            &mut *self.rng,
            &spi_i,
            &[0; 8],
            request.local,
        );
        let transforms =
            proposals
                .iter()
                .flat_map(proposal_transforms)
                .fold(Vec::new(), |mut all, tr| {
                    if !all.contains(&tr) {
                        all.push(tr);
                    }
                    all
                });
        let outcome = StartOutcome::Proceed {
            method: method_of(&profile.credential),
            transforms,
            sa: chain(&[Payload::Sa(ike_offer(&proposals))])?.1,
        };
        let offering = Offering {
            remote: request.remote,
            spi_i,
            ni: nonce(&mut *self.rng),
            kp: KeyPair::generate(group, &mut *self.rng),
            cookie: None,
            natd_src,
            rounds: 0,
            request: Vec::new(),
            proposals,
            peer_id,
        };
        Ok((
            IkeSession::Offering(Box::new(offering)),
            Body::StartResponse(StartResponse { outcome }),
        ))
    }

    /// S35 for a delegated IKE SA rekey the peer started: its CREATE_CHILD_SA, opened by
    /// the terminal, carries SA (with the peer's new SPI), Ni and KEi. The IKE SA itself
    /// was authenticated when it was set up; what the server adds is the Diffie-Hellman.
    fn rekey_start(
        &mut self,
        profile: &IkeProfile,
        request: &StartRequest,
        payloads: &[Payload],
    ) -> Result<(IkeSession, Body), ErrorCode> {
        let (sa, ke, _) = Found::of(payloads)
            .sa_ke_nonce()
            .ok_or(ErrorCode::BadRequest)?;
        let ours = runnable(&profile.ike_proposals, &request.transforms);
        let Some((choice, _peer_spi)) = select_ike_rekey(sa, &ours, Some(ke.group)) else {
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::NoProposalChosen),
            ));
        };
        if ke.group != choice.suite.group.id() {
            let group = choice.suite.group.id();
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::InvalidKe { group }),
            ));
        }
        let outcome = chosen(profile, &choice)?;
        let chosen = RekeyChosen {
            choice,
            ke: ke.clone(),
        };
        Ok((
            IkeSession::RekeyChosen(Box::new(chosen)),
            Body::StartResponse(StartResponse { outcome }),
        ))
    }

    /// S35 for an IKE SA rekey the terminal starts: the proposals it may offer (as an SA
    /// payload without SPI; the terminal sets its new SPI), our key share made now.
    fn rekey_offer(
        &mut self,
        profile: &IkeProfile,
        request: &StartRequest,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        let proposals = runnable(&profile.ike_proposals, &request.transforms);
        let Some(group) = proposals.first().and_then(|p| p.groups.first().copied()) else {
            return Ok((
                IkeSession::Refused,
                start_refused(StartOutcome::NoProposalChosen),
            ));
        };
        let outcome = StartOutcome::Proceed {
            method: method_of(&profile.credential),
            transforms: proposals.iter().flat_map(proposal_transforms).collect(),
            sa: chain(&[Payload::Sa(ike_offer(&proposals))])?.1,
        };
        let offer = RekeyOffer {
            kp: KeyPair::generate(group, &mut *self.rng),
            proposals,
            rounds: 0,
        };
        Ok((
            IkeSession::RekeyOffering(Box::new(offer)),
            Body::StartResponse(StartResponse { outcome }),
        ))
    }

    /// S38-S40 for an IKE SA rekey the terminal starts: without the peer's answer, our key
    /// share; with an INVALID_KE_PAYLOAD answer, a share in the group the peer wants; with
    /// the peer's SA, KEr and Nr, g^ir (sealed) — the terminal derives the new IKE SA.
    fn rekey_offer_keygen(
        &mut self,
        profile: &IkeProfile,
        at: Place,
        mut o: Box<RekeyOffer>,
        answer: Option<&[u8]>,
    ) -> (IkeSession, Result<Body, ErrorCode>) {
        let Some(answer) = answer else {
            let ke = KePayload {
                group: o.kp.group().id(),
                data: o.kp.public().to_vec(),
            };
            return match ke_message(ke) {
                Ok(body) => (IkeSession::RekeyOffering(o), Ok(body)),
                Err(code) => (IkeSession::RekeyOffering(o), Err(code)),
            };
        };
        let Ok(m) = Message::decode(answer, &self.limits) else {
            return (IkeSession::RekeyOffering(o), Err(ErrorCode::BadRequest));
        };
        if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD)
            && let Some(g) = invalid_ke_group(n, &o.proposals)
            && g != o.kp.group()
            && o.rounds < MAX_INIT_ROUNDS
        {
            o.rounds += 1;
            o.kp = KeyPair::generate(g, &mut *self.rng);
            let ke = KePayload {
                group: g.id(),
                data: o.kp.public().to_vec(),
            };
            return match ke_message(ke) {
                Ok(body) => (IkeSession::RekeyOffering(o), Ok(body)),
                Err(code) => (IkeSession::RekeyOffering(o), Err(code)),
            };
        }
        let found = Found::of(&m.payloads);
        let chosen = found.sa.and_then(|sa| accept_ike_rekey(sa, &o.proposals));
        let (Some((suite, _)), Some(ke)) = (chosen, found.ke) else {
            return (IkeSession::RekeyOffering(o), Err(ErrorCode::BadRequest));
        };
        if suite.group != o.kp.group() || ke.group != o.kp.group().id() {
            return (IkeSession::RekeyOffering(o), Err(ErrorCode::BadRequest));
        }
        self.counters.diffie_hellman += 1;
        let Ok(shared) = o.kp.agree(&ke.data) else {
            return (IkeSession::Refused, Err(ErrorCode::BadRequest));
        };
        self.counters.ike_rekeys += 1;
        let sealed = seal(
            &profile.delegation_key,
            at.seal_context(KEYGEN_RESPONSE),
            &super::encode_shared(shared.as_bytes()),
            &mut *self.rng,
        );
        (
            IkeSession::RekeyDone,
            Ok(Body::KeyGenResponse(KeyGenResponse {
                message: None,
                sealed: Some(sealed),
                local_auth: None,
            })),
        )
    }

    /// S38-S40 for a delegated IKE SA rekey: our key share (as an IKE message carrying
    /// one KE payload) and g^ir, sealed. The terminal derives the new IKE SA from its SK_d.
    fn rekey_keygen(
        &mut self,
        profile: &IkeProfile,
        at: Place,
        c: &RekeyChosen,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        let kp = KeyPair::generate(c.choice.suite.group, &mut *self.rng);
        let ke = KePayload {
            group: c.choice.suite.group.id(),
            data: kp.public().to_vec(),
        };
        self.counters.diffie_hellman += 1;
        let shared = kp.agree(&c.ke.data).map_err(|_| ErrorCode::BadRequest)?;
        self.counters.ike_rekeys += 1;
        let Body::KeyGenResponse(KeyGenResponse {
            message: Some(message),
            ..
        }) = ke_message(ke)?
        else {
            return Err(ErrorCode::Internal);
        };
        let sealed = seal(
            &profile.delegation_key,
            at.seal_context(KEYGEN_RESPONSE),
            &super::encode_shared(shared.as_bytes()),
            &mut *self.rng,
        );
        Ok((
            IkeSession::RekeyDone,
            Body::KeyGenResponse(KeyGenResponse {
                message: Some(message),
                sealed: Some(sealed),
                local_auth: None,
            }),
        ))
    }

    /// S38-S40 for a responder: our key share, the IKE_SA_INIT response, the keys.
    fn responder_keygen(
        &mut self,
        profile: &IkeProfile,
        at: Place,
        c: &Chosen,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        let group = c.choice.suite.group;
        let kp = KeyPair::generate(group, &mut *self.rng);
        let our_public = kp.public().to_vec();
        self.counters.diffie_hellman += 1;
        // The peer's key share is not a valid point/element: the terminal answers the
        // peer's IKE_SA_INIT with INVALID_SYNTAX.
        let shared = kp.agree(&c.ke.data).map_err(|_| ErrorCode::BadRequest)?;
        let mut spi_r = [0u8; 8];
        while spi_r == [0; 8] {
            self.rng.fill_bytes(&mut spi_r);
        }
        let nr = nonce(&mut *self.rng);
        let mut payloads = alloc::vec![
            Payload::Sa(alloc::vec![c.choice.suite.to_proposal(c.choice.num)]),
            Payload::Ke(KePayload {
                group: group.id(),
                data: our_public,
            }),
            Payload::Nonce(nr.clone()),
        ];
        if c.natd {
            let source = natd_source(
                profile.force_encap,
                &mut *self.rng,
                &c.spi_i,
                &spi_r,
                c.local,
            );
            payloads.extend(natd_notifies(source, &c.spi_i, &spi_r, c.remote));
        }
        payloads.extend(sa_init_payloads(
            &profile.credential,
            &profile.auth_db,
            true,
        ));
        let header = Header::ike_sa_init(c.spi_i, spi_r, true);
        let response = Message { header, payloads }
            .encode()
            .map_err(|_| ErrorCode::Internal)?;
        let seed = skeyseed(&c.ni, &nr, shared.as_bytes());
        let keys = IkeKeys::derive(
            &c.choice.suite,
            seed.as_bytes(),
            &c.ni,
            &nr,
            &c.spi_i,
            &spi_r,
        )
        .map_err(|_| ErrorCode::Internal)?;
        let sealed = seal(
            &profile.delegation_key,
            at.seal_context(KEYGEN_RESPONSE),
            &super::encode_sk(&keys),
            &mut *self.rng,
        );
        let keyed = Keyed {
            initiator: false,
            keys,
            ni: c.ni.clone(),
            nr,
            init_request: c.request.clone(),
            init_response: response.clone(),
            wanted: None,
            peer_id: None,
        };
        Ok((
            IkeSession::Keyed(Box::new(keyed)),
            Body::KeyGenResponse(KeyGenResponse {
                message: Some(response),
                sealed: Some(sealed),
                local_auth: None,
            }),
        ))
    }

    /// S38-S40 for an initiator: build the IKE_SA_INIT request (again, after a COOKIE or
    /// INVALID_KE_PAYLOAD answer: the seed's S12 → S5 loop), or take the peer's response
    /// and derive the keys (then our AUTH goes with them: IKE_AUTH carries it first).
    fn initiator_keygen(
        &mut self,
        profile: &IkeProfile,
        at: Place,
        mut o: Box<Offering>,
        answer: Option<&[u8]>,
    ) -> (IkeSession, Result<Body, ErrorCode>) {
        let refuse = |o, code| (IkeSession::Offering(o), Err(code));
        let Some(answer) = answer else {
            if !o.request.is_empty() {
                // The request exists; asking again without the peer's answer is out of
                // step (a retransmission would have repeated the sequence number).
                return refuse(o, ErrorCode::OutOfState);
            }
            return self.build_init(profile, o);
        };
        if o.request.is_empty() {
            return refuse(o, ErrorCode::OutOfState);
        }
        let m = match Message::decode(answer, &self.limits) {
            Ok(m) => m,
            Err(_) => return refuse(o, ErrorCode::BadRequest),
        };
        let h = m.header;
        if !h.flags.response
            || h.message_id != 0
            || h.exchange != ExchangeType::IkeSaInit
            || h.spi_i != o.spi_i
        {
            return refuse(o, ErrorCode::BadRequest);
        }
        let found = Found::of(&m.payloads);
        let Some(sa) = found.sa else {
            if let Some(c) = m.notify(notify::COOKIE)
                && !c.data.is_empty()
                && c.data.len() <= 64
                && o.rounds < MAX_INIT_ROUNDS
            {
                o.rounds += 1;
                o.cookie = Some(c.data.clone());
                return self.build_init(profile, o);
            }
            if let Some(n) = m.notify(notify::INVALID_KE_PAYLOAD)
                && let Some(g) = invalid_ke_group(n, &o.proposals)
                && g != o.kp.group()
                && o.rounds < MAX_INIT_ROUNDS
            {
                o.rounds += 1;
                o.kp = KeyPair::generate(g, &mut *self.rng);
                return self.build_init(profile, o);
            }
            return refuse(o, ErrorCode::BadRequest);
        };
        let (Some(suite), Some(ke), Some(nr)) =
            (accept_ike(sa, &o.proposals), found.ke, found.nonce)
        else {
            return refuse(o, ErrorCode::BadRequest);
        };
        if h.spi_r == [0; 8] || ke.group != o.kp.group().id() || suite.group != o.kp.group() {
            return refuse(o, ErrorCode::BadRequest);
        }
        let o = *o;
        self.counters.diffie_hellman += 1;
        // From here the key pair is spent: a failure ends the session.
        let Ok(shared) = o.kp.agree(&ke.data) else {
            return (IkeSession::Refused, Err(ErrorCode::BadRequest));
        };
        let seed = skeyseed(&o.ni, nr, shared.as_bytes());
        let Ok(keys) = IkeKeys::derive(&suite, seed.as_bytes(), &o.ni, nr, &o.spi_i, &h.spi_r)
        else {
            return (IkeSession::Refused, Err(ErrorCode::Internal));
        };
        // Our AUTH (§2.15): over the request this server built, the peer's nonce, and the
        // identity provisioned for this terminal.
        let Ok(Proof { auth, certs }) = prove(
            &profile.credential,
            keys.sk_pi.as_bytes(),
            &o.request,
            nr,
            &profile.local_id,
            &mut *self.rng,
        ) else {
            return (IkeSession::Refused, Err(ErrorCode::Internal));
        };
        self.counters.proofs += 1;
        let mut proof = alloc::vec![Payload::IdI(profile.local_id.clone())];
        proof.extend(certs.into_iter().map(Payload::Cert));
        // RFC 7296 §3.7: an initiator asks for certificates in IKE_AUTH.
        if let Some(req) = profile.auth_db.certreq() {
            proof.push(Payload::CertReq(req));
        }
        proof.push(Payload::IdR(o.peer_id.clone()));
        proof.push(Payload::Auth(auth));
        let local_auth = match chain(&proof) {
            Ok(c) => c,
            Err(code) => return (IkeSession::Refused, Err(code)),
        };
        let sealed = seal(
            &profile.delegation_key,
            at.seal_context(KEYGEN_RESPONSE),
            &super::encode_sk(&keys),
            &mut *self.rng,
        );
        let keyed = Keyed {
            initiator: true,
            keys,
            ni: o.ni,
            nr: nr.to_vec(),
            init_request: o.request,
            init_response: answer.to_vec(),
            wanted: Some(o.peer_id),
            peer_id: None,
        };
        (
            IkeSession::Keyed(Box::new(keyed)),
            Ok(Body::KeyGenResponse(KeyGenResponse {
                message: None,
                sealed: Some(sealed),
                local_auth: Some(local_auth),
            })),
        )
    }

    /// The IKE_SA_INIT request of an offer (as the plain initiator builds it).
    fn build_init(
        &mut self,
        profile: &IkeProfile,
        mut o: Box<Offering>,
    ) -> (IkeSession, Result<Body, ErrorCode>) {
        let header = Header::ike_sa_init(o.spi_i, [0; 8], false);
        let mut payloads = Vec::new();
        if let Some(c) = &o.cookie {
            payloads.push(Payload::Notify(Notify::new(notify::COOKIE, c.clone())));
        }
        payloads.push(Payload::Sa(ike_offer(&o.proposals)));
        payloads.push(Payload::Ke(KePayload {
            group: o.kp.group().id(),
            data: o.kp.public().to_vec(),
        }));
        payloads.push(Payload::Nonce(o.ni.clone()));
        payloads.extend(natd_notifies(o.natd_src, &o.spi_i, &[0; 8], o.remote));
        payloads.extend(sa_init_payloads(
            &profile.credential,
            &profile.auth_db,
            false,
        ));
        let bytes = match (Message { header, payloads }).encode() {
            Ok(b) => b,
            Err(_) => return (IkeSession::Offering(o), Err(ErrorCode::Internal)),
        };
        o.request = bytes.clone();
        (
            IkeSession::Offering(o),
            Ok(Body::KeyGenResponse(KeyGenResponse {
                message: Some(bytes),
                sealed: None,
                local_auth: None,
            })),
        )
    }

    /// S41-S44: check the peer's AUTH (S42), then the policy database (S43); answer both,
    /// and for a responder our own proof.
    fn authenticate(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        profile: &IkeProfile,
        mut k: Box<Keyed>,
        request: &AuthRequest,
    ) -> (IkeSession, Result<Body, ErrorCode>) {
        let mut count = 0;
        let Ok(payloads) = decode_chain(
            request.first_payload,
            &request.payloads,
            &self.limits,
            &mut count,
            false,
        ) else {
            return (IkeSession::Keyed(k), Err(ErrorCode::BadRequest));
        };
        let found = Found::of(&payloads);
        let peer_id = if k.initiator { found.id_r } else { found.id_i };
        let (Some(peer_id), Some(auth)) = (peer_id, found.auth) else {
            return (IkeSession::Keyed(k), Err(ErrorCode::BadRequest));
        };
        // The peer signed the IKE_SA_INIT message it sent, our nonce, and its identity
        // under its own SK_p; certificates are judged at the server's wall-clock time.
        let (signed, nonce, sk_p) = if k.initiator {
            (&k.init_response, &k.ni, &k.keys.sk_pr)
        } else {
            (&k.init_request, &k.nr, &k.keys.sk_pi)
        };
        let verdict = match verify(
            &profile.auth_db,
            sk_p.as_bytes(),
            signed,
            nonce,
            peer_id,
            auth,
            &cert_payloads(&payloads),
            UnixTime::at(self.time_anchor, now),
        ) {
            Err(failure) => AuthResult::from_code(failure.code()),
            Ok(_) if k.wanted.as_ref().is_some_and(|w| w != peer_id) => {
                AuthResult::IdentityMismatch
            }
            Ok(_) => AuthResult::Authenticated,
        };
        let direction = if k.initiator {
            Direction::FromTerminal
        } else {
            Direction::ToTerminal
        };
        let policy = match verdict {
            AuthResult::Authenticated if self.policy.permits(terminal, direction, peer_id) => {
                PolicyResult::Allowed
            }
            AuthResult::Authenticated => PolicyResult::Denied,
            _ => PolicyResult::NotChecked,
        };
        let response = AuthResponse {
            auth: verdict,
            policy,
            local_auth: None,
            consumed: None,
        };
        if !response.accepted() {
            if verdict == AuthResult::Authenticated {
                self.counters.policy_refused += 1;
            } else {
                self.counters.auth_refused += 1;
            }
            return (IkeSession::Refused, Ok(Body::AuthResponse(response)));
        }
        self.counters.authenticated += 1;
        k.peer_id = Some(peer_id.clone());
        let local_auth = if k.initiator {
            None
        } else {
            // Our AUTH as responder: over the IKE_SA_INIT response this server built, the
            // peer's nonce, and the provisioned identity.
            let Ok(Proof { auth, certs }) = prove(
                &profile.credential,
                k.keys.sk_pr.as_bytes(),
                &k.init_response,
                &k.ni,
                &profile.local_id,
                &mut *self.rng,
            ) else {
                return (IkeSession::Keyed(k), Err(ErrorCode::Internal));
            };
            self.counters.proofs += 1;
            let mut proof = alloc::vec![Payload::IdR(profile.local_id.clone())];
            proof.extend(certs.into_iter().map(Payload::Cert));
            proof.push(Payload::Auth(auth));
            match chain(&proof) {
                Ok(c) => Some(c),
                Err(e) => return (IkeSession::Keyed(k), Err(e)),
            }
        };
        (
            IkeSession::Authenticated(k),
            Ok(Body::AuthResponse(AuthResponse {
                local_auth,
                ..response
            })),
        )
    }
}

impl Substitute for IkeSubstitute {
    type Session = IkeSession;

    fn start(
        &mut self,
        _now: Instant,
        terminal: &TerminalId,
        _at: Place,
        request: &StartRequest,
    ) -> Result<(IkeSession, Body), ErrorCode> {
        if request.protocol != Protocol::Ikev2 {
            return Err(ErrorCode::UnsupportedProtocol);
        }
        let profile = self
            .profiles
            .get(terminal)
            .cloned()
            .ok_or(ErrorCode::NotProvisioned)?;
        match request.role {
            Role::Responder => self.responder_start(&profile, request),
            Role::Initiator => self.initiator_start(terminal, &profile, request),
        }
    }

    fn step(
        &mut self,
        now: Instant,
        terminal: &TerminalId,
        at: Place,
        session: &mut IkeSession,
        request: &Body,
    ) -> Result<Body, ErrorCode> {
        let profile = self
            .profiles
            .get(terminal)
            .cloned()
            .ok_or(ErrorCode::NotProvisioned)?;
        let state = core::mem::replace(session, IkeSession::Refused);
        let (next, answer) = match (state, request) {
            (IkeSession::Chosen(c), Body::KeyGenRequest(KeyGenRequest { peer_message: None })) => {
                match self.responder_keygen(&profile, at, &c) {
                    Ok((next, body)) => (next, Ok(body)),
                    Err(code) => (IkeSession::Chosen(c), Err(code)),
                }
            }
            (
                IkeSession::RekeyChosen(c),
                Body::KeyGenRequest(KeyGenRequest { peer_message: None }),
            ) => match self.rekey_keygen(&profile, at, &c) {
                Ok((next, body)) => (next, Ok(body)),
                Err(code) => (IkeSession::RekeyChosen(c), Err(code)),
            },
            (IkeSession::RekeyOffering(o), Body::KeyGenRequest(k)) => {
                self.rekey_offer_keygen(&profile, at, o, k.peer_message.as_deref())
            }
            (IkeSession::Offering(o), Body::KeyGenRequest(k)) => {
                self.initiator_keygen(&profile, at, o, k.peer_message.as_deref())
            }
            (IkeSession::Keyed(k), Body::AuthRequest(a)) => {
                self.authenticate(now, terminal, &profile, k, a)
            }
            (IkeSession::Authenticated(k), Body::KeyRequest) => {
                self.counters.keys_released += 1;
                let sealed = seal(
                    &profile.delegation_key,
                    at.seal_context(KEY_RESPONSE),
                    &super::encode_sk_d(&k.keys.sk_d),
                    &mut *self.rng,
                );
                (
                    IkeSession::Released(k),
                    Ok(Body::KeyResponse(KeyResponse { sealed })),
                )
            }
            (state, _) => (state, Err(ErrorCode::OutOfState)),
        };
        *session = next;
        answer
    }
}

/// A start that does not proceed.
fn start_refused(outcome: StartOutcome) -> Body {
    Body::StartResponse(StartResponse { outcome })
}

/// Payloads as a chain (first payload type, bytes), as delegation messages carry them.
fn chain(payloads: &[Payload]) -> Result<(u8, Vec<u8>), ErrorCode> {
    encode_chain(payloads).map_err(|_| ErrorCode::Internal)
}

/// The delegation-message transforms of one proposal (ENCR with its key length, PRF,
/// INTEG, and its groups).
fn proposal_transforms(p: &IkeProposal) -> Vec<Transform> {
    let encr = p.encr.transform();
    let mut out = alloc::vec![
        Transform {
            kind: t::ENCR,
            id: encr.id,
            key_bits: encr.key_len().unwrap_or(0),
        },
        Transform {
            kind: t::PRF,
            id: p.prf.id(),
            key_bits: 0,
        },
    ];
    if let Some(i) = p.integ {
        out.push(Transform {
            kind: t::INTEG,
            id: i.id(),
            key_bits: 0,
        });
    }
    out.extend(p.groups.iter().map(|g| Transform {
        kind: t::DH,
        id: g.id(),
        key_bits: 0,
    }));
    out
}

/// The transforms of a chosen suite.
fn suite_transforms(s: &IkeSuite) -> Vec<Transform> {
    proposal_transforms(&IkeProposal {
        encr: s.encr,
        integ: s.integ,
        prf: s.prf,
        groups: alloc::vec![s.group],
    })
}

/// Our proposals whose symmetric transforms (ENCR with key length, PRF, INTEG) the
/// terminal listed as ones it runs; the groups are the server's business.
fn runnable(ours: &[IkeProposal], terminal: &[Transform]) -> Vec<IkeProposal> {
    ours.iter()
        .filter(|p| {
            proposal_transforms(p)
                .iter()
                .filter(|tr| tr.kind != t::DH)
                .all(|tr| terminal.contains(tr))
        })
        .cloned()
        .collect()
}

/// The method a credential authenticates with (S35's decision).
fn method_of(credential: &Credential) -> Method {
    match credential {
        Credential::Psk(_) => Method::IkePsk,
        Credential::Signature(_) => Method::IkeSignature,
    }
}

/// S35's answer for a proposal chosen from the peer's offer: the method, the suite's
/// transforms and the chosen proposal as an SA payload.
fn chosen(profile: &IkeProfile, choice: &IkeChoice) -> Result<StartOutcome, ErrorCode> {
    Ok(StartOutcome::Proceed {
        method: method_of(&profile.credential),
        transforms: suite_transforms(&choice.suite),
        sa: chain(&[Payload::Sa(alloc::vec![
            choice.suite.to_proposal(choice.num)
        ])])?
        .1,
    })
}

/// A key generation response whose message is our key share: an unencrypted
/// CREATE_CHILD_SA response header and one KE payload.
fn ke_message(ke: KePayload) -> Result<Body, ErrorCode> {
    let header = Header {
        spi_i: [0; 8],
        spi_r: [0; 8],
        exchange: ExchangeType::CreateChildSa,
        flags: crate::ikev2::codec::Flags {
            initiator: false,
            version: false,
            response: true,
        },
        message_id: 0,
    };
    let message = Message {
        header,
        payloads: alloc::vec![Payload::Ke(ke)],
    }
    .encode()
    .map_err(|_| ErrorCode::Internal)?;
    Ok(Body::KeyGenResponse(KeyGenResponse {
        message: Some(message),
        sealed: None,
        local_auth: None,
    }))
}
