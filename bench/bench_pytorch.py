#!/usr/bin/python3
"""PyTorch FP32 throughput on tern's bundled architectures, for docs/results/speed.md.

Run with Debian's Python (it has torch):
    /usr/bin/python3 bench/bench_pytorch.py [--models resnet20,vgg_small,mobilenetv2_small] [--batches 1,64]
Prints one JSON object: per model and batch, images/s for eager mode and for a TorchScript module
that is traced, frozen and passed through torch.jit.optimize_for_inference.

Weights are PyTorch's random initialization of the architectures in scripts/train_reference.py:
the trained weights exist only as ONNX (BatchNorm folded), which PyTorch cannot load back, and
speed does not depend on weight values. Eager mode therefore still runs its BatchNorm layers;
the frozen module folds them into the convolutions, as tern's importer does.

Eager and frozen repetitions alternate, so background load hits both alike; each repetition times
a block of runs lasting at least --min-time seconds; the figures are medians over repetitions.
--modes eager or --modes frozen times one of them only (eager alone skips tracing altogether).

Memory: each result carries peak_rss_bytes, the process's peak resident memory
(getrusage(RUSAGE_SELF).ru_maxrss) when that model and batch finished, importing torch included.
It is the configuration's own only when the process runs one model, one batch and one mode
(scripts/bench_speed.py runs it that way) and was not started by a process with a larger peak
(Linux carries the parent's peak over an exec; bench_speed.py starts it through a forking shell).
"""
import argparse
import json
import os
import resource
import sys

from bench_timing import summarize, time_block  # noqa: E402  (bench/ is on sys.path)

# libgomp reads OMP_WAIT_POLICY when torch loads it: spinning at barriers wastes whole scheduler
# ticks on a shared 2-core machine, so wait passively (as tern's pool does) unless told otherwise.
# Must happen before `import torch`.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from train_reference import MODELS  # noqa: E402

INPUT_SHAPE = (1, 28, 28)
MODES = ("eager", "frozen")


def peak_rss_bytes():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def bench_model(name, batch, args):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(batch, *INPUT_SHAPE)
    with torch.no_grad():
        engines = {}
        if "eager" in args.mode_list:
            engines["eager"] = model
        if "frozen" in args.mode_list:
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x).eval()))
            engines["frozen"] = frozen
            reference = model(x)
            max_diff = (frozen(x) - reference).abs().max().item()
            if max_diff > 1e-3 * max(1.0, reference.abs().max().item()):
                raise SystemExit(f"bench_pytorch: {name} batch {batch}: frozen module differs from eager by {max_diff:.3g}")
        # The profiling executor specializes a TorchScript module over its first runs.
        for fn in engines.values():
            for _ in range(3):
                fn(x)
            time_block(fn, x, args.warmup)
        times = {mode: [] for mode in engines}
        for _ in range(args.repetitions):
            for mode, fn in engines.items():
                times[mode].append(time_block(fn, x, args.min_time))
    result = {"model": name, "batch": batch}
    for mode, seconds in times.items():
        result[mode] = summarize(batch, seconds)
    best = max(engines, key=lambda mode: result[mode]["images_per_s"])
    result["best"] = {"mode": best, "images_per_s": result[best]["images_per_s"]}
    result["peak_rss_bytes"] = peak_rss_bytes()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated names from train_reference.MODELS")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repetitions", type=int, default=10)
    ap.add_argument("--min-time", type=float, default=0.2, help="seconds per timed block")
    ap.add_argument("--warmup", type=float, default=0.2, help="seconds of untimed runs per engine")
    ap.add_argument("--modes", default=",".join(MODES), help="comma-separated: eager, frozen")
    args = ap.parse_args()
    args.mode_list = [m for m in args.modes.split(",") if m]
    if not args.mode_list or any(m not in MODES for m in args.mode_list):
        ap.error(f"--modes: expected a comma-separated subset of {', '.join(MODES)}, got {args.modes!r}")

    names = [m for m in args.models.split(",") if m]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        ap.error(f"unknown model {unknown[0]!r} (known: {', '.join(MODELS)})")
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        ap.error(f"--batches: expected comma-separated integers, got {args.batches!r}")

    torch.set_num_threads(args.threads)
    results = [bench_model(name, batch, args) for name in names for batch in batches]
    print(json.dumps({
        "torch_version": torch.__version__,
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "weights": "random init (speed does not depend on weight values)",
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
