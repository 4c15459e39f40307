#!/usr/bin/env bash
# deputy ↔ strongSwan 5.9 interoperability run (issue 5).
#
# Installs strongSwan (charon, swanctl, the extra plugins) and tshark from Debian if they
# are missing; starts charon with the kernel-libipsec plugin (userspace ESP over a TUN
# device: the kernel needs no ESP/XFRM, and ESP is always UDP-encapsulated) in its own
# network namespace; runs deputy's interop tests (tests/interop_strongswan.rs, #[ignore]d
# in a plain `cargo test`) one by one against it while capturing UDP 500/4500; then has
# tshark dissect the capture with the negotiated keys. Stops everything it started, by
# PID, and removes its namespaces. Exits non-zero on any failure.
#
#   netns deputy-dp                       netns deputy-ss
#   interop tests, 10.77.0.2/24 ─ veth ── charon, 10.77.0.1/24; 10.78.0.1/32 on lo
#
# Needs root (namespaces, ports 500/4500). Environment:
#   DEPUTY_INTEROP_KEEP=1   keep the work directory (logs, capture, keys) even on success
#   DEPUTY_INTEROP_CASES    run only these test names (space-separated) before the tshark
#                           check; the summary then counts only those
set -euo pipefail
cd "$(dirname "$0")/.."

NS_SS=deputy-ss
NS_DP=deputy-dp
CASES=(
  deputy_initiator_aes128_sha256_modp2048
  deputy_initiator_aes128_sha256_x25519
  deputy_initiator_chacha20poly1305_x25519
  charon_initiator_aes128_sha256_modp2048
  charon_initiator_aes128_sha256_x25519
  charon_initiator_chacha20poly1305_x25519
  deputy_initiator_aes256gcm16_x25519
  charon_initiator_aes256gcm16_x25519
  deputy_initiator_strongswan_defaults
  charon_initiator_strongswan_defaults
  deputy_initiator_certificates
  charon_initiator_certificates
  charon_initiator_delegating_terminal_psk
  delegating_terminal_initiator_psk
  charon_initiator_delegating_terminal_certificates
  delegating_terminal_initiator_certificates
  charon_rekeys_child_of_delegating_terminal
  charon_rekeys_ike_sa_of_delegating_terminal
  delegating_terminal_rekeys_ike_sa_with_charon
  charon_initiates_to_inline_terminal
  inline_terminal_initiates_to_charon
  charon_rekeys_child_of_inline_terminal
  charon_as_peer_subscriber_initiates
  charon_initiates_to_subscriber
)
TSHARK_CHECK=tshark_dissects_every_packet_of_the_run
# A developer may run a subset: DEPUTY_INTEROP_CASES="deputy_initiator_aes128_sha256_x25519 …"
if [ -n "${DEPUTY_INTEROP_CASES:-}" ]; then
  read -r -a CASES <<<"$DEPUTY_INTEROP_CASES"
fi

log() { printf '[interop] %s\n' "$*"; }
die() { printf '[interop] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, UDP 500/4500)"

# shellcheck source=scripts/lib/charon.sh
. scripts/lib/charon.sh
charon_packages
charon_test_binary

# ------------------------------------------------------------------ cleanup
work=$(mktemp -d /tmp/deputy-interop.XXXXXX)
capture_pid=""
ok=0

cleanup() {
  local rc=$?
  stop_pid "$capture_pid" dumpcap
  stop_pid "$charon_pid" charon
  remove_ns "$NS_SS"
  remove_ns "$NS_DP"
  if [ "$ok" = 1 ] && [ "${DEPUTY_INTEROP_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    log "logs, capture and keys kept in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

charon_pki
charon_network
charon_start

# ------------------------------------------------------------------ capture
ip netns exec "$NS_DP" dumpcap -q -i dp0 -f "udp port 500 or udp port 4500" \
  -w "$work/capture.pcapng" >"$work/dumpcap.log" 2>&1 &
capture_pid=$!
for _ in $(seq 100); do
  [ -s "$work/capture.pcapng" ] && break
  kill -0 "$capture_pid" 2>/dev/null || { cat "$work/dumpcap.log"; die "dumpcap exited"; }
  sleep 0.1
done
[ -s "$work/capture.pcapng" ] || die "dumpcap did not start"

# -------------------------------------------------------------------- cases
passed=0
total=0
failed=()
run_test() { # run_test NAME
  local name=$1 out
  total=$((total + 1))
  kill -0 "$charon_pid" 2>/dev/null || die "charon ($charon_pid) is gone; see $work/charon.log"
  out="$work/$name.log"
  if ip netns exec "$NS_DP" env DEPUTY_INTEROP_DIR="$work" RUST_BACKTRACE=0 \
      timeout 120 "$bin" --ignored --exact "$name" --test-threads=1 --nocapture >"$out" 2>&1 \
    && grep -q "^test result: ok. 1 passed" "$out"; then
    passed=$((passed + 1))
    log "PASS $name"
  else
    failed+=("$name")
    log "FAIL $name"
    grep -v "^plugin '" "$out" | tail -40 | sed 's/^/    /'
  fi
}

for c in "${CASES[@]}"; do
  run_test "$c"
done

# Let dumpcap drain the kernel's capture buffer before it stops.
sleep 1
stop_pid "$capture_pid" dumpcap
capture_pid=""
run_test "$TSHARK_CHECK"
grep -o 'tshark: .*' "$work/$TSHARK_CHECK.log" | sed 's/^/    /' || true

echo "strongswan interop: $passed/$total passed"
if [ "$passed" -ne "$total" ]; then
  log "failed: ${failed[*]}"
  tail -30 "$work/charon.log" | sed 's/^/    charon: /'
  exit 1
fi
ok=1
