#!/usr/bin/env bash
# make-image-fixtures.sh OUTDIR BUSYBOX_TAR — multi-layer test images made by umoci and skopeo.
#
#   OUTDIR/layout/              an OCI layout (umoci) with two images:
#     :multi   busybox + layers exercising the OCI layer rules:
#              2  /data/{keep,gone}, /opq/{old1,old2}, /opq2/old, /replaced/old, /base/file
#              3  a whiteout of /data/gone                       (umoci repack)
#              4  a hand-made tar (umoci raw add-layer): /opq made opaque, holding "new";
#                 /base/link, a hardlink to layer 2's /base/file;
#                 /opq2/new, then /opq2/.wh..wh..opq (the marker after its directory's
#                 entries); /.wh.replaced, then /replaced/new (deleted, then made anew)
#              config: Cmd ["/bin/sh","-c","echo hi"], Env FOO=bar, WorkingDir /data,
#                      Label fixture=multi
#     :deep    busybox + 120 one-file layers (/deep/1 ... /deep/120)
#     :index   an image index: the host's arch → :multi, the other of amd64/arm64 → :deep,
#              and an unknown/unknown attestation entry
#   OUTDIR/multi-docker.tar     skopeo copy of :multi to docker-archive: (tag wharf.test/multi:1)
#   OUTDIR/multi-oci.tar        skopeo copy of :multi to oci-archive: (name wharf.test/multi:1)
#   OUTDIR/DONE
#
# Needs root (umoci keeps owners), umoci, skopeo and python3. Nothing outside OUTDIR is written.
set -euo pipefail

out=${1:?usage: make-image-fixtures.sh OUTDIR BUSYBOX_TAR}
busybox=$(realpath "${2:?usage: make-image-fixtures.sh OUTDIR BUSYBOX_TAR}")
for t in umoci skopeo python3; do
    command -v "$t" >/dev/null || { echo "make-image-fixtures: $t is missing (apt-get install umoci skopeo)" >&2; exit 1; }
done
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d "$out/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
L=$work/layout
export SOURCE_DATE_EPOCH=0

umoci init --layout "$L"
umoci new --image "$L:multi"
umoci raw add-layer --image "$L:multi" "$busybox"

# umoci insert writes truncated layers in Debian's 0.4.7 (no tar trailer): edits go
# through unpack + repack (which writes whiteouts for deletions) and raw add-layer.
B=$work/bundle
umoci unpack --image "$L:multi" "$B" >/dev/null
r=$B/rootfs
mkdir -p "$r"/data "$r"/opq "$r"/opq2 "$r"/replaced "$r"/base
echo keep >"$r"/data/keep
echo gone >"$r"/data/gone
echo old1 >"$r"/opq/old1
echo old2 >"$r"/opq/old2
echo old >"$r"/opq2/old
echo old >"$r"/replaced/old
echo lower >"$r"/base/file
umoci repack --image "$L:multi" "$B"
# repack appends to the manifest its bundle was unpacked from: unpack afresh.
umoci unpack --image "$L:multi" "$B.2" >/dev/null
rm "$B.2"/rootfs/data/gone
umoci repack --image "$L:multi" "$B.2"

python3 - "$work/hand.tar" <<'EOF'
import io, sys, tarfile
def add(t, name, kind=tarfile.REGTYPE, data=b"", link=""):
    i = tarfile.TarInfo(name)
    i.type = kind
    i.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    i.linkname = link
    i.size = len(data)
    t.addfile(i, io.BytesIO(data) if data else None)
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    add(t, "opq", tarfile.DIRTYPE)
    add(t, "opq/.wh..wh..opq")
    add(t, "opq/new", data=b"new\n")
    add(t, "base", tarfile.DIRTYPE)
    add(t, "base/link", tarfile.LNKTYPE, link="base/file")
    add(t, "opq2", tarfile.DIRTYPE)
    add(t, "opq2/new", data=b"new\n")
    add(t, "opq2/.wh..wh..opq")
    add(t, ".wh.replaced")
    add(t, "replaced", tarfile.DIRTYPE)
    add(t, "replaced/new", data=b"new\n")
EOF
umoci raw add-layer --image "$L:multi" "$work/hand.tar"
umoci config --image "$L:multi" --config.cmd /bin/sh --config.cmd -c --config.cmd "echo hi" \
    --config.env FOO=bar --config.workingdir /data --config.label fixture=multi

umoci new --image "$L:deep"
umoci raw add-layer --image "$L:deep" "$busybox"
for i in $(seq 1 120); do
    mkdir -p "$work/d$i/deep"
    echo "$i" >"$work/d$i/deep/$i"
    tar -C "$work/d$i" --owner=0 --group=0 --mtime=@0 -cf "$work/d$i.tar" deep
    umoci raw add-layer --history.created_by "layer $i" --image "$L:deep" "$work/d$i.tar"
done
umoci config --image "$L:deep" --config.cmd /bin/sh
umoci gc --layout "$L"

# :index  an image index: the host's arch → :multi, the other of amd64/arm64 → :deep, and an
# attestation entry (unknown/unknown) as buildkit writes them.
python3 - "$L" "$(uname -m)" <<'IDX'
import hashlib, json, os, sys
L, machine = sys.argv[1], sys.argv[2]
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)
other = "arm64" if arch != "arm64" else "amd64"
idx = json.load(open(os.path.join(L, "index.json")))
by = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in idx["manifests"]}
def desc(m, os_, arch_):
    return {"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"],
            "platform": {"os": os_, "architecture": arch_}}
body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [desc(by["deep"], "unknown", "unknown"), desc(by["multi"], "linux", arch),
                  desc(by["deep"], "linux", other)]}).encode()
h = hashlib.sha256(body).hexdigest()
open(os.path.join(L, "blobs/sha256", h), "wb").write(body)
idx["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json",
    "digest": "sha256:" + h, "size": len(body),
    "annotations": {"org.opencontainers.image.ref.name": "index"}})
json.dump(idx, open(os.path.join(L, "index.json"), "w"))
IDX

skopeo copy -q "oci:$L:multi" "docker-archive:$work/multi-docker.tar:wharf.test/multi:1"
skopeo copy -q "oci:$L:multi" "oci-archive:$work/multi-oci.tar:wharf.test/multi:1"

rm -rf "$out/layout"
mv "$L" "$out/layout"
mv "$work/multi-docker.tar" "$work/multi-oci.tar" "$out/"
touch "$out/DONE"
