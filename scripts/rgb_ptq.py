#!/usr/bin/python3
"""Post-training quantization of the torchvision models trained here on Fashion-MNIST at 3x96x96
(models/rgb/, made by scripts/train_rgb_models.py): real MobileNetV3 / ResNet / EfficientNet / ViT
architectures with trained weights. Writes docs/results/rgb_ptq.md (and rgb_ptq.json), and per
model a page docs/results/rgb/MODEL.md with its table, commands and a plot MODEL.png (top-1 against
size as % of the int8 model; needs matplotlib, which Debian's /usr/bin/python3 has).

    nice /usr/bin/python3 scripts/rgb_ptq.py [--models NAME ...] [--configs SUBSTRING ...]
                                             [--tern build/all/src/tern] [--out FILE.md] [--pages DIR]

For each model it runs `tern quantize MODEL -o OUT.tern CONFIG --eval --json` (512 calibration
images of the training split; every test image) for: int8 per channel (W8A8), int4 per channel
(W4A8) without and with --bias-correction, ternary FGQ N=4 with the default plan (first, last and
depthwise layers int8) without and with --bias-correction, and ternary with --max-drop 1 (residual
edges and int8/float32 upgrades until the drop estimated on held-out images is within 1 pp)
without and with --bias-correction. A model trained on a subset of the training split (its card's
training_images and seed) holds out the training images it never saw, after the first 512
(--drop-data; written to a temporary .npy): a drop measured on images the model has seen is
smaller than on new ones. The FP32 top-1 is tern's own evaluation of the ONNX
model with the preprocessing stored in its metadata.

--configs keeps the configurations whose label contains one of the given substrings (case
insensitive; e.g. `--configs W8A8` or `--configs max-drop`). The per-model pages go to --pages
(default: the folder rgb/ next to --out).
"""
import argparse
import datetime
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

CONFIGS = [
    ("W8A8 int8 per channel", ["--weights", "int8", "--group", "channel"]),
    ("W8A8 int8 per channel --calibration auto", ["--weights", "int8", "--group", "channel", "--calibration", "auto"]),
    ("W8A8 int8 per channel --attention int8", ["--weights", "int8", "--group", "channel", "--attention", "int8"]),
    ("W8A8 int8 per channel --attention int8 --token-scales", ["--weights", "int8", "--group", "channel", "--attention",
                                                              "int8", "--token-scales"]),
    ("W8A8 int8 per channel --bias-correction", ["--weights", "int8", "--group", "channel", "--bias-correction"]),
    ("W8A8 int8 per channel --equalize", ["--weights", "int8", "--group", "channel", "--equalize"]),
    ("W8A8 int8 per channel --smooth 0.5", ["--weights", "int8", "--group", "channel", "--smooth", "0.5"]),
    ("W8A8 int8 per tensor", ["--weights", "int8", "--group", "tensor"]),
    ("W8A8 int8 per tensor --equalize", ["--weights", "int8", "--group", "tensor", "--equalize"]),
    ("W4A8 int4 per channel", ["--weights", "int4", "--group", "channel"]),
    ("W4A8 int4 per channel --equalize", ["--weights", "int4", "--group", "channel", "--equalize"]),
    ("W4A8 int4 per channel --smooth 0.5", ["--weights", "int4", "--group", "channel", "--smooth", "0.5"]),
    ("W4A8 int4 per channel --calibration auto", ["--weights", "int4", "--group", "channel", "--calibration", "auto"]),
    ("W4A8 int4 per channel --bias-correction", ["--weights", "int4", "--group", "channel", "--bias-correction"]),
    ("ternary FGQ N=4 W2A8 (default plan)", ["--weights", "ternary", "--group", "4"]),
    ("ternary FGQ N=4 W2A8 --bias-correction", ["--weights", "ternary", "--group", "4", "--bias-correction"]),
    ("ternary FGQ N=4 W2A8 --equalize", ["--weights", "ternary", "--group", "4", "--equalize"]),
    ("ternary FGQ N=4 --max-drop 1", ["--weights", "ternary", "--group", "4", "--max-drop", "1"]),
    ("ternary FGQ N=4 --max-drop 1 --calibration auto", ["--weights", "ternary", "--group", "4", "--max-drop", "1",
                                                         "--calibration", "auto"]),
    ("ternary FGQ N=4 --max-drop 1 --bias-correction", ["--weights", "ternary", "--group", "4", "--max-drop", "1",
                                                        "--bias-correction"]),
]
# The plan config of the "depthwise ternary too" row (written to the temporary directory).
DEPTHWISE_TERNARY = '{"depthwise_8bit": false}'
DESCRIPTION = ("Models: `models/rgb/` (`scripts/train_rgb_models.py`; their cards give the training). Calibration: "
               "the first 512 training images; evaluation: the test images, preprocessed as the models' metadata "
               "says (resized to 96x96, grey replicated to RGB, ImageNet mean and std). Size is the weights, "
               "scales and biases; `% of int8` is against the same model with every Conv/Gemm int8 per channel. "
               "`est.`: for the --max-drop rows, the change estimated at quantization time on held-out training "
               "images (never calibrated on), ± one standard error; `change` is measured on the test images. "
               "Rows with `--drop-data VAL.npy` held out the training images the model never saw in training "
               "(after the first 512); older rows held out images after the calibration ones, which the "
               "model had mostly trained on.\n\n")


