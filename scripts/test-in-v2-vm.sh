#!/usr/bin/env bash
# test-in-v2-vm.sh — prove cgroup v2: run the cgroup integration tests (tests/cgroup.rs) and
# the runtime ones (tests/run*.rs, when present) as root inside a throw-away VM whose kernel
# has only cgroup v2, using ../shared/vm/run-in-v2-vm.sh next to this repository.
#
#   scripts/test-in-v2-vm.sh [TEST-BINARY-ARGS...]     e.g. scripts/test-in-v2-vm.sh oom
#   V2VM_TARGETS="network" scripts/test-in-v2-vm.sh      only these test targets (tests/NAME.rs)
#
# The test binaries are built on the host (`cargo test --no-run`) and run in the guest from
# target/, which the VM shares read-write at the same path. Each binary runs with
# --test-threads=1 (the guest has 2 emulated CPUs, ~17x slower than the host). Temporary
# dirs (state roots, overlay upper/work) go to the guest's tmpfs /tmp. The guest has no
# network and stdin is /dev/null, so the rootfs fixtures are built on the host first.
#
# tests/network.rs is not among the default targets (its tests are slow under emulation, and
# its 200-run loop is for the host: `--skip two_hundred` leaves it out). The guest kernel
# (Debian 6.1) has bridge, veth, nf_tables, nf_nat, nf_conntrack and the xt_* matches as
# modules, but the VM loads only virtio, 9p and overlay from its initramfs (the guest's / is
# the host's, which has no /lib/modules for it). So with the network target, this script
# downloads the guest kernel's package (apt-get download, nothing installed), unpacks its
# modules under target/tmp/v2vm-modules and the guest loads the ones bridge networks need
# (`modprobe -d`) before the tests run:
#   V2VM_TARGETS=network scripts/test-in-v2-vm.sh --skip two_hundred
#
# V2VM_BIN_TIMEOUT (600 s): what one test binary gets in the guest; one that times out runs
# once more (printed as HUNG), one that fails does not.
#
# Exit status: 0 when every binary passed, or when ../shared/vm is absent ("skipped");
# otherwise the first failure's (124: VM_TIMEOUT, default 1800 s; 125: the VM failed).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# ../shared/vm next to the checkout, or next to its parent (a worktree under wt/).
vm="$(dirname "$repo")/shared/vm/run-in-v2-vm.sh"
[ -f "$vm" ] || vm="$(dirname "$(dirname "$repo")")/shared/vm/run-in-v2-vm.sh"
if [ ! -f "$vm" ]; then
    echo "skipped: ../shared/vm not found (looked for $vm)"
    exit 0
fi
cd "$repo"
export VM_TIMEOUT=${VM_TIMEOUT:-1800}

# The test targets: cgroup, plus the runtime engineer's run*.
targets=(cgroup)
for f in tests/run*.rs; do
    [ -e "$f" ] && targets+=("$(basename "$f" .rs)")
done
if [ -n "${V2VM_TARGETS:-}" ]; then read -r -a targets <<< "$V2VM_TARGETS"; fi
args=()
for t in "${targets[@]}"; do args+=(--test "$t"); done

echo "test-in-v2-vm: building ${targets[*]} on the host" >&2
json=$(cargo test --no-run --message-format=json "${args[@]}")

# "name<TAB>executable" of each test artifact.
list_tests() {
    if command -v jq >/dev/null; then
        jq -r 'select(.reason == "compiler-artifact" and .executable != null
                      and (.target.kind | index("test")))
               | "\(.target.name)\t\(.executable)"'
    else
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"] + "\t" + m["executable"])'
    fi
}
# In the order of targets: cgroup first, it is quick and the point of this script.
artifacts=$(printf '%s\n' "$json" | list_tests)
bins=()
for t in "${targets[@]}"; do
    while IFS=$'\t' read -r name exe; do
        [ "$name" = "$t" ] && bins+=("$exe")
    done <<< "$artifacts"
