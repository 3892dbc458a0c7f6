#!/bin/sh
# PID 1 of the cgroup v2 test VM (see run-cgroup-v2.sh). Each check prints
# "BERTH-V2 PASS name" or "BERTH-V2 FAIL name: detail"; "BERTH-V2 DONE" last.
# pivot_root can't leave the initramfs (rootfs): move to a tmpfs root first.
if [ ! -e /.switched ]; then
  mkdir -p /newroot
  mount -t tmpfs -o mode=755 tmpfs /newroot
  cp -a /bin /bundle /init /newroot/
  for d in /lib /lib64 /usr /sbin /modules /etc; do [ -e $d ] && cp -a $d /newroot/; done
  mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp /newroot/etc
  touch /newroot/.switched
  exec switch_root /newroot /init
fi
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs tmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
# The test cgroups live below a parent with every controller delegated.
echo "+cpu +memory +pids +io +cpuset" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null

R="/bin/berth-runtime --root /run/berth"
B=/bundle
pass() { echo "BERTH-V2 PASS $1"; }
failc() { echo "BERTH-V2 FAIL $1: $2"; }

write_config() { # $1: args json, $2: extra linux json (merged textually)
cat > $B/config.json <<JSON
{"ociVersion":"1.3.0","root":{"path":"rootfs"},
 "process":{"user":{"uid":0,"gid":0},"args":$1,"cwd":"/","env":["PATH=/bin"],
   "capabilities":{"bounding":["CAP_KILL"],"effective":["CAP_KILL"],"permitted":["CAP_KILL"]}},
 "hostname":"v2",
 "mounts":[{"destination":"/proc","type":"proc","source":"proc"},
           {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","mode=755"]},
           {"destination":"/sys","type":"sysfs","source":"sysfs","options":["nosuid","noexec","nodev","ro"]},
           {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup","options":["nosuid","noexec","nodev","ro"]}],
 "linux":{"namespaces":[{"type":"pid"},{"type":"mount"},{"type":"uts"},{"type":"ipc"},{"type":"cgroup"}],
          "cgroupsPath":"/berth-v2/c"$2}}
JSON
}

# 1. A container runs, inside its own cgroup (CLONE_INTO_CGROUP), which is gone after.
write_config '["/bin/sh","-c","cat /proc/self/cgroup; echo hi"]' ''
out=$(cd $B && $R run c1 2>&1)
if echo "$out" | grep -q '^hi$' && echo "$out" | grep -q '^0::/$'; then pass run-in-cgroupns; else failc run-in-cgroupns "$out"; fi
[ -d /sys/fs/cgroup/berth-v2/c ] && failc cgroup-removed "still there" || pass cgroup-removed

# 2. memory limit: memory.max set, a hog is OOM-killed (137).
write_config '["/bin/berth-test-helper","memhog","128"]' ',"resources":{"memory":{"limit":33554432,"swap":33554432}}'
out=$(cd $B && $R run c2 2>&1); rc=$?
if [ $rc -eq 137 ]; then pass memory-oom-kill; else failc memory-oom-kill "rc=$rc $out"; fi

# 3. pids limit and cpu.max/cpu.weight are written.
write_config '["/bin/sh","-c","cat /sys/fs/cgroup/pids.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/cpu.weight"]' \
  ',"resources":{"pids":{"limit":17},"cpu":{"quota":50000,"period":100000,"shares":1024}}'
out=$(cd $B && $R run c3 2>&1)
if echo "$out" | grep -q '^17$' && echo "$out" | grep -q '^50000 100000$' && echo "$out" | grep -q '^39$'; then
  pass pids-cpu-limits; else failc pids-cpu-limits "$out"; fi

# 4. create/start/pause/resume/kill/delete on v2 (cgroup.freeze, cgroup.kill).
write_config '["/bin/berth-test-helper","pause"]' ''
(cd $B && $R create c4 >/tmp/c4.out 2>&1 </dev/null)
$R start c4
$R pause c4
st=$($R state c4 | grep '"status"')
frozen=$(cat /sys/fs/cgroup/berth-v2/c/cgroup.freeze 2>/dev/null)
$R resume c4
st2=$($R state c4 | grep '"status"')
if echo "$st" | grep -q paused && [ "$frozen" = 1 ] && echo "$st2" | grep -q running; then pass pause-resume; else failc pause-resume "$st / $frozen / $st2"; fi
$R exec c4 /bin/berth-test-helper echo exec-ok > /tmp/c4.exec 2>&1
grep -q exec-ok /tmp/c4.exec && pass exec || failc exec "$(cat /tmp/c4.exec)"
$R kill --all c4 KILL
sleep 0.3
$R delete -f c4
[ -d /sys/fs/cgroup/berth-v2/c ] && failc delete "cgroup left" || pass delete
[ -z "$(ls /run/berth 2>/dev/null)" ] && pass state-clean || failc state-clean "$(ls /run/berth)"

# 5. Bad input on v2: a cpuset outside the machine fails cleanly.
write_config '["/bin/true"]' ',"resources":{"cpu":{"cpus":"63"}}'
out=$(cd $B && $R run c5 2>&1); rc=$?
if [ $rc -ne 0 ] && echo "$out" | grep -q 'cpus' && [ ! -d /sys/fs/cgroup/berth-v2/c ]; then pass bad-cpuset; else failc bad-cpuset "rc=$rc $out"; fi

# 6. The integration suite's cgroup tests, the same that run on the v1 host.
if [ -x /bin/berth-integration-tests ]; then
  [ -f /modules/loop.ko ] && insmod /modules/loop.ko 2>/dev/null
  # Huge pages for the hugetlb test (the guest is ours to configure).
  echo 4 > /proc/sys/vm/nr_hugepages
  echo "+hugetlb" > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
  export BERTH_IT_RUNTIME=/bin/berth-runtime BERTH_IT_HELPER=/bundle/rootfs/bin/berth-test-helper BERTH_IT_BUSYBOX=/bin/busybox
  /bin/berth-integration-tests --gtest_filter='Cgroup.*' > /tmp/gt.log 2>&1
  rc=$?
  sed 's/^/BERTH-V2-GT /' /tmp/gt.log
  if [ $rc -eq 0 ]; then pass gtest-cgroup; else failc gtest-cgroup "exit $rc"; fi
fi

# 7. The image store on the guest's kernel: before 6.12 (Debian 12's 6.1) it
# cannot mount berth's EROFS layers, so the probe says dir and the store's
# tests pass on unpacked layers; a newer kernel must say erofs.
if [ -x /bin/berth-image-tests ]; then
  for m in overlay crc32c_generic libcrc32c erofs; do [ -f /modules/$m.ko ] && insmod /modules/$m.ko 2>/dev/null; done
  rel=$(uname -r); maj=${rel%%.*}; rest=${rel#*.}; min=${rest%%.*}
  want=dir
  if [ "$maj" -gt 6 ] || { [ "$maj" -eq 6 ] && [ "$min" -ge 12 ]; }; then want=erofs; fi
  fmt=$(/bin/berth --root /tmp/probe-store info 2>&1 | grep 'Layer format')
  if echo "$fmt" | grep -q "Layer format: $want\$"; then pass layer-format-fallback; else failc layer-format-fallback "kernel $rel: $fmt (want $want)"; fi
  BERTH_TEST_CLI=/bin/berth /bin/berth-image-tests --gtest_filter='LayerFormatTest.*:StoreTest.*-StoreTest.KilledAtRandomPoints*' > /tmp/gi.log 2>&1
  rc=$?
  sed 's/^/BERTH-V2-GT /' /tmp/gi.log
  dmesg | grep -iE 'overlay|erofs' | sed 's/^/BERTH-V2-GT dmesg: /'
  if [ $rc -eq 0 ]; then pass gtest-image-store-dir; else failc gtest-image-store-dir "exit $rc"; fi
  # 7b. The engine under the cgroupfs driver: a default container's device
  # rules are the eBPF program its early monitor attached, which the start
  # keeps; --device and --privileged get the start's own.
  if [ -x /bin/berth-monitor ]; then
    B="/bin/berth --root /tmp/dev-store --runroot /tmp/dev-run"
    P='mknod /tmp/n c 1 3 && echo n; mknod /tmp/k c 1 11 2>/dev/null && echo k || echo no-k; mknod /tmp/s b 8 0 2>/dev/null && echo s || echo no-s'
    d1=$($B run --rm busybox sh -c "$P" 2>&1 | tr '\n' ' ')
    d2=$($B run --rm --device /dev/kmsg busybox sh -c "$P" 2>&1 | tr '\n' ' ')
    d3=$($B run --rm --privileged busybox sh -c "$P" 2>&1 | tr '\n' ' ')
    if [ "$d1" = "n no-k no-s " ] && [ "$d2" = "n k no-s " ] && [ "$d3" = "n k s " ]; then
      pass engine-device-rules
    else
      failc engine-device-rules "default: $d1; --device: $d2; --privileged: $d3"
    fi
  fi
fi

# 8. The systemd cgroup driver, against a real systemd: started as PID 1 of a
# pid namespace, in a cgroup of its own (/sd), with no units but a target. The
# tests run in its pid namespace (the PIDs a scope gets are read there) and
# talk to it on its private socket (there is no dbus-daemon here).
if [ -x /lib/systemd/systemd ] && [ -x /bin/berth-integration-tests ]; then
  export BERTH_IT_RUNTIME=/bin/berth-runtime BERTH_IT_HELPER=/bundle/rootfs/bin/berth-test-helper BERTH_IT_BUSYBOX=/bin/busybox
  mkdir -p /sys/fs/cgroup/sd
  unshare --pid --fork --mount-proc sh -c 'echo 0 > /sys/fs/cgroup/sd/cgroup.procs; exec env container=berth-test /lib/systemd/systemd --log-target=console --log-level=notice' > /tmp/systemd.log 2>&1 &
  for i in $(seq 1 200); do [ -S /run/systemd/private ] && [ -d /run/systemd/system ] && break; sleep 0.1; done
  SD=$(pidof systemd)
  if [ -n "$SD" ] && [ -S /run/systemd/private ]; then
    DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/systemd/private nsenter -t "$SD" -p -m \
      /bin/berth-integration-tests --gtest_filter='SystemdCgroup.*' > /tmp/gs.log 2>&1
    rc=$?
    sed 's/^/BERTH-V2-GT /' /tmp/gs.log
    grep -q '\[  SKIPPED \]' /tmp/gs.log && rc=1
    if [ $rc -eq 0 ]; then pass gtest-systemd-driver; else failc gtest-systemd-driver "exit $rc"; fi
    # The engine: `berth --cgroup-manager systemd run -d` makes the same kind of
    # scope, and `rm -f` stops it.
    if [ -x /bin/berth ] && [ -x /bin/berth-monitor ]; then
      out=$(DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/systemd/private nsenter -t "$SD" -p -m sh -c '
        B="/bin/berth --root /tmp/sd-store --runroot /tmp/sd-run --cgroup-manager systemd"
        $B image create busybox >/dev/null || { echo "image create failed"; exit 1; }
        id=$($B run -d busybox sleep 60) || { echo "run failed: $id"; exit 1; }
        pid=$($B inspect -f "{{.State.Pid}}" $id)
        grep -q "/system.slice/berth-$id.scope\$" /proc/$pid/cgroup || { echo "cgroup: $(cat /proc/$pid/cgroup)"; exit 1; }
        [ -f /run/systemd/transient/berth-$id.scope ] || { echo "no unit"; exit 1; }
        $B rm -f $id >/dev/null || { echo "rm failed"; exit 1; }
        [ ! -e /run/systemd/transient/berth-$id.scope ] || { echo "unit left"; exit 1; }
        echo engine-ok' 2>&1)
      if echo "$out" | grep -q '^engine-ok$'; then pass engine-systemd-scope; else failc engine-systemd-scope "$out"; fi
    fi
  else
    sed 's/^/BERTH-V2-GT systemd: /' /tmp/systemd.log
    failc gtest-systemd-driver "systemd did not start"
  fi
fi

echo "BERTH-V2 DONE"
poweroff -f
