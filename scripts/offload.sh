#!/usr/bin/env bash
# Issue 8's offload measurement: the delegating terminal's instructions for one
# IKE_SA_INIT + IKE_AUTH + Child SA against a full local deputy endpoint (the plain
# Responder with its own credential) doing the same exchange with the same peer, counted by
# valgrind's callgrind (instruction counts are repeatable on a noisy shared machine; wall
# time is not). One line per suite, the terminal with its channel to the server already open
# (the steady state) and including the channel's own set-up; then the terminal's heap per
# delegated IKE SA. What is collected and how: examples/offload_measure.rs.
#
#   scripts/offload.sh            # everything (a few minutes: each run is under callgrind)
#   KEEP=dir scripts/offload.sh   # keep the callgrind.out files in dir
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  apt-get install -y valgrind
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
cargo build --release --quiet --example offload_measure
bin=$CARGO_TARGET_DIR/release/examples/offload_measure

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT

# Instructions executed inside deputy_offload_measured (and what it calls) in one run.
instr() {
  local suite=$1 side=$2 file="$out/callgrind.out.$1.$2"
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    --collect-atstart=no --toggle-collect=deputy_offload_measured \
    "$bin" "$suite" "$side" >"$out/$suite.$side.log" 2>&1 ||
    { cat "$out/$suite.$side.log" >&2; exit 1; }
  # The totals line (callgrind writes "summary:" and/or "totals:").
  awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

fmt() { echo "$1" | sed ':a; s/\B[0-9]\{3\}\>/,&/; ta'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

for suite in x25519-psk x25519-cert modp2048-cert; do
  case $suite in
    x25519-psk) name="x25519+psk"; target="no target" ;;
    x25519-cert) name="x25519+ecdsa-p256-cert"; target="target ≤ 0.10" ;;
    modp2048-cert) name="modp2048+ecdsa-p256-cert"; target="target ≤ 0.03" ;;
  esac
  full=$(instr "$suite" endpoint)
  warm=$(instr "$suite" terminal)
  cold=$(instr "$suite" terminal-cold)
  echo "$name: terminal $(fmt "$warm") instr, full endpoint $(fmt "$full") instr," \
    "ratio $(ratio "$warm" "$full") ($target; channel open);" \
    "with the channel's set-up $(fmt "$cold") instr, ratio $(ratio "$cold" "$full")" \
    "(the set-up alone $(fmt $((cold - warm))))"
done

"$bin" heap
