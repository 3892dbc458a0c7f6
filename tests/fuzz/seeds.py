#!/usr/bin/env python3
"""Writes the EROFS fuzzer's seed corpus: small layer tars of every entry type
berth indexes (ustar, pax with xattrs and nanosecond times, GNU long names),
hardlinks, whiteouts and opaque directories, duplicates, and files that span
several 512-byte blocks. Usage: seeds.py DIR"""
import io
import os
import sys
import tarfile


def add(t, name, kind=tarfile.REGTYPE, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = kw.pop("mode", 0o755 if kind == tarfile.DIRTYPE else 0o644)
    ti.mtime = kw.pop("mtime", 1700000000)
    for k, v in kw.items():
        setattr(ti, k, v)
    if kind == tarfile.REGTYPE:
        ti.size = len(data)
        t.addfile(ti, io.BytesIO(data))
    else:
        t.addfile(ti)


def write(path, fmt, entries):
    with tarfile.open(path, "w", format=fmt) as t:
        for e in entries:
            add(t, *e[:2], **e[2]) if len(e) > 2 else add(t, *e)


def main(out):
    os.makedirs(out, exist_ok=True)
    D, F, L, H = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    cap = bytes([1, 0, 0, 2, 0, 4, 0, 0] + [0] * 12)
    seeds = {
        "basic": (tarfile.USTAR_FORMAT, [("etc", D), ("etc/passwd", F, {"data": b"root:x:0:0::/root:/bin/sh\n"}),
                                         ("bin", D), ("bin/sh", F, {"data": b"\x7fELF" + b"x" * 1500, "mode": 0o755}),
                                         ("bin/ash", L, {"linkname": "sh"}), ("bin/ls", H, {"linkname": "bin/sh"})]),
        "devices": (tarfile.USTAR_FORMAT, [("dev", D), ("dev/null", tarfile.CHRTYPE, {"devmajor": 1, "devminor": 3}),
                                           ("dev/sda", tarfile.BLKTYPE, {"devmajor": 8, "devminor": 0}),
                                           ("fifo", tarfile.FIFOTYPE), ("empty", F)]),
        "pax": (tarfile.PAX_FORMAT, [("x", D, {"pax_headers": {"SCHILY.xattr.user.a": "1"}}),
                                     ("x/caps", F, {"data": b"bin", "pax_headers": {
                                         "SCHILY.xattr.security.capability": cap.decode("latin-1"),
                                         "SCHILY.xattr.trusted.t": "v", "mtime": "1600000000.123456789"}}),
                                     ("x/" + "n" * 200, F, {"data": b"long", "uid": 100000, "gid": 4000000000})]),
        "gnu": (tarfile.GNU_FORMAT, [("d" * 120, D), ("d" * 120 + "/" + "f" * 150, F, {"data": b"g" * 700}),
                                     ("l", L, {"linkname": "t" * 200})]),
        "whiteouts": (tarfile.PAX_FORMAT, [("a", D), ("a/.wh.gone", F), ("b", D), ("b/.wh..wh..opq", F),
                                           ("b/z", F, {"data": b"z"}), (".wh.top", F)]),
        "duplicates": (tarfile.PAX_FORMAT, [("d", D), ("d/x", F, {"data": b"1"}), ("d", F, {"data": b"file"}),
                                            ("e", F, {"data": b"first"}), ("e", D), ("e/y", F, {"data": b"2"}),
                                            ("./h", F, {"data": b"dot"}), ("i//j", F)]),
        "blocks": (tarfile.USTAR_FORMAT, [("many", D)] + [("many/f%d" % i, F, {"data": bytes([i]) * (i * 97)})
                                                           for i in range(40)]),
    }
    for name, (fmt, entries) in seeds.items():
        write(os.path.join(out, name + ".tar"), fmt, entries)


if __name__ == "__main__":
    main(sys.argv[1])
