# shellcheck shell=bash
# shellcheck disable=SC2154  # bench_name, target_fs, skip, out: set by the caller
# Shared set-up of the image benchmarks (image-unpack.sh, image-pull.sh); sourced
# after the caller has set: bench_name, target_fs (loop|host), skip, out.
#
# Gives: note, die, log_note; $base (a private temp dir) with $base/reset DIR...
# (unmount beneath DIR, empty it, sync; refuses anything outside $tmp); $tmp,
# beneath which every measured command writes (a private ext4 with a journal on a
# loop device, or /var/tmp with TARGET_FS=host); run_child, q, have, probe,
# storage_conf; finish_notes. Everything is removed on exit; a caller with more
# to stop defines bench_extra_cleanup.

note() { echo "$bench_name: $*" >&2; }
die() {
    note "$*"
    exit 1
}
[[ $EUID -eq 0 ]] || die "must run as root"

case $target_fs in
loop) for t in losetup mkfs.ext4; do command -v "$t" >/dev/null || die "$t is not installed (or TARGET_FS=host)"; done ;;
host) ;;
*) die "TARGET_FS: loop or host" ;;
esac

base=$(mktemp -d "/var/tmp/$bench_name.XXXXXX")
tmp=$base/mnt # every command writes beneath it
mkdir -p "$tmp"
loopdev=
mkdir -p "$out"
: >"$out/notes.txt"
log_note() {
    note "$*"
    echo "$*" >>"$out/notes.txt"
}

cat >"$base/reset" <<RESET
#!/bin/bash
set -u
for d in "\$@"; do
    case \$d in $tmp/*) ;; *) echo "reset: \$d is not under $tmp" >&2; exit 1 ;; esac
    awk -v p="\$d/" 'index(\$5, p) == 1 || \$5 == substr(p, 1, length(p) - 1) {print \$5}' /proc/self/mountinfo |
        sort -r | while read -r m; do umount -l -- "\$m" 2>/dev/null; done
    rm -rf --one-file-system -- "\$d"
    mkdir -p -- "\$d"
done
sync
RESET
chmod +x "$base/reset"

child=
bench_extra_cleanup() { :; }
bench_cleanup() {
    local rc=$? d
    set +e
    [[ -n $child ]] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
    bench_extra_cleanup
    for d in "${tmp:?}"/*; do [[ -d $d ]] && "$base/reset" "$d" >/dev/null 2>&1 && rmdir "$d"; done
    if mountpoint -q "$tmp"; then umount "$tmp" || umount -l "$tmp"; fi
    [[ -n $loopdev ]] && losetup -d "$loopdev"
    rm -rf --one-file-system -- "${base:?}"
    exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

# This VM's root ext4 has no journal: without one, ext4 passes over recently
# freed inodes when it creates files, so each run would be slowed by the last
# one's deletions. A private journalled ext4 keeps runs comparable.
if [[ $target_fs == loop ]]; then
    truncate -s "${LOOP_SIZE:-48G}" "$base/fs.img"
    mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$base/fs.img"
    loopdev=$(losetup -f --show --direct-io=on "$base/fs.img")
    mount -o discard "$loopdev" "$tmp"
    log_note "targets on a private ext4 (journal) on $loopdev"
else
    log_note "targets on the root filesystem (/var/tmp): see TARGET_FS above"
fi

run_child() {
    "$@" &
    child=$!
    wait "$child"
    child=
}
q() { printf '%q' "$1"; }
have() { [[ $skip != *" $1 "* ]] && command -v "$1" >/dev/null; }
probe() { # probe NAME CMD...: runs once; on failure logs a note and returns 1
    local name=$1 err
    shift
    if ! err=$(timeout 600 bash -c "$*" 2>&1 >/dev/null); then
        log_note "$name failed here; skipped: $(tr '\n' ' ' <<<"$err" | cut -c1-300)"
        return 1
    fi
}
storage_conf() { # storage_conf DIR DRIVER: a private storage.conf for DIR/{root,run}
    cat >"$1.storage.conf" <<CONF
[storage]
driver = "$2"
runroot = "$1/run"
graphroot = "$1/root"
CONF
    echo "$1.storage.conf"
}
finish_notes() {
    if [[ -s $out/notes.txt ]]; then
        echo "notes:" | tee -a "$out/table.md"
        sed 's/^/  /' "$out/notes.txt" | tee -a "$out/table.md"
    else
        rm -f "$out/notes.txt"
    fi
    note "results in $out"
}
