#!/usr/bin/env bash
# image-data.sh [CACHE] -- test data for the image benchmarks (image-unpack.sh,
# image-pull.sh), made once into CACHE (default $BENCH_CACHE or
# /var/tmp/berth-bench) and reused while it is there (remove CACHE to remake).
#
#   debian.tar, debian.tar.gz   `debootstrap --variant=minbase SUITE` as one layer
#                               (apt's archives and lists and /debootstrap
#                               removed, as berth's debian template does); when
#                               debootstrap fails, a rootfs copied from host
#                               directories instead (debian.source says which)
#   synth.tar, synth.tar.gz     a synthetic ~1 GiB layer: p1/, p2/ many small
#                               files (copies of host /usr/include, /usr/share/doc,
#                               /usr/share/man, /usr/share/locale,
#                               /usr/lib/python3*), p3/, p4/ 4 large files each
#                               (64 MiB of concatenated host shared libraries:
#                               semi-compressible)
#   synth-p{1..4}.tar.gz        the same four directories as four layers
#   {debian,synth,multi}-oci/   OCI image layouts, tag "latest" (layer blobs are
#                               hard links to the .tar.gz files); multi is the
#                               debian layer plus synth-p1..p4 (5 layers)
#   {debian,synth,multi}.oci.tar  the layouts as OCI archives (`berth load`,
#                               `podman load`, `skopeo copy oci-archive:`)
#
# Every image is also named bench/NAME:latest (io.containerd.image.name).
# Environment: MIRROR (default: the first URIs of apt's debian.sources),
# SUITE (bookworm), GZIP_LEVEL (6; pigz when installed, else gzip).
set -euo pipefail

cache=${1:-${BENCH_CACHE:-/var/tmp/berth-bench}}
suite=${SUITE:-bookworm}
level=${GZIP_LEVEL:-6}

note() { echo "image-data: $*" >&2; }
die() {
    note "$*"
    exit 1
}

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, file owners)"
for t in python3 tar sha256sum; do command -v "$t" >/dev/null || die "$t is not installed"; done
if command -v pigz >/dev/null; then gz=(pigz "-$level" -n -c); else gz=(gzip "-$level" -n -c); fi

if [[ -z ${MIRROR:-} ]]; then
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [[ -n $MIRROR ]] || MIRROR=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
cache=$(realpath "$cache")
work=$(mktemp -d "$cache/.work.XXXXXX")

