#!/usr/bin/python3
"""Group-size study of post-training quantization; writes docs/results/ptq.md, ptq.json and plots.

    nice /usr/bin/python3 scripts/ptq_study.py [options] [-- EXTRA QUANTIZE OPTIONS]

For each model (default: models/resnet20.onnx, vgg_small.onnx, mobilenetv2_small.onnx) it runs
`tern quantize ... --json` followed by `tern eval OUT.tern --data fashion-mnist --json` for:

  * ternary weights, N in {1, 2, 4, 8, 16, 32, 64, channel} x acts {8, 4} x methods
    {fgq, twn, tnt, cluster}. For cluster, --group N means N filters per cluster; `channel` has no
    cluster equivalent (tern rejects it) and is skipped: cluster rows cover N = 1..64 only.
  * binary weights, N = 4 and per channel, 8-bit activations;
  * int4 weights per group of 32 input channels (W4A8) and per channel, int8 per channel (W8A8);
  * the FP32 model itself (`tern eval models/M.onnx`), the reference for the accuracy drop.

Everything after `--` is passed unchanged to every `tern quantize` run (e.g. `-- --calibration
mse` runs the whole study with another calibration). Each row keeps its exact commands in
ptq.json. A failing run (non-zero exit, unparsable output, timeout) becomes an error row carrying
the last stderr line. Quantized .tern files live in a temporary directory and are deleted right
after their evaluation. ptq.json is rewritten after every row; --resume reuses the finished rows of
an earlier (interrupted) run whose commands match.

Options:
  --models NAME|PATH ...   models (a bare name means models/NAME.onnx); default all three
  --tern PATH              tern binary (default build/all/src/tern)
  --out DIR                output directory (default docs/results)
  --data SPEC              evaluation data set (default fashion-mnist)
  --limit N                evaluate on the first N test images only (smoke runs)
  --quick                  small grid for testing: N in {4, channel}, acts 8, fgq and twn only
  --jobs J                 rows run in parallel (default 1; tern already uses every core)
  --tolerance PP           accuracy budget for the findings, in points of top-1 (default 1.5)
  --from-json [FILE]       re-render ptq.md and the plots from ptq.json (default OUT/ptq.json)
                           without running anything
  --resume                 reuse matching finished rows of OUT/ptq.json (and keep the rows of
                           models not in this run)
  --no-weight-rounding     skip the `--rounding weight` rows (the papers' plain per-group rounding)
  --nice N                 raise the process niceness to at least N (default 10)
  --timeout S              seconds allowed per tern invocation (default 1800)

The plots need matplotlib (Debian's /usr/bin/python3 has it); without it ptq.md is still written.
"""
import concurrent.futures
import datetime
import json
import math
import os
import re
import shlex
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import (parse_study_args, provenance_header, rel, resolve_model, resume_rows,  # noqa: E402
                          row_context, run_json, save_json, study_parser)
DEFAULT_MODELS = ("resnet20", "vgg_small", "mobilenetv2_small")
GROUPS = ("1", "2", "4", "8", "16", "32", "64", "channel")
TERNARY_METHODS = ("fgq", "fgq-asym", "twn", "tnt", "cluster")
# The same methods with `--rounding weight`: each group alone minimizes its weight error, as in the
# papers, instead of tern's default output-aware rounding. Rows name them "fgq@weight" etc.
WEIGHT_ROUNDING_METHODS = ("fgq@weight", "fgq-asym@weight", "twn@weight", "tnt@weight")
ALL_TERNARY = TERNARY_METHODS + WEIGHT_ROUNDING_METHODS
QUICK_GROUPS = ("4", "channel")
QUICK_METHODS = ("fgq", "twn")
PLOT_ORDER = ALL_TERNARY + ("binary", "int4", "int8")
METHOD_COLORS = {"fgq": "tab:blue", "fgq-asym": "tab:cyan", "twn": "tab:orange", "tnt": "tab:green", "cluster": "tab:red",
                 "binary": "tab:purple", "int4": "tab:brown", "int8": "tab:gray"}


