#!/usr/bin/python3
"""tern export checked in ONNX Runtime: each bundled model is quantized (W8A8, W4A8, ternary FGQ
N=4), exported as QDQ ONNX with `tern export`, and run by ONNX Runtime (npm onnxruntime-node,
scripts/install-peers.sh) and by tern's simulation (`tern run`) on the same Fashion-MNIST test
images. Reports both top-1 figures, the share of images whose top-1 class agrees, and the largest
logit difference; --check exits 1 when a top-1 differs by more than 0.05 pp (what the tests run).

    /usr/bin/python3 scripts/check_export.py                 # all 10,000 test images; writes
                                                            # docs/results/export.md and export.json
    /usr/bin/python3 scripts/check_export.py --check --limit 2000 --no-write   # the test
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from study_common import REPO, cpu_model, git_commit  # noqa: E402

MODELS = ("resnet20", "vgg_small", "mobilenetv2_small")
CONFIGS = {  # name -> tern quantize options
    "W8A8": ["--weights", "int8", "--acts", "8"],
    "W4A8": ["--weights", "int4", "--acts", "8"],
    "ternary FGQ N=4": ["--weights", "ternary", "--method", "fgq", "--group", "4", "--acts", "8"],
}
FASHION = "/usr/share/datasets/fashion-mnist"


def test_set(limit):
    raw = gzip.open(os.path.join(FASHION, "t10k-images-idx3-ubyte.gz")).read()
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:limit]
    labels = np.frombuffer(gzip.open(os.path.join(FASHION, "t10k-labels-idx1-ubyte.gz")).read(), np.uint8, offset=8)
    return x, labels[:limit].astype(np.int64)


def run(cmd):
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"check_export.py: {' '.join(cmd)} failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tern", default=os.path.join(REPO, "build", "all", "src", "tern"))
    ap.add_argument("--models", nargs="+", default=list(MODELS))
    ap.add_argument("--limit", type=int, default=10000, help="test images (default: all 10,000)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a top-1 differs by more than --bound pp")
    ap.add_argument("--bound", type=float, default=0.05)
    ap.add_argument("--no-write", action="store_true", help="do not write docs/results/export.{md,json}")
    args = ap.parse_args()

    pixels, labels = test_set(args.limit)
    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            onnx_path = os.path.join(REPO, "models", model + ".onnx")
            card = json.load(open(os.path.join(REPO, "models", model + ".json")))["input"]
            x = ((pixels.astype(np.float32) * np.float32(card["scale"]) - np.float32(card["mean"][0])) /
                 np.float32(card["std"][0])).astype(np.float32)
            xin = os.path.join(tmp, model + "-x.npy")
            np.save(xin, x)
            for config, options in CONFIGS.items():
                stem = os.path.join(tmp, model + "-" + config.split()[0])
                run([args.tern, "quantize", onnx_path, "-o", stem + ".tern", *options])
                report = json.loads(run([args.tern, "export", stem + ".tern", "-o", stem + ".onnx", "--json"]).splitlines()[-1])
                run([args.tern, "run", stem + ".tern", "--input", xin, "--output", stem + "-tern.npy"])
                run(["node", os.path.join(HERE, "ort_run.js"), stem + ".onnx", xin, stem + "-ort.npy", "--batch", "500"])
                yt, yo = np.load(stem + "-tern.npy"), np.load(stem + "-ort.npy")
                top_t = float((yt.argmax(1) == labels).mean() * 100)
                top_o = float((yo.argmax(1) == labels).mean() * 100)
                row = {"model": model, "config": config, "images": int(len(labels)), "top1_tern": round(top_t, 2),
                       "top1_ort": round(top_o, 2), "delta_pp": round(top_o - top_t, 2),
                       "agree_pct": round(float((yt.argmax(1) == yo.argmax(1)).mean() * 100), 2),
                       "max_logit_diff": float(np.abs(yt - yo).max()), "max_logit": float(np.abs(yt).max()),
                       "int8_layers": report["int8_layers"], "float_layers": report["float_layers"],
                       "notes": report["notes"], "onnx_bytes": report["bytes"]}
                rows.append(row)
                print(f"{model:18s} {config:16s} tern {top_t:6.2f}  ORT {top_o:6.2f}  ({top_o - top_t:+.2f} pp, "
                      f"{row['agree_pct']:.2f} % same class, max |dlogit| {row['max_logit_diff']:.3g})", flush=True)
                if abs(top_o - top_t) > args.bound:
                    failures.append(f"{model} {config}: ONNX Runtime top-1 {top_o:.2f} vs tern {top_t:.2f}")
    if not args.no_write:
        write(rows, args)
    if args.check and failures:
        sys.exit("check_export.py: " + "; ".join(failures))


def write(rows, args):
    out = os.path.join(REPO, "docs", "results")
    meta = {"commit": git_commit(), "cpu": cpu_model(), "images": args.limit,
            "command": "/usr/bin/python3 scripts/check_export.py" + (f" --limit {args.limit}" if args.limit != 10000 else "")}
    with open(os.path.join(out, "export.json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    lines = ["# tern export in ONNX Runtime: top-1 of the exported QDQ models", "",
             f"Generated by `{meta['command']}` at commit `{meta['commit']}` ({meta['cpu']}).", "",
             "Each bundled model is quantized by `tern quantize`, written by `tern export` (QDQ ONNX, opset 17) and run by "
             "ONNX Runtime 1.30 (npm onnxruntime-node, CPU) and by tern's simulation (`tern run`) on the same "
             f"{rows[0]['images'] if rows else 0:,} Fashion-MNIST test images.", "",
             "| model | weights | tern top-1 | ORT top-1 | Δ pp | same top-1 class | max \\|Δ logit\\| (max \\|logit\\|) | "
             "int8 / float layers |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['config']} | {r['top1_tern']:.2f} | {r['top1_ort']:.2f} | {r['delta_pp']:+.2f} | "
                     f"{r['agree_pct']:.2f} % | {r['max_logit_diff']:.3g} ({r['max_logit']:.3g}) | "
                     f"{r['int8_layers']} / {r['float_layers']} |")
    notes = sorted({n for r in rows for n in r["notes"]})
    lines += ["", "Where ONNX Runtime's arithmetic differs from tern's: it requantizes each int8 layer's output "
              "in integers and rounds half to even, tern's simulation computes in float and rounds half away from zero, "
              "so logits differ slightly while the top-1 classes agree."]
    if notes:
        lines += ["", "Export notes:", ""] + [f"- {n}" for n in notes]
    with open(os.path.join(out, "export.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
