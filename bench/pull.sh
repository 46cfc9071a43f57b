#!/usr/bin/env bash
# pull.sh - wharf pull against skopeo copy (alone, and followed by tar -x of the layers) and
# podman pull, and wharf push against skopeo copy, from/to Debian's docker-registry on
# 127.0.0.1, with one >= 200 MB image of 6 layers, measured in one run.
#
#   bash bench/pull.sh              # as root; builds wharf --release, prints a table
#
# Knobs (environment):
#   BENCH_DIR=/tmp/wharf-bench-pull  everything this script writes (the image is cached here)
#   LAYER_MB=40                      file data per layer (5 layers of a deterministic sample
#                                    of the host's /usr, over a busybox base)
#   RUNS=3                           timed runs per row (the median is shown)
#   SKIP_INSTALL=1                   do not apt-get install docker-registry skopeo umoci
#   WHARF=path                       the wharf binary (default: cargo build --release)
#
# Every run starts from a fresh state root / target dir, after `sync`. Pushes go to a new
# repository each run: of the registry the image was pulled from (its blobs can be mounted
# from there), and of a second registry that never saw the image (each layer must be sent;
# wharf pushes from a fresh root each run, so it makes every blob again). The registries are
# stopped by PID on exit. Nothing talks to anything but 127.0.0.1.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"
B=${BENCH_DIR:-/tmp/wharf-bench-pull}
LAYER_MB=${LAYER_MB:-40}
RUNS=${RUNS:-3}
RES=$B/results

need_root "wharf keeps owners; tar -x too"
mkdir -p "$B" "$RES"
install_missing docker-registry skopeo umoci busybox-static
need_tools docker-registry skopeo umoci tar zcat python3
build_wharf

REG_PID=""
REG2_PID=""
cleanup() {
    if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
    if [ -n "$REG2_PID" ]; then kill "$REG2_PID" 2>/dev/null || true; wait "$REG2_PID" 2>/dev/null || true; fi
    for d in "$B"/run-*; do [ -d "$d" ] && rm -rf "$d"; done
}
trap cleanup EXIT

# ------------------------------------------------------------------ the image (cached)
L=$B/layout
if [ ! -f "$B/image.done" ]; then
    say "building the image: busybox + 5 layers of ${LAYER_MB} MB"
    rm -rf "$L" "$B/src"
    bash "$REPO/scripts/make-rootfs.sh" "$B/rootfs" >/dev/null
    umoci init --layout "$L"
    umoci new --image "$L:big"
    umoci raw add-layer --image "$L:big" "$B/rootfs/busybox-rootfs.tar"
    # A deterministic sample of /usr: files sorted by path, cut into LAYER_MB chunks.
    python3 - "$B/src" "$LAYER_MB" <<'EOF'
import os, sys
out, mb = sys.argv[1], int(sys.argv[2])
files = []
for root, dirs, names in os.walk("/usr"):
    dirs.sort()
    for n in sorted(names):
        p = os.path.join(root, n)
        if os.path.isfile(p) and not os.path.islink(p):
            files.append((p, os.path.getsize(p)))
layer, size = 1, 0
lists = {i: [] for i in range(1, 6)}
for p, s in files:
    if layer > 5:
        break
    lists[layer].append(p.lstrip("/"))
    size += s
    if size >= mb << 20:
        layer, size = layer + 1, 0
os.makedirs(out, exist_ok=True)
for i, l in lists.items():
    open(os.path.join(out, f"list{i}"), "w").write("\n".join(l) + "\n")
EOF
    for i in 1 2 3 4 5; do
        tar -C / --owner=0 --group=0 -cf "$B/src/layer$i.tar" -T "$B/src/list$i" 2>/dev/null
        umoci raw add-layer --history.created_by "layer $i" --image "$L:big" "$B/src/layer$i.tar"
        rm -f "$B/src/layer$i.tar"
    done
    umoci config --image "$L:big" --config.cmd /bin/sh
    touch "$B/image.done"
fi
data_mb=$(du -sm "$L/blobs" | cut -f1)

# ------------------------------------------------------------------ the registries
# start_registry NAME: a docker-registry on a free port with its storage under $B/NAME;
# sets PORT and STARTED_PID.
start_registry() {
    local name=$1
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -rf "$B/$name"; mkdir -p "$B/$name"
    cat >"$B/$name/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $B/$name/storage
http:
  addr: 127.0.0.1:$PORT
EOF
    docker-registry serve "$B/$name/config.yml" >"$RES/$name.log" 2>&1 &
    STARTED_PID=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
}
start_registry registry; REG_PID=$STARTED_PID; H=127.0.0.1:$PORT
start_registry registry2; REG2_PID=$STARTED_PID; H2=127.0.0.1:$PORT
skopeo copy -q --dest-tls-verify=false "oci:$L:big" "docker://$H/bench/big:1"

