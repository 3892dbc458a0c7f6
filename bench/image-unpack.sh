#!/usr/bin/env bash
# image-unpack.sh [OUTDIR] -- unpacking a large gzip layer: berth vs podman,
# umoci and skopeo, and the floors, on the same data (bench/image-data.sh).
#
# For each image (IMAGES, default "debian synth": one gzip layer each), ONE
# hyperfine invocation runs, every run into an empty target on a synced disk
# (--prepare removes the previous run's files, unmounting what is mounted
# beneath them, then runs `sync`):
#
#   berth load      berth --root FRESH load -i NAME.oci.tar  (berth unpacks on load)
#   podman load     podman load -i NAME.oci.tar, private --root/--runroot/--tmpdir,
#                   private storage.conf (driver PODMAN_DRIVER, default overlay;
#                   vfs when overlay cannot load here)
#   umoci unpack    umoci unpack --image NAME-oci:latest BUNDLE (the layout already
#                   extracted: less work than a load)
#   skopeo+umoci    skopeo copy oci-archive:NAME.oci.tar oci:DIR, then umoci unpack
#                   (a load from the same archive, for umoci)
#   igzip -dc       igzip -dc layer.tar.gz > /dev/null: raw decompression (floor)
#   tar -x          tar -b 2048 -xf layer.tar -C DIR (1 MiB reads): writing the
#                   same files (floor)
#   igzip | tar -x  both, in a shell pipe (64 KiB; tar reads 10 KiB at a time)
#   igzip | tar -x (1 MiB pipe)  the same with a 1 MiB pipe and 1 MiB tar reads:
#                   gunzip and untar overlapping on two CPUs (the floor for a
#                   two-thread unpack)
#
# The inputs are read once before timing (page cache); no command's output is
# synced inside its timing unless SYNC_AFTER=1, which appends `; sync` to every
# command (time to durable data, floors included).
#
# Where the commands write (TARGET_FS): "loop" (default) is a private ext4 with
# a journal (mkfs.ext4 defaults) on a loop device (direct I/O) over a sparse
# file in /var/tmp, removed at the end; "host" writes to /var/tmp itself. This
# VM's root ext4 has no journal, and ext4 without a journal skips inodes freed
# in the last minute or more when it allocates one (recently_deleted() in
# find_inode_bit, checked only without a journal): right after the previous
# run's files are removed, creating files costs 3-5x more kernel time and
# varies from run to run (tar -x of the debian layer: 1.2-2.1 s on the root fs,
# 0.25-0.45 s on the loop ext4).
#
# Results (hyperfine JSON + markdown, table.md) go to OUTDIR
# (default bench/out/image-unpack).
#
# Environment:
#   BERTH (build/src/berth)  CACHE (/var/tmp/berth-bench)  IMAGES ("debian synth")
#   RUNS (3)  WARMUP (0)  PODMAN_DRIVER (overlay)  SYNC_AFTER (0)
#   TARGET_FS (loop|host)  LOOP_SIZE (48G, sparse)
#   SKIP="podman umoci skopeo ..." leaves those commands out
# A tool that is not installed, or fails on the data here, is skipped with a note.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/bench/out/image-unpack}
berth=${BERTH:-$repo/build/src/berth}
cache=${CACHE:-/var/tmp/berth-bench}
images=${IMAGES:-debian synth}
runs=${RUNS:-3}
warmup=${WARMUP:-0}
driver=${PODMAN_DRIVER:-overlay}
sync_after=${SYNC_AFTER:-0}
target_fs=${TARGET_FS:-loop}
skip=" ${SKIP:-} "

bench_name="image-unpack"
# shellcheck source=bench/image-common.sh
source "$repo/bench/image-common.sh"

for t in hyperfine python3 tar igzip; do
    command -v "$t" >/dev/null || die "$t is not installed (igzip: apt-get install isal)"
done
[[ -x $berth ]] || die "berth not found at $berth (build berth-cli, or set BERTH)"
berth=$(realpath "$berth")
for n in $images; do
    for f in "$n.oci.tar" "$n.tar" "$n.tar.gz" "$n-oci/index.json"; do
        [[ -e $cache/$f ]] || die "$cache/$f is missing: run bench/image-data.sh first"
    done
done

