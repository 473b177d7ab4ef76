#!/usr/bin/python3
"""PyTorch int8 (post-training static quantization) throughput and memory on tern's bundled
architectures, next to PyTorch FP32 eager, for docs/results/speed.md.

Run with Debian's Python (it has torch):
    /usr/bin/python3 bench/bench_pytorch_int8.py [--models resnet20,vgg_small,mobilenetv2_small] [--batches 1,64]
Prints one JSON object: per model and batch, images/s and peak RSS for these modes (--modes picks
a subset):
  fp32_eager:  the float model in eager mode (BatchNorm layers still run, as in bench_pytorch.py);
  int8_eager:  the quantized torch.fx GraphModule that convert_fx returns;
  int8_frozen: that module traced with torch.jit.trace, frozen with torch.jit.freeze, saved, and
               loaded back with torch.jit.load (how a deployed TorchScript model runs).
Quantization is FX graph mode (torch.ao.quantization prepare_fx/convert_fx) with the default
qconfig mapping of the quantized engine: 'onednn' when this build has it
(torch.backends.quantized.supported_engines), else 'qnnpack'; --qengine chooses. prepare_fx folds
BatchNorm into the convolutions (the models are in eval mode) and fuses Conv+ReLU and Add+ReLU.
Weights are PyTorch's random initialization of the architectures in scripts/train_reference.py,
as bench_pytorch.py explains; calibration runs on --calib-images random images, one at a time.
int8_vs_fp32_rel_err (||int8 - fp32|| / ||fp32|| over the logits of the timed input) only checks
that quantization did not break the model: with random weights it says nothing about accuracy.

Memory: every (model, batch, mode) runs in a fresh subprocess, so peak_rss_bytes
(getrusage(RUSAGE_SELF).ru_maxrss) is that configuration's alone. Linux carries a process's
ru_maxrss over into a child it starts (exec records the old address space's peak), so the process
that starts the workers never imports torch: quantizing and tracing happen in a "prepare"
subprocess, which saves the modules to a temporary directory. peak_rss_bytes includes importing torch,
reported once as torch_import_rss_bytes (a process that imports torch and does nothing), and the
setup: setup_rss_bytes is the peak before the first inference. For int8_eager the setup includes
building the float model and calibrating it; int8_frozen loads the saved TorchScript file only.
Each mode is timed in its own process, one after the other (not alternating, unlike
bench_pytorch.py): compare modes on a quiet machine. Each repetition times a block of runs lasting
at least --min-time seconds; the figures are medians over repetitions.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile

from bench_timing import summarize, time_block  # noqa: E402  (bench/ is on sys.path)

# libgomp reads OMP_WAIT_POLICY when torch loads it: spinning at barriers wastes whole scheduler
# ticks on a shared 2-core machine, so wait passively (as tern's pool does) unless told otherwise.
# Must happen before `import torch`; the subprocesses inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

# torch and train_reference (which imports torch) are imported only in the subprocesses; see above.
torch = None
MODELS = None
SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts")

INPUT_SHAPE = (1, 28, 28)
MODES = ("fp32_eager", "int8_eager", "int8_frozen")


def import_torch():
    global torch, MODELS
    import torch as torch_module
    torch = torch_module
    sys.path.insert(0, SCRIPTS)
    from train_reference import MODELS as models
    MODELS = models


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def float_model(name):
    torch.manual_seed(0)
    return MODELS[name]().eval()


def quantize(name, qengine, calib_images):
    """The int8 GraphModule of model `name`; deterministic, so every process gets the same one."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = qengine
    model = float_model(name)
    gen = torch.Generator().manual_seed(1)
    example = torch.randn(1, *INPUT_SHAPE, generator=gen)
    prepared = prepare_fx(model, get_default_qconfig_mapping(qengine), (example,))
    with torch.no_grad():
        for _ in range(calib_images):
            prepared(torch.randn(1, *INPUT_SHAPE, generator=gen))
    return convert_fx(prepared)


def timed_input(batch):
    return torch.randn(batch, *INPUT_SHAPE, generator=torch.Generator().manual_seed(2))


def first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def prepare(args, names, batches):
    """Checks the arguments, quantizes every model and saves a frozen TorchScript module per
    batch into args.outdir; returns what the report needs from this side."""
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        raise SystemExit(f"unknown model {unknown[0]!r} (known: {', '.join(MODELS)})")
    engines = torch.backends.quantized.supported_engines
    qengine = args.qengine or next((e for e in ("onednn", "qnnpack") if e in engines), None)
    if qengine not in engines:
        raise SystemExit(f"quantized engine {qengine or 'onednn or qnnpack'} is not in this build ({engines})")
    torch.set_num_threads(args.threads)
    results = []
    for name in names:
        fp32, int8 = float_model(name), quantize(name, qengine, args.calib_images)
        for batch in batches:
            x = timed_input(batch)
            result = {"model": name, "batch": batch}
            with torch.no_grad():
                ref, q = fp32(x), int8(x)
                result["int8_vs_fp32_rel_err"] = ((q - ref).norm() / ref.norm()).item()
                try:
                    frozen = torch.jit.freeze(torch.jit.trace(int8, x).eval())
                    max_diff = (frozen(x) - q).abs().max().item()
                    if max_diff > 1e-3 * max(1.0, q.abs().max().item()):
                        raise RuntimeError(f"frozen module differs from the GraphModule by {max_diff:.3g}")
                    result["frozen_path"] = os.path.join(args.outdir, f"{name}_{batch}.pt")
                    torch.jit.save(frozen, result["frozen_path"])
                except Exception as e:  # noqa: BLE001 - reported in the JSON; the other modes still run
                    result["frozen_error"] = f"trace/freeze failed: {first_line(e)}"
            results.append(result)
    return {"torch_version": torch.__version__, "qengine": qengine, "supported_engines": engines,
            "mkldnn": torch.backends.mkldnn.is_available(), "results": results}


