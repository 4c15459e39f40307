#!/usr/bin/env bash
# Issue 8's offload measurement: the delegating terminal's instructions for one
# IKE_SA_INIT + IKE_AUTH + Child SA against a full local deputy endpoint (the plain
# Responder with its own credential) doing the same exchange with the same peer, counted by
# valgrind's callgrind (instruction counts are repeatable on a noisy shared machine; wall
# time is not). One line per suite, the terminal with its channel to the server already open
# (the steady state) and including the channel's own set-up; then the terminal's heap per
# delegated IKE SA. Then the TLS lines (seed 004 over TLS 1.3): the TLS Terminal's
# instructions for one delegated handshake against a full rustls client's with the same
# peer; its record layer against rustls's on 1,400-byte records (callgrind, then wall
# clock); its heap per connection. What is collected and how: examples/offload_measure.rs
# and examples/offload_measure/tls.rs.
#
#   scripts/offload.sh            # everything (a few minutes: each run is under callgrind)
#   KEEP=dir scripts/offload.sh   # keep the callgrind.out files in dir
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  apt-get install -y valgrind
fi

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}

out=${KEEP:-$(mktemp -d)}
mkdir -p "$out"
[ -n "${KEEP:-}" ] || trap 'rm -rf "$out"' EXIT

# The same measurement with the crate's AEADs on aws-lc-rs (feature `aws-lc`), for the
# record-layer lines; built first and kept aside, since the default build replaces it.
cargo build --release --quiet --features aws-lc --example offload_measure
cp "$CARGO_TARGET_DIR/release/examples/offload_measure" "$out/offload_measure.aws-lc"
cargo build --release --quiet --example offload_measure
bin=$CARGO_TARGET_DIR/release/examples/offload_measure

# Instructions executed inside deputy_offload_measured (and what it calls) in one run of
# "$bin" ARGS...; the first argument names the run's files.
instr() {
  local label=$1 file="$out/callgrind.out.$1"
  shift
  valgrind --tool=callgrind --callgrind-out-file="$file" \
    --collect-atstart=no --toggle-collect=deputy_offload_measured \
    "$bin" "$@" >"$out/$label.log" 2>&1 ||
    { cat "$out/$label.log" >&2; exit 1; }
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
  full=$(instr "$suite.endpoint" "$suite" endpoint)
  warm=$(instr "$suite.terminal" "$suite" terminal)
  cold=$(instr "$suite.terminal-cold" "$suite" terminal-cold)
  echo "$name: terminal $(fmt "$warm") instr, full endpoint $(fmt "$full") instr," \
    "ratio $(ratio "$warm" "$full") ($target; channel open);" \
    "with the channel's set-up $(fmt "$cold") instr, ratio $(ratio "$cold" "$full")" \
    "(the set-up alone $(fmt $((cold - warm))))"
done

# Seed 004 over TLS 1.3: one delegated handshake (the peer's ECDSA P-256 chain,
# TLS_AES_128_GCM_SHA256, rustls's default key share: P-384) at the TLS Terminal against a
# full rustls client's with the same peer (the same defaults; then offering X25519 only).
full=$(instr tls.full tls full)
x25519=$(instr tls.full-x25519 tls full-x25519)
warm=$(instr tls.terminal tls terminal)
cold=$(instr tls.terminal-cold tls terminal-cold)
echo "tls ecdsa-p256-chain handshake: terminal $(fmt "$warm") instr," \
  "full rustls client $(fmt "$full") instr (p384 share, rustls's default)," \
  "ratio $(ratio "$warm" "$full"); against $(fmt "$x25519") instr with an x25519 share," \
  "ratio $(ratio "$warm" "$x25519") (target ≤ 0.10; channel open);" \
  "with the channel's set-up $(fmt "$cold") instr, ratio $(ratio "$cold" "$full")" \
  "/ $(ratio "$cold" "$x25519") (the set-up alone $(fmt $((cold - warm))))"

# The record layers: 1,000 records of 1,400 bytes sealed and opened (the counts are per
# record); throughput is the inverse of instructions per record.
records=$(awk '/^pub const RECORDS/ { gsub(/[^0-9]/, "", $NF); print $NF }' \
  examples/offload_measure/tls.rs)
# One line per suite for the build in $bin; $1 names it ("" or ", feature aws-lc").
record_lines() {
  local build=$1 suite name ours theirs bare
  for suite in aes128gcm chacha20; do
    case $suite in
      aes128gcm) name="aes128-gcm" ;;
      chacha20) name="chacha20-poly1305" ;;
    esac
    ours=$(instr "tls-record.$suite.terminal$build" tls-record "$suite" terminal)
    theirs=$(instr "tls-record.$suite.rustls$build" tls-record "$suite" rustls)
    bare=$(instr "tls-record.$suite.rustls-bare$build" tls-record "$suite" rustls-bare)
    echo "tls records $name, 1,400 B$build: terminal $(fmt $((ours / records)))" \
      "instr/record, rustls $(fmt $((theirs / records))) instr/record, terminal throughput" \
      "$(ratio "$theirs" "$ours")× rustls's (target ≥ 0.9); rustls's record protection" \
      "alone $(fmt $((bare / records))) instr/record ($(ratio "$bare" "$ours")×)"
  done
}
record_lines ""

# The terminal's record layer with the AEADs on aws-lc-rs (rustls's side is the same).
default_bin=$bin
bin="$out/offload_measure.aws-lc"
record_lines ", feature aws-lc"
bin=$default_bin

# The same natively, wall clock: interleaved rounds on a shared machine; RustCrypto's
# AEADs, then aws-lc's.
"$bin" tls-record-wall
echo "feature aws-lc:"
"$out/offload_measure.aws-lc" tls-record-wall

"$bin" heap
