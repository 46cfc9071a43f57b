#!/usr/bin/env bash
# bench/down.sh — stopping a project whose processes ignore SIGTERM:
#
#   down 100      `wharf down -t 3` of a 100-container project whose every container traps
#                 and ignores SIGTERM, so each must wait out the grace period and be SIGKILLed
#                 (target: about one grace period, under 8 s here; stops one after another
#                 would take 100 × 3 s)
#   stop 100      `wharf stop -t 3 NAME...` of 100 such `wharf run -d` containers
#
# Each round applies the project (not timed), then times the stop. Needs root (apt-get
# installs busybox-static when missing, unless SKIP_INSTALL=1).
#
# Knobs: BENCH_DIR=/tmp/wharf-bench  N=100  GRACE=3  ROUNDS=3
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench}
N=${N:-100}
GRACE=${GRACE:-3}
ROUNDS=${ROUNDS:-3}
D=$B/down
RES=$B/results
need_root
mkdir -p "$D" "$RES"
install_missing busybox-static

say "build wharf (release) and the rootfs"
build_wharf
"$REPO/scripts/make-rootfs.sh" "$B/fixtures" || exit 1
cp -f "$B/fixtures/busybox-rootfs.tar" "$D/busybox.tar"
WROOT=$D/wharf-root
rm -rf "$WROOT"
loopback_root "$WROOT"
W() { "$WHARF" --root "$WROOT" "$@"; }
cleanup() { W ps -aq 2>/dev/null | xargs -r "$WHARF" --root "$WROOT" rm -f >/dev/null 2>&1; }
trap cleanup EXIT

deaf='["/bin/sh", "-c", "trap \"\" TERM; while :; do sleep 1; done"]'
{
    printf 'project = "deaf"\n\n[images.bb]\nsource = "busybox.tar"\ntag = "benchbb:1"\n'
    printf 'env = { PATH = "/bin" }\n\n'
    for i in $(seq -w 1 "$N"); do
        printf '[containers.deaf-%s]\nimage = "benchbb:1"\ncommand = %s\n\n' "$i" "$deaf"
    done
} >"$D/deaf.toml"

ms() { echo $(( ($2 - $1) / 1000000 )); }
for r in $(seq 1 "$ROUNDS"); do
    say "round $r: apply $N containers, then down -t $GRACE"
    W apply -q -f "$D/deaf.toml" >/dev/null || exit 1
    t0=$(date +%s%N)
    W down -t "$GRACE" -f "$D/deaf.toml" >/dev/null || exit 1
    t1=$(date +%s%N)
    echo "down $N (-t $GRACE): $(ms "$t0" "$t1") ms"

    say "round $r: run -d $N containers, then stop -t $GRACE"
    names=()
    for i in $(seq -w 1 "$N"); do
        W run -d --name "s$i" benchbb:1 /bin/sh -c 'trap "" TERM; while :; do sleep 1; done' >/dev/null || exit 1
        names+=("s$i")
    done
    t0=$(date +%s%N)
    W stop -t "$GRACE" "${names[@]}" >/dev/null || exit 1
    t1=$(date +%s%N)
    echo "stop $N (-t $GRACE): $(ms "$t0" "$t1") ms"
    W rm "${names[@]}" >/dev/null
done
print_notes