# $base/bigpipe GZ DIR: igzip -dc GZ | tar -xf - -C DIR through a 1 MiB pipe.
cat >"$base/bigpipe" <<'EOF'
#!/usr/bin/python3
import fcntl, os, subprocess, sys
r, w = os.pipe()
fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ (fs.pipe-max-size is 1 MiB by default)
a = subprocess.Popen(["igzip", "-dc", sys.argv[1]], stdout=w)
b = subprocess.Popen(["tar", "-b", "2048", "-xf", "-", "-C", sys.argv[2]], stdin=r)
os.close(r)
os.close(w)
sys.exit(a.wait() or b.wait())
EOF
chmod +x "$base/bigpipe"

# --- podman: private storage -----------------------------------------------------
podman_cmd() { # podman_cmd DIR DRIVER: podman with everything under DIR
    local d=$1 drv=$2 conf
    conf=$(storage_conf "$d" "$drv")
    printf 'CONTAINERS_STORAGE_CONF=%q TMPDIR=%q podman --root %q --runroot %q --tmpdir %q --storage-driver %q --cgroup-manager cgroupfs --events-backend none --log-level error' \
        "$conf" "$d/tmp" "$d/root" "$d/run" "$d/libpod" "$drv"
}
# podman and skopeo need TMPDIR to exist after a reset
podman_pre() { echo "$(q "$base/reset") $(q "$1") && mkdir -p $(q "$1/tmp")"; }

sfx=""
((sync_after)) && sfx="; sync"

for img in $images; do
    note "=== $img: $(($(stat -c %s "$cache/$img.tar.gz") >> 20)) MiB gzip, $(($(stat -c %s "$cache/$img.tar") >> 20)) MiB tar, $(tar -tf "$cache/$img.tar" | wc -l) entries"
    names=() cmds=() preps=()
    add() { names+=("$1"); cmds+=("$2$sfx"); preps+=("$3"); }

    # berth
    bdir=$tmp/berth-$img
    add "berth load" "$(q "$berth") --root $(q "$bdir") load -q -i $(q "$cache/$img.oci.tar") >/dev/null" \
        "$(q "$base/reset") $(q "$bdir")"

    # podman
    if have podman; then
        pdir=$tmp/podman-$img
        for drv in $driver vfs; do
            "$base/reset" "$pdir" && mkdir -p "$pdir/tmp"
            pc=$(podman_cmd "$pdir" "$drv")
            if probe "podman load ($drv)" "$pc load -q -i $(q "$cache/$img.oci.tar")"; then
                [[ $drv == "$driver" ]] || log_note "podman: $driver failed, using $drv"
                add "podman load ($drv)" "$pc load -q -i $(q "$cache/$img.oci.tar") >/dev/null" "$(podman_pre "$pdir")"
                break
            fi
            [[ $drv == vfs ]] && break
        done
        "$base/reset" "$pdir" >/dev/null
    elif [[ $skip != *" podman "* ]]; then log_note "podman not installed; skipped"; fi

    # umoci, from the extracted layout (hard-linked copy: umoci never sees the cache)
    if have umoci; then
        layout=$base/layout-$img # on the cache's filesystem: hard links
        rm -rf "$layout"
        cp -al "$cache/$img-oci" "$layout"
        udir=$tmp/umoci-$img
        ucmd="umoci --log error unpack --image $(q "$layout:latest") $(q "$udir/bundle")"
        "$base/reset" "$udir"
        if probe "umoci unpack" "$ucmd"; then
            add "umoci unpack" "$ucmd" "$(q "$base/reset") $(q "$udir")"
        fi
        "$base/reset" "$udir" >/dev/null
    elif [[ $skip != *" umoci "* ]]; then log_note "umoci not installed; skipped"; fi

    # skopeo copy of the archive to a layout, then umoci unpack
    if have skopeo && have umoci; then
        sdir=$tmp/skopeo-$img
        scmd="TMPDIR=$(q "$sdir/tmp") skopeo copy -q $(q "oci-archive:$cache/$img.oci.tar") $(q "oci:$sdir/layout:latest") && umoci --log error unpack --image $(q "$sdir/layout:latest") $(q "$sdir/bundle")"
        "$base/reset" "$sdir" && mkdir -p "$sdir/tmp"
        if probe "skopeo copy + umoci unpack" "$scmd"; then
            add "skopeo+umoci" "$scmd" "$(podman_pre "$sdir")"
        fi
        "$base/reset" "$sdir" >/dev/null
    fi

    # floors
    add "igzip -dc" "igzip -dc $(q "$cache/$img.tar.gz") >/dev/null" "sync"
    tdir=$tmp/tar-$img
    add "tar -x" "tar -b 2048 -xf $(q "$cache/$img.tar") -C $(q "$tdir")" "$(q "$base/reset") $(q "$tdir")"
    add "igzip | tar -x" "igzip -dc $(q "$cache/$img.tar.gz") | tar -xf - -C $(q "$tdir")" "$(q "$base/reset") $(q "$tdir")"
    add "igzip | tar -x (1 MiB pipe)" "$(q "$base/bigpipe") $(q "$cache/$img.tar.gz") $(q "$tdir")" "$(q "$base/reset") $(q "$tdir")"

    # inputs into the page cache
    cat "$cache/$img.oci.tar" "$cache/$img.tar" "$cache/$img.tar.gz" >/dev/null
    sync

    args=()
    for i in "${!names[@]}"; do args+=(--prepare "${preps[$i]}" -n "${names[$i]}" "${cmds[$i]}"); done
    note "$img: ${names[*]} ($runs runs)"
    run_child hyperfine --shell "bash --norc --noprofile" --warmup "$warmup" --runs "$runs" \
        --export-json "$out/$img.json" --export-markdown "$out/$img.md" "${args[@]}"
    "$base/reset" "$tmp/berth-$img" "$tmp/tar-$img" >/dev/null
    rm -rf --one-file-system -- "$tmp/berth-$img" "$tmp/tar-$img" "$base/layout-$img"
