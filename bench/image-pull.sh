#!/usr/bin/env bash
# image-pull.sh [OUTDIR] -- pulling a multi-layer image from a loopback
# registry: berth pull vs podman pull and skopeo copy, same image, same
# registry, in ONE hyperfine invocation.
#
# Starts docker-registry (`docker-registry serve CONFIG`, storage in a temp
# dir, 127.0.0.1 on a free port), pushes IMAGE (default multi: the Debian
# layer plus the synthetic data as 4 layers, from bench/image-data.sh) with
# skopeo, then times, every run into an empty store on a synced disk
# (--prepare moves the previous run's files aside, then runs `sync`):
#
#   berth pull           berth --root FRESH pull --tls-verify=false
#   podman pull          private --root/--runroot/--tmpdir and storage.conf,
#                        driver PODMAN_DRIVER (overlay; vfs when overlay fails)
#   skopeo c-storage     skopeo copy docker://... containers-storage:[DRIVER@ROOT+RUNROOT]
#                        (what podman pull does, without libpod)
#   skopeo oci+umoci     skopeo copy docker://... oci:DIR, then umoci unpack
#   skopeo oci           skopeo copy docker://... oci:DIR: download only, nothing
#                        unpacked (less work than the others; for reference)
#   curl blobs           curl of every layer blob, PARALLEL at a time, to
#                        /dev/null: the transfer floor
#
# Nothing is synced inside a timing unless SYNC_AFTER=1 (appends `; sync`).
# Where the commands write (TARGET_FS): "loop" (default), a private ext4 with a
# journal on a loop device over a sparse file in /var/tmp; "host", /var/tmp
# itself (this VM's root ext4 has no journal and is slow and noisy at creating
# files right after others were removed: see image-unpack.sh).
#
# Results (hyperfine JSON + markdown, table.md) go to OUTDIR (default
# bench/out/image-pull). The registry (only the process this script started,
# by its pid) is stopped and every temp dir removed on exit, also on failure.
#
# Environment:
#   BERTH (build/src/berth)  CACHE (/var/tmp/berth-bench)  IMAGE (multi)
#   RUNS (3)  WARMUP (0)  PODMAN_DRIVER (overlay)  PARALLEL (3)  SYNC_AFTER (0)
#   TARGET_FS (loop|host)  LOOP_SIZE (48G, sparse)
#   SKIP="podman skopeo umoci curl" leaves those commands out
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/bench/out/image-pull}
berth=${BERTH:-$repo/build/src/berth}
cache=${CACHE:-/var/tmp/berth-bench}
image=${IMAGE:-multi}
runs=${RUNS:-3}
warmup=${WARMUP:-0}
driver=${PODMAN_DRIVER:-overlay}
parallel=${PARALLEL:-3}
sync_after=${SYNC_AFTER:-0}
target_fs=${TARGET_FS:-loop}
skip=" ${SKIP:-} "

bench_name="image-pull"
# shellcheck source=bench/image-common.sh
source "$repo/bench/image-common.sh"

for t in hyperfine python3 docker-registry skopeo; do command -v "$t" >/dev/null || die "$t is not installed"; done
[[ -x $berth ]] || die "berth not found at $berth (build berth-cli, or set BERTH)"
berth=$(realpath "$berth")
[[ -f $cache/$image-oci/index.json ]] || die "$cache/$image-oci is missing: run bench/image-data.sh first"

regpid=
bench_extra_cleanup() {
    if [[ -n $regpid ]]; then
        kill -TERM "$regpid" 2>/dev/null
        wait "$regpid" 2>/dev/null
    fi
}

# --- the registry ---------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$base/registry"
cat >"$base/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $base/registry
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  secret: berth-bench
EOF
docker-registry serve "$base/registry.yml" </dev/null >"$base/registry.log" 2>&1 &
regpid=$!
up=0
for _ in $(seq 100); do
    kill -0 "$regpid" 2>/dev/null || die "docker-registry exited: $(cat "$base/registry.log")"
    if python3 -c "import urllib.request, sys; urllib.request.urlopen('http://127.0.0.1:$port/v2/', timeout=1)" 2>/dev/null; then
        up=1
        break
    fi
    sleep 0.1
done
((up)) || die "docker-registry did not answer on 127.0.0.1:$port: $(cat "$base/registry.log")"

