#!/usr/bin/env bash
# make-busybox-bundle.sh DIR [ARGS...]
#
# Builds an OCI bundle in DIR from the busybox-static Debian package:
#   DIR/rootfs       bin/busybox + applet symlinks, proc sys dev etc tmp root,
#                    etc/passwd (root, nobody), etc/group
#   DIR/config.json  `$BERTH_RUNTIME spec --bundle DIR` (runc's default spec),
#                    then process.terminal=false and process.args=ARGS
#                    (default: echo "Hello from a berth container").
#
# Environment:
#   BERTH_RUNTIME      runtime used for `spec` (default: berth-runtime; runc works too)
#   BERTH_TEST_HELPER  if set, copied to DIR/rootfs/bin/berth-test-helper
#   BUSYBOX            busybox binary to use (default: the one from busybox-static)
#
# DIR must not exist yet or be empty.
set -euo pipefail

die() {
    echo "make-busybox-bundle: $*" >&2
    exit 1
}

[[ $# -ge 1 ]] || die "usage: $0 DIR [ARGS...]"
dir=$1
shift
if [[ $# -eq 0 ]]; then
    set -- echo "Hello from a berth container"
fi

runtime=${BERTH_RUNTIME:-berth-runtime}

command -v jq >/dev/null 2>&1 || die "jq is not installed (apt-get install jq)"

busybox=${BUSYBOX:-}
if [[ -z $busybox ]]; then
    status=$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null || true)
    [[ $status == "install ok installed" ]] ||
        die "busybox-static is not installed (apt-get install busybox-static)"
    busybox=$(dpkg -L busybox-static | grep -E '/bin/busybox$' | head -n1)
fi
[[ -x $busybox ]] || die "busybox binary '$busybox' not found or not executable"

command -v "$runtime" >/dev/null 2>&1 ||
    die "runtime '$runtime' not found (set BERTH_RUNTIME, e.g. BERTH_RUNTIME=runc)"

if [[ -n ${BERTH_TEST_HELPER:-} ]]; then
    [[ -f $BERTH_TEST_HELPER ]] || die "BERTH_TEST_HELPER='$BERTH_TEST_HELPER' is not a file"
fi

if [[ -e $dir ]]; then
    [[ -d $dir ]] || die "'$dir' exists and is not a directory"
    [[ -z $(ls -A "$dir") ]] || die "'$dir' is not empty"
fi
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
rootfs=$dir/rootfs

# --- rootfs ------------------------------------------------------------------
mkdir -p "$rootfs"
for d in bin sbin usr/bin usr/sbin proc sys dev etc tmp root var; do
    mkdir -p "$rootfs/$d"
done
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"

install -m 0755 "$busybox" "$rootfs/bin/busybox"

# Applet links: `busybox --list-full` prints paths like "usr/bin/[" relative
# to /.  Links are absolute (/bin/busybox) so they resolve inside the rootfs.
while IFS= read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    mkdir -p "$rootfs/$(dirname "$applet")"
    ln -sfn /bin/busybox "$rootfs/$applet"
done < <("$rootfs/bin/busybox" --list-full)

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF

if [[ -n ${BERTH_TEST_HELPER:-} ]]; then
    install -m 0755 "$BERTH_TEST_HELPER" "$rootfs/bin/berth-test-helper"
fi

# --- config.json ---------------------------------------------------------------
rm -f "$dir/config.json"
"$runtime" spec --bundle "$dir" || die "'$runtime spec --bundle $dir' failed"
[[ -f $dir/config.json ]] || die "'$runtime spec' did not write $dir/config.json"

tmp=$(mktemp "$dir/.config.json.XXXXXX")
jq '.process.terminal = false | .process.args = $ARGS.positional' \
    "$dir/config.json" --args "$@" >"$tmp" || {
    rm -f "$tmp"
    die "editing config.json with jq failed"
}
chmod 0644 "$tmp"
mv "$tmp" "$dir/config.json"