def validation_set(path, tmp):
    """The training images a model never saw (its card: training_images of 60000, torch.randperm
    seeded with its seed), after the first 512 (calibration), as VAL.npy / VAL_y.npy in tmp; None
    for a model trained on all of them."""
    card = json.load(open(path[:-5] + ".json"))
    if card.get("training_images", 60000) >= 60000:
        return None
    import numpy as np
    import torch
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from train_reference import DATA_DIR, read_idx
    images = read_idx(os.path.join(DATA_DIR, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(DATA_DIR, "train-labels-idx1-ubyte.gz"))
    seen = torch.randperm(len(images), generator=torch.Generator().manual_seed(card["seed"]))[:card["training_images"]]
    unseen = np.ones(len(images), dtype=bool)
    unseen[seen.numpy()] = False
    unseen[:512] = False
    name = os.path.basename(path)[:-5]
    x, y = os.path.join(tmp, name + "_val.npy"), os.path.join(tmp, name + "_val_y.npy")
    np.save(x, images[unseen])
    np.save(y, labels[unseen].astype(np.int64))
    return x, y


def run(tern, path, label, options, tmp, config):
    """One `tern quantize ... --eval --json` run: a row (with "error" when it failed)."""
    name = os.path.basename(path)[:-5]
    out = os.path.join(tmp, name + ".tern")
    cmd = [tern, "quantize", path, "-o", out, *[config if o == "{DEPTHWISE_TERNARY}" else o for o in options],
           "--eval", "--json"]
    val = validation_set(path, tmp) if "--max-drop" in options else None
    if val:
        cmd[5:5] = ["--drop-data", val[0], "--drop-labels", val[1]]
    start = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.time() - start
    shown = " ".join(["tern"] + cmd[1:3] + ["-o", "OUT.tern"] + cmd[5:]).replace(config, "CONFIG.json")
    if val:
        shown = shown.replace(val[0], "VAL.npy").replace(val[1], "VAL_y.npy")
    if r.returncode != 0:
        return {"model": name, "config": label, "command": shown, "error": r.stderr.strip()[-300:]}
    j = json.loads(r.stdout.strip().splitlines()[-1])
    row = {"model": name, "config": label, "command": shown, "fp32_top1": j["fp32_top1"],
           "top1": j["top1"], "drop_pp": j["top1_drop_pp"], "size_bytes": j["size_bytes"],
           "fp32_bytes": j["fp32_bytes"], "int8_bytes": j["int8_bytes"],
           "ratio_to_fp32": j["ratio_to_fp32"], "ratio_to_int8": j["ratio_to_int8"],
           "images": j["eval_images"], "seconds": round(seconds, 1)}
    if "max_drop_estimate_pp" in j:
        row["drop_estimate_pp"] = j["max_drop_estimate_pp"]
        drop = j.get("provenance", {}).get("residual", {}).get("drop", {})
        if "standard_error_pp" in drop:
            row["drop_estimate_se_pp"] = drop["standard_error_pp"]
        if "met" in drop:
            row["drop_target_met"] = drop["met"]
    return row


def pct_of_int8(r, size=None):
    return 100.0 * (r["size_bytes"] if size is None else size) / r["int8_bytes"]


def estimate(r):
    """The --max-drop estimate as a change (negative: worse), e.g. "est. -0.80 ± 0.25 pp"; "" without one."""
    if "drop_estimate_pp" not in r:
        return ""
    se = f" ± {r['drop_estimate_se_pp']:.2f}" if "drop_estimate_se_pp" in r else ""
    return f"est. {-r['drop_estimate_pp']:+.2f}{se} pp" + (" (target not met)" if r.get("drop_target_met") is False else "")


def commands_note(rows):
    config = any("CONFIG.json" in r["command"] for r in rows)
    return ("\nCommands (OUT.tern in a temporary directory"
            + (f"; CONFIG.json holds `{DEPTHWISE_TERNARY}`" if config else "") + "):\n\n")


def header(commit, dirty, cpu, command):
    return (f"Generated by `nice /usr/bin/python3 {command}` on {datetime.date.today()} at commit "
            f"{commit}{' with uncommitted changes' if dirty else ''} ({cpu}). ")


def write_main(path, rows, models, pages, head):
    with open(path + ".tmp", "w") as f:
        f.write("# Post-training quantization of real architectures (trained here, 3x96x96 Fashion-MNIST)\n\n")
        f.write(head + DESCRIPTION)
        links = ", ".join(f"[{m}]({os.path.relpath(os.path.join(pages, m + '.md'), os.path.dirname(path) or '.')})"
                          for m in models)
        f.write(f"Per model (table, commands and a plot of top-1 against size): {links}.\n\n")
        f.write("| model | configuration | FP32 top-1 % | top-1 % | change (pp) | est. (max-drop) | size (bytes) "
                "| % of int8 | vs FP32 | tern commit |\n")
        f.write("|---|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
        for r in rows:
            if "error" in r:
                f.write(f"| {r['model']} | {r['config']} | | error | | | | | {r['error'].replace('|', '/')} | {r.get('commit', '')} |\n")
            else:
                f.write(f"| {r['model']} | {r['config']} | {r['fp32_top1']:.2f} | {r['top1']:.2f} | {-r['drop_pp']:+.2f} | "
                        f"{estimate(r)} | {size_cell(r)} | {pct_of_int8(r):.1f} % | {r['ratio_to_fp32']:.2f}x | "
                        f"{r.get('commit', '')} |\n")
        f.write(size_notes(rows))
        f.write(commands_note(rows))
        for r in rows:
            f.write(f"- `{r['command']}`\n")
    os.replace(path + ".tmp", path)


def size_cell(r):
    """The size in bytes, marked when a note qualifies it (see size_notes)."""
    return f"{r['size_bytes']:,}" + (" †" if r.get("size_note") else "")


def size_notes(rows):
    notes = list(dict.fromkeys(r["size_note"] for r in rows if r.get("size_note")))
    return "".join(f"\n† {n}\n" for n in notes)


def write_page(path, main, model, rows, head):
    """MODEL.md: the model's rows (FP32 first), a plot of top-1 against size and the commands."""
    plot = make_plot(path[:-3] + ".png", model, rows)
    ok = [r for r in rows if "error" not in r]
    with open(path + ".tmp", "w") as f:
        f.write(f"# {model}: post-training quantization (3x96x96 Fashion-MNIST)\n\n")
        f.write(f"All models: [{os.path.basename(main)}]({os.path.relpath(main, os.path.dirname(path))}). ")
        f.write(head + DESCRIPTION)
        f.write("| configuration | top-1 % | change (pp) | est. (max-drop) | size (bytes) | % of int8 | vs FP32 | time (s) "
                "| tern commit |\n")
        f.write("|---|---:|---:|---:|---:|---:|---:|---:|---|\n")
        if ok:
            r = ok[0]
            f.write(f"| FP32 | {r['fp32_top1']:.2f} | | | {r['fp32_bytes']:,} | {pct_of_int8(r, r['fp32_bytes']):.1f} % "
                    "| 1.00x | | |\n")
        for r in rows:
            if "error" in r:
                f.write(f"| {r['config']} | error | | | | | | {r['error'].replace('|', '/')} | {r.get('commit', '')} |\n")
            else:
                f.write(f"| {r['config']} | {r['top1']:.2f} | {-r['drop_pp']:+.2f} | {estimate(r)} | {size_cell(r)} | "
                        f"{pct_of_int8(r):.1f} % | {r['ratio_to_fp32']:.2f}x | {r['seconds']:.0f} | {r.get('commit', '')} |\n")
        if ok:
            f.write(f"\nTop-1 on {ok[0]['images']:,} test images. Time: the whole `tern quantize ... --eval` run "
                    "(quantization and both evaluations).\n")
        if plot:
            f.write(f"\n![{model}: top-1 against size]({os.path.basename(plot)})\n")
        f.write(size_notes(rows))
        f.write(commands_note(rows))
        for r in rows:
            f.write(f"- {r['config']}: `{r['command']}`\n")
    os.replace(path + ".tmp", path)


def make_plot(path, model, rows):
    """Top-1 against size (% of the int8 model), one point per configuration plus FP32; the path or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available (run with /usr/bin/python3): no plot", file=sys.stderr)
        return None
    ok = [r for r in rows if "error" not in r]
    if not ok:
        return None
    fig, ax = plt.subplots(figsize=(9, 5.5))
    fp32 = ok[0]
    x = pct_of_int8(fp32, fp32["fp32_bytes"])
    ax.axhline(fp32["fp32_top1"], color="black", linewidth=0.8, linestyle=":")
    ax.plot([x], [fp32["fp32_top1"]], "*", color="black", markersize=13, label=f"FP32 ({fp32['fp32_top1']:.2f} %)")
    markers = "osD^vP<>Xph"
    for i, r in enumerate(ok):
        label = f"{r['config']} ({r['top1']:.2f} %" + (f", {estimate(r)}" if "drop_estimate_pp" in r else "") + ")"
        ax.plot([pct_of_int8(r)], [r["top1"]], markers[i % len(markers)], color=f"C{i % 10}", markersize=8, label=label)
        ax.annotate(f"{r['top1']:.2f}", (pct_of_int8(r), r["top1"]), textcoords="offset points", xytext=(6, 2 - 8 * (i % 2)),
                    fontsize=7)
    ax.annotate(f"{fp32['fp32_top1']:.2f}", (x, fp32["fp32_top1"]), textcoords="offset points", xytext=(6, -10), fontsize=7)
    ax.set_xscale("log")
    ticks = [t for t in (25, 50, 75, 100, 150, 200, 300, 400, 600) if 0.8 * min(pct_of_int8(r) for r in ok) <= t <= 1.2 * x]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t} %" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("model size (% of the int8 per-channel model, log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"{model}: top-1 against size (Fashion-MNIST test, {fp32['images']:,} images)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7.5, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tern", default="build/all/src/tern")
    ap.add_argument("--models", nargs="*", default=None, help="model names in models/rgb/ (default: all)")
    ap.add_argument("--configs", nargs="*", default=None,
                    help="keep the configurations whose label contains one of these substrings (case insensitive)")
    ap.add_argument("--out", default="docs/results/rgb_ptq.md")
    ap.add_argument("--pages", default=None, help="folder of the per-model pages (default: rgb/ next to --out)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the saved rows of other (model, configuration) pairs, each with the commit it ran at")
    ap.add_argument("--pages-only", action="store_true",
                    help="write the pages from the rows an earlier run saved (--out's .json), running nothing; "
                         "for a run cut short after some models")
    args = ap.parse_args()
    if not args.out.endswith(".md"):
        ap.error("--out must name a .md file")
    pages = args.pages or os.path.join(os.path.dirname(args.out), "rgb")
    configs = CONFIGS
    if args.configs:
        # Each name selects the configuration of exactly that label, or else every label containing it.
        def selects(c, label):
            exact = any(c.lower() == l.lower() for l, _ in CONFIGS)
            return c.lower() == label.lower() if exact else c.lower() in label.lower()
        configs = [(label, options) for label, options in CONFIGS if any(selects(c, label) for c in args.configs)]
        if not configs:
            ap.error(f"no configuration matches {' '.join(args.configs)}; they are: {'; '.join(l for l, _ in CONFIGS)}")
    paths = [f"models/rgb/{m}.onnx" for m in args.models] if args.models else sorted(glob.glob("models/rgb/*.onnx"))
    for path in paths:
        if not os.path.isfile(path):
            ap.error(f"no model {path}")
    if args.pages_only:
        saved = json.load(open(args.out[:-3] + ".json"))
        rows = saved["rows"]
        models = list(dict.fromkeys(r["model"] for r in rows))
        head = header(saved["commit"], "dirty" if saved["dirty"] else "", saved["cpu"], saved.get("command", "scripts/rgb_ptq.py"))
        os.makedirs(pages, exist_ok=True)
        for m in models:
            write_page(os.path.join(pages, m + ".md"), args.out, m, [r for r in rows if r["model"] == m], head)
        write_main(args.out, rows, models, pages, head)
        print("wrote", args.out, "and", len(models), "model pages from", args.out[:-3] + ".json")
        return 0
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    # The results this script writes do not count (a --merge run follows another's output).
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results"],
                           capture_output=True, text=True).stdout.strip()
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    command = shlex.join(["scripts/rgb_ptq.py"] + (["--models", *args.models] if args.models else [])
                         + (["--configs", *args.configs] if args.configs else []))
    head = header(commit, dirty, cpu, command)
    kept = []
    if args.merge and os.path.isfile(args.out[:-3] + ".json"):
        saved = json.load(open(args.out[:-3] + ".json"))
        ran = {(os.path.basename(p)[:-5], label) for p in paths for label, _ in configs}
        kept = [dict(r, commit=r.get("commit", saved["commit"])) for r in saved["rows"] if (r["model"], r["config"]) not in ran]
        head = header(commit, dirty, cpu, command + " --merge")
        head += "Rows kept from earlier runs name the tern commit they ran at. "
    rows = []

    def ordered(rows):
        order = {label: i for i, (label, _) in enumerate(CONFIGS)}
        models = list(dict.fromkeys([r["model"] for r in kept] + [r["model"] for r in rows]))
        return sorted(kept + rows, key=lambda r: (models.index(r["model"]), order.get(r["config"], len(order))))

    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "depthwise_ternary.json")
        open(config, "w").write(DEPTHWISE_TERNARY)
        for path in paths:
            for label, options in configs:
                rows.append(dict(run(args.tern, path, label, options, tmp, config), commit=commit + ("+" if dirty else "")))
                print(rows[-1], flush=True)
                json.dump({"commit": commit, "dirty": bool(dirty), "cpu": cpu, "command": command, "rows": ordered(rows)},
                          open(args.out[:-3] + ".json.tmp", "w"), indent=1)
                os.replace(args.out[:-3] + ".json.tmp", args.out[:-3] + ".json")
    rows = ordered(rows)
    models = list(dict.fromkeys(r["model"] for r in rows))
    os.makedirs(pages, exist_ok=True)
    for m in models:
        page = os.path.join(pages, m + ".md")
        write_page(page, args.out, m, [r for r in rows if r["model"] == m], head)
        print("wrote", page)
    write_main(args.out, rows, models, pages, head)
    print("wrote", args.out)


if __name__ == "__main__":
    sys.exit(main())
