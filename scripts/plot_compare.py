#!/usr/bin/python3
"""Bar chart of the per-layer SQNR in the JSON of `tern compare REF MODEL --data ... --json`.

    /usr/bin/python3 scripts/plot_compare.py compare.json [-o plot.png] [--top N]

One pair of bars per quantized layer, worst first (lowest "alone" SQNR at the top): alone_sqnr_db
(the model output's SQNR with only that layer quantized) and accumulated_sqnr_db (that layer's
output SQNR in the quantized model). The title gives each model output's SQNR and top-1
agreement. An infinite SQNR is drawn hatched to the right edge and marked "inf"; a missing one is
marked "n/a". Needs matplotlib (Debian's /usr/bin/python3 has it).
"""
import argparse
import json
import math
import os
import sys

KINDS = [("alone_sqnr_db", "alone: model output, only this layer quantized", "tab:red"),
         ("accumulated_sqnr_db", "accumulated: this layer's output in the quantized model", "tab:blue")]


def fail(message):
    print(f"plot_compare.py: {message}", file=sys.stderr)
    sys.exit(1)


def db(value):
    """A dB value from the JSON: a number, "inf" or null (None)."""
    if value == "inf":
        return math.inf
    return float(value) if isinstance(value, (int, float)) else None


def load(path):
    if not os.path.isfile(path):
        fail(f"no such file: {path}")
    try:
        with open(path) as f:
            j = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        fail(f"{path}: not JSON ({e})")
    if (not isinstance(j, dict) or not isinstance(j.get("outputs"), list) or not isinstance(j.get("layers"), list)
            or not all(isinstance(l, dict) and "node" in l and all(k in l for k, _, _ in KINDS) for l in j["layers"])):
        fail(f"{path}: not the output of `tern compare ... --json` (needs \"outputs\" and \"layers\" with "
             f"{', '.join(k for k, _, _ in KINDS)})")
    if not j["layers"]:
        fail(f"{path}: no per-layer comparison (MODEL is not quantized, or --layer-images 0)")
    return j


def title(j):
    parts = []
    for o in j["outputs"]:
        s = db(o.get("sqnr_db"))
        text = f"output {o.get('name', '?')}: SQNR " + ("n/a" if s is None else "inf" if math.isinf(s) else f"{s:.2f} dB")
        if o.get("top1_agreement") is not None:
            text += f", top-1 agreement {o['top1_agreement']:.2f} %"
        parts.append(text)
    model = os.path.basename(str(j.get("model", "model")))
    reference = os.path.basename(str(j.get("reference", "reference")))
    images = f" on {j['images']:,} images" if isinstance(j.get("images"), int) else ""
    return f"{model} vs {reference}{images}\n" + "; ".join(parts)


def plot(j, out, top):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib not available (run with /usr/bin/python3)")
    key = lambda l: (db(l["alone_sqnr_db"]) is None, db(l["alone_sqnr_db"]) or 0.0)  # noqa: E731 (n/a last)
    layers = sorted(j["layers"], key=key)
    shown = layers[:top] if top else layers
    finite = [v for l in shown for k, _, _ in KINDS if (v := db(l[k])) is not None and math.isfinite(v)]
    cap = max(finite + [0.0]) * 1.1 + 1.0  # where an infinite SQNR's bar ends
    n = len(shown)
    fig, ax = plt.subplots(figsize=(11, 1.8 + 0.34 * n))
    height = 0.4
    for i, (k, label, color) in enumerate(KINDS):
        for y, l in enumerate(shown):
            v = db(l[k])
            pos = y + (i - 0.5) * height
            if v is None:
                ax.text(0, pos, " n/a", va="center", fontsize=6.5)
            elif math.isinf(v):
                ax.barh(pos, cap, height, color=color, alpha=0.35, hatch="//", label=label if y == 0 else None)
                ax.text(cap, pos, " inf", va="center", fontsize=6.5)
            else:
                ax.barh(pos, v, height, color=color, label=label if y == 0 else None)
                ax.text(max(v, 0.0), pos, f" {v:.1f}", va="center", fontsize=6.5)
    names = [f"{l['node']}  [{str(l.get('precision', '')).split(',')[0]}]" for l in shown]
    ax.set_yticks(range(n))
    ax.set_yticklabels(names, fontsize=7)
    ax.set_ylim(n - 0.5, -0.5)  # worst at the top
    ax.set_xlim(min(finite + [0.0]) * 1.15, cap * 1.08)  # an SQNR below 0 dB (noise above signal) goes left
    ax.set_xlabel("SQNR (dB, higher is better)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    more = f" (worst {n} of {len(layers)} layers)" if n < len(layers) else ""
    fig.suptitle(title(j) + more, fontsize=9)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=100)
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}")
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="output of `tern compare REF MODEL --data ... --json`")
    ap.add_argument("-o", "--out", default=None, help="PNG to write (default: the JSON's name with .png)")
    ap.add_argument("--top", type=int, default=0, help="only the N worst layers (default: all)")
    args = ap.parse_args()
    if args.top < 0:
        ap.error("--top must be 0 (all) or more")
    out = args.out or os.path.splitext(args.json)[0] + ".png"
    plot(load(args.json), out, args.top)
    print("wrote", out)


if __name__ == "__main__":
    sys.exit(main())