def worker(args, names, batches):
    """Runs in a subprocess with torch: one configuration (or the preparation); prints one JSON line."""
    import_torch()
    if args.worker == "baseline":
        print(json.dumps({"peak_rss_bytes": peak_rss_bytes()}))
        return
    if args.worker == "prepare":
        print(json.dumps(prepare(args, names, batches)))
        return
    torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = args.qengine
    name, batch = names[0], batches[0]
    if args.worker == "fp32_eager":
        fn = float_model(name)
    elif args.worker == "int8_eager":
        fn = quantize(name, args.qengine, args.calib_images)
    else:
        fn = torch.jit.load(args.frozen_path)
    x = timed_input(batch)
    setup_rss = peak_rss_bytes()
    with torch.no_grad():
        # The profiling executor specializes a TorchScript module over its first runs.
        for _ in range(3):
            fn(x)
        time_block(fn, x, args.warmup)
        times = [time_block(fn, x, args.min_time) for _ in range(args.repetitions)]
    result = summarize(batch, times)
    result.update(setup_rss_bytes=setup_rss, peak_rss_bytes=peak_rss_bytes())
    print(json.dumps(result))


def run_worker(args, mode, models, batches, **extra):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--models", models, "--batches", batches,
           "--threads", str(args.threads), "--repetitions", str(args.repetitions),
           "--min-time", str(args.min_time), "--warmup", str(args.warmup),
           "--calib-images", str(args.calib_images)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not out:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        return {"error": lines[-1]}
    return json.loads(out[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet20,vgg_small,mobilenetv2_small",
                    help="comma-separated names from train_reference.MODELS")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--warmup", type=float, default=0.2, help="seconds of untimed runs per process")
    ap.add_argument("--qengine", default=None, choices=["onednn", "qnnpack"],
                    help="quantized engine (default: onednn if this build has it, else qnnpack)")
    ap.add_argument("--calib-images", type=int, default=16, help="random images for calibration")
    ap.add_argument("--modes", default=",".join(MODES),
                    help="comma-separated subset of %s (default: all)" % ", ".join(MODES))
    ap.add_argument("--worker", choices=("baseline", "prepare") + MODES, help=argparse.SUPPRESS)
    ap.add_argument("--frozen-path", help=argparse.SUPPRESS)
    ap.add_argument("--outdir", help=argparse.SUPPRESS)
    args = ap.parse_args()

    names = [m for m in args.models.split(",") if m]
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches: expected comma-separated integers, got {args.batches!r}")
    if not names or not batches or min(batches) < 1:
        ap.error("need at least one model and positive batch sizes")
    modes = [m for m in args.modes.split(",") if m]
    if not modes or any(m not in MODES for m in modes):
        ap.error(f"--modes: expected a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")
    if args.worker:
        worker(args, names, batches)
        return

    with tempfile.TemporaryDirectory(prefix="bench_pytorch_int8.") as tmpdir:
        extra = {"outdir": tmpdir}
        if args.qengine:
            extra["qengine"] = args.qengine
        prep = run_worker(args, "prepare", args.models, args.batches, **extra)
        if "error" in prep:
            raise SystemExit(f"bench_pytorch_int8: {prep['error']}")
        args.qengine = prep["qengine"]
        baseline = run_worker(args, "baseline", names[0], str(batches[0]))
        results = []
        for item in prep["results"]:
            name, batch = item["model"], item["batch"]
            result = {"model": name, "batch": batch, "int8_vs_fp32_rel_err": item["int8_vs_fp32_rel_err"]}
            for mode in modes:
                if mode == "int8_frozen" and "frozen_error" in item:
                    result[mode] = {"error": item["frozen_error"]}
                    continue
                extra = {"qengine": args.qengine}
                if mode == "int8_frozen":
                    extra["frozen_path"] = item["frozen_path"]
                result[mode] = run_worker(args, mode, name, str(batch), **extra)
            ok = [m for m in ("int8_eager", "int8_frozen") if m in result and "images_per_s" in result[m]]
            if ok:
                best = max(ok, key=lambda m: result[m]["images_per_s"])
                result["best_int8"] = {"mode": best, "images_per_s": result[best]["images_per_s"],
                                       "peak_rss_bytes": result[best]["peak_rss_bytes"]}
            results.append(result)
    print(json.dumps({
        "torch_version": prep["torch_version"],
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "mkldnn": prep["mkldnn"],
        "quantized_engine": args.qengine,
        "supported_engines": prep["supported_engines"],
        "quantization": "FX graph mode post-training static (prepare_fx/convert_fx), default qconfig mapping "
                        f"of {args.qengine}, BatchNorm folded, {args.calib_images} random calibration images",
        "weights": "random init (speed does not depend on weight values)",
        "torch_import_rss_bytes": baseline.get("peak_rss_bytes"),
        "results": results,
    }, indent=1))
    failed = [f"{r['model']} batch {r['batch']} {m}: {r[m]['error']}" for r in results for m in modes if "error" in r[m]]
    if failed:
        print(f"bench_pytorch_int8: failed: {'; '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
