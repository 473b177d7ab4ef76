#!/usr/bin/python3
"""Ternary against int8 end to end where weights stream from memory: a batch-1 MLP whose weights
are larger than the caches (by default four 4096 x 4096 fully connected layers, 67 M weights: 64 MiB
at int8; --width 8192 makes every format larger than a 32 MiB L3), run by `tern bench --engine integer` at every weight format, in alternating rounds. Writes
docs/results/streaming.md.

    /usr/bin/python3 scripts/bench_streaming.py [--tern build/all/src/tern] [--rounds 5] [--seconds 3]
                                               [--threads 1,2] [--width 4096] [--layers 4]
                                               [--out docs/results/streaming.md]

The model is made here (torch, seeded, random weights: speed does not depend on their values) into
BUILD/streaming/mlp4096.onnx; it takes vectors, not images, so every format is quantized with
`--data-free dynamic` (each input's scale chosen at run time) and `--all-layers` (the first and
last layers too). Nothing is downloaded.
"""
import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import REPO, cpu_model, git_commit, rel  # noqa: E402

FORMATS = [  # (name, label, quantize options)
    ("int8", "int8 per channel (W8)", ["--weights", "int8", "--group", "channel"]),
    ("int4", "int4 per channel (W4)", ["--weights", "int4", "--group", "channel"]),
    ("ternary4", "ternary FGQ N=4 (2-bit codes + a u8 scale per 4 weights)", ["--weights", "ternary", "--group", "4"]),
    ("ternary64", "ternary FGQ N=64 (2-bit codes + a u8 scale per 64 weights)", ["--weights", "ternary", "--group", "64"]),
]


def make_model(path, width=4096, layers=4):
    import torch
    torch.manual_seed(0)
    mods = []
    for i in range(layers):
        mods.append(torch.nn.Linear(width, width))
        if i + 1 < layers:
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).eval()
    tmp = path + ".tmp"
    torch.onnx.export(model, torch.randn(1, width), tmp, opset_version=14, input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    os.replace(tmp, path)


def bench(tern, model, threads, seconds):
    env = dict(os.environ, TERN_THREADS=str(threads))
    out = subprocess.run([tern, "bench", model, "--engine", "integer", "--batch", "1", "--seconds", str(seconds)],
                         capture_output=True, text=True, env=env, check=True)
    text = out.stdout + out.stderr
    m = re.search(r"median ([0-9.]+) ms", text)
    if not m:
        raise RuntimeError(f"no median in: {text[-300:]}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tern", default=os.path.join(REPO, "build/all/src/tern"))
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build/all"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--width", type=int, default=4096, help="the layers' width (weights: layers x width^2)")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--out", default=os.path.join(REPO, "docs/results/streaming.md"))
    args = ap.parse_args()
    work = os.path.join(args.build_dir, "streaming")
    os.makedirs(work, exist_ok=True)
    stem = f"mlp{args.width}" + (f"x{args.layers}" if args.layers != 4 else "")
    onnx_path = os.path.join(work, stem + ".onnx")
    if not os.path.exists(onnx_path):
        print("bench_streaming.py: exporting the MLP", file=sys.stderr, flush=True)
        make_model(onnx_path, args.width, args.layers)
    commands, sizes = {}, {}
    for name, _, options in FORMATS:
        out = os.path.join(work, f"{stem}-{name}.tern")
        cmd = [args.tern, "quantize", onnx_path, "-o", out, *options, "--all-layers", "--data-free", "dynamic"]
        commands[name] = " ".join(["tern", "quantize", rel(onnx_path), "-o", rel(out), *options, "--all-layers",
                                   "--data-free", "dynamic"])
        if not os.path.exists(out):
            print(f"bench_streaming.py: {commands[name]}", file=sys.stderr, flush=True)
            subprocess.run(cmd, check=True, capture_output=True)
        sizes[name] = os.path.getsize(out)
    threads = [int(t) for t in args.threads.split(",")]
    times = {(name, t): [] for name, _, _ in FORMATS for t in threads}
    start = datetime.datetime.now(datetime.timezone.utc)
    for r in range(args.rounds):  # alternating: every format in every round, so drifts hit all alike
        for t in threads:
            for name, _, _ in FORMATS:
                ms = bench(args.tern, os.path.join(work, f"{stem}-{name}.tern"), t, args.seconds)
                times[(name, t)].append(ms)
                print(f"round {r + 1}: {name} {t} thread(s) {ms:.3f} ms", file=sys.stderr, flush=True)
    end = datetime.datetime.now(datetime.timezone.utc)
    macs = args.layers * args.width * args.width
    lines = ["# Weight streaming end to end: ternary against int8 at batch 1", "",
             f"Generated by `/usr/bin/python3 scripts/bench_streaming.py --rounds {args.rounds} --seconds {args.seconds} "
             f"--threads {args.threads} --width {args.width} --layers {args.layers}` at `{git_commit()}` on {cpu_model()}, "
             f"{start:%Y-%m-%d %H:%M}-{end:%H:%M} UTC.", "",
             f"Model: {args.layers} fully connected layers of {args.width} x {args.width} with ReLU between them "
             f"({macs / 1e6:.1f} M weights; `{rel(onnx_path)}`, made by the script with torch, random weights), batch 1: "
             f"every layer a matrix-vector product whose weights are read on every inference ({macs / 2**20:.0f} MiB at "
             "int8; the smaller formats may stay in a large enough last-level cache). "
             "Each format quantized by (`--data-free dynamic`: the model takes vectors, not images):", ""]
    for name, _, _ in FORMATS:
        lines.append(f"- `{commands[name]}`")
    lines += ["", "and timed by `TERN_THREADS=T tern bench MODEL --engine integer --batch 1 --seconds "
              f"{args.seconds}` in {args.rounds} alternating rounds; the table gives the median of the rounds' "
              "medians (ms per inference), the spread (min-max of the rounds) and GB/s of weight file read per "
              "inference.", "",
              "| weights | file MiB | threads | ms (median) | spread | GMAC/s | GB/s | speed-up over int8 |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    result = {"commit": git_commit(), "cpu": cpu_model(), "rows": []}
    for t in threads:
        base = statistics.median(times[("int8", t)])
        for name, label, _ in FORMATS:
            v = times[(name, t)]
            med = statistics.median(v)
            lines.append(f"| {label} | {sizes[name] / 2**20:.1f} | {t} | {med:.3f} | {min(v):.3f}-{max(v):.3f} | "
                         f"{macs / med / 1e6:.1f} | {sizes[name] / med / 1e6:.1f} | {base / med:.2f}x |")
            result["rows"].append({"format": name, "threads": t, "ms": v, "median_ms": med, "bytes": sizes[name]})
    lines += ["", "The file sizes include the graph; the weights are nearly all of them. Ternary N=4 stores 4 bits "
              "per weight (2-bit codes and a u8 group scale per 4), half of int8, so streaming bounds its gain at 2x; "
              "N=64 stores about 2.1 bits.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
        json.dump(result, f, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