# Unmounts whatever is mounted beneath $1 (deepest first): debootstrap mounts
# /proc and /sys in its target and can leave them when it fails.
umount_under() {
    local dir=$1 m
    python3 - "$dir" <<'EOF' | while IFS= read -r m; do umount -l -- "$m" 2>/dev/null || true; done
import sys
root = sys.argv[1].rstrip("/") + "/"
mps = []
for line in open("/proc/self/mountinfo"):
    mp = line.split()[4].encode().decode("unicode_escape")
    if mp.startswith(root):
        mps.append(mp)
for mp in sorted(mps, key=lambda p: p.count("/"), reverse=True):
    print(mp)
EOF
}
cleanup() {
    local rc=$?
    set +e
    umount_under "$work"
    rm -rf --one-file-system -- "$work"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# gzip_to SRC DEST: DEST (written whole, then renamed) = SRC gzip'd.
gzip_to() {
    nice "${gz[@]}" <"$1" >"$2.tmp"
    mv -f "$2.tmp" "$2"
}
# tar_of DIR DEST [PATHS...]: a layer tar of DIR (numeric owners, sorted names).
tar_of() {
    local dir=$1 dest=$2
    shift 2
    (($#)) || set -- .
    tar --numeric-owner --sort=name --format=gnu -C "$dir" -cf "$dest.tmp" "$@"
    mv -f "$dest.tmp" "$dest"
}

# --- (a) the Debian image --------------------------------------------------------
if [[ ! -s $cache/debian.tar.gz || ! -s $cache/debian.tar ]]; then
    root=$work/debian
    note "debootstrap --variant=minbase $suite from $MIRROR (a few minutes; log in $cache/debootstrap.log)"
    if command -v debootstrap >/dev/null &&
        debootstrap --variant=minbase "$suite" "$root" "$MIRROR" >"$cache/debootstrap.log" 2>&1; then
        rm -rf "$root/var/cache/apt/archives" "$root/var/lib/apt/lists" "$root/debootstrap"
        echo "debootstrap --variant=minbase $suite $MIRROR" >"$work/debian.source"
    else
        note "debootstrap failed (see $cache/debootstrap.log): using a rootfs copied from host directories"
        umount_under "$root"
        rm -rf --one-file-system -- "$root"
        mkdir -p "$root"
        tar -C / -cf - usr/bin usr/sbin usr/share usr/lib/x86_64-linux-gnu etc 2>/dev/null |
            tar -C "$root" -xf - || true
        echo "host copy: /usr/bin /usr/sbin /usr/share /usr/lib/x86_64-linux-gnu /etc" >"$work/debian.source"
    fi
    umount_under "$root"
    tar_of "$root" "$work/debian.tar"
    gzip_to "$work/debian.tar" "$work/debian.tar.gz"
    mv -f "$work/debian.source" "$cache/debian.source"
    mv -f "$work/debian.tar" "$cache/debian.tar"
    mv -f "$work/debian.tar.gz" "$cache/debian.tar.gz"
    rm -rf --one-file-system -- "$root"
fi

# --- (b) the synthetic layer -------------------------------------------------------
have_synth=1
for f in synth.tar synth.tar.gz synth-p1.tar.gz synth-p2.tar.gz synth-p3.tar.gz synth-p4.tar.gz; do
    [[ -s $cache/$f ]] || have_synth=0
done
if ((!have_synth)); then
    st=$work/synth
    note "synthetic layer: small files from host directories, 8 large files"
    mkdir -p "$st/p1" "$st/p2" "$st/p3/big" "$st/p4/big"
    tar -C / -cf - usr/include usr/share/doc | tar -C "$st/p1" -xf -
    pys=()
    for d in /usr/lib/python3*; do [[ -d $d ]] && pys+=("${d#/}"); done
    tar -C / -cf - usr/share/man usr/share/locale "${pys[@]}" | tar -C "$st/p2" -xf -
    python3 - "$st" <<'EOF'
import os, sys
st = sys.argv[1]
files = []
for d, _, names in os.walk("/usr/lib/x86_64-linux-gnu"):
    for n in names:
        p = os.path.join(d, n)
        if ".so" in n and os.path.isfile(p) and not os.path.islink(p):
            files.append(p)
files.sort()
size, count = 64 << 20, 8
outs = [os.path.join(st, "p3" if i < 4 else "p4", "big", "big-%02d" % i) for i in range(count)]
i, out, written = 0, open(outs[0], "wb"), 0
for p in files * 4:  # repeat if the host has less than 512 MiB of libraries
    with open(p, "rb") as f:
        while True:
            buf = f.read(min(1 << 20, size - written))
            if not buf:
                break
            out.write(buf)
            written += len(buf)
            if written == size:
                out.close()
                i += 1
                if i == count:
                    sys.exit(0)
                out, written = open(outs[i], "wb"), 0
sys.exit("not enough data for the large files")
EOF
    tar_of "$st" "$work/synth.tar" p1 p2 p3 p4
    gzip_to "$work/synth.tar" "$work/synth.tar.gz"
    for p in p1 p2 p3 p4; do
        tar_of "$st" "$work/synth-$p.tar" "$p"
        gzip_to "$work/synth-$p.tar" "$work/synth-$p.tar.gz"
        sha256sum <"$work/synth-$p.tar" | cut -d' ' -f1 >"$work/synth-$p.diffid"
        rm -f "$work/synth-$p.tar"
    done
    rm -rf "$st"
    for p in p1 p2 p3 p4; do mv -f "$work/synth-$p.diffid" "$work/synth-$p.tar.gz" "$cache/"; done
    mv -f "$work/synth.tar" "$cache/synth.tar"
    mv -f "$work/synth.tar.gz" "$cache/synth.tar.gz"
fi
for n in debian synth; do
    [[ -s $cache/$n.diffid && $cache/$n.diffid -nt $cache/$n.tar ]] ||
        sha256sum <"$cache/$n.tar" | cut -d' ' -f1 >"$cache/$n.diffid"
done

# --- (c) OCI layouts and archives ---------------------------------------------------
# make_image NAME LAYER...  (LAYER: a basename in the cache with .tar.gz and .diffid)
make_image() {
    local name=$1
    shift
    [[ -s $cache/$name.oci.tar && -f $cache/$name-oci/index.json ]] && return 0
    note "OCI layout and archive: $name ($*)"
    rm -rf "${cache:?}/$name-oci"
    python3 - "$cache" "$name" "$@" <<'EOF'
import hashlib, json, os, sys
cache, name, layers = sys.argv[1], sys.argv[2], sys.argv[3:]
out = os.path.join(cache, name + "-oci")
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs)
def sha_file(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()
def put(data):
    hx = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, hx), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + hx, "size": len(data)}
descs, diff_ids, history = [], [], []
for l in layers:
    gz = os.path.join(cache, l + ".tar.gz")
    hx = sha_file(gz)
    dst = os.path.join(blobs, hx)
    if not os.path.exists(dst):
        os.link(gz, dst)
    descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                  "digest": "sha256:" + hx, "size": os.path.getsize(gz)})
    diff_ids.append("sha256:" + open(os.path.join(cache, l + ".diffid")).read().strip())
    history.append({"created": "2026-11-23T00:00:00Z", "created_by": "bench/image-data.sh: " + l})
config = {"created": "2026-11-23T00:00:00Z", "architecture": "amd64", "os": "linux",
          "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                     "Cmd": ["/bin/sh"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}, "history": history}
cd = put(json.dumps(config, separators=(",", ":")).encode())
cd["mediaType"] = "application/vnd.oci.image.config.v1+json"
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": cd, "layers": descs}
md = put(json.dumps(manifest, separators=(",", ":")).encode())
md["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
md["annotations"] = {"io.containerd.image.name": "docker.io/bench/%s:latest" % name,
                     "org.opencontainers.image.ref.name": "latest"}
index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [md]}
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump(index, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
EOF
    tar --format=gnu -C "$cache/$name-oci" -cf "$cache/$name.oci.tar.tmp" oci-layout index.json blobs
    mv -f "$cache/$name.oci.tar.tmp" "$cache/$name.oci.tar"
}
make_image debian debian
make_image synth synth
make_image multi debian synth-p1 synth-p2 synth-p3 synth-p4

note "data in $cache ($(cat "$cache/debian.source"))"
for f in debian.tar debian.tar.gz synth.tar synth.tar.gz debian.oci.tar synth.oci.tar multi.oci.tar; do
    printf '  %-16s %6d MiB\n' "$f" $(($(stat -c %s "$cache/$f") >> 20)) >&2
done
