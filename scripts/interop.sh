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
)
TSHARK_CHECK=tshark_dissects_every_packet_of_the_run
# A developer may run a subset: DEPUTY_INTEROP_CASES="deputy_initiator_aes128_sha256_x25519 …"
if [ -n "${DEPUTY_INTEROP_CASES:-}" ]; then
  read -r -a CASES <<<"$DEPUTY_INTEROP_CASES"
fi

log() { printf '[interop] %s\n' "$*"; }
die() { printf '[interop] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, UDP 500/4500)"

# ----------------------------------------------------------------- packages
need=()
for pkg in strongswan-charon strongswan-swanctl strongswan-pki libcharon-extra-plugins tshark; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tshark asks whether non-root users may capture; the default (no) is fine.
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
CHARON=/usr/lib/ipsec/charon
[ -x "$CHARON" ] || die "no $CHARON after installing strongswan-charon"
[ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || die "no kernel-libipsec plugin"
command -v swanctl >/dev/null || die "no swanctl"
command -v pki >/dev/null || die "no pki (strongswan-pki)"
command -v dumpcap >/dev/null || die "no dumpcap (tshark)"
log "$("$CHARON" --version 2>/dev/null | head -1 || true), $(tshark --version | head -1)"

# ------------------------------------------------------------ the test binary
log "building the interop tests"
build_log=$(cargo test --test interop_strongswan --no-run 2>&1) || { printf '%s\n' "$build_log"; die "build failed"; }
bin=$(printf '%s\n' "$build_log" | sed -n 's/.*Executable tests\/interop_strongswan\.rs (\(.*\))$/\1/p' | tail -1)
[ -n "$bin" ] && [ -x "$bin" ] || die "cannot find the interop test binary in: $build_log"
bin=$(realpath "$bin")

# ------------------------------------------------------------------ cleanup
work=$(mktemp -d /tmp/deputy-interop.XXXXXX)
charon_pid=""
capture_pid=""
ok=0

stop_pid() { # stop_pid PID NAME: TERM, wait up to 5 s, then KILL
  local pid=$1 name=$2
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "$name ($pid) did not stop; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}

remove_ns() { # remove_ns NAME: stop what still runs in it (our processes), delete it
  local ns=$1 pid
  ip netns list | grep -qw "$ns" || return 0
  for pid in $(ip netns pids "$ns" 2>/dev/null); do stop_pid "$pid" "process in $ns"; done
  ip netns del "$ns" 2>/dev/null || true
}

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

# -------------------------------------------------------------- certificates
# The certificate cases' PKI, made by strongSwan's own `pki` (DER, ECDSA P-256, SHA-256,
# valid for 30 days from now): a CA, charon's certificate for gateway.example and
# deputy's for appliance.example (subjectAltName dNSName each). The tests read
# $work/pki/{ca.der,deputy.key,deputy.der}; charon loads ca.der, charon.key, charon.der.
mkdir -p "$work/pki"
(
  cd "$work/pki"
  pki --gen --type ecdsa --size 256 --outform der >ca.key
  pki --self --ca --in ca.key --type ecdsa --dn "CN=deputy interop CA, O=deputy" \
    --lifetime 30 --outform der >ca.der
  for who in charon:gateway.example deputy:appliance.example; do
    name=${who%%:*} fqdn=${who#*:}
    pki --gen --type ecdsa --size 256 --outform der >"$name.key"
    pki --pub --in "$name.key" --type ecdsa --outform der |
      pki --issue --type pub --cacert ca.der --cakey ca.key --dn "CN=$fqdn, O=deputy" \
        --san "$fqdn" --lifetime 30 --outform der >"$name.der"
  done
) || die "pki could not make the certificates"
log "PKI made by $(pki --version 2>/dev/null | head -1 || echo pki) in $work/pki"

# ------------------------------------------------------------------ network
# Namespaces left over from an interrupted run are ours: clear them first.
remove_ns "$NS_SS"
remove_ns "$NS_DP"
ip netns add "$NS_SS"
ip netns add "$NS_DP"
ip link add ss0 netns "$NS_SS" type veth peer name dp0 netns "$NS_DP"
ip -n "$NS_SS" addr add 10.77.0.1/24 dev ss0
ip -n "$NS_SS" addr add 10.78.0.1/32 dev lo
ip -n "$NS_DP" addr add 10.77.0.2/24 dev dp0
for ns in "$NS_SS" "$NS_DP"; do
  ip -n "$ns" link set lo up
done
ip -n "$NS_SS" link set ss0 up
ip -n "$NS_DP" link set dp0 up
# Replies from 10.78.0.1 leave through libipsec's TUN device (routes in table 220).
ip netns exec "$NS_SS" sysctl -qw net.ipv4.conf.all.rp_filter=0

# ------------------------------------------------------------------- charon
cat >"$work/strongswan.conf" <<EOF
charon {
  # Only what the test needs; kernel-libipsec does ESP, kernel-netlink the routes.
  load = random nonce openssl hmac sha1 sha2 aes gcm gmp kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici
  install_virtual_ip = no
  # Demand a COOKIE as soon as one IKE SA is half-open (the tests leave one).
  cookie_threshold = 1
  plugins {
    vici {
      socket = unix://$work/charon.vici
    }
  }
  filelog {
    interop {
      path = $work/charon.log
      time_format = %T
      default = 1
      ike = 2
      knl = 2
      flush_line = yes
    }
  }
  syslog {
    daemon {
      default = -1
    }
  }
}
swanctl {
  load = pem pkcs1 x509 pubkey openssl random
}
EOF
ip netns exec "$NS_SS" env STRONGSWAN_CONF="$work/strongswan.conf" "$CHARON" >"$work/charon.out" 2>&1 &
charon_pid=$!
for _ in $(seq 100); do
  [ -S "$work/charon.vici" ] && break
  kill -0 "$charon_pid" 2>/dev/null || { cat "$work/charon.out"; die "charon exited"; }
  sleep 0.1
done
[ -S "$work/charon.vici" ] || die "charon did not open its vici socket"
grep -q "created TUN device" "$work/charon.log" || die "kernel-libipsec did not create its TUN device"
log "charon $charon_pid up in $NS_SS (kernel-libipsec, vici $work/charon.vici)"

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
