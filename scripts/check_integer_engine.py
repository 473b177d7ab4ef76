#!/usr/bin/env python3
"""The integer engine's top-1 against the simulation's, per bundled model and kernel ISA.

    python3 scripts/check_integer_engine.py [--models resnet20,vgg_small,mobilenetv2_small]
        [--weights ternary,int4,int8] [--scalar-limit 1000] [--out docs/results/integer_engine.md]

Quantizes each bundled model (FGQ ternary N=4 W2A8, int4 and int8 per channel: W4A8, W8A8;
8-bit activations calibrated on Fashion-MNIST training images, as scripts/run-default.sh), then
evaluates the 10,000 test images with `tern eval --engine simulated` (FP32 kernels on the exact
quantized values) and `--engine integer` at every ISA the CPU has (TERN_ISA=avx512, avx2; scalar on
the first --scalar-limit images, against the simulation on the same images). Writes a Markdown
table with the difference in percentage points (target: within 0.05 pp) and exits non-zero when
any difference is above it. Builds nothing: run after `cmake --build build/all` (or pass --tern).
"""
import argparse
import datetime
import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MODELS = "resnet20,vgg_small,mobilenetv2_small"
DEFAULT_WEIGHTS = "ternary,int4,int8"


def commit():
    """The checkout's commit, marked when the tree has uncommitted changes."""
    def git(*a):
        return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return f"`{head}`" + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")
WEIGHTS = {
    "ternary": ["--weights", "ternary", "--method", "fgq", "--group", "4"],
    "int4": ["--weights", "int4", "--group", "channel"],
    "int8": ["--weights", "int8", "--group", "channel"],
}
TARGET_PP = 0.05


def fail(message):
    sys.exit(f"check_integer_engine: {message}")


def tern(binary, args, env=None):
    result = subprocess.run([binary] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        fail(f"tern {' '.join(args)} failed: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.returncode}")
    return result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS, help="bundled models (models/NAME.onnx; rgb/NAME for models/rgb)")
    parser.add_argument("--weights", default=DEFAULT_WEIGHTS)
    parser.add_argument("--scalar-limit", type=int, default=1000)
    parser.add_argument("--tern", default=os.path.join(REPO, "build/all/src/tern"))
    parser.add_argument("--work", default=os.path.join(REPO, "build/integer-check"))
    parser.add_argument("--out", default=os.path.join(REPO, "docs/results/integer_engine.md"))
    args = parser.parse_args()
    if not os.access(args.tern, os.X_OK):
        fail(f"{args.tern} is not built (cmake --build build/all --target tern_cli)")
    os.makedirs(args.work, exist_ok=True)
    rows, worst = [], 0.0
    for model in args.models.split(","):
        onnx = os.path.join(REPO, "models", model + ".onnx")
        if not os.path.exists(onnx):
            fail(f"no bundled model {onnx}")
        for weights in args.weights.split(","):
            if weights not in WEIGHTS:
                fail(f"--weights: unknown '{weights}' (ternary, int4, int8)")
            path = os.path.join(args.work, f"{os.path.basename(model)}-{weights}.tern")
            print(f"quantize {model} {weights}", file=sys.stderr, flush=True)
            tern(args.tern, ["quantize", onnx, "-o", path, "--acts", "8", "--data", "fashion-mnist"] + WEIGHTS[weights])
            def evaluate(engine, isa, limit=None):
                cmd = ["eval", path, "--data", "fashion-mnist", "--engine", engine, "--json"]
                if limit:
                    cmd += ["--limit", str(limit)]
                out = json.loads(tern(args.tern, cmd, {"TERN_ISA": isa}).strip().splitlines()[-1])
                return out
            sim = evaluate("simulated", "avx512")
            sim_subset = evaluate("simulated", "avx512", args.scalar_limit)
            for isa in ("avx512", "avx2", "scalar"):
                limit = args.scalar_limit if isa == "scalar" else None
                print(f"  integer {isa}", file=sys.stderr, flush=True)
                got = evaluate("integer", isa, limit)
                if got["isa"] != isa:
                    rows.append((model, weights, isa, None, None, None, "CPU lacks it"))
                    continue
                ref = sim_subset if limit else sim
                diff = got["top1"] - ref["top1"]
                worst = max(worst, abs(diff))
                rows.append((model, weights, isa, got["images"], ref["top1"], got["top1"], f"{diff:+.2f}"))
    lines = [
        "# Integer engine vs simulation: top-1",
        "",
        "Generated by `python3 scripts/check_integer_engine.py" + (f" --models {args.models}" if args.models != DEFAULT_MODELS else "")
        + (f" --weights {args.weights}" if args.weights != DEFAULT_WEIGHTS else "") + "` "
        f"({datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M')} UTC) at commit {commit()}.",
        "",
        "Each model is quantized with 8-bit calibrated activations; `tern eval --engine simulated` runs the FP32 "
        "kernels on the exact quantized values, `--engine integer` the integer engine (fused integer program) at the "
        f"ISA named (TERN_ISA). Scalar runs the first {args.scalar_limit} test images, compared with the simulation on "
        f"the same images. Target: |difference| <= {TARGET_PP} pp.",
        "",
        "| model | weights | ISA | images | simulated top-1 | integer top-1 | difference (pp) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for model, weights, isa, images, ref, got, diff in rows:
        if images is None:
            lines.append(f"| {model} | {weights} | {isa} | | | | {diff} |")
        else:
            lines.append(f"| {model} | {weights} | {isa} | {images:,} | {ref:.2f} | {got:.2f} | {diff} |")
    lines += ["", f"Largest difference: {worst:.2f} pp ({'met' if worst <= TARGET_PP + 1e-9 else 'MISSED'})."]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if worst > TARGET_PP + 1e-9:
        sys.exit(1)


if __name__ == "__main__":
    main()
