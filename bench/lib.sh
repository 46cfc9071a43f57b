# bench/lib.sh — the setup every bench/*.sh script shares. Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets REPO (the checkout) and NOTES=(); defines say, note, print_notes, need_root,
# install_missing, need_tools and build_wharf. Messages name the calling script.

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=bench/$(basename "$0")
NOTES=()

# say TEXT: a section heading on stderr.
say() { printf '\n== %s\n' "$*" >&2; }

# note TEXT: shown now, and again under the results by print_notes.
note() { NOTES+=("$*"); echo "   note: $*" >&2; }

print_notes() {
    local n
    for n in "${NOTES[@]}"; do echo "note: $n"; done
}

# need_root [WHY]: exit 1 unless running as root.
need_root() {
    [ "$(id -u)" = 0 ] || { echo "$BENCH_NAME: run as root${1:+ ($1)}" >&2; exit 1; }
}

# install_missing PKG...: apt-get installs the Debian packages not installed yet (its log in
# $RES/apt.log; a failure becomes a note), with services kept from starting. Does nothing
# with SKIP_INSTALL=1.
install_missing() {
    [ -z "${SKIP_INSTALL:-}" ] || return 0
    local p made="" missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -gt 0 ] || return 0
    say "installing ${missing[*]}"
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made=1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 -q update >/dev/null 2>&1
    apt-get -o DPkg::Lock::Timeout=600 -q install -y --no-install-recommends "${missing[@]}" >"$RES/apt.log" 2>&1 ||
        note "apt-get install failed: $(grep '^E:' "$RES/apt.log" | head -1)"
    if [ -n "$made" ]; then rm -f /usr/sbin/policy-rc.d; fi
}

# need_tools CMD...: exit 1 unless every command is on PATH.
need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "$BENCH_NAME: needs $* ($t is missing)" >&2; exit 1; }
    done
}

# build_wharf: WHARF=<release build of this checkout>, unless WHARF is set already.
build_wharf() {
    if [ -z "${WHARF:-}" ]; then
        (cd "$REPO" && cargo build --release -q) || exit 1
        WHARF=$REPO/target/release/wharf
    fi
    [ -x "$WHARF" ] || { echo "$BENCH_NAME: no wharf binary at $WHARF" >&2; exit 1; }
}

# loopback_root DIR: a wharf state root whose containers have loopback only (`[network]
# default = "none"`), as the peers beside them run without networking; bench/net.sh
# measures the networks.
loopback_root() {
    mkdir -p "$1"
    printf '[network]\ndefault = "none"\n' > "$1/config.toml"
}
