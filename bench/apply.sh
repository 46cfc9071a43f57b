#!/usr/bin/env bash
# bench/apply.sh — declarative apply, against docker compose when it is there:
#
#   no-op 200     `wharf apply` of a 200-container project that is already converged
#                 (target: median at most 50 ms), vs `docker compose up -d` of the same
#                 project, also converged
#   create 50     `wharf apply` of a 50-container project from no containers (the image is
#                 imported already), vs `docker compose up -d` after `docker compose down`
#
# Every container is a busybox shell sleeping (it exits on SIGTERM), with a 32 MiB memory
# limit and no network. Needs root, hyperfine and jq (apt-get installs them, busybox-static,
# docker.io and Debian's docker-compose when missing, unless SKIP_INSTALL=1).
#
# Knobs: BENCH_DIR=/tmp/wharf-bench  RUNS=30  RUNS_SLOW=5  N_NOOP=200  N_CREATE=50
#        SECTIONS="wharf docker" (which rows)  SKIP_DOCKER=1 (wharf rows only)
#        COMPOSE_PARALLEL_LIMIT=8: docker-compose v1 (Python) deadlocks here with its default
#        of 64 parallel operations on a 200-service up; every compose call also runs under
#        `timeout 900`, so a hung one fails its row instead of the script.
#
# dockerd, when used, runs on a private socket and data root with no networking, and is
# stopped by PID on exit. `docker compose` (v2) is used when the client has it, else
# `docker-compose` (v1, Debian's package); with neither, the docker rows are skipped with a
# note.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench}
RUNS=${RUNS:-30}
RUNS_SLOW=${RUNS_SLOW:-5}
N_NOOP=${N_NOOP:-200}
N_CREATE=${N_CREATE:-50}
SECTIONS=${SECTIONS:-wharf docker}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
export COMPOSE_PARALLEL_LIMIT=${COMPOSE_PARALLEL_LIMIT:-8}
A=$B/apply
RES=$B/results
need_root
mkdir -p "$A" "$RES"
rm -f "$RES"/apply-*.json

if [ -z "${SKIP_INSTALL:-}" ]; then
    want=(hyperfine jq busybox-static)
    [ -z "${SKIP_DOCKER:-}" ] && want+=(docker.io)
    [ -z "${SKIP_DOCKER:-}" ] && ! docker compose version >/dev/null 2>&1 && want+=(docker-compose)
    install_missing "${want[@]}"
fi
need_tools hyperfine jq

say "build wharf (release) and the rootfs"
build_wharf
"$REPO/scripts/make-rootfs.sh" "$B/fixtures" || exit 1
cp -f "$B/fixtures/busybox-rootfs.tar" "$A/busybox.tar"
WROOT=$A/wharf-root
loopback_root "$WROOT"

# gen_wharf NAME N: a project of N containers in $A/NAME.toml
gen_wharf() {
    local f=$A/$1.toml i
    {
        printf 'project = "%s"\n\n[images.bb]\nsource = "busybox.tar"\ntag = "benchbb:1"\n' "$1"
        printf 'env = { PATH = "/bin" }\n\n'
        for i in $(seq -w 1 "$2"); do
            printf '[containers.%s-%s]\nimage = "benchbb:1"\n' "$1" "$i"
            printf 'command = ["/bin/sh", "-c", "trap '"'"'exit 0'"'"' TERM; while :; do sleep 1; done"]\n'
            printf 'limits = { memory = "32MiB" }\n\n'
        done
    } >"$f"
}
# gen_compose NAME N: the same project for docker compose in $A/NAME.compose.yml
gen_compose() {
    local f=$A/$1.compose.yml i
    {
        printf 'version: "2.4"\nservices:\n'
        for i in $(seq -w 1 "$2"); do
            printf '  %s-%s:\n    image: benchbb:1\n    network_mode: none\n    mem_limit: 32m\n' "$1" "$i"
            printf '    command: ["/bin/sh", "-c", "trap '"'"'exit 0'"'"' TERM; while :; do sleep 1; done"]\n'
        done
    } >"$f"
}
gen_wharf noop "$N_NOOP"; gen_wharf fresh "$N_CREATE"
gen_compose noop "$N_NOOP"; gen_compose fresh "$N_CREATE"