done
[ ${#bins[@]} -gt 0 ] || { echo "test-in-v2-vm: no test binaries found" >&2; exit 1; }

# The target dir must be shared with the guest: it is when it lies inside the repo.
target_dir=$(cargo metadata --format-version 1 --no-deps |
    if command -v jq >/dev/null; then jq -r .target_directory
    else python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'; fi)
case $target_dir in
    "$repo"/*) ;;
    *) export VM_RW="${VM_RW:+$VM_RW:}$target_dir" ;;
esac

# Bridge networks in the guest: the guest kernel's own network modules (see the header).
moddir="" kver=""
if [[ " ${targets[*]} " == *" network "* ]]; then
    cache=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/run-in-v2-vm}
    [ -s "$cache/default-kpkg" ] || "$vm" --setup >&2
    kpkg=$(cat "$cache/default-kpkg")
    kver=$(cat "$cache/$kpkg/kver")
    moddir="$target_dir/tmp/v2vm-modules"
    if [ ! -f "$moddir/.done-$kver" ]; then
        echo "test-in-v2-vm: fetching the network modules of $kpkg" >&2
        rm -rf "$moddir"
        mkdir -p "$moddir/dl"
        (cd "$moddir/dl" && apt-get download "$kpkg" >&2)
        dpkg -x "$moddir"/dl/"${kpkg}"_*.deb "$moddir"
        rm -rf "$moddir/dl" "$moddir/boot"
        depmod -b "$moddir" "$kver"
        touch "$moddir/.done-$kver"
    fi
fi

# Runtime tests need the rootfs fixtures; build them here, where there is a network.
# Under the lock the test binaries take (tests/common/mod.rs), so that a host `cargo test`
# running alongside (.ci/run) never sees them half built.
if [ "${targets[*]}" != cgroup ]; then
    fx="$target_dir/tmp/fixtures"
    mkdir -p "$fx"
    flock "$fx/.lock" sh -c '[ -f "$1/SHA256SUMS" ] || {
        echo "test-in-v2-vm: building fixtures in $1" >&2
        bash scripts/make-rootfs.sh "$1" >&2
    }' sh "$fx"
fi

guest='
rc=0
echo "guest: $(uname -r), $(stat -fc %T /sys/fs/cgroup) on /sys/fs/cgroup: $(cat /sys/fs/cgroup/cgroup.controllers)"
extra=("${@:1:$WHARF_VM_NARGS}")
shift "$WHARF_VM_NARGS"
# The binaries run from the guest'"'"'s tmpfs, bound over their paths in the guest only: an
# exec from the 9p share reads the file anew each time (wharf --version: 1.5 s against 0.3 s),
# and the tests exec wharf hundreds of times.
mkdir -p /tmp/v2bin
for f in "$WHARF_VM_BIN" "$@"; do
    c=/tmp/v2bin/$(basename "$f")
    { cp "$f" "$c" && mount --bind "$c" "$f"; } || echo "guest: $f runs from the share"
done
if [ -n "$WHARF_VM_MODDIR" ]; then
    # What the native backend needs (bridge, veth, nftables with nat, fib, ct, masquerade), and
    # what netavark'"'"'s iptables-nft needs besides.
    modprobe -d "$WHARF_VM_MODDIR" -S "$WHARF_VM_KVER" -a bridge veth nf_tables nft_chain_nat \
        nft_nat nft_masq nft_ct nft_fib_ipv4 nft_compat xt_MASQUERADE xt_nat xt_addrtype \
        xt_comment xt_conntrack xt_mark xt_multiport \
        && echo "guest: network modules loaded" || echo "guest: cannot load the network modules"
fi
# A binary gets ${V2VM_BIN_TIMEOUT:-600} s. Once (a CI run), the emulated guest stopped for good
# inside a cgroup write of tests/cgroup.rs that takes milliseconds (its rerun: 4 s for the
# file): a binary that times out says so and runs once more; one that fails does not.
for t in "$@"; do
    echo "=== $(basename "$t")"
    timeout -k 10 "$WHARF_VM_BIN_TIMEOUT" "$t" --test-threads=1 "${extra[@]}"
    r=$?
    if [ $r -eq 124 ] || [ $r -eq 137 ]; then
        echo "=== HUNG: $(basename "$t") after $WHARF_VM_BIN_TIMEOUT s; once more"
        timeout -k 10 "$WHARF_VM_BIN_TIMEOUT" "$t" --test-threads=1 "${extra[@]}"
        r=$?
    fi
    [ $r -eq 0 ] || { echo "=== FAILED: $(basename "$t") ($r)"; [ $rc -ne 0 ] || rc=$r; }
done
exit $rc'

start=$(date +%s)
echo "test-in-v2-vm: running ${#bins[@]} test binaries in the v2 VM" >&2
set +e
env TMPDIR=/tmp RUST_BACKTRACE=1 WHARF_VM_NARGS=$# WHARF_VM_BIN="$target_dir/debug/wharf" \
    WHARF_VM_MODDIR="$moddir" WHARF_VM_KVER="$kver" WHARF_VM_BIN_TIMEOUT="${V2VM_BIN_TIMEOUT:-600}" \
    "$vm" bash -c "$guest" guest "$@" "${bins[@]}"
rc=$?
set -e
echo "test-in-v2-vm: exit $rc after $(($(date +%s) - start)) s" >&2
exit $rc
