#!/usr/bin/env bash
# The performance issue's figures, one line each: "name: value (target)    [detail]".
#
#   scripts/bench.sh                       # everything (about 5 minutes; more with strongSwan)
#   BENCH_NO_STRONGSWAN=1 scripts/bench.sh # leave out the charon comparison
#   BENCH_ONLY=esp scripts/bench.sh        # only the figures whose name starts with "esp"
#
# What runs: benches/figures.rs (every ratio against a baseline measured in the same
# process; instruction counts from callgrind where valgrind is installed, wall-clock ratios
# measured interleaved beside them), benches/esp_scaling.rs (ESP cost as installed SAs
# grow) and, as root, scripts/bench-strongswan.sh (deputy's IKEv2 responder against
# strongSwan's charon). docs/performance.md says how to read each line.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
command -v valgrind >/dev/null ||
  echo "bench: valgrind not found: wall-clock ratios only (noisy on a shared machine)" >&2

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "machine: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(rustc --version)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"

only=()
[ -n "${BENCH_ONLY:-}" ] && only=(--only "$BENCH_ONLY")
cargo bench --quiet --bench figures -- "${only[@]}" 2>"$log" | grep -E '^[a-z].*: .*\(' ||
  { cat "$log" >&2; echo "bench: benches/figures.rs failed" >&2; exit 1; }

if [ -z "${BENCH_ONLY:-}" ] || [[ "esp cost as SAs grow" == "$BENCH_ONLY"* ]]; then
  # The callgrind lines of esp_scaling: "<n> SA pairs installed   <ir> Ir = <x>x 1 SA pair".
  scaling=$(cargo bench --quiet --bench esp_scaling 2>"$log") ||
    { cat "$log" >&2; echo "bench: benches/esp_scaling.rs failed" >&2; exit 1; }
  ir() { printf '%s\n' "$scaling" | sed -n "/^callgrind/,\$ s/^$1 SA pairs installed *\([0-9]*\) Ir.*/\1/p"; }
  one=$(ir 1) many=$(ir 100000)
  if [ -n "$one" ] && [ -n "$many" ]; then
    ratio=$(awk -v a="$many" -v b="$one" 'BEGIN { printf "%.2f", a / b }')
    echo "esp cost as SAs grow, 100,000 vs 1 SA pairs: $ratio (target <= 1.10)    [instructions per 64 B pair: $one with 1, $many with 100,000]"
  else
    walls=$(printf '%s\n' "$scaling" | sed -n 's/^\([0-9]*\) SA pairs installed .*= *\([0-9.]*\)x.*/\1: \2x/p' | paste -sd, -)
    echo "esp cost as SAs grow: wall only (valgrind missing)    [$walls]"
  fi
fi

if [ -z "${BENCH_ONLY:-}" ] || [[ "ike responder vs charon" == "$BENCH_ONLY"* ]]; then
  if [ "${BENCH_NO_STRONGSWAN:-0}" = 1 ]; then
    echo "ike responder vs charon: not run (BENCH_NO_STRONGSWAN=1) (target <= 0.10 x25519, <= 0.25 modp2048)"
  elif [ "$(id -u)" != 0 ]; then
    echo "ike responder vs charon: not run (needs root: scripts/bench-strongswan.sh) (target <= 0.10 x25519, <= 0.25 modp2048)"
  else
    scripts/bench-strongswan.sh 2>"$log" | grep -E '^ike responder vs charon' ||
      { tail -30 "$log" >&2; echo "bench: scripts/bench-strongswan.sh failed" >&2; exit 1; }
  fi
fi
