# shellcheck shell=bash
# bench/lib.sh — the setup every bench/*.sh script shares. Source it, do not run it:
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Sets REPO (the checkout) and NOTES=(); defines say, note, print_notes, need_root,
# install_missing, need_tools, build_wharf, loopback_root, stop_pid, start_dockerd and
# stop_dockerd. Messages name the calling script.

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

# stop_pid PID NAME: SIGTERM, up to 30 s to exit, then SIGKILL. Only ever by PID.
stop_pid() {
    local pid=$1 name=$2 _
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
    echo "$BENCH_NAME: $name ($pid) ignored SIGTERM for 30 s, sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null
}

# start_dockerd DIR [net]: a private dockerd whose config, data-root, exec-root, pidfile, unix
# socket, log and client config are all under DIR (nothing of /etc/docker/daemon.json,
# /var/lib/docker or ~/.docker is used). Sets the client's command line,
# DOCKER_CMD=(docker --config DIR/cli -H unix://DIR/docker.sock) (not DOCKER_CONFIG in the
# environment: podman reads it too), DOCKERD_PID, CONTAINERD_PID and DOCKERD_DIR; stop it with
# stop_dockerd.
#   without "net": no networking (--bridge=none, no iptables rules, forwarding or masquerade)
#   with "net": docker's default networking (the docker0 bridge, its iptables chains and
#     FORWARD policy DROP, docker-proxy for published ports), all of it inside a network
#     namespace of its own: `unshare --net` brings `lo` up there and execs dockerd (the same
#     PID), so nothing reaches the host's namespace, and it has no route out. Reach its
#     published ports from inside: nsenter --net=/proc/$DOCKERD_PID/ns/net -- CMD. Its dbus
#     address points nowhere, so it cannot ask a host firewalld to open anything either.
# Returns 1 with DOCKERD_WHY set when the daemon is not up within 30 s.
start_dockerd() {
    local d=$1 mode=${2:-} _ up="" args
    DOCKERD_PID="" CONTAINERD_PID="" DOCKERD_WHY="" DOCKERD_DIR=$d
    mkdir -p "$d/cli"
    echo '{}' >"$d/daemon.json"
    DOCKER_CMD=(/usr/bin/docker --config "$d/cli" -H "unix://$d/docker.sock")
    args=(--config-file "$d/daemon.json" --data-root "$d/data" --exec-root "$d/exec"
        --pidfile "$d/dockerd.pid" -H "unix://$d/docker.sock" --log-level warn)
    if [ "$mode" = net ]; then
        DBUS_SYSTEM_BUS_ADDRESS=unix:path=/nonexistent unshare --net -- \
            sh -c 'ip link set lo up && exec "$@"' sh dockerd "${args[@]}" >"$d/dockerd.log" 2>&1 </dev/null &
    else
        dockerd "${args[@]}" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
            >"$d/dockerd.log" 2>&1 </dev/null &
    fi
    DOCKERD_PID=$!
    for _ in $(seq 1 150); do
        kill -0 "$DOCKERD_PID" 2>/dev/null || break
        "${DOCKER_CMD[@]}" version >/dev/null 2>&1 && { up=1; break; }
        sleep 0.2
    done
    # the containerd dockerd spawned, if that pidfile is its (containerd's state is under DIR)
    CONTAINERD_PID=$(cat "$d/exec/containerd/containerd.pid" 2>/dev/null)
    if [ -n "$CONTAINERD_PID" ] && ! tr '\0' ' ' <"/proc/$CONTAINERD_PID/cmdline" 2>/dev/null | grep -qF "$d/exec"; then
        CONTAINERD_PID=""
    fi
    if [ -z "$up" ]; then
        DOCKERD_WHY="dockerd did not come up: $(grep -iE 'error|fail|fatal' "$d/dockerd.log" | tail -1 | cut -c1-240)"
    elif [ "$mode" = net ] && [ "$(readlink "/proc/$DOCKERD_PID/ns/net")" = "$(readlink /proc/self/ns/net)" ]; then
        DOCKERD_WHY="dockerd runs in the host's network namespace"
    fi
    [ -z "$DOCKERD_WHY" ] && return 0
    stop_dockerd
    return 1
}

# stop_dockerd: removes the containers of start_dockerd's daemon, stops it, the containerd it
# spawned and any container shim still serving that containerd's socket, by PID, and removes
# the empty cgroups docker leaves (rmdir removes only empty ones).
stop_dockerd() {
    [ -n "${DOCKERD_PID:-}" ] || return 0
    local f c sock=$DOCKERD_DIR/exec/containerd/containerd.sock
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
        "${DOCKER_CMD[@]}" ps -aq 2>/dev/null | xargs -r "${DOCKER_CMD[@]}" rm -f >/dev/null 2>&1
    fi
    stop_pid "$DOCKERD_PID" dockerd
    stop_pid "$CONTAINERD_PID" containerd
    for f in /proc/[0-9]*/cmdline; do
        c=$(tr '\0' ' ' 2>/dev/null <"$f")
        case $c in *containerd-shim*" -address $sock "*) f=${f#/proc/}; stop_pid "${f%/cmdline}" containerd-shim ;; esac
    done
    rmdir /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker 2>/dev/null
    DOCKERD_PID="" CONTAINERD_PID=""
}
