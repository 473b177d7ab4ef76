#!/usr/bin/python3
"""Low-precision training study: docs/results/lowprec_training.md, .json and loss-curve PNGs.

Part "fixed" (Gupta et al. 2015): train from a random start in float32 and in 16-bit fixed point
<4,12> with stochastic and with round-to-nearest rounding (and a narrower format), LeNet-5 and
ResNet-20 on Fashion-MNIST. Part "accum" (Sakr et al. 2019): float32 training whose Conv/Gemm
accumulators have m mantissa bits (emulated), at the widths `tern accum` predicts and a few bits
below, unchunked and in chunks of 64.

    /usr/bin/python3 scripts/lowprec_study.py                  # everything (hours on 2 cores)
    /usr/bin/python3 scripts/lowprec_study.py --parts fixed --models lenet5
    /usr/bin/python3 scripts/lowprec_study.py --from-json      # re-render the page and plots
Each run is saved as it finishes; --resume skips runs already in the JSON with the same command.
A run checkpoints after every epoch into --checkpoint-dir (a file named by a hash of its command)
and, started again, continues from there (`tern train --resume`): the ResNet-20 rows take hours on
2 cores and may span several sittings.
Runs with /usr/bin/python3 (Debian's matplotlib draws the curves).
"""
import argparse
import hashlib
import os
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import REPO, load_study, shown_command, cpu_model, git_commit, run_json, save_json  # noqa: E402

# Per model: the schedule every numeric format shares (so the curves compare), the training-set
# size (ResNet-20 in float64 fixed point is slow on a small CPU: a subset), and the accumulator widths.
MODELS = {
    # float64 convolutions are a slow path in torch (ResNet-20 ~20x slower than float32): the study
    # sums in float32 (--fixed-compute float32, docs/training.md); one LeNet-5 row repeats <4,12>
    # stochastic with exact float64 sums to show the difference does not matter here.
    "lenet5": dict(epochs=10, batch=64, lr=0.05, train_images=0, fixed_extra=["--fixed-compute", "float32"]),
    # 10 epochs over the first 10,000 images. All 60,000 (float32: 91.14 %, the reference row) would
    # take ~70 min a fixed-point row on 2 cores (0.43 s a step, 0.11 s in float32), longer than a
    # sitting allows for the four rows.
    "resnet20": dict(epochs=10, batch=64, lr=0.05, train_images=10000, fixed_extra=["--fixed-compute", "float32"]),
}
FIXED = [  # (label, numeric options): 16-bit words with 12, 10 and 8 fraction bits
    ("float32", []),
    ("fixed <4,12> stochastic", ["--numeric", "fixed:4.12", "--rounding", "stochastic"]),
    ("fixed <4,12> nearest", ["--numeric", "fixed:4.12", "--rounding", "nearest"]),
    ("fixed <6,10> stochastic", ["--numeric", "fixed:6.10", "--rounding", "stochastic"]),
    ("fixed <6,10> nearest", ["--numeric", "fixed:6.10", "--rounding", "nearest"]),
    ("fixed <8,8> stochastic", ["--numeric", "fixed:8.8", "--rounding", "stochastic"]),
    ("fixed <8,8> nearest", ["--numeric", "fixed:8.8", "--rounding", "nearest"]),
]
# ResNet-20: with one format for everything, <4,12> stalls even with stochastic rounding (the
# back-propagated gradients of a batch-mean loss sit well below 2^-12: 9.99 % after 3 epochs in an
# earlier short run, since withdrawn); 16-bit gradients with their own binary point, <1,15>, train.
# A row of the schedule above takes about 15 min on 2 cores (0.43 s a step): the rows run in this
# order (the most telling first), and the <4,12>-for-everything and <6,10> rows are left out for time.
GRAD = ["--gradient-numeric", "fixed:1.15"]
FIXED_RESNET = [
    ("float32", []),
    ("fixed <4,12>, gradients <1,15>, stochastic", ["--numeric", "fixed:4.12", "--rounding", "stochastic"] + GRAD),
    ("fixed <4,12>, gradients <1,15>, nearest", ["--numeric", "fixed:4.12", "--rounding", "nearest"] + GRAD),
    ("fixed <8,8>, gradients <1,15>, stochastic", ["--numeric", "fixed:8.8", "--rounding", "stochastic"] + GRAD),
    ("fixed <8,8>, gradients <1,15>, nearest", ["--numeric", "fixed:8.8", "--rounding", "nearest"] + GRAD),
]
EXACT_ROW = ("fixed <4,12> stochastic, exact float64 sums",
             ["--numeric", "fixed:4.12", "--rounding", "stochastic", "--fixed-compute", "float64"])
