#!/usr/bin/env bash
# build-syscall-probe.sh OUT_DIR — compiles scripts/syscall-probe.c into OUT_DIR/syscall-probe,
# static (it runs inside busybox containers). Used by tests/seccomp.rs; needs gcc and libc6-dev
# (libc.a). Nothing is committed: the binary is built at test time.
set -euo pipefail
out=${1:?usage: build-syscall-probe.sh OUT_DIR}
src="$(dirname "${BASH_SOURCE[0]}")/syscall-probe.c"
mkdir -p "$out"
tmp="$out/.syscall-probe.$$"
gcc -static -O1 -Wall -Werror -o "$tmp" "$src"
mv -f "$tmp" "$out/syscall-probe"
