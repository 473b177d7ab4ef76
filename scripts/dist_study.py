#!/usr/bin/python3
"""Data-parallel training study: docs/results/distributed.md and distributed.json.

1. Equality and measured scaling on this machine: P = 1 and P = 2 ranks (`mpirun -np P tern train
   --distributed`), the same global batch and steps; throughput and final loss side by side.
2. Timeline: when backprop produces each gradient (`tern train --timeline`) at several per-rank
   batch sizes, on one core.
3. Scale-out model to 128 workers from the timeline: strong scaling of a fixed global batch, ring
   all-reduce per bucket (2 (P-1) alpha + 2 (P-1)/P bytes / beta) started when the bucket's last
   gradient is ready, buckets one after another on the wire; network parameters listed on the page.
4. AdaComp vs uncompressed: top-1 and compression per tensor kind (`--compress adacomp`).

    /usr/bin/python3 scripts/dist_study.py                  # everything
    /usr/bin/python3 scripts/dist_study.py --parts scaling timeline
    /usr/bin/python3 scripts/dist_study.py --from-json      # re-render the page
Runs are saved as they finish; --resume skips runs already in the JSON with the same command.
"""
import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import REPO, load_study, shown_command, cpu_model, git_commit, run_json, save_json  # noqa: E402

MPI = ["mpirun", "--allow-run-as-root", "--oversubscribe"]
SCALING = {"lenet5": dict(batch=256, steps=100), "resnet20": dict(batch=128, steps=30)}
TIMELINE_BATCHES = [4, 16, 64]
ADACOMP = {  # from a random start, the same schedule with and without compression
    # batch 128 at lr 0.05 trained ResNet-20 (no BatchNorm) for 20 steps and then collapsed to
    # chance, with and without compression: batch 64 and lr 0.03 train.
    # 10 epochs over all 60,000 training images with a cosine schedule to zero: the test top-1 has
    # levelled off by the last epochs (the per-epoch curves are in distributed.json).
    "resnet20": dict(epochs=10, batch=64, lr=0.03, train_images=None),
    "vgg_small": dict(epochs=10, batch=64, lr=0.02, train_images=None),
}
# Network models for the scale-out estimate: latency alpha (s) and bandwidth beta (bytes/s).
NETWORKS = {
    "10 GbE (alpha 30 us, 1.1 GB/s)": (30e-6, 1.1e9),
    "InfiniBand EDR 100 Gb/s (alpha 2 us, 11 GB/s)": (2e-6, 11e9),
}
WORKERS = [1, 2, 4, 8, 16, 32, 64, 128]


def model_path(name):
    return os.path.join(REPO, "models", name + ".onnx")


def train_cmd(model, out, ranks, threads, extra):
    base = [ARGS.tern, "train", model_path(model), "-o", out, "--seed", "1", "--threads", str(threads), "--json",
            "--no-progress"] + extra
    if ranks == 1:
        return base
    return MPI + ["-np", str(ranks)] + base + ["--distributed"]


def run(rows, done, save, tmp, part, key, cmd, timeout):
    command = shown_command(cmd, ARGS.tern, tmp)
    if (part, key, command) in done:
        return next(r for r in rows if (r["part"], r["key"], r["command"]) == (part, key, command))
    print(f"dist_study: {part} {key} ...", file=sys.stderr, flush=True)
    r, err, seconds = run_json(cmd, timeout)
    row = dict(part=part, key=key, command=command, seconds=seconds, finished=time.strftime("%Y-%m-%d %H:%M"),
               commit=git_commit())
    row.update(status="error", error=err) if err else row.update(status="ok", result=r)
    rows[:] = [x for x in rows if (x["part"], x["key"]) != (part, key)] + [row]
    save()
    print(f"dist_study: {part} {key}: {row['status']}", file=sys.stderr, flush=True)
    return row


def scale_out(timeline_rows, global_batch, alpha, beta, bucket_bytes=256 * 1024):
    """Modelled step time and speed-up for each P (strong scaling of `global_batch`)."""
    # Compute time per step as a linear function of the per-rank batch, fitted to the measurements.
    pts = sorted((t["batch_per_rank"], t["forward_ms"] + t["backward_ms"], t) for t in timeline_rows)
    (b0, c0, t0), (b1, c1, _) = pts[0], pts[-1]
    slope = (c1 - c0) / (b1 - b0) if b1 != b0 else c0 / b0
    fixed = c0 - slope * b0
    params = t0["parameters"]  # backprop order; ready times scale with the backward time
    out = []
    for p in WORKERS:
        b = global_batch / p
        compute = (fixed + slope * b) / 1e3
        if p == 1:
            out.append(dict(workers=p, step_s=compute, speedup=1.0))
            continue
        scale = compute / ((t0["forward_ms"] + t0["backward_ms"]) / 1e3)
        fwd = t0["forward_ms"] / 1e3 * scale
        buckets, size, ready = [], 0, 0.0
        for q in params:
            size += 4 * q["elements"]
            ready = max(ready, q["ready_ms"] / 1e3 * scale)
            if size >= bucket_bytes:
                buckets.append((ready, size))
                size = 0
        if size:
            buckets.append((ready, size))
        wire = 0.0
        for ready_at, nbytes in buckets:
            start = max(wire, ready_at)
            wire = start + 2 * (p - 1) * alpha + 2 * (p - 1) / p * nbytes / beta
        backward = t0["backward_ms"] / 1e3 * scale
        step = fwd + max(backward, wire)
        out.append(dict(workers=p, step_s=step, speedup=None))
    base = out[0]["step_s"]
    for o in out:
        o["speedup"] = base / o["step_s"]
    return out