done

# --- ratios and the table --------------------------------------------------------------
# shellcheck disable=SC2086 # IMAGES is a list
python3 - "$out" "$cache" $images <<'EOF' | tee "$out/table.md"
import json, os, sys

out, cache, images = sys.argv[1], sys.argv[2], sys.argv[3:]
print("| layer | command | mean (s) | ± | median | vs berth (means) |")
print("|---|---|---|---|---|---|")
summary = []
for img in images:
    path = os.path.join(out, img + ".json")
    if not os.path.exists(path):
        continue
    res = json.load(open(path))["results"]
    mean = {r["command"]: r["mean"] for r in res}
    b = mean.get("berth load")
    mib = os.path.getsize(os.path.join(cache, img + ".tar.gz")) >> 20
    for r in res:
        name, m = r["command"], r["mean"]
        if name == "berth load" or b is None:
            rel = "1"
        elif name.startswith("igzip") or name == "tar -x":
            rel = f"berth is {b / m:.2f}x this"
        else:
            rel = f"{m / b:.2f}x slower" if m >= b else f"{b / m:.2f}x faster"
        shown = name.replace("|", "\\|")
        print(f"| {img} ({mib} MiB gz) | {shown} | {m:.3f} | {r['stddev'] or 0:.3f} | {r['median']:.3f} | {rel} |")
    if b is None:
        continue
    peers = {k: v for k, v in mean.items() if k.startswith("podman") or k in ("umoci unpack", "skopeo+umoci")}
    floor = max(mean.get("igzip -dc", 0), mean.get("tar -x", 0))
    line = []
    if peers:
        best = min(peers, key=peers.get)
        line.append(f"best peer {best} {peers[best]:.3f} s = {peers[best] / b:.2f}x berth (target >= 2x: "
                    f"{'met' if peers[best] / b >= 2 else 'NOT met'})")
    if floor:
        # This VM's note: an unpack's floor is the larger of raw decompression
        # and writing the same files uncompressed.
        line.append(f"berth / max(igzip, tar -x) = {b / floor:.2f}x (the VM's floor; <= 1.5x: "
                    f"{'met' if b / floor <= 1.5 else 'NOT met'})")
    if "igzip | tar -x (1 MiB pipe)" in mean:
        line.append(f"berth / (igzip | tar -x, 1 MiB pipe) = {b / mean['igzip | tar -x (1 MiB pipe)']:.2f}x")
    if "igzip -dc" in mean:
        g = mean["igzip -dc"]
        line.append(f"berth / igzip = {b / g:.2f}x (target <= 1.5x: {'met' if b / g <= 1.5 else 'NOT met'})")
    summary.append(f"{img}: " + "; ".join(line))
print()
for s in summary:
    print(s)
EOF
finish_notes
