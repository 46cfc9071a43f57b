#!/usr/bin/env bash
# bench/output.sh — bulk output through a foreground `wharf run`: 20 MiB of lines (busybox
# `yes` cut by `head -c`, ~100-byte lines) read by `cat` through a pipe, as a terminal
# would read it:
#
#   host                      the same pipeline on the host: the floor
#   wharf run --rm            not logged (a --rm run's log would go with it)
#   wharf run                 logged: the relay writes the pipe, a thread writes log.json
#   wharf run -t              through the pty, logged
#   wharf run -i              through a detached monitor's attach socket (the detach-keys path)
#
# each for this checkout and, when BASE=<wharf binary> is given (say, main's release build),
# for it too, side by side. Medians of RUNS (hyperfine), in ms, and MB/s.
#
# Knobs: BENCH_DIR=/tmp/wharf-bench-output  RUNS=10  MB=20  BASE=  WHARF=  SKIP_INSTALL=1
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench-output}
RUNS=${RUNS:-10}
MB=${MB:-20}
RES=$B/results
need_root
mkdir -p "$B" "$RES"
install_missing hyperfine jq busybox-static
need_tools hyperfine jq

say "build wharf (release) and fixtures"
build_wharf
"$REPO/scripts/make-rootfs.sh" "$B/fixtures" || exit 1
BYTES=$((MB * 1024 * 1024))
GEN="yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij | head -c $BYTES"

bins=("new:$WHARF")
[ -n "${BASE:-}" ] && bins+=("base:$BASE")

cleanup() {
    local b
    for b in "${bins[@]}"; do
        local w=${b#*:} r=$B/root-${b%%:*}
        "$w" --root "$r" rm -f $("$w" --root "$r" ps -aq 2>/dev/null) >/dev/null 2>&1 || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Each row's --prepare removes the container its last run left (not timed).
cmds=(-p true -n host "busybox sh -c '$GEN' | cat >/dev/null")
for b in "${bins[@]}"; do
    tag=${b%%:*} w=${b#*:} r=$B/root-$tag
    # Loopback only (this checkout's config; an older BASE may not know the [network] table).
    [ "$tag" = new ] && loopback_root "$r"
    "$w" --root "$r" import -q "$B/fixtures/busybox-rootfs.tar" bench:1 >/dev/null || exit 1
    run="$w --root $r run"
    rm_out="$w --root $r rm -f out >/dev/null 2>&1 || true"
    cmds+=(-p true -n "$tag run --rm" "$run --rm bench:1 sh -c '$GEN' | cat >/dev/null")
    cmds+=(-p "$rm_out" -n "$tag run" "$run --name out bench:1 sh -c '$GEN' | cat >/dev/null")
    cmds+=(-p "$rm_out" -n "$tag run -t" "$run -t --name out bench:1 sh -c '$GEN' | cat >/dev/null")
    cmds+=(-p "$rm_out" -n "$tag run -i" "$run -i --name out bench:1 sh -c '$GEN' </dev/null | cat >/dev/null")
done

say "$MB MiB through each, $RUNS runs"
# hyperfine wants all the -p before the commands, in their order.
preps=() names=()
i=0
while [ $i -lt ${#cmds[@]} ]; do
    preps+=(-p "${cmds[$((i + 1))]}")
    names+=(-n "${cmds[$((i + 3))]}" "${cmds[$((i + 4))]}")
    i=$((i + 5))
done
hyperfine --warmup 1 --runs "$RUNS" --export-json "$RES/output.json" "${preps[@]}" "${names[@]}" \
    >"$RES/output.log" 2>&1 || { cat "$RES/output.log"; exit 1; }

echo
echo "| row | median ms | MB/s |"
echo "|---|---|---|"
jq -r --argjson mb "$MB" '.results[] | "| \(.command) | \(.median * 1000 | floor) | \($mb / .median | floor) |"' "$RES/output.json"
echo
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
print_notes
