#!/usr/bin/env bash
# bench/net.sh — what networking costs, side by side, in one run:
#
#   start    wharf run --rm bb:1 /bin/true   --network none | the default (bridge) | -p 127.0.0.1::80
#            (wharf's native backend), and the default and -p with `[network] backend =
#            "netavark"` (a second state root)
#            podman run --rm ... /bin/true   --network none | bridge | -p 127.0.0.1::80
#            (podman calls the same netavark as wharf's netavark rows: the fair peer)
#            docker run --rm ... /bin/true   --network none | the default (bridge) | -p 127.0.0.1::80
#            (docker's own networking, against a dockerd in a network namespace of its own)
#   transfer curl of a XFER_MB file from 127.0.0.1 through a published port, served by busybox
#            httpd in a wharf container (each backend) and in a podman one, against the same server on the
#            host's loopback; and in a docker one, fetched from inside dockerd's namespace,
#            against the same server on that namespace's loopback
#   SKIP_SLOW=1 leaves out podman and docker.
#
# Prints the start medians with each row's ratio to wharf's --network none, and the transfer
# medians in MB/s with each row's ratio to loopback (its own namespace's). Needs root,
# hyperfine, jq and curl (apt-get installs them when missing, and podman and docker.io unless
# SKIP_SLOW=1 or SKIP_INSTALL=1).
#
# Knobs: RUNS=30  ROUNDS=5  RUNS_SLOW=10  XFER_MB=200  XFER_RUNS=5  SKIP_SLOW=1  SKIP_INSTALL=1
#        WHARF=<binary> (skips the release build)  KEEP=1 (keeps the temp dir)
#
# Everything lives in one temp dir (wharf's state roots, podman's storage, network configs and
# run dirs, dockerd's data-root, exec-root and socket, the served file): nothing of the host's
# podman, docker or wharf state is read or written. Traffic goes only to 127.0.0.1 and to the
# containers and networks made here. dockerd (lib.sh's start_dockerd net) runs in a network
# namespace of its own, with no route out: its docker0 bridge, iptables chains, FORWARD policy
# DROP, sysctls and docker-proxy listeners are all in there, none in the host's namespace. On
# any exit the trap removes the containers (wharf's, podman's, docker's), the wharf roots'
# bridges, stops the servers, dockerd, its containerd and shims by PID (the namespace goes
# with them), unmounts what is left under the temp dir and deletes it. The host-wide side
# effects that stay (see README "Networking"): wharf's `ip wharf` nftables table (empty of
# these roots' subnets and ports) and netavark's NETAVARK_* chains, as podman leaves them;
# and what dockerd and containerd write outside the dir: /etc/docker/key.json,
# /run/docker/plugins, /run/containerd/s.
#
# Do not run it alongside tests/network.rs: they share the firewall and the host's subnets.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
. "$HERE/lib.sh"
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-5}
RUNS_SLOW=${RUNS_SLOW:-10}
XFER_MB=${XFER_MB:-200}
XFER_RUNS=${XFER_RUNS:-5}
need_root "bridges, firewall rules and network namespaces"
B=$(mktemp -d /tmp/wharf-bench-net.XXXXXX)
RES=$B/results
mkdir -p "$RES"

WROOT=$B/wharf-root
NROOT=$B/wharf-netavark-root
HTTPD_PIDS=()
PODMAN_ON=""
DOCKER_ON=""
cleanup() {
    local rc=$? pid
    for pid in "${HTTPD_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
    stop_dockerd # its containers, dockerd, containerd and shims, by PID; its namespace with them
    for root in "$WROOT" "$NROOT"; do
        if [ -n "${WHARF:-}" ] && [ -d "$root" ]; then
            "$WHARF" --root "$root" ps -aq 2>/dev/null | xargs -r "$WHARF" --root "$root" rm -f >/dev/null 2>&1
            "$WHARF" --root "$root" network prune -f >/dev/null 2>&1
            # The native backend keeps the default network's bridge with the root, and its
            # subnet in the `ip wharf` table.
            net=$("$WHARF" --root "$root" --format json network inspect wharf 2>/dev/null)
            iface=$(jq -r '.[0].NetworkInterface // empty' <<<"$net" 2>/dev/null)
            subnet=$(jq -r '.[0].Subnets[0].Subnet // empty' <<<"$net" 2>/dev/null)
            [ -n "$iface" ] && ip link del "$iface" 2>/dev/null
            if [ -n "$subnet" ]; then
                for set in subnets nat_subnets; do
                    nft delete element ip wharf "$set" "{ $subnet }" 2>/dev/null
                done
            fi
        fi
    done
    if [ -n "$PODMAN_ON" ]; then
        podman rm -af -t 0 >/dev/null 2>&1
        podman network prune -f >/dev/null 2>&1
        podman system reset -f >/dev/null 2>&1 # unmounts its storage
    fi
    # Whatever is still mounted below the temp dir (deepest first), then the dir itself.
    findmnt -rn -o TARGET | grep "^$B/" | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
    if [ -n "${KEEP:-}" ]; then echo "kept $B" >&2; else rm -rf --one-file-system "$B"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -z "${SKIP_INSTALL:-}" ]; then
    want=(hyperfine jq curl busybox-static)
    [ -z "${SKIP_SLOW:-}" ] && want+=(podman runc docker.io)
    install_missing "${want[@]}"
