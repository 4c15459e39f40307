#!/usr/bin/env bash
# deputy's TLS 1.3 split (seed 004 over TLS) against unmodified OpenSSL on real sockets.
#
# examples/tls_delegate.rs runs the substitution server and the terminal as separate
# processes (their channel over loopback TCP); OpenSSL's s_server and s_client are the
# terminal's TLS peers. For each TLS 1.3 suite, two cases:
#
#   client: openssl s_server  <── TLS ──  tls_delegate terminal-client  ── channel ──  tls_delegate server
#   server: openssl s_client  ── TLS ──>  tls_delegate terminal-server  ── channel ──  (the same server)
#
# Each case: data both ways; a KeyUpdate from OpenSSL without, then with update_requested
# (`k`, `K` on its stdin), data after each; one from the terminal without, then with
# request_peer (`!k`, `!K`), data after each; close_notify from the terminal. Checked:
# both sides printed every line; the server's key log has OpenSSL's application traffic
# secret (the delegated handshake derived the same keys); tshark, given only OpenSSL's key
# log, decrypts the capture of the case's TCP connection and shows every line and the six
# KeyUpdates. The server requires client certificates: s_client presents one. With
# AES-256 each side's peer forces a HelloRetryRequest; with ChaCha20 s_server asks the
# terminal for its certificate. Then, both roles: a second connection resumes the first
# one's session (the tickets live at the substitution server); and two refusals, whose
# alerts OpenSSL must read: s_server's certificate from an unknown CA, and s_client
# without the certificate the terminal requires.
#
# Needs root for the capture on lo (CI runs as root). Installs openssl and tshark from
# Debian if missing. Stops only the processes it started, by PID. Exits non-zero on any
# failure, after printing the failing case's logs.
#
#   DEPUTY_INTEROP_KEEP=1      keep the work directory (logs, captures, key logs)
#   DEPUTY_INTEROP_TLS_CASES   run only these cases (space-separated names, as printed)
set -euo pipefail
cd "$(dirname "$0")/.."

SUITES=(TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384 TLS_CHACHA20_POLY1305_SHA256)
# One wait for a line in a log, at most (seconds); one process's whole life, at most.
WAIT=20
LIFE=90

