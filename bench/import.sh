#!/usr/bin/env bash
# import.sh - wharf import throughput against tar -x, sha256sum, docker import and podman import,
# on one >= 200 MB rootfs-like tarball, measured in the same run with hyperfine.
#
#   bash bench/import.sh              # as root; builds wharf --release, prints a table
#
# Knobs (environment):
#   BENCH_DIR=/tmp/wharf-bench   everything this script writes (the tarball is cached here)
#   BIG_MB=200                   file data in the tarball (busybox rootfs + a deterministic
#                                sample of the host's /usr, like shared/bench/peers.sh)
#   RUNS=5                       timed runs per row (1 warmup each)
#   COMPRESS=none|gzip|zstd      also import a compressed copy (default none)
#   SKIP_PEERS=1                 do not run docker or podman
#   SKIP_INSTALL=1               do not apt-get install hyperfine / jq
#   WHARF=path                   the wharf binary (default: cargo build --release)
#
# Each timed run starts from a fresh state root / target dir (hyperfine --prepare removes the
# previous one and runs `sync`, so no run pays for the previous one's writeback). The page
# cache holds the tarball (one warmup run). dockerd is started here on a private unix socket
# with no networking (--bridge=none, no iptables), podman with private storage and config
# files; both are stopped / cleaned by PID on exit, also on error or Ctrl-C. Nothing is ever
# killed by name.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench}
BIG_MB=${BIG_MB:-200}
RUNS=${RUNS:-5}
COMPRESS=${COMPRESS:-none}
DOCKER=${DOCKER:-/usr/bin/docker}
RES=$B/results

need_root "wharf keeps owners; tar -x and peers too"
mkdir -p "$B" "$RES"
rm -f "$RES"/*.json "$RES"/*.log

# ------------------------------------------------------------------ cleanup (by PID only)
DOCKERD_PID="" CONTAINERD_PID=""
stop_pid() { # stop_pid PID NAME: TERM, wait up to 30 s, then KILL
  local pid=$1 name=$2 i
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  echo "import.sh: $name ($pid) ignored SIGTERM for 30 s, sending SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  set +e
  if [ -n "$DOCKERD_PID" ]; then
    "$DOCKER" -H "unix://$B/docker/docker.sock" rmi -f wharf-bench-big >/dev/null 2>&1
    stop_pid "$DOCKERD_PID" dockerd
    stop_pid "$CONTAINERD_PID" containerd
    rmdir /sys/fs/cgroup/*/docker /sys/fs/cgroup/docker 2>/dev/null
  fi
  if [ -n "${PODMAN_USED:-}" ]; then
    podman rmi -f localhost/wharf-bench-big >/dev/null 2>&1
    rmdir /sys/fs/cgroup/*/libpod_parent/conmon /sys/fs/cgroup/*/libpod_parent 2>/dev/null
  fi
  rm -rf "$B/x" "$B/wharf-root" "$B/tmpfs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ tools
install_missing hyperfine jq busybox-static
need_tools hyperfine jq

[ -n "${WHARF:-}" ] || say "cargo build --release"
build_wharf

