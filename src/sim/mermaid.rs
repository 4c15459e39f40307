//! Mermaid `sequenceDiagram` rendering of the trace.

use std::fmt::Write as _;
use std::prelude::rust_2024::*;

use super::record::{DropReason, TraceEntry, TraceKind};

/// Make text safe inside a Mermaid message or note.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ';' => ',',
            '#' => '№',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

/// Render a chart: one participant per node (`names[i]` is node `i`'s display name), an
/// arrow per hop, a crossed arrow per lost packet, a note per other drop.
pub(crate) fn render(names: &[String], trace: &[TraceEntry], truncated: bool) -> String {
    // `writeln!` into a `String` cannot fail (its `fmt::Write` never errors), hence the
    // `let _ =` below.
    let mut out = String::from("sequenceDiagram\n");
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(out, "    participant n{i} as {}", clean(name));
    }
    for e in trace {
        let label = clean(&e.label);
        match e.kind {
            TraceKind::Hop { from, to, .. } => {
                let _ = writeln!(out, "    n{}->>n{}: {label}", from.0, to.0);
            }
            TraceKind::Drop {
                at,
                toward: Some(to),
                reason: DropReason::Loss,
                ..
            } => {
                let _ = writeln!(out, "    n{}-xn{}: {label} (lost)", at.0, to.0);
            }
            TraceKind::Drop {
                at,
                toward: Some(to),
                reason: DropReason::Injected,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "    n{}-xn{}: {label} (dropped by a fault)",
                    at.0, to.0
                );
            }
            TraceKind::Drop { at, reason, .. } => {
                let _ = writeln!(out, "    Note over n{}: ✗ {label}: {reason}", at.0);
            }
        }
    }
    if truncated && !names.is_empty() {
        out.push_str("    Note over n0: trace truncated at its bound\n");
    }
    out
}