DOCKERD_PID=""
COMPOSE=""
cleanup() {
    "$WHARF" --root "$WROOT" down -t 0 -f "$A/noop.toml" >/dev/null 2>&1
    "$WHARF" --root "$WROOT" down -t 0 -f "$A/fresh.toml" >/dev/null 2>&1
    if [ -n "$COMPOSE" ]; then
        $COMPOSE -p noop -f "$A/noop.compose.yml" down -t 0 >/dev/null 2>&1
        $COMPOSE -p fresh -f "$A/fresh.compose.yml" down -t 0 >/dev/null 2>&1
    fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
        kill -TERM "$DOCKERD_PID"
        for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ROWS=()
hf() { # hf KEY LABEL RUNS PREPARE CMD
    say "$2"
    local prep=()
    [ -n "$4" ] && prep=(--prepare "$4")
    hyperfine -N --style basic --warmup 1 --runs "$3" "${prep[@]}" --export-json "$RES/apply-$1.json" -n "$2" "$5" >&2 &&
        ROWS+=("$1|$2")
}

if want wharf; then
say "wharf: converge the $N_NOOP-container project once (not timed)"
"$WHARF" --root "$WROOT" apply -q -f "$A/noop.toml" | tail -1
"$WHARF" --root "$WROOT" apply -q -f "$A/noop.toml" | tail -1   # caches the source digest
hf wharf-noop "wharf apply (no-op, $N_NOOP)" "$RUNS" "" "$WHARF --root $WROOT apply -q -f $A/noop.toml"
hf wharf-diff "wharf diff (no-op, $N_NOOP)" "$RUNS" "" "$WHARF --root $WROOT diff -f $A/noop.toml"
"$WHARF" --root "$WROOT" apply -q -f "$A/fresh.toml" >/dev/null
hf wharf-fresh "wharf apply ($N_CREATE from empty)" "$RUNS_SLOW" \
    "$WHARF --root $WROOT down -t 0 -f $A/fresh.toml" "$WHARF --root $WROOT apply -q -f $A/fresh.toml"
fi

if want docker && [ -z "${SKIP_DOCKER:-}" ] && command -v dockerd >/dev/null; then
    D=$B/docker
    mkdir -p "$D"
    echo '{}' >"$D/daemon.json"
    say "start a private dockerd"
    dockerd --config-file "$D/daemon.json" --data-root "$D/data" --exec-root "$D/exec" --pidfile "$D/dockerd.pid" \
        -H "unix://$D/docker.sock" --bridge=none --iptables=false --ip6tables=false --ip-masq=false \
        --storage-driver overlay2 --log-level warn >"$D/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    export DOCKER_HOST=unix://$D/docker.sock
    up=""
    for _ in $(seq 1 150); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; docker version >/dev/null 2>&1 && { up=1; break; }; sleep 0.2; done
    if docker compose version >/dev/null 2>&1; then COMPOSE="timeout 900 docker compose"
    elif command -v docker-compose >/dev/null; then COMPOSE="timeout 900 docker-compose"
        note "docker compose (v2) is not installed: the docker rows use Debian's docker-compose $(docker-compose version --short 2>/dev/null) (v1, Python)"
    fi
    if [ -z "$up" ]; then
        note "dockerd did not come up: $(tail -1 "$D/dockerd.log")"
    elif [ -z "$COMPOSE" ]; then
        note "neither docker compose nor docker-compose is installed: docker rows skipped"
    else
        docker image inspect benchbb:1 >/dev/null 2>&1 || docker import "$A/busybox.tar" benchbb:1 >/dev/null
        say "docker: converge the $N_NOOP-container project once (not timed)"
        $COMPOSE -p noop -f "$A/noop.compose.yml" up -d >/dev/null 2>&1 ||
            note "the first docker compose up -d of $N_NOOP services failed or timed out"
        echo "   $(docker ps -q | wc -l) docker containers running" >&2
        hf docker-noop "${COMPOSE#timeout 900 } up -d (no-op, $N_NOOP)" "$RUNS_SLOW" "" "$COMPOSE -p noop -f $A/noop.compose.yml up -d"
        $COMPOSE -p noop -f "$A/noop.compose.yml" down -t 0 >/dev/null 2>&1
        hf docker-fresh "${COMPOSE#timeout 900 } up -d ($N_CREATE from empty)" "$RUNS_SLOW" \
            "$COMPOSE -p fresh -f $A/fresh.compose.yml down -t 0" "$COMPOSE -p fresh -f $A/fresh.compose.yml up -d"
    fi
fi

say "results (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
med() { jq -r '.results[0].median * 1000' "$RES/apply-$1.json"; }
printf '%-44s %10s %10s %10s\n' row median_ms min_ms max_ms
for r in "${ROWS[@]}"; do
    k=${r%%|*}; l=${r#*|}
    printf '%-44s %10.1f %10.1f %10.1f\n' "$l" "$(med "$k")" \
        "$(jq -r '.results[0].min * 1000' "$RES/apply-$k.json")" "$(jq -r '.results[0].max * 1000' "$RES/apply-$k.json")"
done
if [ -f "$RES/apply-wharf-noop.json" ]; then
    m=$(med wharf-noop)
    awk -v m="$m" 'BEGIN { printf "no-op target (median <= 50 ms): %s\n", (m <= 50 ? "met" : "MISSED") }'
fi
for k in noop fresh; do
    if [ -f "$RES/apply-docker-$k.json" ] && [ -f "$RES/apply-wharf-$k.json" ]; then
        awk -v d="$(med docker-$k)" -v w="$(med wharf-$k)" -v k="$k" \
            'BEGIN { printf "%s: docker/wharf = %.1fx\n", k, d / w }'
    fi
done
print_notes