ref=127.0.0.1:$port/bench/$image:latest
note "pushing $image to $ref"
skopeo copy -q --dest-tls-verify=false "oci:$cache/$image-oci:latest" "docker://$ref"
# The layer digests, sizes (from the layout) for the curl floor and the table.
mapfile -t layers < <(python3 - "$cache/$image-oci" <<'EOF'
import json, os, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", "sha256", idx["manifests"][0]["digest"].split(":")[1])))
for l in m["layers"]:
    print(l["digest"], l["size"])
EOF
)
total=0
for l in "${layers[@]}"; do total=$((total + ${l#* })); done
note "$image: ${#layers[@]} layers, $((total >> 20)) MiB compressed"

# --- the commands -------------------------------------------------------------------
sfx=""
((sync_after)) && sfx="; sync"
names=() cmds=() preps=()
add() { names+=("$1"); cmds+=("$2$sfx"); preps+=("$3"); }
reset=$(q "$base/reset")

bdir=$tmp/berth
add "berth pull" "$(q "$berth") --root $(q "$bdir") pull -q --tls-verify=false $(q "$ref") >/dev/null" "$reset $(q "$bdir")"
fmt=$("$berth" --root "$tmp/berth-probe" info --format '{{json .DriverStatus}}' 2>/dev/null || true)
"$base/reset" "$tmp/berth-probe" >/dev/null
note "berth's layer format here: $fmt"
if [[ $fmt == *erofs* ]]; then
    # The same pull with unpacked layers (the fallback where EROFS is missing).
    ddir=$tmp/berth-dir
    add "berth pull (dir)" "$(q "$berth") --root $(q "$ddir") --storage-opt layer-format=dir pull -q --tls-verify=false $(q "$ref") >/dev/null" "$reset $(q "$ddir")"
fi

if have podman; then
    pdir=$tmp/podman
    for drv in $driver vfs; do
        "$base/reset" "$pdir" >/dev/null && mkdir -p "$pdir/tmp"
        pc="CONTAINERS_STORAGE_CONF=$(q "$(storage_conf "$pdir" "$drv")") TMPDIR=$(q "$pdir/tmp") podman --root $(q "$pdir/root") --runroot $(q "$pdir/run") --tmpdir $(q "$pdir/libpod") --storage-driver $drv --cgroup-manager cgroupfs --events-backend none --log-level error"
        if probe "podman pull ($drv)" "$pc pull -q --tls-verify=false $(q "$ref")"; then
            [[ $drv == "$driver" ]] || log_note "podman: $driver failed, using $drv"
            add "podman pull ($drv)" "$pc pull -q --tls-verify=false $(q "$ref") >/dev/null" "$reset $(q "$pdir") && mkdir -p $(q "$pdir/tmp")"
            break
        fi
        [[ $drv == vfs ]] && break
    done
    "$base/reset" "$pdir" >/dev/null
elif [[ $skip != *" podman "* ]]; then log_note "podman not installed; skipped"; fi

if have skopeo; then
    cdir=$tmp/skopeo-cs
    for drv in $driver vfs; do
        "$base/reset" "$cdir" >/dev/null && mkdir -p "$cdir/tmp"
        c="CONTAINERS_STORAGE_CONF=$(q "$(storage_conf "$cdir" "$drv")") TMPDIR=$(q "$cdir/tmp") skopeo copy -q --src-tls-verify=false $(q "docker://$ref") $(q "containers-storage:[$drv@$cdir/root+$cdir/run]$ref")"
        if probe "skopeo copy to containers-storage ($drv)" "$c"; then
            add "skopeo c-storage ($drv)" "$c" "$reset $(q "$cdir") && mkdir -p $(q "$cdir/tmp")"
            break
        fi
        [[ $drv == vfs ]] && break
    done
    "$base/reset" "$cdir" >/dev/null

    odir=$tmp/skopeo-oci
    c="TMPDIR=$(q "$odir/tmp") skopeo copy -q --src-tls-verify=false $(q "docker://$ref") $(q "oci:$odir/layout:latest")"
    if have umoci; then
        "$base/reset" "$odir" >/dev/null && mkdir -p "$odir/tmp"
        cu="$c && umoci --log error unpack --image $(q "$odir/layout:latest") $(q "$odir/bundle")"
        if probe "skopeo copy to oci + umoci unpack" "$cu"; then
            add "skopeo oci+umoci" "$cu" "$reset $(q "$odir") && mkdir -p $(q "$odir/tmp")"
        fi
    fi
    "$base/reset" "$odir" >/dev/null && mkdir -p "$odir/tmp"
    if probe "skopeo copy to oci" "$c"; then
        add "skopeo oci (no unpack)" "$c" "$reset $(q "$odir") && mkdir -p $(q "$odir/tmp")"
    fi
    "$base/reset" "$odir" >/dev/null
fi

if have curl; then
    urls=$base/blob-urls
    for l in "${layers[@]}"; do echo "http://127.0.0.1:$port/v2/bench/$image/blobs/${l%% *}"; done >"$urls"
    add "curl blobs (floor)" "xargs -P $parallel -n 1 curl -sfL -o /dev/null <$(q "$urls")" "sync"
fi

# The floors of issue 6: decompression alone, one stream; and gunzip | tar -x
# of every layer at once (what an unpacker that creates the files can do).
blobs=()
for l in "${layers[@]}"; do blobs+=("$cache/$image-oci/blobs/sha256/$(cut -d: -f2 <<<"${l%% *}")"); done
if have igzip; then
    add "igzip -dc, one stream (floor)" "cat $(printf '%q ' "${blobs[@]}") | igzip -dc >/dev/null" "sync"
    fdir=$tmp/floor
    par="mkdir -p $(q "$fdir")"
    i=0
    for b in "${blobs[@]}"; do
        par+=" && mkdir -p $(q "$fdir/$i")"
        i=$((i + 1))
    done
    i=0 jobs=""
    for b in "${blobs[@]}"; do
        jobs+="(set -o pipefail; igzip -dc $(q "$b") | tar -xf - -C $(q "$fdir/$i")) & "
        i=$((i + 1))
    done
    # Every directory first, then every layer at once; any failure fails the run.
    add "igzip | tar -x per layer, parallel (floor)" \
        "$par && { $jobs for p in \$(jobs -p); do wait \$p || exit 1; done; }" "$reset $(q "$fdir")"
fi

args=()
for i in "${!names[@]}"; do args+=(--prepare "${preps[$i]}" -n "${names[$i]}" "${cmds[$i]}"); done
note "${names[*]} ($runs runs)"
run_child hyperfine --shell "bash --norc --noprofile" --warmup "$warmup" --runs "$runs" \
    --export-json "$out/pull.json" --export-markdown "$out/pull.md" "${args[@]}"

# --- the table -------------------------------------------------------------------------
python3 - "$out" "$image" "${#layers[@]}" "$((total >> 20))" <<'EOF' | tee "$out/table.md"
import json, os, sys

out, image, nlayers, mib = sys.argv[1:]
res = json.load(open(os.path.join(out, "pull.json")))["results"]
mean = {r["command"]: r["mean"] for r in res}
b = mean.get("berth pull")
print(f"| {image} ({nlayers} layers, {mib} MiB gz) | mean (s) | ± | median | vs berth (means) |")
print("|---|---|---|---|---|")
for r in res:
    name, m = r["command"], r["mean"]
    if name == "berth pull" or b is None:
        rel = "1"
    elif "floor" in name or "no unpack" in name:
        rel = f"berth is {b / m:.2f}x this"
    else:
        rel = f"{m / b:.2f}x slower" if m >= b else f"{b / m:.2f}x faster"
    print(f"| {name} | {m:.3f} | {r['stddev'] or 0:.3f} | {r['median']:.3f} | {rel} |")
peers = {k: v for k, v in mean.items()
         if not k.startswith("berth pull") and "floor" not in k and "no unpack" not in k}
if b and peers:
    best = min(peers, key=peers.get)
    print()
    print(f"best peer that unpacks: {best} {peers[best]:.3f} s = {peers[best] / b:.2f}x berth "
          f"(issue 6 target >= 5x: {'met' if peers[best] / b >= 5 else 'NOT met'})")
floor = mean.get("igzip -dc, one stream (floor)")
if b and floor:
    print(f"berth pull / single-stream igzip floor: {b / floor:.2f}x "
          f"(issue 6 target <= 1.5x: {'met' if b / floor <= 1.5 else 'NOT met'})")
EOF
finish_notes
