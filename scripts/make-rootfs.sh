#!/usr/bin/env bash
# make-rootfs.sh OUTDIR — build the test rootfs tarballs wharf's tests and benchmarks use.
#
#   OUTDIR/busybox-rootfs.tar   static busybox, its applet links, and the usual mount points
#   OUTDIR/seed-rootfs.tar      a hand-made container dir: bash ls ps cat hostname mount,
#                               plus every library ldd lists for them
#   OUTDIR/SHA256SUMS
#
# Tarballs are reproducible on one host (sorted names, mtime 0, owner 0:0). busybox-static is
# installed with apt-get when missing (as root). Nothing outside OUTDIR is written.
set -euo pipefail

out=${1:?usage: make-rootfs.sh OUTDIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

static_busybox() {
    local b
    for b in "${BUSYBOX:-}" /bin/busybox /usr/bin/busybox; do
        [ -n "$b" ] && [ -x "$b" ] || continue
        case "$(LC_ALL=C ldd "$b" 2>&1 || true)" in
            *'not a dynamic executable'*) echo "$b"; return 0 ;;
        esac
    done
    return 1
}
if ! bb_bin=$(static_busybox); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "make-rootfs: installing busybox-static" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends busybox-static >&2 ||
            { apt-get -o DPkg::Lock::Timeout=600 update -q >&2 &&
              apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends busybox-static >&2; }
    fi
    bb_bin=$(static_busybox) || { echo "make-rootfs: no static busybox; apt-get install busybox-static" >&2; exit 1; }
fi

pack() { # pack DIR OUT.tar: deterministic tar of DIR's content
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2.tmp" . && mv -f "$2.tmp" "$2"
}

base_dirs() {
    local d=$1
    mkdir -p "$d"/{bin,dev,etc,proc,root,run,sys,tmp,var}
    chmod 1777 "$d/tmp"; chmod 0700 "$d/root"
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$d/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$d/etc/group"
    : >"$d/etc/hostname"; : >"$d/etc/hosts"; : >"$d/etc/resolv.conf"
}

# busybox: one binary, every applet a relative symlink to it
bb=$work/busybox
base_dirs "$bb"
install -m 0755 "$bb_bin" "$bb/bin/busybox"
"$bb_bin" --list-full | while IFS= read -r applet; do
    [ -n "$applet" ] && [ "$applet" != bin/busybox ] || continue
    dir=${applet%/*}
    mkdir -p "$bb/$dir"
    rel=$(printf '%s' "$dir" | sed 's#[^/]*#..#g')
    ln -sfn "$rel/bin/busybox" "$bb/$applet"
done
[ -L "$bb/bin/sh" ] || { echo "make-rootfs: busybox has no sh applet" >&2; exit 1; }
pack "$bb" "$out/busybox-rootfs.tar"

# seed: host binaries and the libraries they load
sd=$work/seed
base_dirs "$sd"
for b in bash ls ps cat hostname mount; do
    src=$(command -v "$b") || { echo "make-rootfs: $b not found on the host" >&2; exit 1; }
    cp -L "$src" "$sd/bin/$b"; chmod 0755 "$sd/bin/$b"
    ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'
done | sort -u | while IFS= read -r lib; do
    mkdir -p "$sd$(dirname "$lib")"
    cp -L "$lib" "$sd$lib"
done
ln -sfn bash "$sd/bin/sh"
pack "$sd" "$out/seed-rootfs.tar"

(cd "$out" && sha256sum busybox-rootfs.tar seed-rootfs.tar >SHA256SUMS.tmp && mv -f SHA256SUMS.tmp SHA256SUMS)
echo "make-rootfs: $out/busybox-rootfs.tar $out/seed-rootfs.tar" >&2