# Sakr et al.'s tightness claim: at the predicted widths training reaches float32's accuracy, and
# 1 or 2 bits fewer degrade it measurably. LeNet-5 from a random start to convergence on 10,000
# images (10 epochs; the loss curves level off), 2 and 4 bits below, unchunked and in chunks of 64;
# ResNet-20 as below.
ACCUM_MODELS = {"lenet5": dict(epochs=10, batch=64, lr=0.05, train_images=10000, offsets=[0, -2, -4],
                               modes=["unchunked", "chunked"]),
                # ResNet-20 with emulated accumulators takes 1.9 s a step on 2 cores (float32: 0.11 s):
                # training from a random start to convergence (~9,400 steps) would take ~5 h a row. So
                # the rows continue training the bundled, converged float32 model (--init pretrained)
                # for one epoch over 20,000 images at a small learning rate: does the network stay at
                # float32's accuracy while it trains with m-bit sums, and lose it at fewer bits?
                "resnet20": dict(epochs=1, batch=64, lr=0.005, train_images=20000, init="pretrained",
                                 offsets=[0, -1, -2, -4], modes=["unchunked"])}


def tern_cmd(args, model, out, spec, numeric):
    """The run's command as the results show it (its checkpoint options are added by run_part)."""
    cmd = [args.tern, "train", os.path.join(REPO, "models", model + ".onnx"), "-o", out, "--init", spec.get("init", "random"),
           "--epochs", str(spec["epochs"]), "--batch", str(spec["batch"]), "--lr", str(spec["lr"]),
           "--seed", "1", "--threads", str(args.threads), "--json", "--no-progress"]
    if spec["train_images"]:
        cmd += ["--train-images", str(spec["train_images"])]
    if spec.get("test_every", 1) > 1:
        cmd += ["--test-every", str(spec["test_every"])]
    if "--numeric" in numeric and "--fixed-compute" not in numeric:
        cmd += spec.get("fixed_extra", [])
    return cmd + numeric


def predicted_bits(args, model):
    """The widest accumulator any layer needs, per GEMM (forward, backward, weight gradient), from
    `tern accum MODEL --json`, unchunked and in chunks of 64."""
    out, err, _ = run_json([args.tern, "accum", os.path.join(REPO, "models", model + ".onnx"), "--batch", "64", "--json"],
                           600)
    if err:
        sys.exit(f"lowprec_study.py: tern accum failed: {err}")
    layers = out["layers"]

    def widest(gemm, key):
        return max(l[gemm][key] for l in layers if l.get(gemm) and l[gemm].get(key) is not None)
    return {"unchunked": [widest(g, "m") for g in ("forward", "backward", "weight_gradient")],
            "chunked": [widest(g, "m_chunked") for g in ("forward", "backward", "weight_gradient")]}


def accum_runs(args, model):
    pred = predicted_bits(args, model)
    spec = ACCUM_MODELS[model]
    runs = [("float32", [], None)]
    for mode in spec["modes"]:
        for off in spec["offsets"]:
            bits = [max(1, b + off) for b in pred[mode]]
            numeric = ["--accumulate-forward", str(bits[0]), "--accumulate-backward", str(bits[1]),
                       "--accumulate-weight-grad", str(bits[2])]
            if mode == "chunked":
                numeric += ["--accumulate-chunk", "64"]
            label = f"m = {bits[0]}/{bits[1]}/{bits[2]} {mode}" + (" (predicted)" if off == 0 else f" ({off:+d} bits)")
            runs.append((label, numeric, off))
    return runs, pred


