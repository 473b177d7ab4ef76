#!/usr/bin/env python3
# Writes a small .npy file for the shell tests (no numpy needed):
#   write_npy.py PATH DESCR DIMS [VALUE...]     e.g. write_npy.py x.npy '<f4' 2,1,28,28
# DESCR is '<f4' or '<i8'; DIMS comma-separated; the values default to zeros.
import struct
import sys

path, descr, dims = sys.argv[1], sys.argv[2], [int(d) for d in sys.argv[3].split(",")]
count = 1
for d in dims:
    count *= d
values = [float(v) if descr == "<f4" else int(v) for v in sys.argv[4:]] or [0] * count
assert len(values) == count, f"{len(values)} values for shape {dims}"
shape = ",".join(map(str, dims)) + ("," if len(dims) == 1 else "")
header = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (descr, shape)
header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
payload = struct.pack("<%d%s" % (count, "f" if descr == "<f4" else "q"), *values)
with open(path, "wb") as f:
    f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + payload)
