#!/usr/bin/env bash
# bench/ps.sh — listing a store of N containers (default 500), side by side, in one run:
#
#   wharf ps -a      (release build, this checkout; N containers made with `wharf create`)
#   wharf ps         (the same store, running ones only: none; the floor of the ps path)
#   podman ps -a     N created containers, private storage and config
#   docker ps -a     N created containers, against a dockerd started here on a private socket
#
# Prints a table of medians and each row's ratio to `wharf ps -a` (target: a median of at most
# 20 ms, faster than docker and podman). Needs root, hyperfine and jq (apt-get installs them
# when missing, with podman and docker.io unless SKIP_INSTALL=1).
#
# Knobs: BENCH_DIR=/tmp/wharf-bench-ps  N=500  RUNS=50  RUNS_SLOW=15  SKIP_SLOW=1 (no peers)
#        SKIP_INSTALL=1  KEEP=1 (keep the stores: the next run skips the N creates)
#
# Everything made here lives under BENCH_DIR: the wharf root, podman's storage, dockerd's
# data root. On exit the peers' containers are removed and dockerd (with the containerd it
# spawned) is stopped by PID, never by name.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench-ps}
N=${N:-500}
RUNS=${RUNS:-50}
RUNS_SLOW=${RUNS_SLOW:-15}
RES=$B/results
need_root
mkdir -p "$B" "$RES"
rm -f "$RES"/ps-*.json

if [ -z "${SKIP_INSTALL:-}" ]; then
    want=(hyperfine jq busybox-static)
    [ -z "${SKIP_SLOW:-}" ] && want+=(podman docker.io)
    install_missing "${want[@]}"
fi
need_tools hyperfine jq

say "build wharf (release) and fixtures"
build_wharf
"$REPO/scripts/make-rootfs.sh" "$B/fixtures" || exit 1
BB_TAR=$B/fixtures/busybox-rootfs.tar
WROOT=$B/wharf-root
loopback_root "$WROOT"

