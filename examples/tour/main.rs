//! The deputy tour: every built scenario, narrated, on the deterministic simulator.
//!
//! ```sh
//! cargo run --example tour                 # writes into a fresh temporary directory
//! cargo run --example tour -- --out DIR    # writes DIR/tour.pcap and DIR/tour.mmd
//! ```
//!
//! Each chapter builds its own networks inside one simulator, so the whole tour is one
//! capture (open `tour.pcap` in Wireshark) and one sequence chart (`tour.mmd`, Mermaid).
//! The same seed gives the same run every time.

mod channel;
// Event matching is shared with the tests: one file to change when `Event` changes shape.
// The tour uses a few of the test certificates' builders.
#[allow(dead_code)]
#[path = "../../tests/common/certs.rs"]
mod certs;
#[path = "../../tests/common/events.rs"]
mod events;
#[path = "../../tests/common/inline.rs"]
mod inline;
#[path = "../../tests/common/keyx.rs"]
mod keyx;
#[path = "../../tests/common/operator.rs"]
mod operator;
mod seed000;
mod seed001;
mod seed002;
mod seed003;
mod seed004;
mod seed004_tls;
#[path = "../../tests/common/tls.rs"]
mod tls;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use deputy::Actor;
use deputy::sim::{LinkConfig, NetworkId, NodeId, Sim, TraceKind};

use crate::events::{FromEvent, take_events};

/// A chapter's failure as the tour reports it: the tour stops with a message, it never
/// panics, so every fallible step maps its error to text.
pub fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// The `T`s `node` reported since the last call.
pub fn events_of<T: FromEvent>(sim: &mut Sim, node: NodeId) -> Result<Vec<T>, String> {
    take_events(sim, node).map_err(err)
}

/// The chapters' world building. A trait on `Sim`, not free functions, so that the actor
/// argument may borrow the simulator for its RNG (`sim.host(.., X::new(.., sim.rng(..)))`):
/// method calls get two-phase borrows.
pub trait Build {
    fn sim(&mut self) -> &mut Sim;

    /// A network whose links all have `latency_ms` of latency (and nothing else).
    fn net(&mut self, name: &str, prefix: &str, latency_ms: u64) -> Result<NetworkId, String> {
        let link = LinkConfig::with_latency(Duration::from_millis(latency_ms));
        self.sim().add_network(name, prefix, link).map_err(err)
    }

    fn host(
        &mut self,
        name: &str,
        net: NetworkId,
        addr: &str,
        actor: impl Actor<Event: Into<deputy::Event>> + 'static,
    ) -> Result<NodeId, String> {
        let addr = addr.parse().map_err(err)?;
        self.sim().add_host(name, net, addr, actor).map_err(err)
    }
}

impl Build for Sim {
    fn sim(&mut self) -> &mut Sim {
        self
    }
}

/// Prints the story: chapters, numbered steps, and the packets the simulator carried.
pub struct Narrator {
    chapter: usize,
    step: usize,
    /// How much of the simulator's trace has been printed.
    printed: usize,
}

impl Narrator {
    fn new() -> Self {
        Narrator {
            chapter: 0,
            step: 0,
            printed: 0,
        }
    }

    /// Start a chapter.
    pub fn chapter(&mut self, title: &str) {
        self.chapter += 1;
        self.step = 0;
        let heading = format!("Chapter {}: {title}", self.chapter);
        println!("\n{heading}\n{}", "=".repeat(heading.chars().count()));
    }

    /// One step of the story; `label` names it after the seed ("S203") or is empty.
    pub fn step(&mut self, label: &str, text: &str) {
        self.step += 1;
        if label.is_empty() {
            println!("\n  {}.{} {text}", self.chapter, self.step);
        } else {
            println!("\n  {}.{} [{label}] {text}", self.chapter, self.step);
        }
    }

    /// A remark that is not a step.
    pub fn note(&mut self, text: &str) {
        println!("      · {text}");
    }

    /// A table (for results such as a NAT matrix).
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) {
        let cols = header.len();
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&width)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("      | {} |", padded.join(" | "));
        };
        line(header.to_vec());
        println!(
            "      |{}|",
            width
                .iter()
                .map(|w| "-".repeat(w + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for row in rows {
            line(row.iter().take(cols).map(String::as_str).collect());
        }
    }

    /// Print the packets (and drops) the simulator recorded since the last call.
    pub fn packets(&mut self, sim: &Sim) {
        for entry in &sim.trace()[self.printed..] {
            let p = &entry.packet;
            match &entry.kind {
                TraceKind::Hop { .. } => println!(
                    "      {:>9}  {} → {}  {}",
                    entry.time.to_string(),
                    p.src,
                    p.dst,
                    entry.label
                ),
                TraceKind::Drop { reason, .. } => println!(
                    "      {:>9}  ✗ dropped {} → {} ({reason})  {}",
                    entry.time.to_string(),
                    p.src,
                    p.dst,
                    entry.label
                ),
            }
        }
        self.printed = sim.trace().len();
    }
}

fn out_dir() -> Result<PathBuf, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = match args.as_slice() {
        [] => std::env::temp_dir().join(format!("deputy-tour-{}", std::process::id())),
        [flag, dir] if flag == "--out" => PathBuf::from(dir),
        [flag] if flag == "-h" || flag == "--help" => {
            println!("usage: cargo run --example tour [-- --out DIR]");
            std::process::exit(0);
        }
        _ => return Err(format!("unexpected arguments {args:?} (try --help)")),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn run() -> Result<PathBuf, String> {
    let out = out_dir()?;
    println!("deputy tour — every scenario on the deterministic simulator (seed 2026)");
    let mut sim = Sim::new(2026);
    let mut tour = Narrator::new();

    channel::run(&mut sim, &mut tour)?;
    seed000::run(&mut sim, &mut tour)?;
    seed001::run(&mut sim, &mut tour)?;
    seed003::run(&mut sim, &mut tour)?;
    seed002::run(&mut sim, &mut tour)?;
    seed004::run(&mut sim, &mut tour)?;
    seed004_tls::run(&mut sim, &mut tour)?;

    let pcap = out.join("tour.pcap");
    let chart = out.join("tour.mmd");
    sim.write_pcap(&pcap).map_err(|e| e.to_string())?;
    std::fs::write(&chart, sim.mermaid()).map_err(|e| format!("{}: {e}", chart.display()))?;
    let hops = sim
        .trace()
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::Hop { .. }))
        .count();
    println!("\nThe tour is over: {hops} packets on the wire.");
    println!("  capture: {}   (wireshark or tshark -r)", pcap.display());
    println!(
        "  chart:   {}   (Mermaid sequence diagram)",
        chart.display()
    );
    Ok(out)
}

fn main() -> ExitCode {
    match run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tour failed: {e}");
            ExitCode::FAILURE
        }
    }
}
