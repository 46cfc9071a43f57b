#!/usr/bin/env bash
# bench/run.sh — container start latency, side by side, in one run:
#
#   wharf run --rm IMG /bin/true        (release build, this checkout)
#   crun run / runc run                 the same busybox rootfs as an OCI bundle
#   podman run --rm / docker run --rm   when installed (SKIP_SLOW=1 skips them)
#   unshare -pmuin --fork /bin/true     the floor: namespaces alone
#
# Prints a table of medians and each row's ratio to wharf. Needs root, hyperfine and jq
# (apt-get installs them when missing, and crun/runc/podman/docker.io unless SKIP_INSTALL=1).
#
# Knobs: BENCH_DIR=/tmp/wharf-bench  RUNS=50  ROUNDS=5  RUNS_SLOW=15  SKIP_SLOW=1  SKIP_INSTALL=1
#
# The fast rows take turns in ROUNDS rounds (RUNS/ROUNDS runs each), so that other work on a
# shared machine weighs on all of them alike; the load average is printed with the table.
#
# crun refuses a hybrid cgroup host whose cgroup2 mount has a controller; its rows run in a
# private mount namespace where /sys/fs/cgroup/unified is unmounted (the host is untouched).
# dockerd, when used, runs on a private socket with no networking and is stopped by PID.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench}
RUNS=${RUNS:-50}
RUNS_SLOW=${RUNS_SLOW:-15}
ROUNDS=${ROUNDS:-5}
RES=$B/results
need_root
mkdir -p "$B" "$RES"
rm -f "$RES"/run-*.json "$RES"/run-*.log

if [ -z "${SKIP_INSTALL:-}" ]; then
    want=(hyperfine jq busybox-static crun runc)
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
"$WHARF" --root "$WROOT" import -q "$BB_TAR" bench:1 >/dev/null || exit 1