fi
need_tools hyperfine jq curl busybox
[ -x /usr/lib/podman/netavark ] || [ -x /usr/libexec/podman/netavark ] ||
    { echo "$BENCH_NAME: needs netavark (apt-get install netavark aardvark-dns)" >&2; exit 1; }

say "build wharf (release) and fixtures"
build_wharf
"$REPO/scripts/make-rootfs.sh" "$B/fixtures" >/dev/null || exit 1
BB_TAR=$B/fixtures/busybox-rootfs.tar
W="$WHARF --root $WROOT"
$W import -q "$BB_TAR" bb:1 >/dev/null || exit 1
# The default network is made on first use: make it outside the timing.
$W run --rm bb:1 /bin/true || { echo "$BENCH_NAME: a bridge run fails here" >&2; exit 1; }
# The same with netavark as the backend, in a root of its own.
N="$WHARF --root $NROOT"
mkdir -p "$NROOT" && printf '[network]\nbackend = "netavark"\n' >"$NROOT/config.toml"
NETAVARK_ON=""
if $N import -q "$BB_TAR" bb:1 >/dev/null && $N run --rm bb:1 /bin/true 2>"$RES/netavark-probe.log"; then
    NETAVARK_ON=1
else
    note "no wharf rows with the netavark backend: $(tail -1 "$RES/netavark-probe.log")"
fi

# podman with private storage, config and network dirs; its default network on a subnet
# wharf never picks (wharf: 10.49-10.127), runc as in bench/run.sh (crun refuses this
# hybrid cgroup host).
if [ -z "${SKIP_SLOW:-}" ] && command -v podman >/dev/null; then
    P=$B/podman
    mkdir -p "$P/networks" "$P/tmp"
    cat >"$P/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[network]
network_backend = "netavark"
network_config_dir = "$P/networks"
default_subnet = "10.231.0.0/24"
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$P/events.log"
runtime = "runc"
tmp_dir = "$P/tmp"
EOF
    printf '[storage]\ndriver = "overlay"\ngraphroot = "%s/graph"\nrunroot = "%s/run"\n' "$P" "$P" >"$P/storage.conf"
    export CONTAINERS_CONF=$P/containers.conf CONTAINERS_STORAGE_CONF=$P/storage.conf
    PODMAN_ON=1
    if podman import -q "$BB_TAR" localhost/bench-bb >/dev/null 2>"$RES/podman-import.log" &&
        podman run --rm --network bridge localhost/bench-bb /bin/true >"$RES/podman-probe.log" 2>&1; then
        :
    else
        note "podman does not run here: $(tail -1 "$RES/podman-import.log" "$RES/podman-probe.log" 2>/dev/null | tr '\n' ' ')"
        PODMAN_ON=""
    fi
elif [ -z "${SKIP_SLOW:-}" ]; then
    note "podman is not installed (apt-get install podman): no podman rows"
fi

