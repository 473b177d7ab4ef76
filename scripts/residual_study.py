#!/usr/bin/python3
"""Ternary residual edges study (issue 4); writes docs/results/residual.md, residual.json and plots.

    nice /usr/bin/python3 scripts/residual_study.py [options] [-- EXTRA QUANTIZE OPTIONS]

For each model (default: models/resnet20.onnx, mobilenetv2_small.onnx, vgg_small.onnx) it runs
`tern quantize ... --json` followed by `tern eval OUT.tern --data fashion-mnist --json` for:

  * references: the FP32 model (`tern eval models/M.onnx`), W8A8 (`--weights int8 --group
    channel`) and plain ternary (tern's defaults: FGQ N=4, 8-bit activations, no --residual);
  * the budget sweep: `--residual-ranking measured --fallback int8` (edge sets and int8 fallbacks)
    at `--residual size:50%, 55%, 60%, 70%, 80%` of the int8 model, and at `drop:1.0`, `drop:0.5`;
  * edges only (`--fallback none`) at equal budgets (`size:60%, 80%, 100%`) for the rankings
    measured, weights (data-free), uniform and random (seeds 1, 2, 3): does the data-free ranking
    beat the baselines?
  * levels: the measured, edges-only model at the largest edge budget is evaluated at every
    residual level (`tern eval --level all`), the curve a deployed model can move along.

Everything after `--` is passed unchanged to every `tern quantize` run. Each row keeps its exact
commands in residual.json. A failing run (non-zero exit, unparsable output, timeout) becomes an
error row carrying the last stderr line. Quantized .tern files live in a temporary directory (under
--tmp) and are deleted right after their evaluation. residual.json is rewritten after every row;
--resume reuses the finished rows of an earlier (interrupted) run whose commands match.

Options:
  --models NAME|PATH ...   models (a bare name means models/NAME.onnx); default all three
  --tern PATH              tern binary (default build/all/src/tern)
  --out DIR                output directory (default docs/results)
  --data SPEC              evaluation data set (default fashion-mnist)
  --limit N                evaluate on the first N test images only (smoke runs)
  --quick                  small grid for testing: sweep size:60% and drop:1.0; edges at size:80%;
                           random seed 1 only
  --sweep-budgets B ...    budgets of the measured+int8 sweep (default size:50% size:55% size:60%
                           size:70% size:80% drop:1.0 drop:0.5)
  --edge-budgets B ...     budgets of the edges-only ranking comparison (default size:60% size:80%
                           size:100%); the levels are evaluated at the last one
  --seeds S ...            seeds of the random ranking (default 1 2 3)
  --from-json [FILE]       re-render residual.md and the plots from residual.json (default
                           OUT/residual.json) without running anything
  --resume                 reuse matching finished rows of OUT/residual.json (and keep the rows of
                           models not in this run)
  --tmp DIR                where the temporary .tern files go (default: the system's temp dir)
  --nice N                 raise the process niceness to at least N (default 10)
  --timeout S              seconds allowed per tern invocation (default 3600)

The plots need matplotlib (Debian's /usr/bin/python3 has it); without it residual.md is still
written. The simulation runs FP32 kernels on dequantized weights, so no latency is reported here;
latency comes with the integer runtime (issue 5).
"""
import datetime
import math
import os
import re
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import (parse_study_args, provenance_header, rel, resolve_model, resume_rows,  # noqa: E402
                          row_context, run_json, save_json, study_parser)
DEFAULT_MODELS = ("resnet20", "mobilenetv2_small", "vgg_small")
SWEEP_BUDGETS = ("size:50%", "size:55%", "size:60%", "size:70%", "size:80%", "drop:1.0", "drop:0.5")
EDGE_BUDGETS = ("size:60%", "size:80%", "size:100%")
SEEDS = ("1", "2", "3")
QUICK_SWEEP = ("size:60%", "drop:1.0")
QUICK_EDGES = ("size:80%",)
QUICK_SEEDS = ("1",)
RANKINGS = ("measured", "weights", "uniform", "random")
RANKING_COLORS = {"measured": "tab:red", "weights": "tab:green", "uniform": "tab:orange", "random": "tab:purple"}
# Accuracy targets of issue 4: (tolerance in pp of FP32, size cap in % of the int8 model; None:
# the issue sets no size bound for that model).
TARGETS = {"resnet20": (0.5, 60.0), "mobilenetv2_small": (1.5, None)}
DEFAULT_TARGET = (0.5, 60.0)