# ------------------------------------------------------------------ the tarball (cached)
BIG=$B/big.tar
if [ ! -s "$BIG" ] || [ "$(cat "$BIG.mb" 2>/dev/null)" != "$BIG_MB" ]; then
  say "building $BIG (${BIG_MB} MiB of file data)"
  bash "$REPO/scripts/make-rootfs.sh" "$B/rootfs"
  # A deterministic sample of /usr: sort -R with a fixed random source picks the same files
  # on the same host every time. Hard-linked files are left out (tar stores them once).
  head -c 65536 < <(yes wharf-bench-seed) >"$B/big.seed"
  (cd / && find usr/bin usr/lib usr/share \( -type f -links 1 -o -type l \) -printf '%s\t%p\n' 2>/dev/null |
     sort -R --random-source="$B/big.seed" |
     awk -F'\t' -v t=$((BIG_MB * 1024 * 1024)) '
        sum + $1 > t { next }
        { print $2; sum += $1 }
        sum > t - 1048576 { exit }' | LC_ALL=C sort) >"$B/big.list" || true  # awk's early exit: SIGPIPE upstream
  [ -s "$B/big.list" ] || { echo "import.sh: found no files under /usr to sample" >&2; exit 1; }
  rm -rf "$B/big-rootfs"; mkdir -p "$B/big-rootfs"
  tar -C "$B/big-rootfs" -xf "$B/rootfs/busybox-rootfs.tar"
  tar -C / --no-recursion -cf - -T "$B/big.list" | tar -C "$B/big-rootfs" -xf -
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$B/big-rootfs" -cf "$BIG.tmp" .
  mv -f "$BIG.tmp" "$BIG"
  echo "$BIG_MB" >"$BIG.mb"
  rm -rf "$B/big-rootfs"
fi
BIG_BYTES=$(stat -c %s "$BIG")
BIG_ENTRIES=$(tar -tf "$BIG" | wc -l)
IN=$BIG
case "$COMPRESS" in
  gzip) [ -s "$BIG.gz" ] || gzip -1 -c "$BIG" >"$BIG.gz"; IN=$BIG.gz ;;
  zstd) [ -s "$BIG.zst" ] || zstd -q -3 -c "$BIG" >"$BIG.zst"; IN=$BIG.zst ;;
  none) ;;
  *) echo "import.sh: COMPRESS is none, gzip or zstd" >&2; exit 1 ;;
esac
echo "   $BIG: $((BIG_BYTES / 1048576)) MiB, $BIG_ENTRIES entries; importing $IN" >&2

# ------------------------------------------------------------------ peers
CMDS=() NAMES=() PREPS=()
add() { NAMES+=("$1"); PREPS+=("$2"); CMDS+=("$3"); }
W=$B/wharf-root X=$B/x
add "wharf import" "sh -c 'rm -rf $W && sync'" "$WHARF --root $W import -q $IN bench:1"
add "tar -x" "sh -c 'rm -rf $X && mkdir -p $X && sync'" "tar -C $X -xf $BIG"
add "tar -x + sync" "sh -c 'rm -rf $X && mkdir -p $X && sync'" "sh -c 'tar -C $X -xf $BIG && sync'"
add "sha256sum" "sync" "sha256sum $BIG"

if [ -z "${SKIP_PEERS:-}" ] && command -v dockerd >/dev/null && [ -x "$DOCKER" ]; then
  D=$B/docker
  mkdir -p "$D"
  echo '{}' >"$D/daemon.json"
  # A dockerd an interrupted earlier run left on our data-root is ours: stop it by its pid.
  if [ -s "$D/dockerd.pid" ]; then
    old=$(cat "$D/dockerd.pid")
    if kill -0 "$old" 2>/dev/null && tr '\0' ' ' <"/proc/$old/cmdline" | grep -q -- "--data-root $D/data"; then
      stop_pid "$old" "stale dockerd"
    fi
  fi
  dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" \
          --pidfile "$D/dockerd.pid" -H "unix://$D/docker.sock" \
          --iptables=false --ip6tables=false --ip-masq=false --bridge=none \
          --log-level warn >"$D/dockerd.log" 2>&1 </dev/null &
  DOCKERD_PID=$!
  up=""
  for _ in $(seq 1 150); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    "$DOCKER" -H "unix://$D/docker.sock" version >/dev/null 2>&1 && { up=1; break; }
    sleep 0.2
  done
  CONTAINERD_PID=$(cat "$D/exec/containerd/containerd.pid" 2>/dev/null || true)
  DK="$DOCKER -H unix://$D/docker.sock"
  if [ -n "$up" ] && ! $DK import "$B/rootfs/busybox-rootfs.tar" wharf-bench-probe >"$RES/docker-probe.log" 2>&1; then
    note "docker import failed on the busybox tar: $(tail -1 "$RES/docker-probe.log")"; up=""
  fi
  if [ -n "$up" ]; then
    $DK rmi -f wharf-bench-probe >/dev/null 2>&1 || true
    add "docker import" "sh -c '$DK rmi -f wharf-bench-big >/dev/null 2>&1; sync'" "$DK import $IN wharf-bench-big"
  else
    note "dockerd did not come up: $(tail -1 "$D/dockerd.log")"
  fi