# docker: a private dockerd with docker's default networking, inside a network namespace of
# its own (lib.sh's start_dockerd net); the CLI reaches it on its unix socket under $B, and
# DNS=(nsenter ...) runs a command in that namespace. The rows need `run -p` to work.
if [ -z "${SKIP_SLOW:-}" ] && command -v dockerd >/dev/null && [ -x /usr/bin/docker ]; then
    if ! start_dockerd "$B/docker" net; then
        note "no docker rows: $DOCKERD_WHY"
    elif "${DOCKER_CMD[@]}" import "$BB_TAR" bench-bb >"$RES/docker-import.log" 2>&1 &&
        "${DOCKER_CMD[@]}" run --rm -p 127.0.0.1::80 bench-bb /bin/true >"$RES/docker-probe.log" 2>&1; then
        DOCKER_ON=1
        DNS=(nsenter "--net=/proc/$DOCKERD_PID/ns/net" --)
    else
        note "no docker rows: docker run -p fails here: $(tail -qn1 "$RES/docker-import.log" "$RES/docker-probe.log" 2>/dev/null | tr '\n' ' ')"
        stop_dockerd
    fi
elif [ -z "${SKIP_SLOW:-}" ]; then
    note "docker is not installed (apt-get install docker.io): no docker rows"
fi

