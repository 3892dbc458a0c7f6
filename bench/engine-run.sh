#!/usr/bin/env bash
# engine-run.sh [OUTDIR] -- `berth run` against its peers, one hyperfine
# invocation per case, reported as ratios:
#   1. `run --rm IMAGE /bin/true` (network none): berth, podman, docker and
#      `ctr run` where installed and working, and `berth-runtime run` of the
#      same bundle berth generates (the engine's overhead over its runtime)
#   2. 50 containers `run -d` + `rm -f`, 8 at a time: berth vs podman and docker
#   3. monitor memory: PSS (/proc/PID/smaps_rollup) of berth-monitor vs conmon
#      and Docker's shim, N containers each
# Every engine gets its own private root under /var/tmp; everything is removed
# on exit. Docker is a dockerd of the bench's own (Debian's docker.io), with
# its data, exec root, socket and cgroup parent private to this run, and the
# containerd it starts serves `ctr run` too, in a namespace of its own: a
# docker daemon already on the host is never used.
#
# Environment: BERTH (build/src/berth)  BERTH_RUNTIME (build/src/berth-runtime)
#   RUNS (50)  WARMUP (5)  PAR_RUNS (3)  PSS_COUNT (50: the binary's shared pages divide among them)
#   SETTLE (65: seconds between the set-up and the first timing, after `sync`)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-$repo/bench/out}
berth=${BERTH:-$repo/build/src/berth}
runtime=${BERTH_RUNTIME:-$repo/build/src/berth-runtime}
runs=${RUNS:-50}
warmup=${WARMUP:-5}
par_runs=${PAR_RUNS:-3}
pss_count=${PSS_COUNT:-50}

note() { echo "engine-run: $*" >&2; }
die() {
    note "$*"
    exit 1
}
[[ $EUID -eq 0 ]] || die "must run as root"
command -v hyperfine >/dev/null || die "hyperfine is not installed"
[[ -x $berth ]] || die "$berth is not built"
mkdir -p "$out"

