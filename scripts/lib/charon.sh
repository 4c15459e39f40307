# The strongSwan set-up shared by scripts/interop.sh and scripts/bench-strongswan.sh:
# packages, the interop test binary, a PKI, two network namespaces joined by a veth pair,
# and charon (kernel-libipsec) in one of them. Sourced, not run; the caller defines
# log and die, sets NS_SS and NS_DP (the namespaces' names) and work (a directory), and
# stops what it started with stop_pid and remove_ns. CHARON_LOG_IKE and CHARON_LOG_KNL set
# charon's log levels for those groups (default 2; the CPU benchmark logs less).
#
#   netns $NS_DP                          netns $NS_SS
#   interop tests, 10.77.0.2/24 ─ veth ── charon, 10.77.0.1/24; 10.78.0.1/32 on lo

CHARON=/usr/lib/ipsec/charon
charon_pid=""

charon_packages() { # install what is missing, check what is needed
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
  [ -x "$CHARON" ] || die "no $CHARON after installing strongswan-charon"
  [ -e /usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so ] || die "no kernel-libipsec plugin"
  command -v swanctl >/dev/null || die "no swanctl"
  command -v pki >/dev/null || die "no pki (strongswan-pki)"
  command -v dumpcap >/dev/null || die "no dumpcap (tshark)"
  log "$("$CHARON" --version 2>/dev/null | head -1 || true), $(tshark --version | head -1)"
}

charon_test_binary() { # build the interop tests; sets bin
  log "building the interop tests"
  build_log=$(cargo test --test interop_strongswan --no-run 2>&1) || { printf '%s\n' "$build_log"; die "build failed"; }
  bin=$(printf '%s\n' "$build_log" | sed -n 's/.*Executable tests\/interop_strongswan\.rs (\(.*\))$/\1/p' | tail -1)
  [ -n "$bin" ] && [ -x "$bin" ] || die "cannot find the interop test binary in: $build_log"
  bin=$(realpath "$bin")
}

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

charon_pki() { # make the certificate cases' PKI in $work/pki
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
}

charon_network() { # the two namespaces and the veth pair between them
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
}

charon_start() { # write $work/strongswan.conf and start charon in $NS_SS; sets charon_pid
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
    # The seed 001 cases' traffic selectors are the IKE addresses themselves (the inline
    # proxy negotiates for 10.77.0.2 <-> 10.77.0.1). kernel-libipsec refuses the route
    # through its TUN device for such a remote TS unless allowed; the route would then
    # also catch charon's own IKE and ESP-in-UDP packets, so charon's sockets mark theirs
    # and the routing rule to table 220 skips marked packets.
    kernel-libipsec {
      allow_peer_ts = yes
    }
    kernel-netlink {
      fwmark = !0x42
    }
    socket-default {
      fwmark = 0x42
    }
  }
  filelog {
    interop {
      path = $work/charon.log
      time_format = %T
      default = 1
      ike = ${CHARON_LOG_IKE:-2}
      knl = ${CHARON_LOG_KNL:-2}
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
}