# ---------------------------------------------------------------- start
# The rows take turns: ROUNDS rounds, each starting one row later (as bench/run.sh), so that
# other work on a shared machine weighs on them alike.
ROWS=()
add() { ROWS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"); } # add KEY LABEL RUNS CMD
add none "wharf --network none" "$RUNS" "$W run --rm --network none bb:1 /bin/true"
add bridge "wharf (default: bridge)" "$RUNS" "$W run --rm bb:1 /bin/true"
add port "wharf -p 127.0.0.1::80" "$RUNS" "$W run --rm -p 127.0.0.1::80 bb:1 /bin/true"
if [ -n "$NETAVARK_ON" ]; then
    add nbridge "wharf, netavark: bridge" "$RUNS_SLOW" "$N run --rm bb:1 /bin/true"
    add nport "wharf, netavark: -p" "$RUNS_SLOW" "$N run --rm -p 127.0.0.1::80 bb:1 /bin/true"
fi
if [ -n "$PODMAN_ON" ]; then
    add pnone "podman --network none" "$RUNS_SLOW" "podman run --rm --network none localhost/bench-bb /bin/true"
    add pbridge "podman --network bridge" "$RUNS_SLOW" "podman run --rm --network bridge localhost/bench-bb /bin/true"
    add pport "podman -p 127.0.0.1::80" "$RUNS_SLOW" "podman run --rm --network bridge -p 127.0.0.1::80 localhost/bench-bb /bin/true"
fi
if [ -n "$DOCKER_ON" ]; then
    add dnone "docker --network none" "$RUNS_SLOW" "${DOCKER_CMD[*]} run --rm --network none bench-bb /bin/true"
    add dbridge "docker (default: bridge)" "$RUNS_SLOW" "${DOCKER_CMD[*]} run --rm bench-bb /bin/true"
    add dport "docker -p 127.0.0.1::80" "$RUNS_SLOW" "${DOCKER_CMD[*]} run --rm -p 127.0.0.1::80 bench-bb /bin/true"
fi

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
say "start: $ROUNDS rounds"
declare -A FAILED=()
n=${#ROWS[@]}
for ((r = 0; r < ROUNDS; r++)); do
    for ((i = 0; i < n; i++)); do
        IFS=$'\t' read -r key label runs cmd <<<"${ROWS[$(( (i + r) % n ))]}"
        [ -n "${FAILED[$key]:-}" ] && continue
        [ "$r" = 0 ] && echo "   $label: $cmd" >&2
        per=$(( (runs + ROUNDS - 1) / ROUNDS ))
        if ! hyperfine -N --warmup 1 --runs "$per" --export-json "$RES/start-$key-r$r.json" "$cmd" >"$RES/start-$key.log" 2>&1; then
            FAILED[$key]=1
            note "$label failed: $(tail -3 "$RES/start-$key.log" | tr '\n' ' ')"
        fi
    done
done

# ---------------------------------------------------------------- transfer
say "transfer: $XFER_MB MB, $XFER_RUNS fetches per row"
mkdir -p "$B/www"
head -c "$((XFER_MB * 1024 * 1024))" /dev/urandom >"$B/www/big" || exit 1
# free_port [PREFIX...]: a free port on 127.0.0.1 (of the namespace PREFIX, e.g. nsenter, runs in)
free_port() { "$@" python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# await_http PORT [PREFIX...]: until GET / answers (the server starts after `run -d` returns)
await_http() {
    local _
    for _ in $(seq 1 100); do
        "${@:2}" curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    return 1
}

# XROWS: KEY, LABEL, PORT, where curl runs (host | docker: in dockerd's namespace), and the
# key of the loopback row of that namespace (the ratio's reference)
XROWS=()
xadd() { XROWS+=("$1"$'\t'"$2"$'\t'"$3"$'\t'"$4"$'\t'"$5"); }
HPORT=$(free_port)
busybox httpd -f -p "127.0.0.1:$HPORT" -h "$B/www" &
HTTPD_PIDS+=($!)
if await_http "$HPORT"; then xadd loop "host loopback (busybox httpd)" "$HPORT" host loop; else note "the host httpd did not answer"; fi

if $W run -d --name netbench-httpd -p 127.0.0.1::80 -v "$B/www:/www:ro" bb:1 httpd -f -p 80 -h /www >/dev/null 2>"$RES/wharf-httpd.log" &&
    WPORT=$($W port netbench-httpd 80/tcp | head -1 | sed 's/.*://') && await_http "$WPORT"; then
    xadd wport "wharf -p 127.0.0.1::80" "$WPORT" host loop
else
    note "the wharf httpd container did not answer: $(tail -2 "$RES/wharf-httpd.log" | tr '\n' ' ')"
fi
if [ -n "$NETAVARK_ON" ] &&
    $N run -d --name netbench-httpd -p 127.0.0.1::80 -v "$B/www:/www:ro" bb:1 httpd -f -p 80 -h /www >/dev/null 2>"$RES/wharf-n-httpd.log" &&
    NPORT=$($N port netbench-httpd 80/tcp | head -1 | sed 's/.*://') && await_http "$NPORT"; then
    xadd nport "wharf, netavark: -p" "$NPORT" host loop
elif [ -n "$NETAVARK_ON" ]; then
    note "the wharf (netavark) httpd container did not answer: $(tail -2 "$RES/wharf-n-httpd.log" | tr '\n' ' ')"
fi
if [ -n "$PODMAN_ON" ] &&
    podman run -d --name netbench-httpd --network bridge -p 127.0.0.1::80 -v "$B/www:/www:ro" localhost/bench-bb httpd -f -p 80 -h /www >/dev/null 2>"$RES/podman-httpd.log" &&
    PPORT=$(podman port netbench-httpd 80/tcp | head -1 | sed 's/.*://') && await_http "$PPORT"; then
    xadd pport "podman -p 127.0.0.1::80" "$PPORT" host loop
elif [ -n "$PODMAN_ON" ]; then
    note "the podman httpd container did not answer: $(tail -2 "$RES/podman-httpd.log" | tr '\n' ' ')"
fi
# docker's published port is served in dockerd's namespace (for 127.0.0.1 by docker-proxy, its
# userland relay): curl runs there, and the same busybox httpd on that namespace's loopback is
# its reference.
if [ -n "$DOCKER_ON" ]; then
    DLPORT=$(free_port "${DNS[@]}")
    "${DNS[@]}" busybox httpd -f -p "127.0.0.1:$DLPORT" -h "$B/www" &
    HTTPD_PIDS+=($!)
    if await_http "$DLPORT" "${DNS[@]}"; then
        xadd dloop "loopback in docker's netns" "$DLPORT" docker dloop
    else
        note "the httpd on the loopback of dockerd's namespace did not answer"
    fi
    if "${DOCKER_CMD[@]}" run -d --name netbench-httpd -p 127.0.0.1::80 -v "$B/www:/www:ro" bench-bb httpd -f -p 80 -h /www >/dev/null 2>"$RES/docker-httpd.log" &&
        DPORT=$("${DOCKER_CMD[@]}" port netbench-httpd 80/tcp | head -1 | sed 's/.*://') && await_http "$DPORT" "${DNS[@]}"; then
        xadd dport "docker -p 127.0.0.1::80" "$DPORT" docker dloop
    else
        note "the docker httpd container did not answer: $(tail -2 "$RES/docker-httpd.log" | tr '\n' ' ')"
    fi
fi

# XFER_RUNS rounds, the rows taking turns; each fetch's MB/s (curl's own figure) in a file.
for ((r = 0; r < XFER_RUNS; r++)); do
    for x in "${XROWS[@]}"; do
        IFS=$'\t' read -r key label port ns _ <<<"$x"
        pre=()
        [ "$ns" = docker ] && pre=("${DNS[@]}")
        s=$("${pre[@]}" curl -s -o /dev/null --max-time 120 -w '%{size_download} %{speed_download}' "http://127.0.0.1:$port/big") ||
            { note "$label: a fetch failed"; continue; }
        read -r size speed <<<"$s"
        [ "$size" = "$((XFER_MB * 1024 * 1024))" ] || { note "$label: $size bytes instead of $((XFER_MB * 1024 * 1024))"; continue; }
        awk -v s="$speed" 'BEGIN { printf "%.1f\n", s / 1e6 }' >>"$RES/xfer-$key.txt"
    done
done
$W rm -f netbench-httpd >/dev/null 2>&1
[ -z "$NETAVARK_ON" ] || $N rm -f netbench-httpd >/dev/null 2>&1
[ -z "$PODMAN_ON" ] || podman rm -f -t 0 netbench-httpd >/dev/null 2>&1
[ -z "$DOCKER_ON" ] || "${DOCKER_CMD[@]}" rm -f netbench-httpd >/dev/null 2>&1

# ---------------------------------------------------------------- results
say "results"
# median, min and max in ms over every run of a row
STATS='[.[].results[0].times[]] | sort | map(. * 1000) | [(if length % 2 == 1 then .[length / 2 | floor] else (.[length / 2 - 1] + .[length / 2]) / 2 end), .[0], .[-1], length] | @tsv'
med_of() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
{
    echo "# bench/net.sh ($(date -u +%Y-%m-%dT%H:%M:%SZ)), $(nproc) cores, kernel $(uname -r), netavark $(/usr/lib/podman/netavark --version 2>/dev/null | cut -d' ' -f2)${DOCKER_ON:+, $(dockerd --version | cut -d, -f1)}, load $LOAD_START at start, $(cut -d' ' -f1-3 /proc/loadavg) at end"
    echo
    printf '| %-26s | %9s | %8s | %8s | %4s | %12s |\n' start "median ms" "min ms" "max ms" runs "× wharf none"
    printf '|%s|\n' "----------------------------|-----------|----------|----------|------|--------------"
    NONE=""
    for row in "${ROWS[@]}"; do
        IFS=$'\t' read -r key label runs cmd <<<"$row"
        [ -n "${FAILED[$key]:-}" ] && continue
        IFS=$'\t' read -r med mn mx cnt < <(jq -rs "$STATS" "$RES"/start-"$key"-r*.json)
        [ "$key" = none ] && NONE=$med
        ratio=$(awk -v a="$med" -v w="${NONE:-0}" 'BEGIN { if (w > 0) printf "%.2f", a / w; else print "-" }')
        printf '| %-26s | %9.1f | %8.1f | %8.1f | %4s | %12s |\n' "$label" "$med" "$mn" "$mx" "$cnt" "$ratio"
    done
    echo
    printf '| %-30s | %12s | %8s | %8s | %4s | %10s |\n' "transfer ($XFER_MB MB)" "median MB/s" min max runs "× loopback"
    printf '|%s|\n' "--------------------------------|--------------|----------|----------|------|------------"
    declare -A XMED=()
    for x in "${XROWS[@]}"; do
        IFS=$'\t' read -r key label port ns ref <<<"$x"
        [ -s "$RES/xfer-$key.txt" ] || continue
        med=$(med_of <"$RES/xfer-$key.txt")
        XMED[$key]=$med
        ratio=$(awk -v a="$med" -v w="${XMED[$ref]:-0}" 'BEGIN { if (w > 0) printf "%.2f", a / w; else print "-" }')
        printf '| %-30s | %12.1f | %8.1f | %8.1f | %4s | %10s |\n' "$label" "$med" \
            "$(sort -n "$RES/xfer-$key.txt" | head -1)" "$(sort -n "$RES/xfer-$key.txt" | tail -1)" \
            "$(wc -l <"$RES/xfer-$key.txt")" "$ratio"
    done
    print_notes
} | tee "$B/net-table.md"
cp "$B/net-table.md" /tmp/wharf-bench-net-table.md