base=$(mktemp -d /var/tmp/berth-engine-bench.XXXXXX)
# State that a reboot clears lives on tmpfs, as in the engines' defaults
# (/run/berth, /run/containers/storage).
run=$(mktemp -d /run/berth-engine-bench.XXXXXX)
# podman (cgroupfs manager) makes libpod_parent/conmon cgroups and leaves them:
# removed at the end when this run made them.
podman_cgroups=$(ls -d /sys/fs/cgroup/*/libpod_parent 2>/dev/null || true)
B=("$berth" --root "$base/berth" --runroot "$run/berth")
# --tmpdir: libpod keeps its alive lock, events and exit files there (/run/libpod by default).
P=(podman --root "$base/podman" --runroot "$run/podman" --tmpdir "$run/podman-tmp" --cgroup-manager cgroupfs --events-backend file)
# podman gives a container RLIMIT_NOFILE and RLIMIT_NPROC of 1048576 by default,
# which this VM forbids (no CAP_SYS_RESOURCE: a hard limit cannot be raised),
# and --ulimit host still failed at NPROC: limits below the host's are set instead.
PR=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)
D=(docker -H "unix://$run/docker.sock")
C=(ctr --address "$run/docker/containerd/containerd.sock" -n berth-bench)
# containerd and dockerd also keep a few things at fixed paths (shim sockets
# and FIFOs under /run/containerd, /run/docker/plugins, dockerd's key.json):
# removed at the end when this run made them.
docker_fixed=()
for f in /run/containerd /run/docker /etc/docker/key.json; do [[ -e $f ]] || docker_fixed+=("$f"); done
# podman's too: its lock file and image cache, and the state roots of the
# runtimes it runs (crun's, runc's), and libmount's /run/mount (the engines'
# and our own unmounts), each removed at the end if this run made it (those
# under /run only while empty).
podman_fixed=()
for f in /dev/shm/libpod_lock /var/lib/containers /run/crun /run/runc /run/mount; do
    [[ -e $f ]] || podman_fixed+=("$f")
done
dockerd_pid=
cleanup() {
    set +e
    if [[ -n $dockerd_pid ]]; then
        "${D[@]}" ps -aq | xargs -r "${D[@]}" rm -f >/dev/null 2>&1
        local ctrd
        ctrd=$(cat "$run/docker/containerd/containerd.pid" 2>/dev/null)
        kill "$dockerd_pid" 2>/dev/null
        wait "$dockerd_pid" 2>/dev/null
        # dockerd stops the containerd it started; one left is ours too.
        [[ -n $ctrd ]] && kill "$ctrd" 2>/dev/null
        for _ in $(seq 50); do
            [[ -n $ctrd && -d /proc/$ctrd ]] || break
            sleep 0.1
        done
        for d in /sys/fs/cgroup/*/berth-bench-docker /sys/fs/cgroup/*/berth-bench-ctr; do
            [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
        ((${#docker_fixed[@]})) && rm -rf "${docker_fixed[@]}"
    fi
    [[ -n ${B[*]} ]] && "${B[@]}" ps -aq --no-trunc 2>/dev/null | xargs -r "${B[@]}" rm -f >/dev/null 2>&1
    if command -v podman >/dev/null; then
        "${P[@]}" rm -af >/dev/null 2>&1
        "${P[@]}" system reset -f >/dev/null 2>&1
    fi
    [[ -n ${bundle_id:-} ]] && "$runtime" --root "$run/rt" delete -f "$bundle_id" >/dev/null 2>&1
    if [[ -z $podman_cgroups ]]; then
        for d in /sys/fs/cgroup/*/libpod_parent; do
            [[ -d $d ]] || continue
            rmdir "$d/conmon" "$d" 2>/dev/null
        done
    fi
    for d in "$base" "$run"; do
        awk -v p="$d/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r |
            while read -r m; do umount -l "$m"; done
    done
    rm -rf --one-file-system "$base" "$run"
    for f in "${podman_fixed[@]}"; do
        case $f in
            /run/*) [[ -d $f ]] && rmdir "$f" 2>/dev/null ;;
            *) rm -rf "$f" ;;
        esac
    done
}
trap cleanup EXIT

"${B[@]}" image create busybox >/dev/null
cmds=("${B[*]} run --rm busybox /bin/true")
names=(berth)

# berth-runtime on the very bundle berth makes (config.json + mounted rootfs).
cid=$("${B[@]}" create --name bench-bundle busybox /bin/true)
bundle_id=bench-rt
cmds+=("$runtime --root $run/rt run --bundle $base/berth/containers/$cid $bundle_id")
names+=(berth-runtime)

if command -v podman >/dev/null; then
    "${B[@]}" save busybox | "${P[@]}" load -q >/dev/null
    # podman names a docker-archive's "busybox:latest" localhost/busybox.
    "${P[@]}" tag localhost/busybox:latest docker.io/library/busybox:latest
    podman_ok() { "${P[@]}" run "${PR[@]}" --rm --network none docker.io/library/busybox:latest /bin/true 2>"$base/podman.err"; }
    # With crun installed podman picks it, and crun refuses a host whose
    # cgroup2 mount holds a controller beside the v1 ones (this VM's hugetlb):
    # podman is then timed on runc, as it ran before crun was installed.
    podman_works=false
    if podman_ok; then
        podman_works=true
    elif command -v runc >/dev/null && grep -q crun "$base/podman.err"; then
        note "podman on crun failed ($(head -1 "$base/podman.err")): timed with --runtime runc"
        P+=(--runtime runc)
        podman_ok && podman_works=true
    fi
    if $podman_works; then
        cmds+=("${P[*]} run ${PR[*]} --rm --network none docker.io/library/busybox:latest /bin/true")
        names+=(podman)
    else
        note "podman skipped: $(head -1 "$base/podman.err")"
    fi
else
    note "podman is not installed: skipped"
fi
if command -v dockerd >/dev/null && command -v docker >/dev/null; then
    # No bridge, no iptables rules, no userland proxy: only `--network none`
    # containers run, as for the others.
    dockerd --data-root "$base/docker" --exec-root "$run/docker" --pidfile "$run/docker.pid" \
        -H "unix://$run/docker.sock" --cgroup-parent berth-bench-docker --storage-driver overlay2 \
        --bridge none --iptables=false --ip6tables=false --ip-forward=false --ip-masq=false \
        --userland-proxy=false >"$base/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 100); do
        "${D[@]}" version >/dev/null 2>&1 && break
        sleep 0.2
    done
    "${B[@]}" save busybox >"$base/busybox.tar"
    if ! "${D[@]}" load -q -i "$base/busybox.tar" >/dev/null 2>"$base/docker.err"; then
        note "docker skipped: $(tail -1 "$base/docker.err") (dockerd: $(tail -1 "$base/dockerd.log"))"
    elif "${D[@]}" run --rm --network none busybox:latest /bin/true 2>"$base/docker.err"; then
        cmds+=("${D[*]} run --rm --network none busybox:latest /bin/true")
        names+=(docker)
    else
        note "docker skipped: $(head -1 "$base/docker.err")"
    fi
    # ctr on the containerd dockerd started; its own runc root and cgroup.
    CR=(--runc-root "$run/ctr-runc" --cgroup /berth-bench-ctr/run)
    if ! command -v ctr >/dev/null; then
        note "ctr (containerd) is not installed: skipped"
    elif "${C[@]}" images import "$base/busybox.tar" >/dev/null 2>"$base/ctr.err" &&
        "${C[@]}" run "${CR[@]}" --rm docker.io/library/busybox:latest bench-ctr /bin/true 2>>"$base/ctr.err"; then
        cmds+=("${C[*]} run ${CR[*]} --rm docker.io/library/busybox:latest bench-ctr /bin/true")
        names+=(ctr)
    else
        note "ctr skipped: $(head -1 "$base/ctr.err")"
    fi
else
    note "docker and ctr skipped: docker.io (dockerd) is not installed"
fi

# The set-up (stores, images, podman's load and test run) made and removed
# thousands of files under /var/tmp. On an ext4 without a journal (this VM's)
# the inode allocator then steps over every inode freed in the last minute,
# which slows whatever makes files there next (berth's containers; the
# runtime's state is on tmpfs): the timings start on a settled disk.
sync
sleep "${SETTLE:-65}"

args=()
for i in "${!cmds[@]}"; do args+=(-n "${names[$i]}" "${cmds[$i]}"); done
hyperfine -N -w "$warmup" -r "$runs" --export-json "$out/engine-run.json" --export-markdown "$out/engine-run.md" \
    "${args[@]}" >&2

# 50 run -d + rm -f, 8 at a time: one script per engine.
par_script() { # name, run flags, engine command...
    local f=$base/par-$1.sh runflags=$2
    shift 2
    {
        echo '#!/bin/bash'
        echo 'one() { local id; id=$('"$*"' run '"$runflags"' -d --network none docker.io/library/busybox:latest sleep 100) && '"$*"' rm -f "$id" >/dev/null; }'
        echo 'export -f one'
        echo 'seq 50 | xargs -P8 -I{} bash -c one'
    } >"$f"
    chmod +x "$f"
    echo "$f"
}
pargs=(-n berth "$(par_script berth "" "${B[@]}")")
[[ " ${names[*]} " == *" podman "* ]] && pargs+=(-n podman "$(par_script podman "${PR[*]}" "${P[@]}")")
[[ " ${names[*]} " == *" docker "* ]] && pargs+=(-n docker "$(par_script docker "" "${D[@]}")")
hyperfine -N -w 1 -r "$par_runs" --export-json "$out/engine-parallel.json" --export-markdown "$out/engine-parallel.md" \
    "${pargs[@]}" >&2

# Monitor memory: PSS of each engine's per-container process.
pss() { # pattern -> mean PSS in KiB of the processes whose comm matches
    local total=0 n=0 p v
    for p in $(pgrep -x "$1"); do
        v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null) || continue
        total=$((total + v)) n=$((n + 1))
    done
    ((n > 0)) && echo "$((total / n)) KiB over $n" || echo "none running"
}
for _ in $(seq "$pss_count"); do "${B[@]}" run -d busybox sleep 1000 >/dev/null; done
# A monitor serves its container's first 250 ms from the image that started it,
# then re-execs into the small one it lives in (engine/monitor.cc): measured after.
sleep 1
berth_pss=$(pss berth-monitor)
"${B[@]}" ps -aq --no-trunc | xargs -r "${B[@]}" rm -f >/dev/null
conmon_pss="skipped"
if [[ " ${names[*]} " == *" podman "* ]]; then
    for _ in $(seq "$pss_count"); do "${P[@]}" run "${PR[@]}" -d --network none docker.io/library/busybox:latest sleep 1000 >/dev/null; done
    conmon_pss=$(pss conmon)
    "${P[@]}" rm -af -t 0 >/dev/null
fi
shim_pss="skipped"
if [[ " ${names[*]} " == *" docker "* ]]; then
    seq "$pss_count" | xargs -P8 -I{} "${D[@]}" run -d --network none busybox:latest sleep 1000 >/dev/null
    # comm is cut at 15 characters: containerd-shim-runc-v2
    shim_pss=$(pss containerd-shim)
    "${D[@]}" ps -q | xargs -r "${D[@]}" rm -f >/dev/null
fi

python3 - "$out" "$berth_pss" "$conmon_pss" "$shim_pss" <<'PY' | tee "$out/engine-ratios.txt"
import json, sys
out, berth_pss, conmon_pss, shim_pss = sys.argv[1:5]
def load(name):
    return {r["command"]: r for r in json.load(open(f"{out}/{name}.json"))["results"]}
for case in ("engine-run", "engine-parallel"):
    res = load(case)
    b = res["berth"]["mean"]
    print(f"{case}: berth {b*1000:.1f} ms")
    for name, r in res.items():
        if name != "berth":
            print(f"  {name:14s} {r['mean']*1000:8.1f} ms  ratio {r['mean']/b:6.2f}x (peer / berth)")
print(f"monitor PSS: berth-monitor {berth_pss}; conmon {conmon_pss}; docker's containerd-shim {shim_pss}")
PY
