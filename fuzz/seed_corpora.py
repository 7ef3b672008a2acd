#!/usr/bin/env python3
"""Write corpus/<target>/ seeds from spec/vectors/{v1,v2} without building
anything (the same layout as `cargo run --bin seed_corpora`, minus its
freshly written log with signed checkpoints). Run from fuzz/."""
import glob
import os
import struct

V = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "spec", "vectors")


def w(target, name, data):
    os.makedirs(f"corpus/{target}", exist_ok=True)
    with open(f"corpus/{target}/{name}", "wb") as f:
        f.write(data)


def chunk(kind, data):
    data = data[:65535]
    return bytes([kind]) + struct.pack("<H", len(data)) + data


def read(p):
    with open(p, "rb") as f:
        return f.read()


n = 0
for ver in ["v1", "v2"]:
    for case in sorted(glob.glob(f"{V}/{ver}/*/")):
        tag = ver + "-" + os.path.basename(case.rstrip("/"))
        out = b""
        for s in sorted(glob.glob(case + "*.seg")):
            other = 1 if int(os.path.basename(s)[:20]) else 0
            sb = read(s)
            out += chunk(other, sb)
            w("segment", f"{tag}-{os.path.basename(s)}", sb)
            n += 1
            i = s[:-4] + ".idx"
            if os.path.exists(i):
                ib = read(i)
                out += chunk(2 + other, ib)
                seg = sb[:65535]
                w("index", f"{tag}-{os.path.basename(i)}-seg", bytes([3]) + struct.pack("<H", len(seg)) + seg + ib)
                w("index", f"{tag}-{os.path.basename(i)}", bytes([0]) + ib)
                n += 2
        for kind, name, target in [(4, "annal.head", "head"), (5, "annal.streams", "stream_table")]:
            if os.path.exists(case + name):
                b = read(case + name)
                out += chunk(kind, b)
                w(target, f"{tag}-{name}", b)
                n += 1
        snaps = sorted(glob.glob(case + "snapshots/*"))
        for sp in snaps:
            w("snapshot", f"{tag}-{os.path.basename(sp)}", read(sp))
            n += 1
        if snaps:
            out += chunk(6, read(snaps[0]))
        if out:
            w("open_dir", tag, out)
            n += 1
print(f"wrote {n} seeds under corpus/")