DOCKERD_PID=""
DOCKER=""
PODMAN_USED=""
cleanup() {
    if [ -z "${KEEP:-}" ]; then
        if [ -n "$DOCKER" ] && [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
            $DOCKER ps -aq | xargs -r $DOCKER rm -f >/dev/null 2>&1 || true
        fi
        [ -n "$PODMAN_USED" ] && podman rm -a -f >/dev/null 2>&1
        rm -rf "$WROOT"
    fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        local ctd; ctd=$(cat "$B/docker/exec/containerd/containerd.pid" 2>/dev/null || true)
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
        if [ -n "$ctd" ] && kill -0 "$ctd" 2>/dev/null && tr '\0' ' ' <"/proc/$ctd/cmdline" | grep -q "$B/docker"; then
            kill -TERM "$ctd" 2>/dev/null || true
        fi
    fi
    if [ -n "$PODMAN_USED" ] || [ -n "$DOCKERD_PID" ]; then
        # the empty parent cgroups the peers leave (rmdir removes only empty ones)
        for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
            rmdir "$h/libpod_parent/conmon" "$h/libpod_parent" "$h/docker" 2>/dev/null || true
        done
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# count CMD...: how many containers CMD lists (one id per line)
count() { "$@" 2>/dev/null | wc -l; }

say "wharf: $N created containers in $WROOT"
"$WHARF" --root "$WROOT" import -q "$BB_TAR" bench:1 >/dev/null || exit 1
have=$(count "$WHARF" --root "$WROOT" ps -aq)
seq $((have + 1)) "$N" | xargs -r -P 4 -I{} "$WHARF" --root "$WROOT" create bench:1 sh -c 'echo {}' >/dev/null
echo "   $(count "$WHARF" --root "$WROOT" ps -aq) containers" >&2

ROWS=()
# hf KEY LABEL RUNS CMD: one hyperfine row
hf() {
    local key=$1 label=$2 runs=$3 cmd=$4
    echo "   $label: $cmd" >&2
    if hyperfine -N --warmup 3 --runs "$runs" --output null --export-json "$RES/ps-$key.json" "$cmd" >"$RES/ps-$key.log" 2>&1; then
        ROWS+=("$key"$'\t'"$label"$'\t'"$cmd")
    else
        note "$label failed: $(tail -3 "$RES/ps-$key.log" | tr '\n' ' ')"
    fi
}

say "measuring"
hf wharf "wharf ps -a ($N)" "$RUNS" "$WHARF --root $WROOT ps -a"
hf wharf-q "wharf ps -a -q ($N)" "$RUNS" "$WHARF --root $WROOT ps -a -q"
hf wharf-json "wharf --format json ps -a ($N)" "$RUNS" "$WHARF --root $WROOT --format json ps -a"
hf wharf-run "wharf ps (0 running of $N)" "$RUNS" "$WHARF --root $WROOT ps"

if [ -z "${SKIP_SLOW:-}" ] && command -v podman >/dev/null; then
    P=$B/podman; mkdir -p "$P/tmp"
    cat >"$P/containers.conf" <<EOF
[containers]
netns = "none"
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$P/events.log"
runtime = "runc"
tmp_dir = "$P/tmp"
EOF
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$P" "$P" >"$P/storage.conf"
    export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
    PODMAN_USED=1
    if podman image exists localhost/bench-bb || podman import -q "$BB_TAR" localhost/bench-bb >/dev/null 2>"$RES/podman-import.log"; then
        say "podman: $N created containers"
        have=$(count podman ps -aq)
        seq $((have + 1)) "$N" | xargs -r -P 4 -I{} podman create --network=none localhost/bench-bb sh -c 'echo {}' >/dev/null 2>>"$RES/podman-create.log"
        echo "   $(count podman ps -aq) containers" >&2
        hf podman "podman ps -a ($N)" "$RUNS_SLOW" "podman ps -a"
    else
        note "podman import failed: $(tail -1 "$RES/podman-import.log")"
    fi
fi

if [ -z "${SKIP_SLOW:-}" ] && command -v dockerd >/dev/null; then
    D=$B/docker; mkdir -p "$D"; echo '{}' >"$D/daemon.json"
    dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
        -H "unix://$D/docker.sock" --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
        --storage-driver overlay2 --log-level warn >"$D/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    DOCKER="/usr/bin/docker -H unix://$D/docker.sock"
    up=""
    for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; $DOCKER version >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
    if [ -n "$up" ] && { $DOCKER image inspect bench-bb >/dev/null 2>&1 || $DOCKER import "$BB_TAR" bench-bb >/dev/null; }; then
        say "docker: $N created containers"
        have=$(count $DOCKER ps -aq)
        seq $((have + 1)) "$N" | xargs -r -P 4 -I{} $DOCKER create --network=none bench-bb sh -c 'echo {}' >/dev/null 2>>"$RES/docker-create.log"
        echo "   $(count $DOCKER ps -aq) containers" >&2
        hf docker "docker ps -a ($N)" "$RUNS_SLOW" "$DOCKER ps -a"
    else
        note "dockerd did not come up: $(tail -1 "$D/dockerd.log")"
    fi
fi

say "results"
WM=$(jq '.results[0].median * 1000' "$RES/ps-wharf.json" 2>/dev/null || echo 0)
{
    echo "# bench/ps.sh ($(date -u +%Y-%m-%dT%H:%M:%SZ)), $N containers, $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    printf '| %-34s | %10s | %10s | %10s | %14s |\n' measurement "median ms" "min ms" "max ms" "× wharf ps -a"
    printf '|%s|\n' "------------------------------------|------------|------------|------------|----------------"
    for r in "${ROWS[@]}"; do
        IFS=$'\t' read -r key label cmd <<<"$r"
        read -r med mn mx < <(jq -r '.results[0] | "\(.median*1000) \(.min*1000) \(.max*1000)"' "$RES/ps-$key.json")
        ratio=$(awk -v a="$med" -v w="$WM" 'BEGIN{ if (w > 0) printf "%.2f", a/w; else print "-" }')
        printf '| %-34s | %10.1f | %10.1f | %10.1f | %14s |\n' "$label" "$med" "$mn" "$mx" "$ratio"
    done
    print_notes
} | tee "$RES/ps-table.md"
