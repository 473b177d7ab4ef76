#!/usr/bin/env python3
"""Shrinks a .tern crash input while the fuzz target still fails the same way.

libFuzzer's -minimize_crash=1 cuts bytes, which a checksummed, 64-byte aligned container rarely
survives. This works on the structure instead: drops sections, list elements and object keys of
the JSON sections (the graph, the quantization section, provenance), re-serializing the file
with valid checksums after each edit, and keeps an edit when the fuzz target still reports the
same failure (its sanitizer SUMMARY line, or the first error line).

  fuzz/minimize.py FUZZER CRASH OUT      e.g. build/fuzz/fuzz/fuzz_tern_loader crash-1234 fuzz/regressions/tern_loader/x.tern
"""
import json
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

MAGIC = b"TERN\x00\r\n\x1a"
JSON_TYPES = (1, 3, 4)  # graph, provenance, quantization


def read_sections(data):
    table, count = struct.unpack_from("<QI", data, 24)
    sections = []
    for i in range(count):
        kind, _, offset, size = struct.unpack_from("<IIQQ", data, table + 32 * i)
        sections.append([kind, data[offset:offset + size]])
    return sections


def serialize(sections):
    def align(x):
        return (x + 63) // 64 * 64
    offset, offsets = 64, []
    for _, body in sections:
        offsets.append(offset)
        offset = align(offset + len(body))
    table = offset
    out = bytearray(table + 32 * len(sections))
    for i, (kind, body) in enumerate(sections):
        out[offsets[i]:offsets[i] + len(body)] = body
        struct.pack_into("<IIQQII", out, table + 32 * i, kind, 0, offsets[i], len(body), zlib.crc32(body), 0)
    out[0:8] = MAGIC
    table_crc = zlib.crc32(bytes(out[table:table + 32 * len(sections)]))
    struct.pack_into("<IIQQII", out, 8, 1, 64, len(out), table, len(sections), table_crc)
    struct.pack_into("<I", out, 60, zlib.crc32(bytes(out[0:60])))
    return bytes(out)


def signature(fuzzer, data):
    with tempfile.NamedTemporaryFile(suffix=".tern", delete=False) as f:
        f.write(data)
        path = f.name
    try:
        r = subprocess.run([fuzzer, path], capture_output=True, text=True, errors="replace", timeout=60)
    except subprocess.TimeoutExpired:
        return "timeout"
    finally:
        os.unlink(path)
    if r.returncode == 0:
        return None
    lines = r.stderr.splitlines()
    for line in lines:
        if line.startswith("SUMMARY: "):
            return re.sub(r"\(.*?\+0x[0-9a-f]+\)|0x[0-9a-f]+", "", line)
    for line in lines:
        if "ERROR" in line or "runtime error" in line or "terminate" in line:
            return re.sub(r"0x[0-9a-f]+|==\d+==", "", line)
    return "exit %d" % r.returncode


def paths(node, prefix=()):
    """Every list and object in the tree, largest first (cutting big lists first saves runs)."""
    found = []
    if isinstance(node, (list, dict)):
        found.append((len(node), prefix))
        items = enumerate(node) if isinstance(node, list) else node.items()
        for k, v in items:
            found += paths(v, prefix + (k,))
    return found


def at(node, path):
    for k in path:
        node = node[k]
    return node


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    fuzzer, crash, out = sys.argv[1:]
    data = open(crash, "rb").read()
    target = signature(fuzzer, data)
    if target is None:
        sys.exit("minimize.py: %s does not fail" % crash)
    print("minimize.py: failure:", target)
    sections = read_sections(data)
    runs = 0

    def still_fails(candidate_sections):
        nonlocal runs
        runs += 1
        return signature(fuzzer, serialize(candidate_sections)) == target

    if not still_fails(sections):  # re-serialized, it must fail the same way
        sys.exit("minimize.py: the re-serialized input fails differently; keeping it as is")

    def compact(candidate_sections):
        """The tensor payload cut to the blobs the JSON refers to ({"offset", "bytes"} objects)."""
        trees, refs = {}, []

        def walk(node):
            if isinstance(node, dict):
                if isinstance(node.get("offset"), int) and isinstance(node.get("bytes"), int):
                    refs.append(node)
                for v in node.values():
                    walk(v)
            elif isinstance(node, list):
                for v in node:
                    walk(v)
        for i, (kind, body) in enumerate(candidate_sections):
            if kind in JSON_TYPES:
                try:
                    trees[i] = json.loads(body)
                except ValueError:
                    return None
                walk(trees[i])
        payload = [i for i, (kind, _) in enumerate(candidate_sections) if kind == 2]
        if len(payload) != 1:
            return None
        old, new, moved = candidate_sections[payload[0]][1], bytearray(), {}
        for ref in refs:
            key = (ref["offset"], ref["bytes"])
            if key not in moved:
                if key[0] < 0 or key[1] < 0 or key[0] + key[1] > len(old):
                    return None
                new += bytes(-len(new) % 64)
                moved[key] = len(new)
                new += old[key[0]:key[0] + key[1]]
            ref["offset"] = moved[key]
        trial = [list(x) for x in candidate_sections]
        trial[payload[0]][1] = bytes(new)
        for i, tree in trees.items():
            trial[i][1] = json.dumps(tree, separators=(",", ":")).encode()
        return trial

    progress = True
    while progress:
        progress = False
        for i in reversed(range(len(sections))):  # whole sections
            trial = sections[:i] + sections[i + 1:]
            if still_fails(trial):
                sections, progress = trial, True
        for s in range(len(sections)):
            if sections[s][0] not in JSON_TYPES:
                continue
            try:
                tree = json.loads(sections[s][1])
            except ValueError:
                continue

            def attempt(new_tree):
                trial = [list(x) for x in sections]
                trial[s][1] = json.dumps(new_tree, separators=(",", ":")).encode()
                return trial if still_fails(trial) else None

            for _, path in sorted(paths(tree), key=lambda p: -p[0]):
                try:
                    node = at(tree, path)
                except (KeyError, IndexError, TypeError):
                    continue
                keys = list(range(len(node))) if isinstance(node, list) else list(node.keys())
                chunk = max(1, len(keys) // 2)
                while chunk >= 1:  # cut chunks of the list or object, halving the chunk size
                    start = 0
                    while start < len(keys):
                        cut = keys[start:start + chunk]
                        copy = json.loads(json.dumps(tree))
                        target_node = at(copy, path)
                        if isinstance(target_node, list):
                            for k in sorted(cut, reverse=True):
                                if k < len(target_node):
                                    del target_node[k]
                        else:
                            for k in cut:
                                target_node.pop(k, None)
                        trial = attempt(copy)
                        if trial is not None:
                            tree, sections, progress = copy, trial, True
                            node = at(tree, path)
                            keys = list(range(len(node))) if isinstance(node, list) else list(node.keys())
                        else:
                            start += chunk
                    chunk //= 2
        trial = compact(sections)
        if trial is not None and serialize(trial) != serialize(sections) and still_fails(trial):
            sections, progress = trial, True
    result = serialize(sections)
    open(out, "wb").write(result)
    print("minimize.py: %d -> %d bytes in %d runs: %s" % (len(data), len(result), runs, out))


if __name__ == "__main__":
    main()
