#!/usr/bin/env bash
# The module layers of src/: for each top-level module (src/X.rs or src/X/), the other
# top-level modules it references (`crate::X` paths and `use crate::{X, ...}` groups, doc
# comments excluded). Prints the graph and fails (exit 1) on an import cycle (tsort) or if
# a bottom module (wire, io, crypto, time, error) reaches up to a protocol, sim or event.
set -euo pipefail
cd "$(dirname "$0")/.."

bottom="wire io crypto time error"
upper="channel ipsec ikev2 offload rendezvous tls sim event"

modules=$(
  { ls src/*.rs | sed 's|src/||; s|\.rs$||'; ls -d src/*/ | sed 's|src/||; s|/$||'; } |
    grep -vx 'lib' | sort -u
)

# Items lib.rs re-exports at the crate root (`crate::Error` is the error module's):
# "Item module" lines, so a root path counts as a reference to the module that defines it.
rootmap=$(
  perl -0777 -ne 'while (/^pub use (\w+)::(\{[^}]*\}|\w+);/mg) {
    my ($m, $g) = ($1, $2); $g =~ s/[{}\s]//g; print "$_ $m\n" for split /,/, $g }' src/lib.rs
)

# Every `crate::` reference of one module's files, as top-level module names.
refs() {
  local m=$1 files
  files=$(ls "src/$m.rs" 2>/dev/null; [ -d "src/$m" ] && find "src/$m" -name '*.rs' | sort)
  # shellcheck disable=SC2086
  cat $files |
    grep -v '^[[:space:]]*//[!/]' |
    perl -0777 -ne '
      s{//[^\n]*}{}g;                                   # line comments
      while (/\bcrate::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}/g) {  # use crate::{a, b::{c}, ...}
        my $g = $1; $g =~ s/\{[^{}]*\}//g;
        for (split /,/, $g) { print "$1\n" if /^\s*(\w+)/ }
      }
      while (/\bcrate::(\w+)/g) { print "$1\n" }
    ' |
    while read -r name; do
      case $name in
        [A-Z]*) awk -v n="$name" '$1 == n { print $2 }' <<<"$rootmap" ;;
        *) echo "$name" ;;
      esac
    done |
    sort -u
}

status=0
pairs=""
printf 'module      -> references\n'
for m in $modules; do
  deps=""
  for d in $(refs "$m"); do
    [ "$d" = "$m" ] && continue
    grep -qx "$d" <<<"$modules" || continue # crate-root items (Error, Instant …) are not modules
    deps="$deps $d"
    pairs="$pairs$m $d"$'\n'
  done
  printf '%-11s ->%s\n' "$m" "${deps:- (nothing)}"
  if grep -qw "$m" <<<"$bottom"; then
    for d in $deps; do
      if grep -qw "$d" <<<"$upper"; then
        echo "layers: $m is a bottom module but imports $d" >&2
        status=1
      fi
    done
  fi
done

# tsort prints the modules bottom-first reversed (a dependency after its user); it
# reports a cycle on stderr.
order=$( { printf '%s' "$pairs"; for m in $modules; do echo "$m $m"; done; } | tsort 2>/tmp/layers.tsort.$$ ) || true
if [ -s /tmp/layers.tsort.$$ ]; then
  cat /tmp/layers.tsort.$$ >&2
  echo "layers: import cycle among src/ modules" >&2
  status=1
fi
rm -f /tmp/layers.tsort.$$
printf '\nlayers, top first: %s\n' "$(echo $order)"
if [ "$status" -eq 0 ]; then echo "layers: ok (no cycle; bottom modules import nothing above them)"; fi
exit "$status"