def log(message):
    print(f"[ptq_study {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def quantize_defaults(help_text):
    """The description of the quantize command in `tern --help` (its defaults: calibration,
    rounding, group scales, first/last layers), as one paragraph."""
    lines = help_text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  quantize "):
            text = []
            for more in lines[i + 1:]:
                if re.match(r"^  \S", more) or not more.strip():
                    break  # next command
                if more.strip().startswith("["):
                    continue  # usage continuation
                text.append(more.strip())
            if text:
                return " ".join(text)
    return "unknown (no quantize entry in tern --help)"


# ----------------------------------------------------------------------------------------------
# Grid

def study_grid(quick, weight_rounding=True):
    """List of configs: dict(weights, method, group, acts)."""
    grid = []
    groups = QUICK_GROUPS if quick else GROUPS
    acts_list = ("8",) if quick else ("8", "4")
    methods = QUICK_METHODS if quick else TERNARY_METHODS
    for method in methods:
        for acts in acts_list:
            for group in groups:
                if method == "cluster" and group == "channel":
                    continue  # no per-channel cluster: tern needs N filters per cluster
                grid.append(dict(weights="ternary", method=method, group=group, acts=acts))
    if not quick and weight_rounding:
        for method in WEIGHT_ROUNDING_METHODS:
            for group in GROUPS:
                grid.append(dict(weights="ternary", method=method, group=group, acts="8"))
    if not quick:
        grid += [dict(weights="binary", method=None, group="4", acts="8"),
                 dict(weights="binary", method=None, group="channel", acts="8"),
                 dict(weights="int4", method=None, group="32", acts="8"),
                 dict(weights="int4", method=None, group="channel", acts="8"),
                 dict(weights="int8", method=None, group="channel", acts="8")]
    return grid


def config_name(model, cfg):
    parts = [model, cfg["weights"]]
    if cfg["method"]:
        parts.append(cfg["method"])
    parts += ["g" + cfg["group"], "a" + cfg["acts"]]
    return "_".join(parts)


def quantize_cmd(tern, model_path, out_path, cfg, extra):
    cmd = [rel(tern), "quantize", rel(model_path), "-o", out_path, "--weights", cfg["weights"]]
    if cfg["method"]:
        method, _, rounding = cfg["method"].partition("@")
        cmd += ["--method", method] + (["--rounding", rounding] if rounding else [])
    cmd += ["--group", cfg["group"], "--acts", cfg["acts"], "--json"]
    return cmd + list(extra)


def eval_cmd(tern, model, data, limit):
    cmd = [rel(tern), "eval", model, "--data", data, "--json"]
    if limit:
        cmd += ["--limit", str(limit)]
    return cmd


QUANT_FIELDS = ("size_bytes", "fp32_bytes", "int8_bytes", "ratio_to_fp32", "ratio_to_int8", "mults_eliminated")


def run_row(args, model, model_path, cfg, tmpdir, extra, common):
    row = dict(common, model=model, kind="quantized", **cfg)
    out_path = os.path.join(tmpdir, config_name(model, cfg) + ".tern")
    qcmd = quantize_cmd(args.tern, model_path, out_path, cfg, extra)
    ecmd = eval_cmd(args.tern, out_path, args.data, args.limit)
    row["quantize_cmd"] = shlex.join(qcmd)
    row["eval_cmd"] = shlex.join(ecmd)
    try:
        q, err, row["quantize_s"] = run_json(qcmd, args.timeout)
        if err:
            row.update(status="error", error=f"quantize: {err}")
            return row
        for k in QUANT_FIELDS:
            row[k] = q.get(k)
        row["layer_weights"] = sorted({l.get("weights", "?") for l in q.get("layers", [])})
        e, err, row["eval_s"] = run_json(ecmd, args.timeout)
        if err:
            row.update(status="error", error=f"eval: {err}")
            return row
        row.update(status="ok", top1=e.get("top1"), top5=e.get("top5"), images=e.get("images"),
                   images_per_s=e.get("images_per_s"))
        return row
    finally:
        try:
            os.remove(out_path)
        except OSError:
            pass
        row["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def run_fp32(args, model, model_path, common):
    row = dict(common, model=model, kind="fp32", weights="float32", method=None, group=None, acts="float")
    ecmd = eval_cmd(args.tern, rel(model_path), args.data, args.limit)
    row["eval_cmd"] = shlex.join(ecmd)
    e, err, row["eval_s"] = run_json(ecmd, args.timeout)
    if err:
        row.update(status="error", error=f"eval: {err}")
    else:
        row.update(status="ok", top1=e.get("top1"), top5=e.get("top5"), images=e.get("images"),
                   images_per_s=e.get("images_per_s"))
    row["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return row


def row_key(row):
    """Identity of a row for --resume: same model, config, data, limit and extra options."""
    return (row.get("model"), row.get("kind"), row.get("weights"), row.get("method"), row.get("group"),
            row.get("acts"), row.get("data"), row.get("limit"), tuple(row.get("extra_args") or ()))


def run_study(args, extra, study_cmd):
    json_path = os.path.join(args.out, "ptq.json")
    previous, kept = resume_rows(args, json_path, [resolve_model(m)[0] for m in args.models], row_key, log)
    common = row_context(args, extra, study_cmd, quantize_defaults)
    models = [resolve_model(m) for m in args.models]
    for name, path in models:
        if not os.path.exists(path):
            sys.exit(f"ptq_study: no model {path}")
    grid = study_grid(args.quick, not args.no_weight_rounding)
    total = len(models) * (len(grid) + 1)
    rows, lock, done = list(kept), threading.Lock(), [0]
    started = time.monotonic()

    def finish(row):
        with lock:
            rows.append(row)
            done[0] += 1
            save_json(json_path, rows)
            what = row.get("quantize_cmd") or row.get("eval_cmd")
            elapsed = time.monotonic() - started
            status = f"top1 {row['top1']:.2f}" if row["status"] == "ok" else row["status"].upper() + " " + row["error"]
            log(f"{done[0]}/{total} ({elapsed:.0f} s) {row['model']} {row['weights']} {row.get('method') or ''} "
                f"N={row.get('group')} A{row.get('acts')}: {status}")
            if row["status"] != "ok":
                log(f"    command: {what}")

    with tempfile.TemporaryDirectory(prefix="ptq-study-") as tmpdir:
        for name, path in models:
            key_row = dict(common, model=name, kind="fp32", weights="float32", method=None, group=None, acts="float")
            if row_key(key_row) in previous:
                finish(dict(previous[row_key(key_row)], resumed=True))
            else:
                finish(run_fp32(args, name, path, common))
        jobs = []
        for name, path in models:
            for cfg in grid:
                key_row = dict(common, model=name, kind="quantized", **cfg)
                if row_key(key_row) in previous:
                    finish(dict(previous[row_key(key_row)], resumed=True))
                else:
                    jobs.append((name, path, cfg))
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            futures = [pool.submit(run_row, args, name, path, cfg, tmpdir, extra, common) for name, path, cfg in jobs]
            for fut in concurrent.futures.as_completed(futures):
                finish(fut.result())
    order = {(n, json.dumps(c, sort_keys=True)): i for i, (n, c) in
             enumerate([(m, None) for m, _ in models] + [(m, cfg) for m, _ in models for cfg in grid])}

    def sort_key(r):
        if r["model"] not in {m for m, _ in models}:
            return -1
        cfg = None if r["kind"] == "fp32" else {k: r[k] for k in ("weights", "method", "group", "acts")}
        return order.get((r["model"], json.dumps(cfg, sort_keys=True)), len(order))
    rows.sort(key=sort_key)
    save_json(json_path, rows)
    log(f"study finished in {time.monotonic() - started:.0f} s; raw rows in {rel(json_path)}")
    return rows


# ----------------------------------------------------------------------------------------------
# Rendering

def group_index(group):
    return GROUPS.index(group) if group in GROUPS else len(GROUPS)


def fmt_pct(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def fmt_int(x):
    return "–" if x is None else f"{int(x):,}"


def label_of(r):
    if r["kind"] == "fp32":
        return "FP32"
    m = r["method"] or r["weights"]
    w = {"ternary": "ternary", "binary": "binary", "int4": "int4", "int8": "int8"}.get(r["weights"], r["weights"])
    g = "per channel" if r["group"] == "channel" else (f"{r['group']} filters/cluster" if r["method"] == "cluster"
                                                      else f"N={r['group']}")
    return f"{w} {m if r['method'] else ''} {g} A{r['acts']}".replace("  ", " ")


def series_key(r):
    """Plot series: one line per ternary method and acts; the other weight types per type."""
    if r["weights"] == "ternary":
        return (r["method"], r["acts"])
    return (r["weights"], r["acts"])


def drop_of(r, fp32):
    if r.get("status") != "ok" or fp32 is None or r.get("top1") is None:
        return None
    return fp32 - r["top1"]


def make_plots(model, rows, fp32_row, out_dir, tol):
    """Two figures per model (top-1 vs multiplications eliminated, top-1 vs size on a log axis),
    each with the full range on the left and a zoom on [FP32 - 10 pp, FP32 + 1 pp] on the right."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib not available (run with /usr/bin/python3): no plots")
        return []
    ok = [r for r in rows if r["status"] == "ok" and r["kind"] == "quantized" and r.get("top1") is not None]
    if not ok:
        return []
    fp32 = fp32_row.get("top1") if fp32_row and fp32_row.get("status") == "ok" else None
    fp32_bytes = next((r["fp32_bytes"] for r in ok if r.get("fp32_bytes")), None)
    series = {}
    for r in ok:
        series.setdefault(series_key(r), []).append(r)
    files = []
    for kind, xlabel in (("mults", "multiplications eliminated (%)"), ("size", "model size (bytes, log scale)")):
        panels = 2 if fp32 is not None else 1
        fig, axes = plt.subplots(1, panels, figsize=(7.5 * panels, 6), squeeze=False)
        for pi, ax in enumerate(axes[0]):
            for (name, acts), members in sorted(series.items(), key=lambda kv: (PLOT_ORDER.index(kv[0][0]) if kv[0][0] in
                                                                                   PLOT_ORDER else 99, kv[0][1] != "8")):
                members.sort(key=lambda r: group_index(r["group"]))
                xs = [100 * (r.get("mults_eliminated") or 0) if kind == "mults" else r.get("size_bytes") or 1
                      for r in members]
                ys = [r["top1"] for r in members]
                color = METHOD_COLORS.get(name.split("@")[0], "black")
                style = ":" if "@" in name else "-" if acts == "8" else "--"
                ax.plot(xs, ys, style, marker="^" if "@" in name else "o" if acts == "8" else "s", color=color,
                        label=f"{name} A{acts}", markersize=5, linewidth=1.2, alpha=0.9)
                for x, y, r in zip(xs, ys, members):
                    ax.annotate("ch" if r["group"] == "channel" else r["group"], (x, y), textcoords="offset points",
                                xytext=(3, 3), fontsize=7, color=color)
            if fp32 is not None:
                ax.axhline(fp32, color="black", linewidth=0.8, label=f"FP32 ({fp32:.2f})")
                ax.axhline(fp32 - tol, color="black", linewidth=0.8, linestyle=":", label=f"FP32 − {tol:g} pp")
                if kind == "size" and fp32_bytes:
                    ax.plot([fp32_bytes], [fp32], "k*", markersize=10)
            if kind == "size":
                ax.set_xscale("log")
            if pi == 1:
                ax.set_ylim(fp32 - 10, fp32 + 1)
                ax.set_title("zoom: within 10 pp of FP32")
            else:
                ax.set_title("all configurations")
                ax.legend(fontsize=8, ncol=2, loc="best")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("top-1 (%)")
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle(f"{model}: PTQ top-1 vs {'multiplications eliminated' if kind == 'mults' else 'size'} "
                     f"(point labels: N; ch = per channel; cluster: filters per cluster)")
        fig.tight_layout()
        fname = f"ptq_{model}_top1_vs_{kind}.png"
        fig.savefig(os.path.join(out_dir, fname), dpi=100)
        plt.close(fig)
        files.append(fname)
    return files


def findings(model, rows, fp32, tol):
    out = []
    ok = [r for r in rows if r["kind"] == "quantized" and r["status"] == "ok" and r.get("top1") is not None]
    if not ok:
        return ["No successful quantized runs."]
    images = max((r.get("images") or 0) for r in ok)
    if images:
        p = (fp32 if fp32 is not None else max(r["top1"] for r in ok)) / 100
        se = 100 * math.sqrt(max(p * (1 - p), 1e-9) / images)
        out.append(f"Evaluated on {images:,} test images: one image is {100 / images:.3g} pp, and the binomial "
                   f"standard error of a top-1 near {100 * p:.1f}% is about {se:.2f} pp, so differences below "
                   f"~{2 * se:.2f} pp are within noise.")
    by = {(r["weights"], r["method"], r["group"], r["acts"]): r for r in ok}

    # Like against like: symmetric methods (one scale per group: FGQ vs TWN) and two-scale methods
    # (separate positive and negative scales: asymmetric FGQ vs TNT), at the same N and activations;
    # then FGQ against TNT at equal cost (TNT's second scale doubles the multiplies and scale bytes of
    # a group, so TNT at 2N costs what FGQ costs at N).
    pairs = (("fgq", "twn"), ("fgq-asym", "tnt"))
    compared, violations = 0, []
    for acts, suffix in (("8", ""), ("4", ""), ("8", "@weight")):
        for g in GROUPS:
            for mine, other in pairs:
                f = by.get(("ternary", mine + suffix, g, acts))
                o = by.get(("ternary", other + suffix, g, acts))
                if not f or not o:
                    continue
                compared += 1
                if o["top1"] > f["top1"]:
                    violations.append(f"N={g} A{acts}: {(other + suffix).upper()} {o['top1']:.2f} > "
                                      f"{(mine + suffix).upper()} {f['top1']:.2f} (+{o['top1'] - f['top1']:.2f} pp)")
    if compared:
        text = (f"**FGQ ≥ TWN (one scale per group) and asymmetric FGQ ≥ TNT (two scales per group)** at the "
                  f"same N and activation width in {compared - len(violations)} of {compared} comparisons")
        out.append(text + (": exceptions — " + "; ".join(violations) + "." if violations else " (no exceptions)."))
    compared, violations = 0, []
    for acts, suffix in (("8", ""), ("4", ""), ("8", "@weight")):
        for g in GROUPS:
            f = by.get(("ternary", "fgq" + suffix, g, acts))
            if not f:
                continue
            for o in [r for (w, m, gg, a), r in by.items() if w == "ternary" and m == "tnt" + suffix and a == acts
                      and r.get("size_bytes") == f.get("size_bytes") and r.get("mults_eliminated") == f.get("mults_eliminated")]:
                compared += 1
                if o["top1"] > f["top1"]:
                    violations.append(f"A{acts}{suffix}: TNT N={o['group']} {o['top1']:.2f} > FGQ N={g} {f['top1']:.2f}")
    if compared:
        out.append(f"**FGQ ≥ TNT at equal size and multiplications** (FGQ at N vs TNT at 2N) in "
                   f"{compared - len(violations)} of {compared} comparisons"
                   + (": exceptions — " + "; ".join(violations) + "." if violations else " (no exceptions)."))

    # Best configuration within the tolerance.
    if fp32 is not None:
        within = [r for r in ok if fp32 - r["top1"] <= tol]
        if within:
            for acts_filter, what in ((None, "any activation width"), ("8", "8-bit activations"),
                                      ("4", "4-bit activations")):
                cand = [r for r in within if acts_filter is None or r["acts"] == acts_filter]
                if not cand:
                    if acts_filter == "4" and any(r["acts"] == "4" for r in ok):
                        out.append(f"No configuration with {what} stays within {tol} pp of FP32.")
                    continue
                best = max(cand, key=lambda r: (r.get("mults_eliminated") or 0, r["top1"], -(r.get("size_bytes") or 0)))
                out.append(f"**Most multiplications eliminated within {tol} pp of FP32 ({what})**: {label_of(best)} — "
                           f"top-1 {best['top1']:.2f} ({fp32 - best['top1']:+.2f} pp drop), "
                           f"{100 * (best.get('mults_eliminated') or 0):.1f}% multiplications eliminated, "
                           f"{fmt_int(best.get('size_bytes'))} bytes ({best.get('ratio_to_fp32') or 0:.1f}× smaller "
                           f"than FP32).")
            small = min(within, key=lambda r: (r.get("size_bytes") or float("inf"), -r["top1"]))
            out.append(f"**Smallest model within {tol} pp of FP32**: {label_of(small)} — {fmt_int(small.get('size_bytes'))} "
                       f"bytes ({small.get('ratio_to_fp32') or 0:.1f}× FP32, {small.get('ratio_to_int8') or 0:.2f}× int8), "
                       f"top-1 {small['top1']:.2f}.")
        else:
            out.append(f"No configuration stays within {tol} pp of FP32.")

        # Largest N within the tolerance, per ternary method and acts.
        parts = []
        for method in ALL_TERNARY:
            for acts in ("8", "4"):
                members = sorted([r for r in ok if r["weights"] == "ternary" and r["method"] == method and r["acts"] == acts],
                                 key=lambda r: group_index(r["group"]))
                if not members:
                    continue
                good = [r for r in members if fp32 - r["top1"] <= tol]
                largest = good[-1]["group"] if good else None
                # all N up to that one within tolerance?
                holes = [r["group"] for r in members if group_index(r["group"]) < group_index(largest or "1")
                         and fp32 - r["top1"] > tol] if largest else []
                desc = f"{method.upper()} A{acts}: " + (
                    "none" if largest is None else f"up to N={largest}" + (f" (but not N={', '.join(holes)})" if holes else ""))
                parts.append(desc)
        if parts:
            out.append(f"**Largest group size within {tol} pp** (ternary; cluster N = filters per cluster): "
                       + "; ".join(parts) + ".")

    # Cost of 4-bit activations.
    diffs = []
    for (w, m, g, acts), r in by.items():
        if acts == "4" and (w, m, g, "8") in by:
            diffs.append((by[(w, m, g, "8")]["top1"] - r["top1"], f"{m or w} N={g}"))
    if diffs:
        mean = sum(d for d, _ in diffs) / len(diffs)
        worst = max(diffs)
        out.append(f"**4-bit vs 8-bit activations**: A4 costs {mean:.2f} pp on average over {len(diffs)} matched "
                   f"configurations (worst: {worst[1]}, {worst[0]:.2f} pp).")

    # Group size trend for FGQ.
    for acts in ("8", "4"):
        members = sorted([r for r in ok if r["weights"] == "ternary" and r["method"] == "fgq" and r["acts"] == acts],
                         key=lambda r: group_index(r["group"]))
        if len(members) >= 2:
            trend = ", ".join(f"N={'ch' if r['group'] == 'channel' else r['group']}: {r['top1']:.2f} "
                              f"({100 * (r.get('mults_eliminated') or 0):.0f}%)" for r in members)
            out.append(f"FGQ A{acts} top-1 (multiplications eliminated) as N grows: {trend}.")

    # Ternary vs int4 at similar size.
    int4 = [r for r in ok if r["weights"] == "int4"]
    if int4 and fp32 is not None:
        for i4 in int4:
            better = [r for r in ok if r["weights"] == "ternary" and (r.get("size_bytes") or 0) <= (i4.get("size_bytes") or 0)
                      and r["top1"] >= i4["top1"]]
            if better:
                b = max(better, key=lambda r: (r.get("mults_eliminated") or 0, r["top1"]))
                out.append(f"{label_of(i4)} ({i4['top1']:.2f}, {fmt_int(i4.get('size_bytes'))} bytes) is matched or beaten "
                           f"by ternary at no larger size: {label_of(b)} ({b['top1']:.2f}, {fmt_int(b.get('size_bytes'))} "
                           f"bytes, {100 * (b.get('mults_eliminated') or 0):.0f}% multiplications eliminated).")
            else:
                out.append(f"No ternary configuration of at most the size of {label_of(i4)} ({fmt_int(i4.get('size_bytes'))} "
                           f"bytes) reaches its top-1 ({i4['top1']:.2f}).")

    errors = [r for r in rows if r["status"] != "ok"]
    if errors:
        out.append(f"**{len(errors)} failed run(s)**: " + "; ".join(f"{label_of(r)}: {r.get('error')}" for r in errors) + ".")
    return out


def render(rows, out_dir, tol, render_cmd, source_note):
    os.makedirs(out_dir, exist_ok=True)
    models = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    first = rows[0] if rows else {}
    extra = first.get("extra_args") or []
    limit = first.get("limit")
    lines = ["# Post-training quantization: group-size study", ""]
    lines += provenance_header(rows, "ptq_study.py", "ptq.json", render_cmd, source_note,
                               "Calibration and other quantize defaults")
    lines += ["Each row ran (commands per row in `ptq.json`):", "", "```",
              "tern quantize models/M.onnx -o TMP.tern --weights W [--method M] --group N --acts A --json"
              + (" " + shlex.join(extra) if extra else ""),
              f"tern eval TMP.tern --data {first.get('data', 'fashion-mnist')} --json" + (f" --limit {limit}" if limit else ""),
              "```", "",
              "N is the number of input channels sharing one scale (FGQ group size); `channel` means one scale per "
              "whole filter. For `cluster`, N is the number of filters per cluster, and `channel` is skipped (tern "
              "has no per-channel cluster mode). *drop* is FP32 top-1 minus quantized top-1 in percentage points "
              "(positive = worse). *ratio* columns are size reductions (higher = smaller). *mults eliminated* is "
              "the share of the model's multiplications replaced by additions. First and last layers stay int8 "
              "unless the extra options say otherwise. Methods without a suffix use tern's default output-aware "
              "rounding (codes chosen to minimize each layer's output error on the calibration images, group scales "
              "still chosen by the method); `@weight` rows use `--rounding weight`, the papers' plain post-training "
              "method (each group minimizes its own weight error).", ""]
    for model in models:
        mrows = [r for r in rows if r["model"] == model]
        fp32_row = next((r for r in mrows if r["kind"] == "fp32"), None)
        fp32 = fp32_row.get("top1") if fp32_row and fp32_row.get("status") == "ok" else None
        q = [r for r in mrows if r["kind"] == "quantized"]
        fp32_bytes = next((r["fp32_bytes"] for r in q if r.get("fp32_bytes")), None)
        int8_bytes = next((r["int8_bytes"] for r in q if r.get("int8_bytes")), None)
        lines += [f"## {model}", ""]
        if fp32 is not None:
            lines += [f"FP32 top-1: **{fp32:.2f}%** ({fmt_int(fp32_bytes)} bytes of weights; int8 per-channel "
                      f"reference {fmt_int(int8_bytes)} bytes).", ""]
        else:
            lines += [f"FP32 evaluation failed: {fp32_row.get('error') if fp32_row else 'missing'}", ""]
        lines += ["| method | weights | N | acts | top-1 | drop (pp) | size (bytes) | ratio to FP32 | ratio to int8 | mults eliminated |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        if fp32 is not None:
            lines.append(f"| fp32 | float32 | – | float | {fp32:.2f} | 0.00 | {fmt_int(fp32_bytes)} | 1.00 | "
                         f"{(int8_bytes / fp32_bytes) if fp32_bytes and int8_bytes else 0:.2f} | 0.0% |")

        def order(r):
            wi = ("ternary", "binary", "int4", "int8").index(r["weights"]) if r["weights"] in ("ternary", "binary", "int4", "int8") else 9
            mi = ALL_TERNARY.index(r["method"]) if r["method"] in ALL_TERNARY else 0
            return (wi, mi, r["acts"] != "8", group_index(r["group"]))
        for r in sorted(q, key=order):
            method = r["method"] or "–"
            n = r["group"]
            if r["status"] != "ok":
                err = (r.get("error") or "").replace("|", "\\|")
                lines.append(f"| {method} | {r['weights']} | {n} | {r['acts']} | **error** | | | | | {err} |")
                continue
            d = drop_of(r, fp32)
            lines.append(f"| {method} | {r['weights']} | {n} | {r['acts']} | {r['top1']:.2f} | {fmt_pct(d)} | "
                         f"{fmt_int(r.get('size_bytes'))} | {r.get('ratio_to_fp32') or 0:.2f} | "
                         f"{r.get('ratio_to_int8') or 0:.2f} | {100 * (r.get('mults_eliminated') or 0):.1f}% |")
        lines.append("")
        plots = make_plots(model, mrows, fp32_row, out_dir, tol)
        for p in plots:
            lines += [f"![{p}]({p})", ""]
        lines += [f"### Findings ({model})", ""]
        lines += [f"- {f}" for f in findings(model, mrows, fp32, tol)]
        lines.append("")
    path = os.path.join(out_dir, "ptq.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    log(f"wrote {rel(path)}")
    return path


def main():
    p, argv, extra = study_parser(__doc__, DEFAULT_MODELS)
    p.add_argument("--no-weight-rounding", action="store_true",
                   help="skip the --rounding weight rows (the papers' plain per-group rounding)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--tolerance", type=float, default=1.5)
    args, cmd, rows = parse_study_args(p, argv, "ptq_study.py", "ptq.json", resolve_model, 1800)
    if rows is not None:
        render(rows, args.out, args.tolerance, cmd, f" (re-rendered {datetime.date.today()})")
        return
    try:
        if os.nice(0) < args.nice:
            os.nice(args.nice - os.nice(0))
    except OSError:
        pass
    rows = run_study(args, extra, cmd)
    render(rows, args.out, args.tolerance, None, "")


if __name__ == "__main__":
    main()
