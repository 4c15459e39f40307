#!/usr/bin/env bash
# deputy's IKEv2 responder against strongSwan 5.9's charon: CPU per IKE SA + Child SA.
#
# charon runs as responder in a network namespace, started exactly as scripts/interop.sh
# starts it (scripts/lib/charon.sh, shared), with less logging. deputy's initiator (the
# interop test bench_sequential_ike_sas) sets up and deletes N IKE SAs with it, one after
# another; charon's CPU (user + system, all its threads, from /proc/PID/stat) over that run
# is compared with the CPU deputy's Responder spends on the same N set-ups and deletions in
# process (benches/figures.rs --ike-responder-seconds: only the responder's calls and its
# data plane's install and remove are timed). Prints, per suite (AES-128-CBC/HMAC-SHA-256
# IKE and ESP, PSK, with x25519 and with MODP-2048):
#
#   ike responder vs charon <group>: <deputy / charon> (target)    [detail]
#
# Needs root (namespaces, UDP 500/4500). Not part of .ci/run. Environment:
#   BENCH_IKE_N   IKE SAs per suite (default 200)
set -euo pipefail
cd "$(dirname "$0")/.."

# Names of our own, so that a concurrent scripts/interop.sh keeps its namespaces.
NS_SS=deputy-bench-ss
NS_DP=deputy-bench-dp
N=${BENCH_IKE_N:-200}

log() { printf '[bench-strongswan] %s\n' "$*" >&2; }
die() { printf '[bench-strongswan] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, UDP 500/4500)"

# shellcheck source=scripts/lib/charon.sh
. scripts/lib/charon.sh
charon_packages >&2
charon_test_binary >&2
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
figures=$(cargo bench --no-run --bench figures 2>&1 | sed -n 's/.*Executable benches\/figures\.rs (\(.*\))$/\1/p' | tail -1)
[ -x "$figures" ] || die "cannot find the figures bench binary"

work=$(mktemp -d /tmp/deputy-bench-strongswan.XXXXXX)
cleanup() {
  local rc=$?
  stop_pid "$charon_pid" charon
  remove_ns "$NS_SS"
  remove_ns "$NS_DP"
  if [ "$rc" = 0 ]; then rm -rf "$work"; else log "logs kept in $work"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

charon_pki >&2
charon_network >&2
CHARON_LOG_IKE=0 CHARON_LOG_KNL=1 charon_start >&2

ticks=$(getconf CLK_TCK)
cpu() { # user + system time of charon (all threads), in clock ticks
  awk '{ print $14 + $15 }' "/proc/$charon_pid/stat"
}

for suite in x25519:aes128-sha256-x25519:0.10 modp2048:aes128-sha256-modp2048:0.25; do
  IFS=: read -r group profile target <<<"$suite"
  # One set-up outside the count: charon's first use of a suite (plugin state, caches).
  ip netns exec "$NS_DP" env DEPUTY_INTEROP_DIR="$work" DEPUTY_BENCH_PROFILE="$profile" \
    DEPUTY_BENCH_N=1 "$bin" --ignored --exact bench_sequential_ike_sas --test-threads=1 \
    >"$work/warm-$group.log" 2>&1 || { cat "$work/warm-$group.log" >&2; die "warm-up failed"; }
  before=$(cpu)
  start=$(date +%s.%N)
  ip netns exec "$NS_DP" env DEPUTY_INTEROP_DIR="$work" DEPUTY_BENCH_PROFILE="$profile" \
    DEPUTY_BENCH_N="$N" "$bin" --ignored --exact bench_sequential_ike_sas --test-threads=1 \
    >"$work/run-$group.log" 2>&1 || { cat "$work/run-$group.log" >&2; die "run failed"; }
  # Let charon finish with the last deletion before its time is read.
  sleep 0.5
  after=$(cpu)
  elapsed=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  charon_s=$(awk -v t=$((after - before)) -v hz="$ticks" 'BEGIN { printf "%.4f", t / hz }')
  deputy_s=$("$figures" --ike-responder-seconds "$group" "$N")
  awk -v d="$deputy_s" -v c="$charon_s" -v n="$N" -v g="$group" -v t="$target" -v e="$elapsed" 'BEGIN {
    printf "ike responder vs charon %s: %.2f (target <= %s)    [%d IKE SA + Child SA set up and deleted: deputy Responder %.1f ms CPU in process, charon %.1f ms CPU (%.1f ms per SA; run %s s)]\n",
      g, d / c, t, n, d * 1000, c * 1000, c * 1000 / n, e
  }'
done