else
  note "docker skipped (SKIP_PEERS, or dockerd / $DOCKER missing: apt-get install docker.io)"
fi

if [ -z "${SKIP_PEERS:-}" ] && command -v podman >/dev/null; then
  P=$B/podman
  mkdir -p "$P/tmp"
  # Own config files: nothing in /etc/containers or /var/lib/containers/storage is used.
  cat >"$P/containers.conf" <<EOF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$P/events.log"
tmp_dir = "$P/tmp"
EOF
  export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
  PODMAN_USED=1
  podman_ok=""
  for drv in overlay vfs; do
    printf '[storage]\ndriver = "%s"\ngraphroot = "%s"\nrunroot = "%s"\n' "$drv" "$P/graph-$drv" "$P/run-$drv" >"$P/storage.conf"
    if podman import -q "$B/rootfs/busybox-rootfs.tar" localhost/wharf-bench-probe >"$RES/podman-probe.log" 2>&1; then
      podman rmi -f localhost/wharf-bench-probe >/dev/null 2>&1 || true
      podman_ok=$drv; break
    fi
  done
  [ "$podman_ok" = overlay ] || note "podman storage driver: ${podman_ok:-none worked: $(tail -1 "$RES/podman-probe.log")}"
  if [ -n "$podman_ok" ]; then add "podman import" "sh -c 'podman rmi -f localhost/wharf-bench-big >/dev/null 2>&1; sync'" "podman import -q $IN localhost/wharf-bench-big"; fi
else
  note "podman skipped (SKIP_PEERS, or not installed: apt-get install podman)"
fi

# ------------------------------------------------------------------ measure (one hyperfine run)
say "hyperfine: ${#CMDS[@]} commands x $RUNS runs"
args=(-N --style basic --runs "$RUNS" --warmup 1 --export-json "$RES/import.json")
for i in "${!CMDS[@]}"; do
  args+=(--command-name "${NAMES[$i]}" --prepare "${PREPS[$i]}")
done
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
hyperfine "${args[@]}" "${CMDS[@]}" >"$RES/hyperfine.log" 2>&1 || { cat "$RES/hyperfine.log" >&2; exit 1; }

# ------------------------------------------------------------------ report
med() { jq -r --arg n "$1" '.results[] | select(.command == $n) | .median' "$RES/import.json"; }
TAR_MED=$(med "tar -x")
WH_MED=$(med "wharf import")
{
  echo "# wharf import benchmark ($(date -u +%Y-%m-%dT%H:%M:%SZ))"
  echo "host: $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(nproc) cores; $B on $(findmnt -n -o FSTYPE -T "$B")"
  echo "input: $IN ($((BIG_BYTES / 1048576)) MiB tar, $BIG_ENTRIES entries); $RUNS runs, 1 warmup, sync before each"
  echo "load average: $LOAD0 at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
  echo
  printf '| %-14s | %9s | %9s | %9s | %8s | %10s |\n' command "median s" "min s" "max s" "MB/s" "vs tar -x"
  printf '|%s|\n' "----------------|-----------|-----------|-----------|----------|------------"
  jq -r '.results[] | [.command, .median, .min, .max] | @tsv' "$RES/import.json" |
    while IFS=$'\t' read -r n m lo hi; do
      awk -v n="$n" -v m="$m" -v lo="$lo" -v hi="$hi" -v b="$BIG_BYTES" -v t="$TAR_MED" \
        'BEGIN { printf "| %-14s | %9.2f | %9.2f | %9.2f | %8.0f | %9.2fx |\n", n, m, lo, hi, b / 1048576 / m, m / t }'
    done
  echo
  awk -v w="$WH_MED" -v t="$TAR_MED" 'BEGIN { printf "wharf import / tar -x = %.2fx (target <= 1.15x)\n", w / t }'
  for peer in "docker import" "podman import"; do
    p=$(med "$peer")
    [ -n "$p" ] && awk -v w="$WH_MED" -v p="$p" -v n="$peer" 'BEGIN { printf "wharf import / %s = %.2fx (target < 1)\n", n, w / p }'
  done
  print_notes
} | tee "$RES/table.md"
echo "(hyperfine JSON: $RES/import.json)" >&2