log() { printf '[interop-tls] %s\n' "$*"; }
die() { printf '[interop-tls] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools and build
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v tshark >/dev/null || need+=(tshark)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tshark asks whether non-root users may capture; the default (no) is fine.
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
log "$(openssl version), $(tshark --version 2>/dev/null | head -1)"

log "building examples/tls_delegate.rs"
cargo build --quiet --all-features --example tls_delegate
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/tls_delegate"
[ -x "$bin" ] || die "no $bin after the build"

# ---------------------------------------------------------------- cleanup
work=$(mktemp -d /tmp/deputy-interop-tls.XXXXXX)
pids=()
ok=0

stop_pid() { # stop_pid PID: TERM, wait up to 3 s, then KILL (only our own processes)
  local pid=$1
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$? pid
  for pid in "${pids[@]}"; do stop_pid "$pid"; done
  if [ "$ok" = 1 ] && [ "${DEPUTY_INTEROP_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
  else
    log "logs, captures and key logs kept in $work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- helpers
wait_for() { # wait_for FILE PATTERN [COUNT]: until FILE has COUNT lines matching (ERE)
  local file=$1 pattern=$2 count=${3:-1} n
  for _ in $(seq $((WAIT * 10))); do
    n=$(grep -cE -- "$pattern" "$file" 2>/dev/null || true)
    [ "${n:-0}" -ge "$count" ] && return 0
    sleep 0.1
  done
  echo "timed out after ${WAIT}s waiting for $count x /$pattern/ in $(basename "$file")"
  return 1
}

wait_exit() { # wait_exit PID: until it exits (within WAIT); its status
  local pid=$1
  for _ in $(seq $((WAIT * 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then
      wait "$pid"
      return
    fi
    sleep 0.1
  done
  echo "process $pid still running after ${WAIT}s"
  return 124
}

# ---------------------------------------------------------------- PKI (ECDSA P-256)
pki=$work/pki
srv=$work/server
mkdir -p "$pki" "$srv"
(
  cd "$pki"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=deputy interop CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  leaf() { # leaf FILE NAME EKU
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
      -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=$3" "subjectAltName=DNS:$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
      -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  leaf peer peer.example serverAuth         # s_server's certificate
  leaf terminal terminal.example serverAuth # the terminal's, held by the server
  leaf client client.example clientAuth     # s_client's
  leaf terminal-client terminal.example clientAuth # the terminal's, when s_server asks
  # A CA nobody trusts, and a certificate for peer.example under it.
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout rogue-ca.key -out rogue-ca.pem -days 2 -subj "/CN=rogue CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout rogue.key -out rogue.csr -subj "/CN=peer.example" 2>/dev/null
  openssl x509 -req -in rogue.csr -CA rogue-ca.pem -CAkey rogue-ca.key -CAcreateserial \
    -days 2 -extfile peer.ext -out rogue.pem 2>/dev/null
) || die "openssl could not make the test PKI"
cp "$pki/ca.pem" "$pki/terminal.pem" "$pki/terminal.key" "$srv/"
cp "$pki/terminal-client.pem" "$srv/client.pem"
cp "$pki/terminal-client.key" "$srv/client.key"
printf '%s\n' peer.example client.example >"$srv/allow.txt"

# ---------------------------------------------------------------- the server
server_log=$work/server.log
server_keys=$work/server-keys.log
timeout 600 "$bin" server --listen 127.0.0.1:0 --dir "$srv" --client-auth \
  --keylog "$server_keys" >"$server_log" 2>&1 &
server_pid=$!
pids+=("$server_pid")
wait_for "$server_log" 'listening 127\.0\.0\.1:[0-9]+' || { cat "$server_log"; die "server did not start"; }
server_addr=$(sed -nE 's/.*listening (127\.0\.0\.1:[0-9]+);.*/\1/p' "$server_log" | head -1)
log "substitution server at $server_addr"

# ---------------------------------------------------------------- one case
passed=0
total=0
failed=()

# The processes of one case. Each start_* function runs in this shell and sets the
# globals below; every process reads its stdin from a fifo this shell holds open
# (read-write: no blocking, and no end of input) on tfd (the terminal's) and ofd
# (OpenSSL's), which the processes themselves do not inherit.
d="" tfd="" ofd="" term_pid="" ossl_pid="" port=""
term_log="" ossl_log="" keys=""

open_case() { # open_case DIR
  d=$1 term_pid="" ossl_pid="" port=""
  term_log=$d/terminal.log ossl_log=$d/openssl.log keys=$d/openssl-keys.log
  mkfifo "$d/terminal.in" "$d/openssl.in"
  exec {tfd}<>"$d/terminal.in" {ofd}<>"$d/openssl.in"
}

close_case() {
  exec {tfd}>&- {ofd}>&-
}

start_s_server() { # start_s_server ARGS…: s_server for one connection; sets port
  timeout "$LIFE" openssl s_server -accept 127.0.0.1:0 -naccept 1 -tls1_3 "$@" \
    <"$d/openssl.in" >"$ossl_log" 2>&1 {tfd}>&- {ofd}>&- &
  ossl_pid=$!
  pids+=("$ossl_pid")
  wait_for "$ossl_log" '^ACCEPT ' || return 1
  port=$(sed -nE 's/^ACCEPT .*:([0-9]+)$/\1/p' "$ossl_log" | head -1)
}

start_s_client() { # start_s_client ARGS…: s_client to the terminal at port
  timeout "$LIFE" openssl s_client -connect "127.0.0.1:$port" -servername terminal.example \
    -tls1_3 -CAfile "$pki/ca.pem" -verify_return_error "$@" \
    <"$d/openssl.in" >"$ossl_log" 2>&1 {tfd}>&- {ofd}>&- &
  ossl_pid=$!
  pids+=("$ossl_pid")
}

start_terminal_client() { # the terminal connects to s_server at port
  timeout "$LIFE" "$bin" terminal-client --server "$server_addr" \
    --connect "127.0.0.1:$port" --name peer.example --dir "$srv" --timeout "$LIFE" \
    <"$d/terminal.in" >"$term_log" 2>&1 {tfd}>&- {ofd}>&- &
  term_pid=$!
  pids+=("$term_pid")
}

start_terminal_server() { # the terminal listens; sets port
  timeout "$LIFE" "$bin" terminal-server --server "$server_addr" --listen 127.0.0.1:0 \
    --dir "$srv" --timeout "$LIFE" <"$d/terminal.in" >"$term_log" 2>&1 {tfd}>&- {ofd}>&- &
  term_pid=$!
  pids+=("$term_pid")
  wait_for "$term_log" 'listening 127\.0\.0\.1:[0-9]+$' || return 1
  port=$(sed -nE 's/.*listening 127\.0\.0\.1:([0-9]+)$/\1/p' "$term_log" | head -1)
}

start_capture() { # tshark on lo for the case's port, until stopped
  tshark -i lo -f "tcp port $port" -w "$d/capture.pcapng" -q >"$d/tshark.log" 2>&1 \
    {tfd}>&- {ofd}>&- &
  cap_pid=$!
  pids+=("$cap_pid")
  for _ in $(seq 100); do
    [ -s "$d/capture.pcapng" ] && return 0
    kill -0 "$cap_pid" 2>/dev/null || { echo "tshark exited"; return 1; }
    sleep 0.1
  done
  echo "tshark did not start"
  return 1
}

# run_case ROLE SUITE DIR: ROLE is `client` (the terminal connects to s_server) or
# `server` (s_client connects to the terminal). Returns non-zero at the first check that
# fails.
run_case() {
  local role=$1 suite=$2 cap_pid
  local tag=$role-$suite
  open_case "$3"
  # Variants: AES-256 makes each side's peer force a HelloRetryRequest (s_server takes
  # only X25519, while the ClientHello rustls builds at the server shares P-384 first;
  # s_client's first share is X448, which rustls does not run); with ChaCha20, s_server
  # asks the terminal for its client certificate.
  local extra=() hellos=1
  case $tag in
    client-TLS_AES_256_GCM_SHA384) extra=(-groups X25519) hellos=2 ;;
    server-TLS_AES_256_GCM_SHA384) extra=(-groups X448:P-256) hellos=2 ;;
    client-TLS_CHACHA20_POLY1305_SHA256)
      extra=(-Verify 1 -verify_return_error -CAfile "$pki/ca.pem") ;;
  esac
  if [ "$role" = client ]; then
    start_s_server "${extra[@]}" -ciphersuites "$suite" -cert "$pki/peer.pem" \
      -key "$pki/peer.key" -keylogfile "$keys" || return 1
    start_capture || return 1
    start_terminal_client
  else
    start_terminal_server || return 1
    start_capture || return 1
    start_s_client "${extra[@]}" -ciphersuites "$suite" -cert "$pki/client.pem" \
      -key "$pki/client.key" -keylogfile "$keys"
  fi
  local want_suite
  case $suite in
    TLS_AES_128_GCM_SHA256) want_suite=Aes128GcmSha256 ;;
    TLS_AES_256_GCM_SHA384) want_suite=Aes256GcmSha384 ;;
    TLS_CHACHA20_POLY1305_SHA256) want_suite=Chacha20Poly1305Sha256 ;;
  esac
  wait_for "$term_log" "event Established .*suite: $want_suite" || return 1

  # Lines: what each side sends, and the terminal's KeysUpdated to wait for before the
  # next step (send, receive) with how many of them there are by then.
  local t=() o=()
  step_data() { # step_data N: one line each way, each seen by the other side
    t+=("term $tag line $1")
    o+=("ossl $tag line $1")
    echo "${t[-1]}" >&"$tfd"
    echo "${o[-1]}" >&"$ofd"
    wait_for "$ossl_log" "^${t[-1]}\$" || return 1
    wait_for "$term_log" "received \"${o[-1]}\"" || return 1
  }
  keys_updated() { # keys_updated SEND RECEIVE COUNT
    wait_for "$term_log" "event KeysUpdated \{.*send: $1, receive: $2 \}" "$3"
  }
  step_data 1 || return 1
  # OpenSSL's KeyUpdate, update_not_requested: the terminal's next receive key.
  echo k >&"$ofd"
  keys_updated false true 1 || return 1
  step_data 2 || return 1
  # update_requested: the terminal also answers with its own KeyUpdate.
  echo K >&"$ofd"
  keys_updated true true 1 || return 1
  step_data 3 || return 1
  # The terminal's KeyUpdate (its next send key), update_not_requested.
  echo '!k' >&"$tfd"
  keys_updated true false 1 || return 1
  step_data 4 || return 1
  # update_requested: OpenSSL answers (with its next write), the terminal's receive key.
  echo '!K' >&"$tfd"
  keys_updated true false 2 || return 1
  step_data 5 || return 1
  keys_updated false true 2 || return 1
  # close_notify from the terminal; both exit.
  echo '!q' >&"$tfd"
  local rc=0
  wait_exit "$term_pid" || rc=$?
  [ "$rc" = 0 ] || { echo "terminal exited with $rc"; return 1; }
  wait_for "$term_log" 'event Closed ' || return 1
  wait_exit "$ossl_pid" || rc=$?
  [ "$rc" = 0 ] || { echo "openssl exited with $rc"; return 1; }
  close_case

  # Both sides saw every line (again, now that both are done).
  local line
  for line in "${t[@]}"; do
    grep -qxF -- "$line" "$ossl_log" || { echo "openssl did not print: $line"; return 1; }
  done
  for line in "${o[@]}"; do
    grep -qF -- "received \"$line\"" "$term_log" || { echo "terminal did not receive: $line"; return 1; }
  done
  # The substitution server derived the keys OpenSSL has: its key log holds OpenSSL's
  # client application traffic secret line.
  line=$(grep '^CLIENT_TRAFFIC_SECRET_0 ' "$keys" | head -1)
  [ -n "$line" ] || { echo "no CLIENT_TRAFFIC_SECRET_0 in OpenSSL's key log"; return 1; }
  wait_for "$server_keys" "^${line}\$" || { echo "the server's key log lacks OpenSSL's traffic secret"; return 1; }

  # tshark, with OpenSSL's key log only, reads every line through the key updates.
  sleep 0.5
  stop_pid "$cap_pid"
  tshark -r "$d/capture.pcapng" -d "tcp.port==$port,tls" -o "tls.keylog_file:$keys" \
    -q -z follow,tls,ascii,0 >"$d/follow.txt" 2>&1 || { echo "tshark could not read the capture"; return 1; }
  for line in "${t[@]}" "${o[@]}"; do
    grep -qF -- "$line" "$d/follow.txt" || { echo "tshark did not decrypt: $line"; return 1; }
  done
  # Handshake messages by type, decrypted: 2 ServerHello (two with a HelloRetryRequest),
  # 24 KeyUpdate (k, K and the terminal's answer, !k, !K and OpenSSL's answer: 6).
  tshark -r "$d/capture.pcapng" -d "tcp.port==$port,tls" -o "tls.keylog_file:$keys" \
    -T fields -e tls.handshake.type 2>/dev/null | tr ',' '\n' >"$d/handshake-types"
  local n_hello n_update
  n_hello=$(grep -cx 2 "$d/handshake-types" || true)
  n_update=$(grep -cx 24 "$d/handshake-types" || true)
  [ "$n_hello" = "$hellos" ] || { echo "tshark saw $n_hello ServerHello messages, expected $hellos"; return 1; }
  [ "$n_update" = 6 ] || { echo "tshark decrypted $n_update KeyUpdate messages, expected 6"; return 1; }
  if [ "$role-$suite" = client-TLS_CHACHA20_POLY1305_SHA256 ]; then
    grep -qx 'subject=CN = terminal.example' "$ossl_log" || { echo "s_server got no client certificate"; return 1; }
  fi
  echo "every line both ways and in tshark's decryption; $n_update KeyUpdates decrypted$([ "$hellos" = 2 ] && echo ', after a HelloRetryRequest')$([ "$role-$suite" = client-TLS_CHACHA20_POLY1305_SHA256 ] && echo ', terminal client certificate')"
}

# run_refusal ROLE DIR: the handshake must fail at the server's verdict, and OpenSSL must
# read the alert the terminal relays (protected under the handshake keys): `client`, the
# terminal refuses s_server's certificate from an unknown CA; `server`, s_client shows no
# certificate though the terminal requires one.
run_refusal() {
  local role=$1 rc=0
  open_case "$2"
  if [ "$role" = client ]; then
    start_s_server -cert "$pki/rogue.pem" -key "$pki/rogue.key" || return 1
    start_terminal_client
    wait_for "$term_log" 'event Failed .*reason: NotAuthenticated\(UnknownCa\)' || return 1
    wait_for "$ossl_log" 'alert unknown ca' || return 1
  else
    start_terminal_server || return 1
    start_s_client
    wait_for "$term_log" 'event Failed .*reason: NotAuthenticated\(MissingCertificate\)' || return 1
    wait_for "$ossl_log" 'alert certificate required' || return 1
  fi
  wait_exit "$term_pid" || rc=$?
  [ "$rc" = 4 ] || { echo "terminal exited with $rc, expected 4 (failed)"; return 1; }
  close_case
  grep -F 'alert' "$ossl_log" | head -1
}

# run_resumption ROLE DIR: a second connection resumes the first one's session with the
# ticket the first one got: `client`, the terminal connects to one s_server twice (the
# substitution server stored s_server's ticket); `server`, s_client saves its session
# and resumes it against the terminal (the substitution server issued the ticket). One
# line each way on each connection, then close_notify.
run_resumption() {
  local role=$1 i rc
  open_case "$2"
  if [ "$role" = client ]; then
    start_s_server -naccept 2 -cert "$pki/peer.pem" -key "$pki/peer.key" || return 1
  fi
  for i in 1 2; do
    term_log=$d/terminal-$i.log ossl_log=$d/openssl-$i.log
    if [ "$role" = client ]; then
      ossl_log=$d/openssl.log
      start_terminal_client
    else
      start_terminal_server || return 1
      if [ "$i" = 1 ]; then
        start_s_client -cert "$pki/client.pem" -key "$pki/client.key" -sess_out "$d/session.pem"
      else
        start_s_client -cert "$pki/client.pem" -key "$pki/client.key" -sess_in "$d/session.pem"
      fi
    fi
    wait_for "$term_log" 'event Established ' || return 1
    echo "term resumption $role line $i" >&"$tfd"
    echo "ossl resumption $role line $i" >&"$ofd"
    wait_for "$ossl_log" "^term resumption $role line $i\$" || return 1
    wait_for "$term_log" "received \"ossl resumption $role line $i\"" || return 1
    echo '!q' >&"$tfd"
    rc=0
    wait_exit "$term_pid" || rc=$?
    [ "$rc" = 0 ] || { echo "terminal exited with $rc"; return 1; }
    if [ "$role" = server ]; then
      rc=0
      wait_exit "$ossl_pid" || rc=$?
      [ "$rc" = 0 ] || { echo "s_client exited with $rc"; return 1; }
    fi
  done
  close_case
  if [ "$role" = client ]; then
    # s_server says so for the second connection only.
    [ "$(grep -c '^Reused session-id' "$d/openssl.log")" = 1 ] ||
      { echo "s_server did not resume exactly once"; return 1; }
  else
    grep -q '^New, TLSv1.3' "$d/openssl-1.log" || { echo "the first s_client was not new"; return 1; }
    grep -q '^Reused, TLSv1.3' "$d/openssl-2.log" || { echo "the second s_client did not resume"; return 1; }
  fi
  echo "the second connection resumed the first one's session"
}

CASES=()
for suite in "${SUITES[@]}"; do
  CASES+=("terminal-client-$suite" "terminal-server-$suite")
done
CASES+=(terminal-client-resumes terminal-server-resumes)
CASES+=(terminal-client-refuses-unknown-ca terminal-server-requires-client-certificate)
# A developer may run a subset: DEPUTY_INTEROP_TLS_CASES="terminal-client-TLS_AES_128_GCM_SHA256 …"
if [ -n "${DEPUTY_INTEROP_TLS_CASES:-}" ]; then
  read -r -a CASES <<<"$DEPUTY_INTEROP_TLS_CASES"
fi

for name in "${CASES[@]}"; do
    total=$((total + 1))
    d=$work/$name
    mkdir -p "$d"
    kill -0 "$server_pid" 2>/dev/null || { cat "$server_log"; die "the substitution server is gone"; }
    case $name in
      terminal-client-resumes) cmd=(run_resumption client "$d") ;;
      terminal-server-resumes) cmd=(run_resumption server "$d") ;;
      terminal-client-refuses-*) cmd=(run_refusal client "$d") ;;
      terminal-server-requires-*) cmd=(run_refusal server "$d") ;;
      terminal-client-*) cmd=(run_case client "${name#terminal-client-}" "$d") ;;
      terminal-server-*) cmd=(run_case server "${name#terminal-server-}" "$d") ;;
      *) die "unknown case $name" ;;
    esac
    # In this shell (not a subshell), so that the cleanup knows every PID it started.
    if "${cmd[@]}" >"$d/case.log" 2>&1; then
      passed=$((passed + 1))
      log "PASS $name ($(tail -1 "$d/case.log"))"
    else
      failed+=("$name")
      log "FAIL $name: $(tail -1 "$d/case.log")"
      for f in terminal.log terminal-1.log terminal-2.log openssl.log openssl-1.log \
        openssl-2.log tshark.log follow.txt; do
        [ -f "$d/$f" ] || continue
        echo "    --- $f"
        tail -40 "$d/$f" | sed 's/^/    /'
      done
    fi
    # Whatever the case left running (after a failure) is stopped before the next.
    for pid in "${pids[@]}"; do
      [ "$pid" = "$server_pid" ] || stop_pid "$pid"
    done
    pids=("$server_pid")
done

echo "openssl interop: $passed/$total passed"
if [ "$passed" -ne "$total" ]; then
  log "failed: ${failed[*]}"
  tail -30 "$server_log" | sed 's/^/    server: /'
  exit 1
fi
ok=1
