#!/usr/bin/env python3
"""many-layers.py SRC.tar DST.tar N -- grows the one-image OCI archive SRC
(`berth save --format oci-archive`) to N layers: each added layer holds a
directory and a file, every tenth also a whiteout of the previous layer's
file. The image is named many:1 in DST."""
import hashlib, io, json, sys, tarfile
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
blobs = {}
with tarfile.open(src) as t:
    names = t.getnames()
    if "index.json" not in names:
        sys.exit("expected an OCI archive from berth save --format oci-archive")
    for m in t.getmembers():
        if m.isfile():
            blobs[m.name] = t.extractfile(m).read()
idx = json.loads(blobs["index.json"])
def blob(d): return blobs["blobs/sha256/" + d.split(":")[1]]
man = json.loads(blob(idx["manifests"][0]["digest"]))
cfg = json.loads(blob(man["config"]["digest"]))
def put(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs["blobs/sha256/" + d.split(":")[1]] = data
    return d
for i in range(1, n):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as lt:
        def entry(name, data=None):
            ti = tarfile.TarInfo(name); ti.mtime = 1700000000
            if data is None:
                ti.type = tarfile.DIRTYPE; ti.mode = 0o755; lt.addfile(ti)
            else:
                ti.size = len(data); lt.addfile(ti, io.BytesIO(data))
        entry(f"layer-{i}")
        entry(f"layer-{i}/file", f"layer {i}\n".encode())
        if i % 10 == 0:  # a whiteout now and then
            entry(f"layer-{i - 1}")
            entry(f"layer-{i - 1}/.wh.file", b"")
    data = buf.getvalue()
    dg = put(data)
    man["layers"].append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": dg, "size": len(data)})
    cfg["rootfs"]["diff_ids"].append(dg)
    cfg.setdefault("history", []).append({"created_by": f"layer {i}", "created": "2023-11-14T22:13:20Z"})
cb = json.dumps(cfg).encode()
man["config"] = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(cb), "size": len(cb)}
mb = json.dumps(man).encode()
idx = {"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
       "digest": put(mb), "size": len(mb), "annotations": {"io.containerd.image.name": "docker.io/library/many:1",
       "org.opencontainers.image.ref.name": "1"}}]}
blobs["index.json"] = json.dumps(idx).encode()
with tarfile.open(dst, "w") as t:
    for name, data in blobs.items():
        ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