def render(rows, out_dir, study_cmd):
    ok = [r for r in rows if r.get("status") == "ok"]
    lines = ["# Data-parallel training", "", "Generated by `scripts/dist_study.py` from `distributed.json`. Study command:",
             "", "```", study_cmd, "```", "",
             f"tern commit `{ok[0]['commit'] if ok else '?'}`, CPU {cpu_model()}, OpenMPI over shared memory, "
             "Fashion-MNIST. Method: `docs/training.md`.", ""]
    scal = [r for r in ok if r["part"] == "scaling"]
    if scal:
        lines += ["## Measured on this machine (2 cores)", "",
                  "The same global batch, data order and steps in every row; speed-up against one rank with one "
                  "thread. The final losses would be equal in exact arithmetic: the rows differ only in the order "
                  "float32 gradients are summed (across ranks, across threads), and these differences grow over "
                  "the steps.", "",
                  "| model | ranks x threads | global batch | steps | images/s | speed-up vs 1x1 | final loss | "
                  "loss difference vs 1x1 |", "|---|---|---:|---:|---:|---:|---:|---:|"]
        base = {}
        for r in scal:
            model, shape = r["key"].split("/")
            res = r["result"]
            if shape == "1x1":
                base[model] = (res["batch"] * res["steps"] / res["seconds"], res["history"][-1]["loss"])
        for r in scal:
            model, shape = r["key"].split("/")
            res = r["result"]
            ips = res["batch"] * res["steps"] / res["seconds"]
            loss = res["history"][-1]["loss"]
            b_ips, b_loss = base.get(model, (ips, loss))
            lines.append(f"| {model} | {shape} | {res['batch']} | {res['steps']} | {ips:.0f} | {ips / b_ips:.2f}x | "
                         f"{loss:.6f} | {abs(loss - b_loss):.1e} |")
        lines.append("")
    tl = [r for r in ok if r["part"] == "timeline"]
    if tl:
        lines += ["## Scale-out model", "",
                  "Inputs: forward and backprop time per step and the moment each gradient is ready, measured on one "
                  "core at per-rank batches " + ", ".join(str(b) for b in TIMELINE_BATCHES) + " (`tern train "
                  "--timeline`); compute time per step fitted linear in the per-rank batch; 256 KiB buckets, each "
                  "all-reduced by a ring (2 (P-1) alpha + 2 (P-1)/P bytes / beta) once its last gradient is ready, one "
                  "bucket at a time on the wire; strong scaling of a fixed global batch; the update and data loading "
                  "are not modelled. The seed reports 90x on 128 nodes (VGG-A, ImageNet).", ""]
        for model in dict.fromkeys(r["key"].split("/")[0] for r in tl):
            trows = [r["result"]["timeline"] for r in tl if r["key"].startswith(model + "/")]
            glob = SCALING.get(model, {}).get("batch", 128) * 4
            lines += [f"### {model} (global batch {glob})", "", "| network | " + " | ".join(f"P={p}" for p in WORKERS) + " |",
                      "|---|" + "---:|" * len(WORKERS)]
            for net, (alpha, beta) in NETWORKS.items():
                est = scale_out(trows, glob, alpha, beta)
                lines.append(f"| {net} | " + " | ".join(f"{e['speedup']:.1f}x" for e in est) + " |")
            measured = {r["key"].split("/")[1]: r["result"] for r in scal if r["key"].startswith(model + "/")}
            if "1x1" in measured and "2x1" in measured:
                ips = {k: v["batch"] * v["steps"] / v["seconds"] for k, v in measured.items()}
                lines += ["", f"Check against the measurement above: P = 2 (two ranks of one thread over shared "
                              f"memory) ran {ips['2x1'] / ips['1x1']:.2f}x one rank's speed."]
            lines.append("")
    ada = [r for r in ok if r["part"] == "adacomp"]
    if ada:
        lines += ["## AdaComp vs uncompressed", "",
                  "Two ranks, the same random start, schedule and data with and without `--compress adacomp "
                  "--bin-conv 50 --bin-fc 500`; compression = float32 gradient bytes / bytes sent, per tensor kind. "
                  "The paper's targets: >= 40x on conv layers, >= 200x on fully connected layers, top-1 within "
                  "0.3 pp of uncompressed, from converged runs. Length and schedule of each run: its command below.", "",
                  "| model | exchange | epochs | final top-1 | best top-1 | conv compression | fc compression | bytes / step / rank |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in ada:
            res = r["result"]
            ex = res["exchange"]
            steps = max(1, ex.get("steps", 1))
            lines.append(f"| {r['key'].split('/')[0]} | {r['key'].split('/')[1]} | {len(res['history'])} | "
                         f"{res['history'][-1]['test_top1']:.2f} | "
                         f"{max(e['test_top1'] for e in res['history']):.2f} | {ex['conv']['compression']:.1f}x | "
                         f"{ex['fc']['compression']:.1f}x | {ex['total']['bytes'] / steps:,.0f} |")
        lines.append("")
        for r in ada:
            ex = r["result"]["exchange"]
            if r["key"].split("/")[1] != "adacomp" or not ex.get("tensors"):
                continue
            steps = max(1, ex.get("steps", 1))
            lines += [f"### {r['key'].split('/')[0]}: AdaComp per tensor", "",
                      "Compression = float32 bytes / bytes on the wire (indices, signs, one scale per tensor: "
                      "`docs/adacomp-format.md`); selected = elements sent per step and rank, on average. Tensors of "
                      "kind other (biases, BatchNorm) travel dense.", "",
                      "| tensor | kind | elements | selected / step | compression |", "|---|---|---:|---:|---:|"]
            for t in ex["tensors"]:
                lines.append(f"| {t['name']} | {t['kind']} | {t['elements'] // steps:,} | {t['selected'] / steps:,.1f} | "
                             f"{t['compression']:.1f}x |")
            lines.append("")
    lines += ["## Commands", "", "```"] + [r["command"] for r in rows] + ["```", ""]
    with open(os.path.join(out_dir, "distributed.md"), "w") as f:
        f.write("\n".join(lines))


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", nargs="+", default=["scaling", "timeline", "adacomp"],
                   choices=["scaling", "timeline", "adacomp"])
    p.add_argument("--tern", default=os.path.join(REPO, "build/all/src/tern"))
    p.add_argument("--out", default=os.path.join(REPO, "docs/results"))
    p.add_argument("--timeout", type=int, default=6 * 3600)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--from-json", action="store_true")
    ARGS = p.parse_args()
    json_path = os.path.join(ARGS.out, "distributed.json")
    study_cmd = shlex.join(["/usr/bin/python3", "scripts/dist_study.py"] + sys.argv[1:])
    saved = load_study(json_path, study_cmd, ARGS.resume or ARGS.from_json)
    if ARGS.from_json:
        render(saved["rows"], ARGS.out, saved["study_cmd"])
        return
    if not shutil.which("mpirun"):
        sys.exit("dist_study.py: mpirun not found (apt-get install openmpi-bin)")
    rows = saved["rows"]
    done = {(r["part"], r["key"], r["command"]) for r in rows if r.get("status") == "ok"}

    def save():
        save_json(json_path, {"study_cmd": study_cmd, "rows": rows})
        render(rows, ARGS.out, study_cmd)

    with tempfile.TemporaryDirectory(prefix="dist-study-") as tmp:
        out = os.path.join(tmp, "out.onnx")
        if "scaling" in ARGS.parts:
            for model, spec in SCALING.items():
                common = ["--init", "random", "--batch", str(spec["batch"]), "--steps", str(spec["steps"]), "--no-test",
                          "--no-augment", "--epochs", "100"]
                for ranks, threads in ((1, 2), (1, 1), (2, 1)):
                    run(rows, done, save, tmp, "scaling", f"{model}/{ranks}x{threads}",
                        train_cmd(model, out, ranks, threads, common), ARGS.timeout)
        if "timeline" in ARGS.parts:
            for model in SCALING:
                for b in TIMELINE_BATCHES:
                    run(rows, done, save, tmp, "timeline", f"{model}/{b}",
                        train_cmd(model, out, 1, 1, ["--init", "random", "--batch", str(b), "--steps", "40", "--no-test",
                                                     "--epochs", "100", "--timeline"]), ARGS.timeout)
        if "adacomp" in ARGS.parts:
            for model, spec in ADACOMP.items():
                for name, extra in (("uncompressed", []), ("adacomp", ["--compress", "adacomp", "--bin-conv", "50",
                                                                        "--bin-fc", "500"])):
                    args = ["--init", "random", "--epochs", str(spec["epochs"]), "--batch", str(spec["batch"]),
                            "--lr", str(spec["lr"]), "--lr-final", "0", "--schedule", "cosine"] + extra
                    if spec["train_images"]:
                        args += ["--train-images", str(spec["train_images"])]
                    run(rows, done, save, tmp, "adacomp", f"{model}/{name}", train_cmd(model, out, 2, 1, args),
                        ARGS.timeout)


ARGS = None

if __name__ == "__main__":
    main()