DOCKERD_PID=""
cleanup() {
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
    for rt in crun runc; do command -v $rt >/dev/null && $rt --root "$B/state/$rt" delete -f "bench-$rt" >/dev/null 2>&1; done
    "$WHARF" --root "$WROOT" rm -f $("$WHARF" --root "$WROOT" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# in_v1view CMD...: run where crun can work on a hybrid host (see header); a no-op elsewhere.
HYBRID=""
# (cgroupfs files report size 0: read the controller list, don't test its size)
if [ "$(stat -f -c %T /sys/fs/cgroup)" = tmpfs ] && [ -n "$(cat /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null)" ]; then HYBRID=1; fi
in_v1view() {
    if [ -n "$HYBRID" ]; then
        unshare --mount --propagation private -- sh -c 'umount /sys/fs/cgroup/unified && exec "$@"' sh "$@"
    else "$@"; fi
}

ROWS=()
# hf KEY LABEL RUNS CMD [WRAPPER]: one hyperfine row (the slow peers)
hf() {
    local key=$1 label=$2 runs=$3 cmd=$4 wrap=${5:-}
    echo "   $label: $cmd" >&2
    if $wrap hyperfine -N --warmup 3 --runs "$runs" --export-json "$RES/run-$key.json" "$cmd" >"$RES/run-$key.log" 2>&1; then
        ROWS+=("$key"$'\t'"$label"$'\t'"$cmd")
    else
        note "$label failed: $(tail -3 "$RES/run-$key.log" | tr '\n' ' ')"
    fi
}

# The fast rows (wharf, the floor, crun, runc) run in ROUNDS rounds of RUNS/ROUNDS runs each,
# the rows taking turns (each round starts one row later), so that other work on the machine
# weighs on them alike; each row's figures are over all its runs.
FAST=()
fast() { FAST+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"${4:-}"); } # fast KEY LABEL CMD [WRAPPER]

mkbundle() { # mkbundle RUNTIME: an OCI bundle of the busybox rootfs running /bin/true
    local rt=$1 d=$B/bundle-$1
    rm -rf "$d"; mkdir -p "$d/rootfs" "$B/state/$rt"
    tar -C "$d/rootfs" -xf "$BB_TAR"
    (cd "$d" && $rt spec) || return 1
    jq '.process.terminal = false | .process.args = ["/bin/true"]' "$d/config.json" >"$d/c.json" && mv "$d/c.json" "$d/config.json"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "measuring: $ROUNDS rounds of $(( (RUNS + ROUNDS - 1) / ROUNDS )) runs per fast row"
fast wharf "wharf run --rm" "$WHARF --root $WROOT run --rm bench:1 /bin/true"
fast floor "unshare -pmuin --fork (floor)" "unshare -pmuin --fork /bin/true"
for rt in crun runc; do
    if command -v $rt >/dev/null && mkbundle $rt; then
        wrap=""; [ $rt = crun ] && wrap=in_v1view
        fast $rt "$rt run" "$rt --root $B/state/$rt run --bundle $B/bundle-$rt bench-$rt" $wrap
    else
        note "$rt not installed: skipped"
    fi
done
per_round=$(( (RUNS + ROUNDS - 1) / ROUNDS ))
declare -A FAILED=()
n=${#FAST[@]}
for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        IFS=$'\t' read -r key label cmd wrap <<<"${FAST[$(( (i + r) % n ))]}"
        [ -n "${FAILED[$key]:-}" ] && continue
        [ "$r" = 0 ] && echo "   $label: $cmd" >&2
        if ! $wrap hyperfine -N --warmup 2 --runs "$per_round" --export-json "$RES/run-$key-r$r.json" "$cmd" >"$RES/run-$key.log" 2>&1; then
            FAILED[$key]=1
            note "$label failed: $(tail -3 "$RES/run-$key.log" | tr '\n' ' ')"
        fi
    done
done
for f in "${FAST[@]}"; do
    IFS=$'\t' read -r key label cmd wrap <<<"$f"
    [ -n "${FAILED[$key]:-}" ] && continue
    jq -s '{results: [{times: [.[].results[0].times[]]}]}' "$RES"/run-"$key"-r*.json >"$RES/run-$key.json"
    ROWS+=("$key"$'\t'"$label"$'\t'"$cmd")
done

if [ -z "${SKIP_SLOW:-}" ] && command -v podman >/dev/null; then
    P=$B/podman; mkdir -p "$P"
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
    if podman image exists localhost/bench-bb || podman import -q "$BB_TAR" localhost/bench-bb >/dev/null 2>"$RES/podman-import.log"; then
        hf podman "podman run --rm" "$RUNS_SLOW" "podman run --rm --network=none localhost/bench-bb /bin/true"
    else
        note "podman import failed: $(tail -1 "$RES/podman-import.log")"
    fi
    unset CONTAINERS_CONF CONTAINERS_STORAGE_CONF
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
        hf docker "docker run --rm" "$RUNS_SLOW" "$DOCKER run --rm --network=none bench-bb /bin/true"
    else
        note "dockerd did not come up: $(tail -1 "$D/dockerd.log")"
    fi
fi

say "results"
# median, min and max in ms over every run of a row
STATS='.results[0].times | sort | map(. * 1000) | [(if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end), .[0], .[-1], length] | @tsv'
median() { jq -r "$STATS" "$RES/run-$1.json" | cut -f1; }
WM=$(median wharf 2>/dev/null || echo 0)
{
    echo "# bench/run.sh ($(date -u +%Y-%m-%dT%H:%M:%SZ)), $(nproc) cores, kernel $(uname -r), load $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
    printf '| %-32s | %10s | %10s | %10s | %5s | %14s |\n' measurement "median ms" "min ms" "max ms" runs "× wharf"
    printf '|%s|\n' "----------------------------------|------------|------------|------------|-------|----------------"
    for r in "${ROWS[@]}"; do
        IFS=$'\t' read -r key label cmd <<<"$r"
        IFS=$'\t' read -r med mn mx cnt < <(jq -r "$STATS" "$RES/run-$key.json")
        ratio=$(awk -v a="$med" -v w="$WM" 'BEGIN{ if (w > 0) printf "%.2f", a/w; else print "-" }')
        printf '| %-32s | %10.1f | %10.1f | %10.1f | %5s | %14s |\n' "$label" "$med" "$mn" "$mx" "$cnt" "$ratio"
    done
    print_notes
} | tee "$RES/run-table.md"
