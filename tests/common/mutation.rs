//! The mutation harness (tests/mutation.rs): run one flow once per single-message fault,
//! each in a fresh, seeded world, and collect every case that broke a property.
//!
//! A flow is a function from an optional [`Mutation`] to a [`FlowRun`]: it builds its
//! world, installs the fault (through [`Mutation::fault`] on its own message selector, so
//! that "message `i`" means the same packet in every run), runs the flow, checks its
//! properties, runs it again (the health run) and reports what it saw. The harness first
//! runs the flow without a fault to learn its messages, then every case.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use deputy::sim::fault::{Fault, FaultAction};
use deputy::sim::packet::PacketInfo;
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

/// One message of a flow, as the fault-free run saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Msg {
    /// Source and destination socket addresses (on the hop the selector watches).
    pub src: String,
    pub dst: String,
    /// Payload length.
    pub len: usize,
}

/// The single fault of one case, on the flow's message number `message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Flip(usize),
    Truncate(usize),
    Duplicate,
    Drop,
    Replay(u64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub message: u64,
    pub kind: Kind,
}

impl Mutation {
    /// `select` (the flow's message selector, with any action) turned into this case's
    /// fault.
    pub fn fault(&self, select: impl Fn(FaultAction) -> Fault) -> Fault {
        let action = match self.kind {
            Kind::Flip(at) => FaultAction::flip(at),
            Kind::Truncate(n) => FaultAction::Truncate(n),
            Kind::Duplicate => FaultAction::Duplicate,
            Kind::Drop => FaultAction::Drop,
            // Replay rides on the *later* message: it passes, the earlier one follows it.
            Kind::Replay(earlier) => FaultAction::Replay { earlier },
        };
        select(action).nth(self.message)
    }

    fn name(&self) -> String {
        match self.kind {
            Kind::Flip(at) => format!("flip byte {at}"),
            Kind::Truncate(n) => format!("truncate to {n}"),
            Kind::Duplicate => "duplicate".into(),
            Kind::Drop => "drop".into(),
            Kind::Replay(e) => format!("replay #{e} after it"),
        }
    }
}

/// A recorder to chain into a selector with [`Fault::when`]: it logs every message the
/// selector matches (the baseline's message list) until [`Log::end_flow`], and from then
/// on matches nothing, so the fault (counted over the selector's matches) can only hit the
/// flow under test and never the health run after it.
#[derive(Clone, Default)]
pub struct Log {
    messages: Rc<RefCell<Vec<Msg>>>,
    ended: Rc<Cell<bool>>,
}

impl Log {
    pub fn record(&self) -> impl Fn(&PacketInfo<'_>) -> bool + 'static {
        let log = self.messages.clone();
        let ended = self.ended.clone();
        move |p| {
            if ended.get() {
                return false;
            }
            log.borrow_mut().push(Msg {
                src: format!("{:?}", p.src_socket()),
                dst: format!("{:?}", p.dst_socket()),
                len: p.payload.len(),
            });
            true
        }
    }

    /// The flow under test is over: what follows (the health run) is neither recorded
    /// nor faulted.
    pub fn end_flow(&self) {
        self.ended.set(true);
    }

    pub fn take(&self) -> Vec<Msg> {
        std::mem::take(&mut self.messages.borrow_mut())
    }
}

/// What one run of a flow saw: its messages (in the selector's order) and the first
/// property it found broken.
pub struct FlowRun {
    pub messages: Vec<Msg>,
    pub result: Result<(), String>,
}

/// How many byte positions per message the default (`cargo test`) run flips: the first,
/// the last and this many seeded others. The exhaustive run flips every one.
const SAMPLED_FLIPS: usize = 2;

/// Every case for a flow whose fault-free run saw `messages`.
pub fn cases(flow: &str, messages: &[Msg], exhaustive: bool) -> Vec<Mutation> {
    let mut seed = [0u8; 32];
    for (i, b) in flow.bytes().enumerate() {
        seed[i % 32] ^= b;
    }
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut out = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let message = i as u64;
        let mut push = |kind| out.push(Mutation { message, kind });
        push(Kind::Drop);
        push(Kind::Duplicate);
        if m.len > 0 {
            push(Kind::Truncate(m.len / 2));
            let mut at: Vec<usize> = if exhaustive {
                (0..m.len).collect()
            } else {
                let mut v = vec![0, m.len - 1];
                v.extend((0..SAMPLED_FLIPS).map(|_| rng.next_u64() as usize % m.len));
                v
            };
            at.sort_unstable();
            at.dedup();
            for a in at {
                push(Kind::Flip(a));
            }
        }
        // Replay the latest earlier message that went the same way.
        if let Some(e) = messages[..i]
            .iter()
            .rposition(|p| p.src == m.src && p.dst == m.dst)
        {
            push(Kind::Replay(e as u64));
        }
    }
    out
}

/// A case known to fail: flow, message number, fault kind (`"flip"`, `"truncate"`,
/// `"duplicate"`, `"drop"`, `"replay"`; every position of a flip), and what broke.
pub struct Known {
    pub flow: &'static str,
    pub message: u64,
    pub kind: &'static str,
    pub why: &'static str,
}

pub const fn known(
    flow: &'static str,
    message: u64,
    kind: &'static str,
    why: &'static str,
) -> Known {
    Known {
        flow,
        message,
        kind,
        why,
    }
}

/// Run `flow` once per case; panics listing every failing case not in `known`, and prints
/// the known ones that failed and those that now pass.
pub fn run_suite(
    flow: &str,
    exhaustive: bool,
    known: &[Known],
    run: impl Fn(Option<&Mutation>) -> FlowRun,
) {
    let base = run(None);
    if let Err(e) = &base.result {
        panic!("{flow}: the fault-free run fails: {e}");
    }
    assert!(!base.messages.is_empty(), "{flow}: no messages seen");
    let mut unexpected = Vec::new();
    let mut known_failed = Vec::new();
    let cases = cases(flow, &base.messages, exhaustive);
    for case in &cases {
        let m = &base.messages[case.message as usize];
        let name = format!(
            "{flow} #{} ({} -> {}, {} B) {}",
            case.message,
            m.src,
            m.dst,
            m.len,
            case.name()
        );
        let outcome = catch_unwind(AssertUnwindSafe(|| run(Some(case))));
        let why = match outcome {
            Ok(r) => r.result.err(),
            Err(p) => Some(format!(
                "panicked: {}",
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        };
        let is_known = known.iter().find(|k| {
            k.flow == flow && k.message == case.message && case.name().starts_with(k.kind)
        });
        match why {
            Some(why) => match is_known {
                Some(k) => known_failed.push(format!("{name}: {why} (known: {})", k.why)),
                None => unexpected.push(format!("{name}: {why}")),
            },
            None if is_known.is_some() => println!("known-failing case now passes: {name}"),
            None => {}
        }
    }
    println!(
        "{flow}: {} cases, {} messages",
        cases.len(),
        base.messages.len()
    );
    for k in &known_failed {
        println!("known failure: {k}");
    }
    assert!(
        unexpected.is_empty(),
        "{flow}: {} failing cases:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
}