def log(message):
    print(f"[residual_study {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quantize_defaults(help_text):
    """The first sentences of the quantize command's description in `tern --help` (its defaults),
    as one paragraph (up to the --rounding description)."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  quantize "):
            text = []
            for more in lines[i + 1:]:
                if re.match(r"^  \S", more) or not more.strip():
                    break  # next command
                if more.strip().startswith("["):
                    continue  # usage continuation
                if more.strip().startswith("--"):
                    break  # option descriptions follow
                text.append(more.strip())
            if text:
                return " ".join(text)
    return "unknown (no quantize entry in tern --help)"


# ----------------------------------------------------------------------------------------------
# Grid

def study_grid(sweep_budgets, edge_budgets, seeds):
    """List of configs: dict(config, section, ranking, fallback, budget, seed, qargs, levels)."""
    def cfg(config, section, qargs, ranking=None, fallback=None, budget=None, seed=None, levels=False):
        return dict(config=config, section=section, ranking=ranking, fallback=fallback, budget=budget, seed=seed,
                    qargs=list(qargs) if qargs is not None else None, levels=levels)
    grid = [cfg("fp32", "reference", None),
            cfg("w8a8", "reference", ["--weights", "int8", "--group", "channel"]),
            cfg("ternary", "reference", [])]
    for b in sweep_budgets:
        grid.append(cfg(f"measured+int8 {b}", "sweep",
                        ["--residual", b, "--residual-ranking", "measured", "--fallback", "int8"],
                        ranking="measured", fallback="int8", budget=b))
    for b in edge_budgets:
        for ranking in RANKINGS:
            for seed in (seeds if ranking == "random" else (None,)):
                q = ["--residual", b, "--residual-ranking", ranking, "--fallback", "none"]
                if seed is not None:
                    q += ["--seed", seed]
                name = f"edges {ranking}" + (f" seed {seed}" if seed is not None else "") + f" {b}"
                grid.append(cfg(name, "edges", q, ranking=ranking, fallback="none", budget=b, seed=seed,
                                levels=(ranking == "measured" and b == edge_budgets[-1])))
    return grid


def eval_cmd(tern, model, data, limit, levels=False):
    cmd = [rel(tern), "eval", model, "--data", data, "--json"]
    if levels:
        cmd += ["--level", "all"]
    if limit:
        cmd += ["--limit", str(limit)]
    return cmd


QUANT_FIELDS = ("size_bytes", "fp32_bytes", "int8_bytes", "ratio_to_fp32", "ratio_to_int8", "mults_eliminated",
                "multiplies", "macs", "level", "max_level")
LEVEL_FIELDS = ("level", "adds", "top1", "top5", "size_bytes", "ratio_to_fp32", "ratio_to_int8", "multiplies",
                "mults_eliminated", "images")


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def safe_name(text):
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def run_row(args, model, model_path, cfg, tmpdir, extra, common):
    row = dict(common, model=model, **cfg)
    if cfg["qargs"] is None:  # FP32
        row["kind"] = "fp32"
        ecmd = eval_cmd(args.tern, rel(model_path), args.data, args.limit)
        row["eval_cmd"] = shlex.join(ecmd)
        e, err, row["eval_s"] = run_json(ecmd, args.timeout)
        if err:
            row.update(status="error", error=f"eval: {err}")
        else:
            row.update(status="ok", top1=e.get("top1"), top5=e.get("top5"), images=e.get("images"))
        row["finished"] = now()
        return row
    row["kind"] = "quantized"
    out_path = os.path.join(tmpdir, safe_name(f"{model}_{cfg['config']}") + ".tern")
    qcmd = [rel(args.tern), "quantize", rel(model_path), "-o", out_path] + cfg["qargs"] + ["--json"] + list(extra)
    ecmd = eval_cmd(args.tern, out_path, args.data, args.limit, levels=cfg["levels"])
    row["quantize_cmd"] = shlex.join(qcmd)
    row["eval_cmd"] = shlex.join(ecmd)
    try:
        q, err, row["quantize_s"] = run_json(qcmd, args.timeout)
        if err:
            row.update(status="error", error=f"quantize: {err}")
            return row
        for k in QUANT_FIELDS:
            row[k] = q.get(k)
        layers = q.get("layers", [])
        row["layer_weights"] = [l.get("weights", "?") for l in layers]
        row["int8_layers"] = sum(1 for l in layers if str(l.get("weights", "")).startswith("int8"))
        row["edges"] = [dict(layer=e.get("layer"), term=e.get("term"), bytes=e.get("bytes"), gain=e.get("gain"))
                        for e in q.get("edges", [])]
        row["residual"] = q.get("residual")  # provenance, where tern reports it
        e, err, row["eval_s"] = run_json(ecmd, args.timeout)
        if err:
            row.update(status="error", error=f"eval: {err}")
            return row
        if cfg["levels"]:
            levels = [{k: l.get(k) for k in LEVEL_FIELDS} for l in e.get("levels", [])]
            row["levels"] = levels
            top = next((l for l in levels if l["level"] == row.get("max_level")), levels[-1] if levels else None)
            if top is None:
                row.update(status="error", error="eval --level all: no levels")
                return row
            row.update(status="ok", top1=top.get("top1"), top5=top.get("top5"), images=top.get("images"))
        else:
            row.update(status="ok", top1=e.get("top1"), top5=e.get("top5"), images=e.get("images"),
                       eval_level=e.get("level"))
        return row
    finally:
        try:
            os.remove(out_path)
        except OSError:
            pass
        row["finished"] = now()


def row_key(row):
    """Identity of a row for --resume: same model, config, quantize arguments, data, limit and extra
    options."""
    return (row.get("model"), row.get("config"), tuple(row.get("qargs") or ()), bool(row.get("levels")),
            row.get("data"), row.get("limit"), tuple(row.get("extra_args") or ()))


def run_study(args, extra, study_cmd, grid):
    json_path = os.path.join(args.out, "residual.json")
    models = [resolve_model(m) for m in args.models]
    for name, path in models:
        if not os.path.exists(path):
            sys.exit(f"residual_study: no model {path}")
    previous, kept = resume_rows(args, json_path, [n for n, _ in models], row_key, log)
    common = row_context(args, extra, study_cmd, quantize_defaults)
    total = len(models) * len(grid)
    rows = list(kept)
    started = time.monotonic()
    done = 0
    if args.tmp:
        os.makedirs(args.tmp, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="residual-study-", dir=args.tmp or None) as tmpdir:
        for name, path in models:
            for cfg in grid:
                key_row = dict(common, model=name, **cfg)
                if row_key(key_row) in previous:
                    row = dict(previous[row_key(key_row)], resumed=True)
                else:
                    row = run_row(args, name, path, cfg, tmpdir, extra, common)
                rows.append(row)
                done += 1
                save_json(json_path, rows)
                elapsed = time.monotonic() - started
                status = (f"top1 {row['top1']:.2f}" if row["status"] == "ok" else row["status"].upper() + " " + row["error"])
                extra_info = ""
                if row["status"] == "ok" and row.get("int8_bytes"):
                    extra_info = (f", {100 * row['size_bytes'] / row['int8_bytes']:.1f}% of int8, "
                                  f"{row.get('max_level')} edges, {row.get('int8_layers')} int8 layers")
                log(f"{done}/{total} ({elapsed:.0f} s) {name} {cfg['config']}: {status}{extra_info}"
                    + (" (resumed)" if row.get("resumed") else ""))
                if row["status"] != "ok":
                    log(f"    command: {row.get('quantize_cmd') or row.get('eval_cmd')}")
    log(f"study finished in {time.monotonic() - started:.0f} s; raw rows in {rel(json_path)}")
    return rows


# ----------------------------------------------------------------------------------------------
# Rendering

def fmt(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_int(x):
    return "–" if x is None else f"{int(x):,}"


def pct_int8(r, int8_bytes):
    if r.get("size_bytes") is None or not int8_bytes:
        return None
    return 100.0 * r["size_bytes"] / int8_bytes


def ok_rows(rows):
    return [r for r in rows if r.get("status") == "ok" and r.get("top1") is not None]


def budget_value(b):
    """Sort key of a budget string: size:P% by P, drop:PP descending (looser first)."""
    m = re.match(r"size:([0-9.]+)%$", b or "")
    if m:
        return (0, float(m.group(1)))
    m = re.match(r"drop:([0-9.]+)$", b or "")
    if m:
        return (1, -float(m.group(1)))
    return (2, 0.0)


class ModelData:
    """The rows of one model, organized for the tables, plots and findings."""

    def __init__(self, model, rows):
        self.model = model
        self.rows = rows
        ok = ok_rows(rows)
        by = {r["config"]: r for r in ok}
        self.fp32_row = by.get("fp32")
        self.w8a8 = by.get("w8a8")
        self.plain = by.get("ternary")
        q = [r for r in ok if r.get("kind") == "quantized"]
        self.int8_bytes = next((r["int8_bytes"] for r in q if r.get("int8_bytes")), None)
        self.fp32_bytes = next((r["fp32_bytes"] for r in q if r.get("fp32_bytes")), None)
        self.fp32 = self.fp32_row["top1"] if self.fp32_row else None
        self.base_int8 = self.plain.get("int8_layers") if self.plain else None
        self.sweep = sorted([r for r in ok if r.get("section") == "sweep"], key=lambda r: budget_value(r["budget"]))
        self.edges = [r for r in ok if r.get("section") == "edges"]
        self.levels_row = next((r for r in ok if isinstance(r.get("levels"), list) and r["levels"]), None)
        self.levels = self.levels_row["levels"] if self.levels_row else []
        self.edge_budgets = sorted({r["budget"] for r in self.edges}, key=budget_value)
        self.errors = [r for r in rows if r.get("status") != "ok"]
        self.images = max([r.get("images") or 0 for r in ok] + [0])

    def fallbacks(self, r):
        if r.get("int8_layers") is None or self.base_int8 is None or r.get("config") in ("w8a8", "fp32"):
            return None
        return r["int8_layers"] - self.base_int8

    def pct(self, r):
        return pct_int8(r, self.int8_bytes)

    def drop(self, r):
        if self.fp32 is None or r.get("top1") is None:
            return None
        return self.fp32 - r["top1"]

    def edge_rows(self, ranking, budget):
        return [r for r in self.edges if r["ranking"] == ranking and r["budget"] == budget]

    def random_stats(self, budget):
        rs = self.edge_rows("random", budget)
        if not rs:
            return None
        tops = [r["top1"] for r in rs]
        pcts = [self.pct(r) for r in rs]
        return dict(n=len(rs), mean=sum(tops) / len(tops), lo=min(tops), hi=max(tops),
                    pct=sum(pcts) / len(pcts), size=sum(r["size_bytes"] for r in rs) / len(rs),
                    mults=sum(r.get("mults_eliminated") or 0 for r in rs) / len(rs),
                    edges=sum(r.get("max_level") or 0 for r in rs) / len(rs),
                    ratio_fp32=sum(r.get("ratio_to_fp32") or 0 for r in rs) / len(rs))

    def se(self):
        if not self.images:
            return None
        p = (self.fp32 if self.fp32 is not None else 90.0) / 100
        return 100 * math.sqrt(max(p * (1 - p), 1e-9) / self.images)


def below_plain(r):
    """A size budget smaller than the plain quantized model: tern refuses it (not a failure)."""
    return r.get("status") != "ok" and "below the plain quantized model" in (r.get("error") or "")


def config_label(r):
    c = r.get("config", "?")
    return {"fp32": "FP32", "w8a8": "W8A8 (int8 per channel)", "ternary": "plain ternary (FGQ N=4)"}.get(c, c)


def group_points(rows, d, name):
    """[((x, y), [names])] with the rows at the same point merged (one label per point)."""
    points = {}
    for r in rows:
        points.setdefault((round(d.pct(r), 3), r["top1"]), []).append(name(r))
    return list(points.items())


def make_plot(d, out_dir):
    """residual_<model>.png: top-1 vs size (% of the int8 model); full range left, zoom right."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not available (run with /usr/bin/python3): no plots")
        return None
    if not d.int8_bytes:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(15, 6.5), squeeze=False)
    for pi, ax in enumerate(axes[0]):
        if d.levels:
            xs = [100 * l["size_bytes"] / d.int8_bytes for l in d.levels]
            ys = [l["top1"] for l in d.levels]
            ax.plot(xs, ys, "-", color="tab:red", alpha=0.45, linewidth=1.0, marker=".", markersize=4,
                    label=f"levels 0..{len(d.levels) - 1} of edges measured {d.levels_row['budget']}")
        sizes = [r for r in d.sweep if r["budget"].startswith("size:")]
        if sizes:
            ax.plot([d.pct(r) for r in sizes], [r["top1"] for r in sizes], "-o", color="black", markersize=6,
                    linewidth=1.4, label="measured + int8 fallbacks (size budgets)")
            for (x, y), names in group_points(sizes, d, lambda r: r["budget"].split(":")[1]):
                ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
        drops = [r for r in d.sweep if r["budget"].startswith("drop:")]
        if drops:
            ax.plot([d.pct(r) for r in drops], [r["top1"] for r in drops], "D", color="black",
                    markerfacecolor="white", markersize=7, label="measured + int8, drop budgets (labelled)")
            for (x, y), names in group_points(drops, d, lambda r: r["budget"]):
                ax.annotate(", ".join(names), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for ranking in ("measured", "weights", "uniform"):
            pts = sorted([r for r in d.edges if r["ranking"] == ranking], key=lambda r: budget_value(r["budget"]))
            if pts:
                ax.plot([d.pct(r) for r in pts], [r["top1"] for r in pts], "--s", color=RANKING_COLORS[ranking],
                        markersize=6, linewidth=1.1, label=f"edges only, {ranking} ranking")
        rnd = [(b, d.random_stats(b)) for b in d.edge_budgets]
        rnd = [(b, s) for b, s in rnd if s]
        if rnd:
            ax.errorbar([s["pct"] for _, s in rnd], [s["mean"] for _, s in rnd],
                        yerr=[[s["mean"] - s["lo"] for _, s in rnd], [s["hi"] - s["mean"] for _, s in rnd]],
                        fmt="--^", color=RANKING_COLORS["random"], capsize=4, markersize=6, linewidth=1.1,
                        label=f"edges only, random ranking (mean of {max(s['n'] for _, s in rnd)} seeds, min–max)")
        if d.plain:
            ax.plot([d.pct(d.plain)], [d.plain["top1"]], "*", color="tab:blue", markersize=14,
                    label=f"plain ternary ({d.plain['top1']:.2f})")
        if d.w8a8:
            ax.plot([d.pct(d.w8a8)], [d.w8a8["top1"]], "P", color="tab:gray", markersize=11,
                    label=f"W8A8 ({d.w8a8['top1']:.2f})")
        if d.fp32 is not None:
            ax.axhline(d.fp32, color="black", linewidth=0.9, label=f"FP32 ({d.fp32:.2f})")
            tol, cap = TARGETS.get(d.model, DEFAULT_TARGET)
            ax.axhline(d.fp32 - tol, color="black", linewidth=0.8, linestyle=":", label=f"FP32 − {tol:g} pp")
            if cap is not None:
                ax.axvline(cap, color="gray", linewidth=0.8, linestyle=":")
        if pi == 1 and d.fp32 is not None:
            tol, _ = TARGETS.get(d.model, DEFAULT_TARGET)
            lo = d.fp32 - max(1.0, 2.0 * tol)
            ax.set_ylim(lo, d.fp32 + 0.3)
            ax.set_title(f"zoom: within {d.fp32 - lo:g} pp of FP32")
        else:
            ax.set_title("all points")
            ax.legend(fontsize=7.5, loc="lower right")
        ax.set_xlabel("model size (% of the int8 per-channel model)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{d.model}: ternary residual edges, top-1 vs size (Fashion-MNIST test"
                 + (f", {d.images:,} images)" if d.images else ")"))
    fig.tight_layout()
    fname = f"residual_{d.model}.png"
    fig.savefig(os.path.join(out_dir, fname), dpi=100)
    plt.close(fig)
    return fname


def main_table(d):
    lines = ["| config | ranking | fallback | budget | top-1 | drop (pp) | size (bytes) | % of int8 | × smaller than FP32 "
             "| mults eliminated | edges (max level) | int8 fallbacks |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    if d.fp32 is not None:
        lines.append(f"| FP32 | – | – | – | {d.fp32:.2f} | 0.00 | {fmt_int(d.fp32_bytes)} | "
                     f"{fmt(100 * d.fp32_bytes / d.int8_bytes if d.fp32_bytes and d.int8_bytes else None, 1)} | 1.00 | 0.0% | – | – |")
    order = [r for r in (d.w8a8, d.plain) if r] + d.sweep
    for r in order:
        fb = d.fallbacks(r)
        lines.append(f"| {config_label(r)} | {r.get('ranking') or '–'} | {r.get('fallback') or '–'} | "
                     f"{r.get('budget') or '–'} | {r['top1']:.2f} | {fmt(d.drop(r))} | {fmt_int(r.get('size_bytes'))} | "
                     f"{fmt(d.pct(r), 1)} | {fmt(r.get('ratio_to_fp32'))} | "
                     f"{100 * (r.get('mults_eliminated') or 0):.1f}% | "
                     f"{'–' if r.get('config') == 'w8a8' else r.get('max_level')} | {'–' if fb is None else fb} |")
    for r in d.errors:
        if r.get("section") in ("reference", "sweep"):
            if below_plain(r):
                lines.append(f"| {config_label(r)} | {r.get('ranking') or '–'} | {r.get('fallback') or '–'} | "
                             f"{r.get('budget') or '–'} | n/a | | | | | | | budget below the plain ternary model |")
                continue
            err = (r.get("error") or "").replace("|", "\\|")
            lines.append(f"| {config_label(r)} | {r.get('ranking') or '–'} | {r.get('fallback') or '–'} | "
                         f"{r.get('budget') or '–'} | **error** | | | | | | | {err} |")
    return lines


def edges_table(d):
    lines = ["| budget | ranking | seed | top-1 | drop (pp) | size (bytes) | % of int8 | × smaller than FP32 | "
             "mults eliminated | edges (max level) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in d.edge_budgets:
        for ranking in RANKINGS:
            rs = sorted(d.edge_rows(ranking, b), key=lambda r: int(r["seed"]) if r.get("seed") else 0)
            for r in rs:
                lines.append(f"| {b} | {ranking} | {r.get('seed') or '–'} | {r['top1']:.2f} | {fmt(d.drop(r))} | "
                             f"{fmt_int(r.get('size_bytes'))} | {fmt(d.pct(r), 1)} | {fmt(r.get('ratio_to_fp32'))} | "
                             f"{100 * (r.get('mults_eliminated') or 0):.1f}% | {r.get('max_level')} |")
            if ranking == "random":
                s = d.random_stats(b)
                if s and s["n"] > 1:
                    lines.append(f"| {b} | **random, mean** | {s['n']} seeds | **{s['mean']:.2f}** "
                                 f"(min {s['lo']:.2f}, max {s['hi']:.2f}) | "
                                 f"{fmt(d.fp32 - s['mean'] if d.fp32 is not None else None)} | {fmt_int(s['size'])} | "
                                 f"{s['pct']:.1f} | {s['ratio_fp32']:.2f} | {100 * s['mults']:.1f}% | {s['edges']:.1f} |")
    for r in d.errors:
        if r.get("section") == "edges":
            err = (r.get("error") or "").replace("|", "\\|")
            lines.append(f"| {r.get('budget')} | {r.get('ranking')} | {r.get('seed') or '–'} | **error** | | | | | | {err} |")
    return lines


def levels_table(d):
    lines = ["| level | adds | top-1 | drop (pp) | size (bytes) | % of int8 | mults eliminated |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for l in d.levels:
        lines.append(f"| {l['level']} | {l.get('adds') or ''} | {l['top1']:.2f} | "
                     f"{fmt(d.fp32 - l['top1'] if d.fp32 is not None else None)} | {fmt_int(l.get('size_bytes'))} | "
                     f"{fmt(100 * l['size_bytes'] / d.int8_bytes if d.int8_bytes else None, 1)} | "
                     f"{100 * (l.get('mults_eliminated') or 0):.1f}% |")
    return lines


def describe(d, r, pct=None):
    pct = d.pct(r) if pct is None else pct
    return (f"{config_label(r)}: top-1 {r['top1']:.2f} ({fmt(d.drop(r))} pp drop), {pct:.1f}% of int8 "
            f"({r.get('ratio_to_fp32') or 0:.2f}× smaller than FP32), {100 * (r.get('mults_eliminated') or 0):.1f}% "
            f"multiplications eliminated")


def level_points(d):
    """The levels as pseudo rows (each level is a model of its own)."""
    out = []
    for l in d.levels:
        out.append(dict(config=f"edges measured {d.levels_row['budget']} at level {l['level']}", top1=l["top1"],
                        size_bytes=l["size_bytes"], ratio_to_fp32=l.get("ratio_to_fp32"),
                        mults_eliminated=l.get("mults_eliminated")))
    return out


def targets(d):
    """Lines of the Targets section for one model."""
    out = []
    if d.fp32 is None or not d.int8_bytes:
        return [f"**{d.model}**: no FP32 or size reference; no targets computed."]
    tol, cap = TARGETS.get(d.model, DEFAULT_TARGET)
    named = d.model in TARGETS
    bound = f" at ≤ {cap:g}% of the int8 size" if cap is not None else " (the issue sets no size bound: the smallest such model counts)"
    head = (f"**{d.model}** (target: within {tol:g} pp of FP32 {d.fp32:.2f}{bound}"
            + ("" if named else "; no target was set for this model, shown at the same bar as ResNet-20") + ")")
    if cap is None:
        cap = math.inf
    out.append(head)
    groups = (("with int8 fallbacks (measured ranking, size/drop budgets)", [r for r in [d.plain] if r] + d.sweep),
              ("edges only (any ranking and edge budget, and every level of the levels model)",
               [r for r in [d.plain] if r] + d.edges + level_points(d)))
    for what, cands in groups:
        small = [r for r in cands if d.pct(r) is not None and d.pct(r) <= cap + 1e-9]
        if not small:
            out.append(f"  - {what}: no configuration at ≤ {cap:g}% of int8.")  # cap is finite here
            continue
        best = max(small, key=lambda r: (r["top1"], -r["size_bytes"]))
        met = d.fp32 - best["top1"] <= tol + 1e-9
        if math.isinf(cap):
            within_tol = [r for r in small if d.drop(r) is not None and d.drop(r) <= tol + 1e-9]
            best = min(within_tol, key=lambda r: (r["size_bytes"], -r["top1"])) if within_tol else best
            met = bool(within_tol)
            out.append(f"  - {what}: **{'met' if met else 'not met'}** — "
                       f"{'smallest within ' + format(tol, 'g') + ' pp' if met else 'best'}: {describe(d, best)}.")
        else:
            out.append(f"  - {what}: **{'met' if met else 'not met'}** — best at ≤ {cap:g}%: {describe(d, best)}.")
        within = [r for r in cands if d.drop(r) is not None and d.drop(r) <= tol + 1e-9]
        if math.isinf(cap):
            continue  # the line above already names the smallest model within the tolerance
        if within:
            sm = min(within, key=lambda r: (r["size_bytes"], -r["top1"]))
            out.append(f"    Smallest within {tol:g} pp (any size): {describe(d, sm)}.")
        else:
            out.append(f"    No configuration of this kind is within {tol:g} pp at any size tried.")
    se = d.se()
    for b in d.edge_budgets:
        w = d.edge_rows("weights", b)
        u = d.edge_rows("uniform", b)
        m = d.edge_rows("measured", b)
        s = d.random_stats(b)
        if not w:
            continue
        w = w[0]
        parts, beats = [], []
        if u:
            u = u[0]
            diff = w["top1"] - u["top1"]
            beats.append(("uniform", diff))
            parts.append(f"uniform {u['top1']:.2f} ({d.pct(u):.1f}%)")
        if s:
            diff = w["top1"] - s["mean"]
            beats.append(("random mean", diff))
            parts.append(f"random mean {s['mean']:.2f} [{s['lo']:.2f}–{s['hi']:.2f}] ({s['pct']:.1f}%)")
        if m:
            parts.append(f"measured {m[0]['top1']:.2f} ({d.pct(m[0]):.1f}%)")
        verdict = []
        for name, diff in beats:
            noise = se is not None and abs(diff) < 2 * se
            verdict.append(f"{'beats' if diff > 0 else 'ties' if diff == 0 else 'loses to'} {name} by "
                           f"{abs(diff):.2f} pp" + (" (within noise)" if noise and diff != 0 else ""))
        def edge_set(r):
            return frozenset((e.get("layer"), e.get("term")) for e in r.get("edges") or [])
        same = [name for name, other in (("uniform", u if u else None), ("measured", m[0] if m else None))
                if other is not None and edge_set(other) == edge_set(w)]
        same += [f"random seed {r['seed']}" for r in d.edge_rows("random", b) if edge_set(r) == edge_set(w)]
        beat_max = ""
        if same:
            beat_max += f" (same edge set as {', '.join(same)})"
        if s and w["top1"] < s["hi"]:
            beat_max += f"; the best random seed ({s['hi']:.2f}) is above it"
        out.append(f"  - {b}, weights (data-free) ranking {w['top1']:.2f} ({d.pct(w):.1f}% of int8) vs "
                   + ", ".join(parts) + ": " + "; ".join(verdict) + beat_max + ".")
    return out


def findings(d):
    out = []
    se = d.se()
    if se is not None:
        out.append(f"Evaluated on {d.images:,} test images: one image is {100 / d.images:.3g} pp, and the binomial "
                   f"standard error of a top-1 near {d.fp32 if d.fp32 is not None else 0:.1f}% is about {se:.2f} pp "
                   f"(differences below ~{2 * se:.2f} pp are within noise for independent samples; the rows here "
                   f"share the test images, so paired differences are somewhat less noisy).")
    if d.plain and d.fp32 is not None:
        out.append(f"Plain ternary: {describe(d, d.plain)}.")
    for r in d.sweep:
        if r["budget"].startswith("drop:"):
            pp = float(r["budget"].split(":")[1])
            out.append(f"`{r['budget']}` (target measured on the calibration images): {describe(d, r)}, "
                       f"{d.fallbacks(r)} int8 fallbacks, {r.get('max_level')} edges; the test-set drop is "
                       f"{d.drop(r):.2f} pp vs the {pp:g} pp asked for.")
    fb = [(r["budget"], d.fallbacks(r), r.get("max_level")) for r in d.sweep if r["budget"].startswith("size:")]
    if fb:
        out.append("Measured + int8 sweep, what the budget bought (int8 fallbacks / edges): "
                   + ", ".join(f"{b}: {f}/{e}" for b, f, e in fb) + ".")
    # Monotonicity of the sweep and the levels.
    sizes = [r for r in d.sweep if r["budget"].startswith("size:")]
    dips = [(a, b) for a, b in zip(sizes, sizes[1:]) if b["top1"] < a["top1"]]
    if dips:
        out.append("The size sweep is not monotone: " + "; ".join(
            f"{a['budget']} {a['top1']:.2f} → {b['budget']} {b['top1']:.2f}" for a, b in dips) + ".")
    if d.levels:
        lv = d.levels
        dips = [(a, b) for a, b in zip(lv, lv[1:]) if b["top1"] < a["top1"]]
        best = max(lv, key=lambda l: (l["top1"], -l["level"]))
        first, last = lv[0], lv[-1]
        text = (f"Levels (edges measured {d.levels_row['budget']}): level 0 {first['top1']:.2f} at "
                f"{100 * first['size_bytes'] / d.int8_bytes:.1f}% of int8 → level {last['level']} {last['top1']:.2f} at "
                f"{100 * last['size_bytes'] / d.int8_bytes:.1f}%; best level {best['level']} ({best['top1']:.2f}). ")
        if dips:
            big = [(a, b) for a, b in dips if se is not None and a["top1"] - b["top1"] >= 2 * se]
            text += (f"{len(dips)} of {len(lv) - 1} steps lower top-1 (largest "
                     f"{max(a['top1'] - b['top1'] for a, b in dips):.2f} pp"
                     + (f"; {len(big)} by ≥ {2 * se:.2f} pp: "
                        + ", ".join(f"{a['level']}→{b['level']}" for a, b in big) if big else "; all within noise")
                     + ").")
        else:
            text += "Top-1 never falls from one level to the next."
        out.append(text)
        # How fast the curve closes the gap: first level reaching half and 90% of the full gain.
        gain = last["top1"] - first["top1"]
        if gain > 0:
            for frac in (0.5, 0.9):
                l = next((l for l in lv if l["top1"] - first["top1"] >= frac * gain), None)
                if l:
                    out.append(f"{int(frac * 100)}% of the levels' top-1 gain ({gain:.2f} pp) is reached at level "
                               f"{l['level']} of {last['level']} ({100 * l['size_bytes'] / d.int8_bytes:.1f}% of int8, "
                               f"{100 * (l['size_bytes'] - first['size_bytes']) / max(1, last['size_bytes'] - first['size_bytes']):.0f}% "
                               f"of the edge bytes).")
    # Measured vs weights across budgets.
    cmp_ = []
    for b in d.edge_budgets:
        m, w = d.edge_rows("measured", b), d.edge_rows("weights", b)
        if m and w:
            cmp_.append(f"{b}: {m[0]['top1']:.2f} vs {w[0]['top1']:.2f}")
    if cmp_:
        out.append("Edges only, measured vs weights ranking: " + "; ".join(cmp_) + ".")
    # Saturation: budgets that could not be spent.
    for r in d.edges:
        if r["budget"].startswith("size:"):
            want = float(r["budget"][5:-1])
            if d.pct(r) is not None and d.pct(r) < want - 5:
                out.append(f"Edges only at {r['budget']}: the budget is not used up (all edges that help are taken "
                           f"at {d.pct(r):.1f}% of int8, max {r.get('max_level')} edges with "
                           f"--residual-max-terms 3).")
                break
    below = [r for r in d.errors if below_plain(r)]
    if below:
        out.append("Not run because the budget is below the plain ternary model's size (tern rejects it): "
                   + ", ".join(f"`{r.get('budget')}`" for r in below)
                   + (f" (plain ternary is {d.pct(d.plain):.1f}% of int8)" if d.plain else "") + ".")
    failed = [r for r in d.errors if not below_plain(r)]
    if failed:
        out.append(f"**{len(failed)} failed run(s)**: " + "; ".join(
            f"{r.get('config')}: {r.get('error')}" for r in failed) + ".")
    return out


def render(rows, out_dir, render_cmd, source_note):
    os.makedirs(out_dir, exist_ok=True)
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    first = rows[0] if rows else {}
    extra = first.get("extra_args") or []
    limit = first.get("limit")
    data = {m: ModelData(m, [r for r in rows if r["model"] == m]) for m in models}
    lines = ["# Ternary residual edges: budgets, rankings and levels (issue 4)", ""]
    lines += provenance_header(rows, "residual_study.py", "residual.json", render_cmd, source_note, "Quantize defaults")
    lines += ["Each row ran (commands per row in `residual.json`):", "", "```",
              "tern quantize models/M.onnx -o TMP.tern [--weights int8 --group channel | --residual BUDGET "
              "--residual-ranking R --fallback F [--seed S]] --json" + (" " + shlex.join(extra) if extra else ""),
              f"tern eval TMP.tern --data {first.get('data', 'fashion-mnist')} --json [--level all]"
              + (f" --limit {limit}" if limit else ""),
              "```", "",
              "*Budget* `size:P%` caps the total model size (codes, scales, biases, float constants) at P% of the "
              "int8 per-channel model; `drop:PP` takes the shortest prefix of the ranking whose top-1 on the "
              "calibration images (training split) is at most PP below FP32 (the test-set drop can differ). "
              "*drop* is FP32 top-1 minus top-1 in percentage points (positive = worse). *× smaller than FP32* is "
              "the FP32 weight bytes over the model's bytes. *mults eliminated* is the share of the model's "
              "multiplications replaced by additions (each residual term of a layer adds its group-scale "
              "multiplications back; int8 fallbacks add all of the layer's). *edges* is the number of residual "
              "edge sets (one extra ternary term of one layer each), the model's max level. *int8 fallbacks* is "
              "the number of layers with int8 weights minus those already int8 in the plain ternary model "
              "(first and last layers). See `docs/residual.md` for the expansion, the rankings and the budgets.", "",
              "**Paper reference.** Kundu et al. (ternary residual networks, arXiv 1707.04679; ResNet-101 on "
              "ImageNet) report about 1 pp below FP32 at about 1.6× smaller than the 8-bit (8-8) model, i.e. about "
              "62% of its size, and about 2 pp below FP32 at about 1.9× smaller (about 53%) with the least "
              "important edges turned off. The rows below are small Fashion-MNIST models, not ImageNet.", "",
              "**Latency.** The quantized models here run as an exact simulation on FP32 kernels (dequantized "
              "weights), so time per image says nothing about ternary or residual cost and none is reported; "
              "latency columns come with the integer runtime (issue 5).", ""]
    lines += ["## Targets", ""]
    lines += ["Computed from the rows below. Configurations are picked on the test set (which budget, which "
              "level), so the best-of numbers are slightly optimistic.", ""]
    for m in models:
        lines += [f"- {t}" if not t.startswith("  ") else t for t in targets(data[m])]
    lines.append("")
    for m in models:
        d = data[m]
        lines += [f"## {m}", ""]
        if d.fp32 is not None:
            lines += [f"FP32 top-1: **{d.fp32:.2f}%** ({fmt_int(d.fp32_bytes)} bytes of weights; int8 per-channel "
                      f"model {fmt_int(d.int8_bytes)} bytes).", ""]
        else:
            fr = next((r for r in d.rows if r.get("config") == "fp32"), None)
            lines += [f"FP32 evaluation failed: {fr.get('error') if fr else 'missing'}", ""]
        lines += ["### References and the budget sweep (measured ranking, int8 fallbacks)", ""]
        lines += main_table(d) + [""]
        lines += ["### Edges only (`--fallback none`): rankings at equal budget", ""]
        lines += edges_table(d) + [""]
        if d.levels:
            lines += [f"### Levels of the edges-only, measured, `{d.levels_row['budget']}` model "
                      f"(`tern eval --level all`)", "",
                      "Level k runs the first k edge sets (most important first); *adds* names the edge set that "
                      "level k adds.", ""]
            lines += levels_table(d) + [""]
        plot = make_plot(d, out_dir)
        if plot:
            lines += [f"![{plot}]({plot})", ""]
        lines += [f"### Findings ({m})", ""]
        lines += [f"- {f}" for f in findings(d)]
        lines.append("")
    path = os.path.join(out_dir, "residual.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {rel(path)}")
    return path


def main():
    p, argv, extra = study_parser(__doc__, DEFAULT_MODELS)
    p.add_argument("--sweep-budgets", nargs="+", default=None)
    p.add_argument("--edge-budgets", nargs="+", default=None)
    p.add_argument("--seeds", nargs="+", default=None)
    p.add_argument("--tmp", default=None)
    args, cmd, rows = parse_study_args(p, argv, "residual_study.py", "residual.json", resolve_model, 3600)
    if rows is not None:
        render(rows, args.out, cmd, f" (re-rendered {datetime.date.today()})")
        return
    sweep = args.sweep_budgets or (QUICK_SWEEP if args.quick else SWEEP_BUDGETS)
    edges = args.edge_budgets or (QUICK_EDGES if args.quick else EDGE_BUDGETS)
    seeds = args.seeds or (QUICK_SEEDS if args.quick else SEEDS)
    grid = study_grid(list(sweep), list(edges), [str(s) for s in seeds])
    try:
        if os.nice(0) < args.nice:
            os.nice(args.nice - os.nice(0))
    except OSError:
        pass
    rows = run_study(args, extra, cmd, grid)
    render(rows, args.out, None, "")


if __name__ == "__main__":
    main()
