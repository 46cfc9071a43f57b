#!/usr/bin/env bash
# build-probes.sh OUT_DIR — compiles each scripts/probes/*.c into OUT_DIR/<name>, static (they
# run inside busybox containers): the attacker's side of tests/seccomp.rs and
# tests/exec_safety.rs, and the udp server of tests/network.rs. Needs gcc and libc6-dev
# (libc.a). Nothing is committed: the binaries are built at test time.
set -euo pipefail
out=${1:?usage: build-probes.sh OUT_DIR}
src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/probes"
mkdir -p "$out"
for c in "$src"/*.c; do
    name=$(basename "$c" .c)
    tmp="$out/.$name.$$"
    gcc -static -O1 -Wall -Werror -o "$tmp" "$c"
    mv -f "$tmp" "$out/$name"
done
