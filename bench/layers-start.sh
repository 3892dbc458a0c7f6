#!/usr/bin/env bash
# layers-start.sh [OUTDIR] -- container start from a 50-layer image against a
# 1-layer one (issue 6's target: within 1.2x), for each layer format, in ONE
# hyperfine invocation: `berth run --rm IMAGE true` with the busybox image,
# and with the busybox layer under 49 more small layers (a file each, a
# whiteout every tenth), loaded from an OCI archive this script writes.
# Each format has a store of its own under /var/tmp, removed on exit.
#
# Environment: BERTH (build/src/berth)  LAYERS (50)  RUNS (40)  WARMUP (5)
#   FORMATS ("erofs dir"; a format the kernel lacks is skipped)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/bench/out/layers-start}
berth=$(realpath "${BERTH:-$repo/build/src/berth}")
nlayers=${LAYERS:-50}
runs=${RUNS:-40}
warmup=${WARMUP:-5}
formats=${FORMATS:-erofs dir}

note() { echo "layers-start: $*" >&2; }
die() { note "$*"; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root"
for t in hyperfine python3; do command -v $t >/dev/null || die "$t is not installed"; done
mkdir -p "$out"
base=$(mktemp -d /var/tmp/berth-layers-bench.XXXXXX)
cleanup() {
    set +e
    for f in $formats; do
        "$berth" --root "$base/$f" --runroot "$base/$f-run" ps -aq --no-trunc 2>/dev/null |
            xargs -r "$berth" --root "$base/$f" --runroot "$base/$f-run" rm -f >/dev/null 2>&1
        "$berth" --root "$base/$f" --runroot "$base/$f-run" rmi -f many:1 busybox >/dev/null 2>&1
    done
    awk -v p="$base/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$base"
}
trap cleanup EXIT

# The busybox image (from berth's template), saved as an OCI archive, grown to
# $nlayers layers.
B0=("$berth" --root "$base/src" --runroot "$base/src-run" --storage-opt layer-format=dir)
"${B0[@]}" image create busybox >/dev/null
"${B0[@]}" save --format oci-archive -o "$base/busybox.tar" busybox 2>/dev/null ||
    "${B0[@]}" save -o "$base/busybox.tar" busybox
python3 "$repo/bench/many-layers.py" "$base/busybox.tar" "$base/many.tar" "$nlayers"

args=()
for f in $formats; do
    B=("$berth" --root "$base/$f" --runroot "$base/$f-run" --storage-opt "layer-format=$f")
    if ! "${B[@]}" image create busybox >/dev/null 2>"$base/err"; then
        note "format $f: $(cat "$base/err"); skipped"
        continue
    fi
    "${B[@]}" load -q -i "$base/many.tar" >/dev/null
    n=$("${B[@]}" image inspect many:1 --format '{{len .RootFS.Layers}}')
    note "$f: many:1 has $n layers"
    [[ $("${B[@]}" run --rm many:1 cat /layer-1/file) == "layer 1" ]] || die "$f: many:1 does not run"
    cmd=$(printf '%q ' "${B[@]}")
    args+=(-n "$f: 1 layer" "$cmd run --rm busybox true" -n "$f: $n layers" "$cmd run --rm many:1 true")
done
((${#args[@]})) || die "no layer format works here"
hyperfine -N --warmup "$warmup" --runs "$runs" --export-json "$out/start.json" --export-markdown "$out/start.md" "${args[@]}"
python3 - "$out/start.json" <<'PY' | tee "$out/table.md"
import json, sys
res = json.load(open(sys.argv[1]))["results"]
m = {r["command"]: r for r in res}
print("| case | mean (ms) | ± | median |")
print("|---|---|---|---|")
for r in res:
    print(f"| {r['command']} | {r['mean'] * 1e3:.1f} | {r['stddev'] * 1e3:.1f} | {r['median'] * 1e3:.1f} |")
for f in ("erofs", "dir"):
    one = m.get(f"{f}: 1 layer")
    many = [r for k, r in m.items() if k.startswith(f + ":") and k != f"{f}: 1 layer"]
    if one and many:
        ratio = many[0]["mean"] / one["mean"]
        print(f"\n{f}: {many[0]['command']} / 1 layer = {ratio:.2f}x (issue 6 target <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")
PY
