#!/usr/bin/env bash
# make-images.sh [OUTDIR] — the image sources the example manifests name, made on the spot.
#
#   OUTDIR/busybox.tar      the busybox-static rootfs (web.toml, shop/)
#   OUTDIR/app-1.0.tar      the same rootfs with /VERSION = 1.0 (bump/v1)
#   OUTDIR/app-1.1.tar      the same rootfs with /VERSION = 1.1 (bump/v2)
#   OUTDIR/web.tar          the same rootfs with a page in /www/index.html (web.toml)
#
# OUTDIR defaults to images/ at the top of the repository, where the manifests look (their
# `source` paths are relative to each manifest file). Uses scripts/make-rootfs.sh, which
# installs busybox-static with apt-get when it is missing (as root). Tarballs are
# reproducible: running this again leaves their bytes, and so `wharf apply`'s plan, unchanged.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
out=${1:-$top/images}
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

bash "$top/scripts/make-rootfs.sh" "$work"
cmp -s "$work/busybox-rootfs.tar" "$out/busybox.tar" 2>/dev/null || cp "$work/busybox-rootfs.tar" "$out/busybox.tar"

for v in 1.0 1.1; do
    d=$work/app-$v
    mkdir -p "$d"
    tar -C "$d" -xf "$work/busybox-rootfs.tar"
    printf '%s\n' "$v" >"$d/VERSION"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$work/app-$v.tar" .
    cmp -s "$work/app-$v.tar" "$out/app-$v.tar" 2>/dev/null || cp "$work/app-$v.tar" "$out/app-$v.tar"
done
d=$work/web
mkdir -p "$d"
tar -C "$d" -xf "$work/busybox-rootfs.tar"
mkdir -p "$d/www"
cat >"$d/www/index.html" <<'HTML'
<!doctype html>
<title>wharf</title>
<h1>Hello from wharf</h1>
<p>This page is served by busybox httpd in the container <code>web</code> of manifests/web.toml.</p>
HTML
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$d" -cf "$work/web.tar" .
cmp -s "$work/web.tar" "$out/web.tar" 2>/dev/null || cp "$work/web.tar" "$out/web.tar"
echo "make-images: $out/busybox.tar $out/app-1.0.tar $out/app-1.1.tar $out/web.tar" >&2
