#!/usr/bin/env bash
# Boots Debian's kernel under qemu with cgroup v1 disabled (cgroup_no_v1=all), with
# the static berth-runtime, the test helper, busybox and the integration test
# binary (with its shared libraries) in an initramfs, and runs there the cgroup
# v2 checks of vm-init.sh and the integration suite's Cgroup tests, the same
# ones the v1 host runs. Prints the guest's result lines and exits 0 only if
# every check passed; 77 (ctest's skip) when qemu or a kernel is missing.
# With IMAGE_TESTS and BERTH_CLI it also runs the image store's tests there:
# Debian 12's 6.1 kernel cannot mount berth's EROFS layers, so the store falls
# back to unpacked (dir) layers, which is what they then test.
#
#   run-cgroup-v2.sh BERTH_RUNTIME HELPER [INTEGRATION_TESTS [IMAGE_TESTS BERTH_CLI]]
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runtime=${1:?usage: $0 BERTH_RUNTIME HELPER [INTEGRATION_TESTS]}
helper=${2:?usage: $0 BERTH_RUNTIME HELPER [INTEGRATION_TESTS]}
itests=${3:-}
imgtests=${4:-}
cli=${5:-}

qemu=$(command -v qemu-system-x86_64 || true)
kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z $qemu || -z $kernel ]]; then
  echo "skip: needs qemu-system-x86 and linux-image-amd64 (scripts/install-deps.sh installs them)"
  exit 77
fi
busybox=/bin/busybox
[[ -x $busybox ]] || { echo "skip: needs busybox-static"; exit 77; }

work=$(mktemp -d /tmp/berth-vm.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/initramfs
mkdir -p "$root"/{bin,sbin,proc,sys,dev,tmp,run,etc,bundle/rootfs/bin,bundle/rootfs/proc,bundle/rootfs/dev,bundle/rootfs/sys,bundle/rootfs/tmp}
cp "$busybox" "$root/bin/busybox"
for a in sh mount umount mkdir cat echo ls grep sleep poweroff mknod rm cp seq sed touch switch_root; do ln -s busybox "$root/bin/$a"; done
cp "$runtime" "$root/bin/berth-runtime"
cp "$busybox" "$root/bundle/rootfs/bin/busybox"
for a in sh cat echo sleep true ls; do ln -s busybox "$root/bundle/rootfs/bin/$a"; done
cp "$helper" "$root/bundle/rootfs/bin/berth-test-helper"
if [[ -n $itests ]]; then
  cp "$itests" "$root/bin/berth-integration-tests"
  # Its shared libraries, at the paths the dynamic loader looks in.
  for lib in $(ldd "$itests" | grep -oE '/[^ ]+\.so[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  for a in losetup insmod true; do ln -sf busybox "$root/bin/$a"; done
  mkdir -p "$root/sbin" "$root/modules"
  ln -sf ../bin/busybox "$root/sbin/losetup"
  # The loop driver, for the block IO throttle test.
  kver=${kernel#*/vmlinuz-}
  loop=$(find "/lib/modules/$kver" -name 'loop.ko' 2>/dev/null | head -n 1 || true)
  [[ -n $loop ]] && cp "$loop" "$root/modules/loop.ko"
  # systemd, for the systemd cgroup driver's tests: the manager with its
  # libraries, unshare and nsenter to give it a pid namespace, and one target.
  if [[ -x /lib/systemd/systemd ]]; then
    for b in /lib/systemd/systemd /usr/bin/unshare /usr/bin/nsenter; do
      mkdir -p "$root$(dirname "$b")"
      cp "$b" "$root$b"
      for lib in $(ldd "$b" | grep -oE '/[^ ]+\.so[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
      done
    done
    ln -sf ../usr/bin/unshare "$root/bin/unshare"
    ln -sf ../usr/bin/nsenter "$root/bin/nsenter"
    ln -sf busybox "$root/bin/pidof"
    mkdir -p "$root/etc/systemd/system"
    printf '[Unit]\nDescription=berth test target\n' >"$root/etc/systemd/system/default.target"
  fi
fi
if [[ -n $imgtests && -n $cli ]]; then
  cp "$imgtests" "$root/bin/berth-image-tests"
  # berth (BERTH_TEST_CLI tells the tests) and berth-full, which it execs for
  # the image verbs (a static berth has no libraries; the others' are copied).
  cp "$cli" "$root/bin/berth"
  full=
  if [[ -x $(dirname "$cli")/berth-full ]]; then
    full=$(dirname "$cli")/berth-full
    cp "$full" "$root/bin/berth-full"
  fi
  # The monitor (static), for the engine's checks (cgroupfs, and under systemd).
  [[ -x $(dirname "$cli")/berth-monitor ]] && cp "$(dirname "$cli")/berth-monitor" "$root/bin/berth-monitor"
  for lib in $(ldd "$imgtests" "$cli" $full 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  for a in gzip tar; do ln -sf busybox "$root/bin/$a"; done
  mkdir -p "$root/modules"
  kver=${kernel#*/vmlinuz-}
  for m in overlay crc32c_generic libcrc32c erofs; do
    f=$(find "/lib/modules/$kver" -name "$m.ko*" 2>/dev/null | head -n 1 || true)
    case $f in
      *.ko) cp "$f" "$root/modules/$m.ko" ;;
      *.ko.xz) xz -dc "$f" >"$root/modules/$m.ko" ;;
      *.ko.zst) zstd -qdc "$f" >"$root/modules/$m.ko" ;;
    esac
  done
fi
cp "$here/vm-init.sh" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) > "$work/initrd"

out=$work/console.log
# No KVM here: TCG. A guest that hangs is cut off by the timeout.
timeout 500 "$qemu" -nographic -no-reboot -m 1024 -smp 2 \
  -kernel "$kernel" -initrd "$work/initrd" \
  -append "console=ttyS0 quiet panic=-1 cgroup_no_v1=all rdinit=/init" \
  </dev/null >"$out" 2>&1 || true
# The serial console may prefix a line with terminal escapes: match anywhere.
results=$(grep -oE 'BERTH-V2 (PASS|FAIL|DONE).*' "$out" || true)
# The integration suite's own lines, for the log.
grep -oE 'BERTH-V2-GT .*' "$out" | sed 's/^BERTH-V2-GT /  guest: /' | grep -E '^  guest: \[ *(OK|FAILED|SKIPPED|PASSED) *\]|Failure|Which is|Expected|stderr|dmesg|Invalid' || true
if [[ -z $results ]]; then
  echo "no result from the guest; console:"
  tail -n 40 "$out"
  exit 1
fi
echo "$results"
passed=$(grep -c 'BERTH-V2 PASS' <<<"$results" || true)
want=9
[[ -n $itests ]] && want=10
[[ -n $itests && -x /lib/systemd/systemd ]] && want=$((want + 1))
[[ -n $itests && -x /lib/systemd/systemd && -n $cli && -x $(dirname "$cli")/berth-monitor ]] && want=$((want + 1))
[[ -n $imgtests && -n $cli ]] && want=$((want + 2))
[[ -n $imgtests && -n $cli && -x $(dirname "$cli")/berth-monitor ]] && want=$((want + 1))
if grep -q 'BERTH-V2 FAIL' <<<"$results" || ! grep -q 'BERTH-V2 DONE' <<<"$results" || ((passed != want)); then
  echo "--- guest console (tail) ---"
  tail -n 60 "$out"
  exit 1
fi
echo "cgroup v2 VM: $passed passed, 0 failed"
