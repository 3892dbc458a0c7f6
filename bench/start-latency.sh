#!/usr/bin/env bash
# start-latency.sh [OUTDIR] -- container start latency: berth-runtime vs runc
# vs crun vs the floor program (bench/floor.c), same busybox bundle running
# /bin/true.
#
#   1. sequential: one hyperfine invocation, every command `run`s one
#      container to completion (WARMUP warmups, RUNS runs)
#   2. parallel:   one hyperfine invocation, every command runs PAR_COUNT
#      containers PAR_JOBS at a time (xargs -P), PAR_RUNS runs
#
# Results (hyperfine JSON + markdown, ratios.txt) go to OUTDIR (default
# bench/out/).  Ratios are printed against berth-runtime.
#
# Environment:
#   BERTH_RUNTIME  (default build/src/berth-runtime)   BERTH_FLOOR (default build/bench/berth-floor)
#   RUNC (runc)  CRUN (crun)  SPEC_RUNTIME (runtime whose `spec` makes config.json; default runc)
#   RUNS (100)  WARMUP (5)  PAR_COUNT (50)  PAR_JOBS (8)  PAR_RUNS (5)  PAR_WARMUP (1)
#   SKIP_PARALLEL=1  skip the parallel case
# A runtime that is not installed/built is skipped with a note; crun is also
# skipped when it cannot run the bundle on this host (crun 1.8 refuses a
# hybrid cgroup v1/v2 layout).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/bench/out}

berth=${BERTH_RUNTIME:-$repo/build/src/berth-runtime}
floor=${BERTH_FLOOR:-$repo/build/bench/berth-floor}
runc=${RUNC:-runc}
crun=${CRUN:-crun}
runs=${RUNS:-100}
warmup=${WARMUP:-5}
par_count=${PAR_COUNT:-50}
par_jobs=${PAR_JOBS:-8}
par_runs=${PAR_RUNS:-5}
par_warmup=${PAR_WARMUP:-1}

note() { echo "start-latency: $*" >&2; }
die() {
    note "$*"
    exit 1
}

[[ $EUID -eq 0 ]] || die "must run as root (containers need it)"
command -v hyperfine >/dev/null || die "hyperfine is not installed"
command -v python3 >/dev/null || die "python3 is not installed"

resolve() { # prints the absolute path of an executable, or nothing
    local p
    p=$(command -v -- "$1" 2>/dev/null) || return 0
    if [[ -f $p && -x $p ]]; then realpath -- "$p"; fi
    return 0
}

berth=$(resolve "$berth")
floor=$(resolve "$floor")
runc=$(resolve "$runc")
crun=$(resolve "$crun")
[[ -n $floor ]] || die "floor program not found (build target berth-floor, or set BERTH_FLOOR)"

tmp=$(mktemp -d /tmp/berth-bench.XXXXXX)
# The runtimes' state roots on tmpfs, as their defaults (/run/runc,
# /run/berth-runtime): on a disk every run would also write and remove them.
state=$(mktemp -d /run/berth-bench.XXXXXX)
bundle=$tmp/bundle
declare -A bins=()    # name -> runtime binary
[[ -n $berth ]] && bins[berth-runtime]=$berth
[[ -n $runc ]] && bins[runc]=$runc
[[ -n $crun ]] && bins[crun]=$crun

cleanup() {
    local rc=$? name rt root id
    set +e
    for name in "${!bins[@]}"; do
        rt=${bins[$name]} root=$state/root-$name
        [[ -d $root ]] || continue
        {
            "$rt" --root "$root" list -q 2>/dev/null
            # state directories are named after the container id
            find "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null
        } | sort -u | while read -r id; do
            [[ -n $id ]] && "$rt" --root "$root" delete -f "$id" >/dev/null 2>&1
        done
    done
    rm -rf "$tmp" "$state"
    exit "$rc"
}
child=
on_signal() {
    [[ -n $child ]] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
    exit 130
}
trap cleanup EXIT
trap on_signal INT TERM

# Run in the background and wait, so INT/TERM are handled (and the benchmark
# stopped) at once rather than when the foreground command finishes.
run_child() {
    "$@" &
    child=$!
    wait "$child"
    child=
}

# --- bundle ----------------------------------------------------------------------
spec_rt=${SPEC_RUNTIME:-${runc:-$berth}}
[[ -n $spec_rt ]] || die "no runtime to generate config.json with (set SPEC_RUNTIME)"
BERTH_RUNTIME=$spec_rt "$repo/scripts/make-busybox-bundle.sh" "$bundle" /bin/true >/dev/null