def run_part(args, part, models, runs_for, rows, done, tmp, save):
    for model in models:
        spec = (MODELS if part == "fixed" else ACCUM_MODELS)[model]
        runs, extra = runs_for(model)
        for label, numeric, _ in runs:
            out = os.path.join(tmp, f"{model}.onnx")
            cmd = tern_cmd(args, model, out, spec, numeric)
            shown = shown_command(cmd, args.tern, tmp)
            if (part, model, shown) in done:
                continue
            row = dict(part=part, model=model, label=label, command=shown)
            same = next((r for r in rows if r["model"] == model and r["command"] == shown and r.get("status") == "ok"), None)
            if same:  # the same run in the other part (float32)
                row.update({k: v for k, v in same.items() if k not in row})
            else:
                # Checkpoint every epoch; an interrupted run (a sitting that ended) goes on from its last one.
                ckpt = os.path.join(args.checkpoint_dir, hashlib.sha1(shown.encode()).hexdigest()[:16] + ".ckpt")
                os.makedirs(args.checkpoint_dir, exist_ok=True)
                run = cmd + ["--checkpoint", ckpt] + (["--resume", ckpt] if os.path.exists(ckpt) else [])
                print(f"lowprec_study: {part} {model} {label}" + (" (resumed)" if "--resume" in run else "") + " ...",
                      file=sys.stderr, flush=True)
                r, err, seconds = run_json(run, args.timeout)
                row.update(seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M"), commit=git_commit())
                if err:
                    row.update(status="error", error=err)
                else:
                    # Train time: the epochs' own times, summed over every sitting of a resumed run.
                    row.update(status="ok", history=r["history"], curve=r["curve"], steps=r["steps"],
                               train_seconds=sum(e["seconds"] for e in r["history"]),
                               final_top1=r["history"][-1]["test_top1"],
                               best_top1=max(e["test_top1"] for e in r["history"] if e["test_top1"] >= 0),
                               final_loss=r["history"][-1]["loss"], threads=r["threads"])
                    if "--resume" in run:
                        row["resumed"] = True
            if extra:
                row["predicted"] = extra
            rows[:] = [x for x in rows if (x["part"], x["model"], x["label"]) != (part, model, label)] + [row]
            save()
            print(f"lowprec_study: {part} {model} {label}: {row.get('status')} top-1 {row.get('final_top1')}",
                  file=sys.stderr, flush=True)


def current(row, spec):
    """Whether a row was run to the model's present schedule at a commit without uncommitted changes."""
    if not spec or "uncommitted" in row.get("commit", "uncommitted"):
        return False
    words = shlex.split(row["command"])
    arg = lambda name: words[words.index(name) + 1] if name in words else None  # noqa: E731
    return (arg("--epochs") == str(spec["epochs"]) and arg("--batch") == str(spec["batch"])
            and arg("--train-images") == (str(spec["train_images"]) if spec["train_images"] else None))


def plot(rows, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    images = []
    for part in ("fixed", "accum"):
        for model in dict.fromkeys(r["model"] for r in rows if r["part"] == part):
            spec = (MODELS if part == "fixed" else ACCUM_MODELS).get(model)
            mrows = [r for r in rows if r["part"] == part and r["model"] == model and r.get("status") == "ok"
                     and current(r, spec)]
            if not mrows:
                continue
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
            for r in mrows:
                steps = [c[0] for c in r["curve"]]
                ax1.plot(steps, [c[1] for c in r["curve"]], label=r["label"], linewidth=1)
                tested = [e for e in r["history"] if e["test_top1"] >= 0]  # (--test-every: some epochs only)
                ax2.plot([e["epoch"] for e in tested], [e["test_top1"] for e in tested], marker="o",
                         label=r["label"], linewidth=1)
            ax1.set_xlabel("step")
            ax1.set_ylabel("training loss")
            ax1.set_yscale("log")
            ax2.set_xlabel("epoch")
            ax2.set_ylabel("test top-1 %")
            ax1.legend(fontsize=7)
            ax2.legend(fontsize=7)
            fig.suptitle(f"{model}: {'fixed-point training' if part == 'fixed' else 'reduced-precision accumulation'}")
            fig.tight_layout()
            name = f"lowprec_{part}_{model}.png"
            fig.savefig(os.path.join(out_dir, name), dpi=90)
            plt.close(fig)
            images.append((part, model, name))
    return images


def render(rows, out_dir, study_cmd):
    images = plot(rows, out_dir)
    lines = ["# Low-precision training", "", "Generated by `scripts/lowprec_study.py` from `lowprec_training.json`. "
             "Study command:", "", "```", study_cmd, "```", "",
             f"CPU {cpu_model()}, the threads each command names; each row names the tern commit it ran at "
             f"(commit {', '.join(f'`{c}`' for c in dict.fromkeys(r['commit'] for r in rows if r.get('status') == 'ok'))}); "
             "Fashion-MNIST, random start (He-normal, residual branches' last layers zero) unless a section says otherwise, momentum 0.9, "
             "weight decay 5e-4, cosine learning rate to 0, crop + flip augmentation, test top-1 on the "
             "10,000 test images after every epoch (with the run's own numerics). Fixed-point rows hold every value "
             "in `<IL,FL>` but sum in float32 (`--fixed-compute float32`, for speed) except the row marked exact "
             "(float64: exact dot products). Rows with gradients `<1,15>` hold the back-propagated gradients, weight "
             "gradients and momentum in that 16-bit format (`--gradient-numeric`), weights and activations in the "
             "row's format. Method: `docs/training.md`.", ""]
    titles = {"fixed": "## Fixed-point training: stochastic vs round-to-nearest",
              "accum": "## Reduced-precision accumulation"}
    for part in ("fixed", "accum"):
        prow = [r for r in rows if r["part"] == part]
        if not prow:
            continue
        lines += [titles[part], ""]
        for model in dict.fromkeys(r["model"] for r in prow):
            mrows = [r for r in prow if r["model"] == model]
            lines += [f"### {model}", ""]
            spec = (MODELS if part == "fixed" else ACCUM_MODELS).get(model)
            if spec:
                subset = f"the first {spec['train_images']:,}" if spec["train_images"] else "all 60,000"
                start = ("Continued training of the bundled float32 model (converged, `--init pretrained`): "
                         if spec.get("init") == "pretrained" else "")
                lines += [f"{start}{spec['epochs']} epoch{'s' if spec['epochs'] > 1 else ''} over {subset} training "
                          f"images, batch {spec['batch']}, learning rate {spec['lr']}.", ""]
            pred = next((r.get("predicted") for r in mrows if r.get("predicted")), None)
            if pred:
                lines += [f"`tern accum` predicts (widest layer, forward/backward/weight-gradient): "
                          f"{'/'.join(map(str, pred['unchunked']))} bits unchunked, "
                          f"{'/'.join(map(str, pred['chunked']))} in chunks of 64.", ""]
            # Rows of an earlier schedule or made with uncommitted changes are set apart until re-run.
            now = [r for r in mrows if current(r, spec)]
            earlier = [r for r in mrows if not current(r, spec)]
            for title, group in (("", now), ("Other rows: an earlier schedule or commit, kept for reference "
                                              "until a row of the same label replaces them:", earlier)):
                if not group:
                    continue
                if title:
                    lines += [title, ""]
                lines += ["| numerics | epochs | final loss | final top-1 | best top-1 | train time | commit |",
                          "|---|---:|---:|---:|---:|---:|---|"]
                for r in group:
                    if r.get("status") != "ok":
                        lines.append(f"| {r['label']} | | error: {r.get('error', '?')} | | | | {r.get('commit', '?')} |")
                        continue
                    lines.append(f"| {r['label']} | {len(r['history'])} | {r['final_loss']:.4f} | {r['final_top1']:.2f} | "
                                 f"{r['best_top1']:.2f} | {r['train_seconds'] / 60:.1f} min | `{r['commit']}` |")
                lines.append("")
            for p, m, name in images:
                if p == part and m == model:
                    lines += [f"![{model} {part}]({name})", ""]
            lines += ["Commands:", "", "```"] + [r["command"] for r in mrows] + ["```", ""]
    with open(os.path.join(out_dir, "lowprec_training.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["fixed", "accum"], choices=["fixed", "accum"])
    p.add_argument("--models", nargs="+", default=None)
    p.add_argument("--tern", default=os.path.join(REPO, "build/all/src/tern"))
    p.add_argument("--out", default=os.path.join(REPO, "docs/results"))
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--timeout", type=int, default=8 * 3600)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-dir", default=os.path.join(REPO, "build", "lowprec-checkpoints"),
                   help="where runs checkpoint every epoch and resume from (kept across sittings)")
    p.add_argument("--from-json", action="store_true")
    args = p.parse_args()
    json_path = os.path.join(args.out, "lowprec_training.json")
    study_cmd = shlex.join(["/usr/bin/python3", "scripts/lowprec_study.py"] + sys.argv[1:])
    saved = load_study(json_path, study_cmd, args.resume or args.from_json)
    if args.from_json:
        render(saved["rows"], args.out, saved["study_cmd"])
        return
    rows = saved["rows"]
    done = {(r["part"], r["model"], r["command"]) for r in rows
            if r.get("status") == "ok" and "uncommitted" not in r.get("commit", "uncommitted")}

    def save():
        save_json(json_path, {"study_cmd": study_cmd, "rows": rows})
        render(rows, args.out, study_cmd)

    with tempfile.TemporaryDirectory(prefix="lowprec-study-") as tmp:
        if "fixed" in args.parts:
            models = [m for m in (args.models or MODELS) if m in MODELS]
            def fixed_runs(m):
                runs = FIXED + [EXACT_ROW] if m == "lenet5" else FIXED_RESNET
                return [(label, numeric, None) for label, numeric in runs], None
            run_part(args, "fixed", models, fixed_runs, rows, done, tmp, save)
        if "accum" in args.parts:
            models = [m for m in (args.models or ACCUM_MODELS) if m in ACCUM_MODELS]
            run_part(args, "accum", models, lambda m: accum_runs(args, m), rows, done, tmp, save)


if __name__ == "__main__":
    main()
