#!/usr/bin/env bash
# bench/watch.sh — `wharf watch` reaction latency: a manifest change is written → the
# container runs the new spec.
#
# A watch (release build) runs on a one-container project against a private state root. Each
# of N changes rewrites the manifest atomically (temp file + rename, as editors do) with a new
# env value, which recreates the container. The time is from just before the rename to the
# watch's log line for that converge, which it prints once the apply returned: the old
# container is stopped and removed, the new one created and its command exec'd (a detached
# start returns when the exec happened). After each change the script checks with
# `wharf inspect` that the running container has the new value (outside the timing), and
# waits for the next change until the store check that follows the converge is done.
#
# The latency includes the debounce (--debounce, 100 ms by default: the quiet time an
# editor's burst of writes needs). Target: median at most 500 ms.
#
# Knobs: N=20  DEBOUNCE=100ms  BENCH_DIR=/tmp/wharf-bench  WHARF=<binary> (default: build
# release)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
N=${N:-20}
DEBOUNCE=${DEBOUNCE:-100ms}
B=${BENCH_DIR:-/tmp/wharf-bench}/watch
need_root
need_tools jq
build_wharf
FIX=$(ls -d "$REPO"/target/tmp/fixtures 2>/dev/null || true)
if [ ! -f "$FIX/busybox-rootfs.tar" ]; then
    FIX=$B/fixtures
    mkdir -p "$FIX"
    bash "$REPO/scripts/make-rootfs.sh" "$FIX" >/dev/null
fi

rm -rf "$B"
mkdir -p "$B/m"
ROOT=$B/root
loopback_root "$ROOT"
M=$B/m
cp "$FIX/busybox-rootfs.tar" "$M/busybox.tar"
W() { "$WHARF" --root "$ROOT" "$@"; }

manifest() { # $1: the value of V
    cat >"$M/.app.toml.tmp" <<TOML
project = "bench"

[images.bb]
source = "busybox.tar"
tag = "bb:1"
env = { PATH = "/bin" }

[containers.web]
image = "bb:1"
command = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]
env = { V = "$1" }
limits = { memory = "32MiB" }
TOML
}

WATCH_PID=
cleanup() {
    [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null && wait "$WATCH_PID" 2>/dev/null
    W rm -f web >/dev/null 2>&1 || true
}
trap cleanup EXIT

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
lines() { grep -c ': converged' "$B/watch.log" 2>/dev/null || true; }
await_lines() { # $1: count; 20 s deadline
    local deadline=$(( $(now_ms) + 20000 ))
    while [ "$(lines)" -lt "$1" ]; do
        [ "$(now_ms)" -lt "$deadline" ] || { echo "timed out; log:" >&2; cat "$B/watch.log" "$B/watch.err" >&2; exit 1; }
        sleep 0.002
    done
}

manifest 0
mv "$M/.app.toml.tmp" "$M/app.toml"
"$WHARF" --root "$ROOT" watch --resync 1h --debounce "$DEBOUNCE" -t 5 "$M" >"$B/watch.log" 2>"$B/watch.err" &
WATCH_PID=$!
await_lines 1

times=()
for i in $(seq 1 "$N"); do
    manifest "$i"
    before=$(lines)
    t0=$(date +%s%N)
    mv "$M/.app.toml.tmp" "$M/app.toml"
    await_lines $((before + 1))
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
    info=$(W inspect web)
    v=$(jq -r '.[0].Config.env | map(select(startswith("V="))) | .[0]' <<<"$info")
    state=$(jq -r '.[0].State.Status' <<<"$info")
    [ "$v" = "V=$i" ] && [ "$state" = running ] || { echo "change $i: expected V=$i running, got $v $state" >&2; exit 1; }
done

sorted=$(printf '%s\n' "${times[@]}" | sort -n)
pick() { echo "$sorted" | sed -n "$1p"; }
median=$(pick $(( (N + 1) / 2 )))
echo "wharf watch: manifest change → new container running, $N changes, --debounce $DEBOUNCE"
echo "  median ${median} ms   min $(pick 1) ms   p90 $(pick $(( (N * 9 + 9) / 10 ))) ms   max $(pick "$N") ms   (target: median ≤ 500 ms)"
echo "  each converge as the watch logged it (apply only, without the debounce):"
grep -o '\[[0-9]* ms\]' "$B/watch.log" | tail -n "$N" | tr -d '[]ms ' | sort -n |
    awk '{a[NR]=$1} END {printf "  apply median %d ms, min %d ms, max %d ms\n", a[int((NR+1)/2)], a[1], a[NR]}'
echo "  load average: $(cut -d' ' -f1-3 /proc/loadavg)"