mkdir -p "$out"
: >"$out/notes.txt"
log_note() {
    note "$*"
    echo "$*" >>"$out/notes.txt"
}

# --- which runtimes can run the bundle ------------------------------------------
[[ -n $berth ]] || log_note "berth-runtime not found (BERTH_RUNTIME=${BERTH_RUNTIME:-build/src/berth-runtime}); skipped"
[[ -n $runc ]] || log_note "runc not found; skipped"
[[ -n $crun ]] || log_note "crun not found; skipped"

q() { printf '%q' "$1"; }

names=() seq_cmds=() par_cmds=()
for name in berth-runtime runc crun; do
    [[ -n ${bins[$name]:-} ]] || continue
    rt=${bins[$name]} root=$state/root-$name
    mkdir -p "$root"
    if ! err=$(timeout 30 "$rt" --root "$root" run -b "$bundle" "probe-$name-$$" </dev/null 2>&1 >/dev/null); then
        "$rt" --root "$root" delete -f "probe-$name-$$" >/dev/null 2>&1 || true
        log_note "$name cannot run the bundle on this host; skipped: $(tr '\n' ' ' <<<"$err" | cut -c1-300)"
        continue
    fi
    base="$(q "$rt") --root $(q "$root") run -b $(q "$bundle")"
    names+=("$name")
    # $$ is the benchmark shell's pid: unique among live containers.
    seq_cmds+=("$base b\$\$_\$RANDOM")
    par_cmds+=("seq -f \"p\$\$_%g\" 1 $par_count | xargs -P $par_jobs -I{} $base {}")
done
if ! err=$("$floor" "$bundle/rootfs" /bin/true 2>&1); then
    die "floor program failed: $err"
fi
names+=("floor")
seq_cmds+=("$(q "$floor") $(q "$bundle/rootfs") /bin/true")
par_cmds+=("seq 1 $par_count | xargs -P $par_jobs -I{} $(q "$floor") $(q "$bundle/rootfs") /bin/true")

(( ${#names[@]} >= 2 )) || die "nothing to compare the floor with"

hf_args() { # name/command pairs for hyperfine
    local -n cmds=$1
    local i
    for i in "${!names[@]}"; do
        printf '%s\0%s\0%s\0' -n "${names[$i]}" "${cmds[$i]}"
    done
}

# The bundle and the probes above just wrote files: let their writeback finish
# before the first timed command (which would otherwise always be berth-runtime's).
sync
sleep 2

# --- sequential --------------------------------------------------------------------
note "sequential: ${names[*]} ($runs runs, $warmup warmup)"
mapfile -d '' seq_args < <(hf_args seq_cmds)
run_child hyperfine --shell "bash --norc --noprofile" --warmup "$warmup" --runs "$runs" \
    --export-json "$out/sequential.json" --export-markdown "$out/sequential.md" \
    "${seq_args[@]}"

# --- parallel ----------------------------------------------------------------------
if [[ ${SKIP_PARALLEL:-0} != 1 ]]; then
    note "parallel: $par_count containers, $par_jobs at a time ($par_runs runs)"
    mapfile -d '' par_args < <(hf_args par_cmds)
    run_child hyperfine --shell "bash --norc --noprofile" --warmup "$par_warmup" --runs "$par_runs" \
        --export-json "$out/parallel.json" --export-markdown "$out/parallel.md" \
        "${par_args[@]}"
fi

# --- ratios ------------------------------------------------------------------------
python3 - "$out" <<'EOF' | tee "$out/ratios.txt"
import json, os, sys

out = sys.argv[1]
for case in ("sequential", "parallel"):
    path = os.path.join(out, case + ".json")
    if not os.path.exists(path):
        continue
    results = json.load(open(path))["results"]
    mean = {r["command"]: r["mean"] for r in results}
    ref = "berth-runtime" if "berth-runtime" in mean else "floor"
    print(f"{case}:")
    for r in results:
        print(f"  {r['command']:<14} {r['mean'] * 1e3:9.2f} ms ± {(r['stddev'] or 0) * 1e3:.2f}")
    short = "berth" if ref == "berth-runtime" else ref
    for name, m in mean.items():
        if name != ref:
            print(f"  {name}/{short} = {m / mean[ref]:.2f}x")
EOF
if [[ -s $out/notes.txt ]]; then
    echo "notes:" | tee -a "$out/ratios.txt"
    sed 's/^/  /' "$out/notes.txt" | tee -a "$out/ratios.txt"
else
    rm -f "$out/notes.txt"
fi
note "results in $out"