# ------------------------------------------------------------------ timing
# timed NAME PREPARE COMMAND: runs PREPARE then COMMAND $RUNS times, records the median.
declare -A MEDIAN
timed() {
    local name=$1 prep=$2 cmd=$3 i t0 t1 times=()
    say "$name"
    for i in $(seq "$RUNS"); do
        export RUN=$i
        bash -c "$prep" >/dev/null 2>&1
        sync
        t0=$(date +%s%N)
        bash -c "$cmd" >"$RES/$name.log" 2>&1 || { echo "$name failed: $(tail -3 "$RES/$name.log")" >&2; return 1; }
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000000 )))
        echo "   run $i: ${times[-1]} ms" >&2
    done
    MEDIAN[$name]=$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(( (RUNS + 1) / 2 ))p")
}

export B H H2 WHARF
timed "wharf pull" 'rm -rf "$B/run-wharf"' \
    '"$WHARF" --root "$B/run-wharf" pull -q "$H/bench/big:1"'
timed "skopeo copy" 'rm -rf "$B/run-skopeo"' \
    'skopeo copy -q --src-tls-verify=false "docker://$H/bench/big:1" "oci:$B/run-skopeo:big"'
timed "skopeo copy + tar -x" 'rm -rf "$B/run-skopeo-x"' '
    set -e
    mkdir -p "$B/run-skopeo-x"
    skopeo copy -q --src-tls-verify=false "docker://$H/bench/big:1" "oci:$B/run-skopeo-x/oci:big"
    m=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[\"manifests\"][0][\"digest\"][7:])" "$B/run-skopeo-x/oci/index.json")
    for l in $(python3 -c "import json,sys; print(\" \".join(x[\"digest\"][7:] for x in json.load(open(sys.argv[1]))[\"layers\"]))" "$B/run-skopeo-x/oci/blobs/sha256/$m"); do
        mkdir -p "$B/run-skopeo-x/layers/$l"
        zcat "$B/run-skopeo-x/oci/blobs/sha256/$l" | tar -C "$B/run-skopeo-x/layers/$l" -xf -
    done'
if command -v podman >/dev/null; then
    timed "podman pull" 'rm -rf "$B/run-podman"' \
        'podman --root "$B/run-podman/root" --runroot "$B/run-podman/run" pull -q --tls-verify=false "$H/bench/big:1"' ||
        note "podman pull failed: see $RES/podman pull.log"
else
    note "podman is not installed: no podman row"
fi
"$WHARF" --root "$B/run-push" pull -q "$H/bench/big:1" >/dev/null
timed "wharf push" ':' \
    '"$WHARF" --root "$B/run-push" push -q "$H/bench/big:1" "$H/bench/wharf-push-$RUN:1"'
timed "skopeo copy (push)" ':' \
    'skopeo copy -q --dest-tls-verify=false "oci:$B/layout:big" "docker://$H/bench/skopeo-push-$RUN:1"'
# The second registry is emptied before each of these runs (its storage is read from disk at
# each request): skopeo's blob cache otherwise mounts run 1's blobs into runs 2 and 3.
timed "wharf push (new registry)" 'rm -rf "$B/registry2/storage" "$B/run-push2"; "$WHARF" --root "$B/run-push2" pull -q "$H/bench/big:1"' \
    '"$WHARF" --root "$B/run-push2" push -q "$H/bench/big:1" "$H2/bench/wharf-push-$RUN:1"'
timed "skopeo copy (push, new registry)" 'rm -rf "$B/registry2/storage"' \
    'skopeo copy -q --dest-tls-verify=false "oci:$B/layout:big" "docker://$H2/bench/skopeo-push-$RUN:1"'

# ------------------------------------------------------------------ results
echo
echo "image: 6 layers, ${data_mb} MB of compressed blobs; median of $RUNS runs"
for k in "wharf pull" "skopeo copy" "skopeo copy + tar -x" "podman pull" "wharf push" "skopeo copy (push)" \
    "wharf push (new registry)" "skopeo copy (push, new registry)"; do
    [ -n "${MEDIAN[$k]:-}" ] && printf '%-34s %8s ms\n' "$k" "${MEDIAN[$k]}"
done
if [ -n "${MEDIAN[wharf pull]:-}" ] && [ -n "${MEDIAN[skopeo copy + tar -x]:-}" ]; then
    python3 -c "import sys; print(f'wharf pull / (skopeo copy + tar -x) = {int(sys.argv[1])/int(sys.argv[2]):.2f}')" \
        "${MEDIAN[wharf pull]}" "${MEDIAN[skopeo copy + tar -x]}"
fi
print_notes
