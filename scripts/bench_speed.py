#!/usr/bin/python3
"""End-to-end speed and memory of tern's integer engine against FP32 and int8 peers; writes
docs/results/speed.md.

    /usr/bin/python3 scripts/bench_speed.py              # everything, ~30 min on a 2-core VM
    /usr/bin/python3 scripts/bench_speed.py --kernels    # plus the kernel section (~5 min more)
    /usr/bin/python3 scripts/bench_speed.py --imagenet   # torchvision models at 224 (random weights),
                                                         # batch 1 and 8: docs/results/speed_imagenet.md
    /usr/bin/python3 scripts/bench_speed.py --quick      # development: short runs, 1 round, passive
                                                         # waits only; writes BUILD/speed-quick.md

Engines, each (model, batch) in its own process (so its peak RSS is its own), all with the same
thread count (--threads, default 2):
  tern_ternary   `tern bench M.tern --engine integer`, FGQ ternary N=4 weights, 8-bit activations (W2A8)
  tern_w4a8      the same with int4 weights (per channel), 8-bit activations
  tern_w8a8      the same with int8 weights (per channel), 8-bit activations
  tern_fp32      `tern bench M.onnx` (tern's FP32 executor)
  onednn_fp32    bench/bench_end_to_end: the same imported graph on oneDNN primitives; its output is
                 checked against tern's FP32 before timing (the cross-check lines in the report)
  pytorch_eager, pytorch_frozen   bench/bench_pytorch.py (random-init weights of the same architectures)
  pytorch_int8   bench/bench_pytorch_int8.py (FX post-training static quantization; best of the
                 GraphModule and the frozen TorchScript module), quantized engine onednn or qnnpack
  ort_fp32       ONNX Runtime (npm onnxruntime-node, scripts/install-peers.sh) via bench/bench_onnxruntime.js
  ort_int8       the same runtime on tern's W8A8 model written as QDQ ONNX by `tern export` (the int8
                 runtime users deploy with; layers whose output tern keeps float, e.g. before a
                 residual Add, run in float there too)
The .tern models are quantized by this script into BUILD/models (calibrated on Fashion-MNIST
training images) and re-quantized when the ONNX file or the tern binary is newer.

Every round runs every engine on every model and batch (engine order rotated per round); the
report gives medians over rounds. OpenMP peers (oneDNN, PyTorch) run with OMP_WAIT_POLICY=passive
and =active and keep their better figure per round, ONNX Runtime with its pool's spinning off and
on (--wait-policies). Peak RSS is measured per process (tern, PyTorch and ONNX Runtime report
their own getrusage maximum; bench_end_to_end's comes from GNU time when /usr/bin/time exists).
Processes are started through a forking wrapper so that this script's own peak never leaks into
theirs (Linux carries a parent's peak RSS over an exec).

A missing peer (no oneDNN build, no PyTorch, ONNX Runtime not installed) stops the run with a
one-line message naming the fix; --allow-missing skips it instead and notes it in the report (a
failing engine is noted likewise). --engines restricts the engines (names above, or groups: tern,
peers, fp32, int8, all); --models and --batches restrict the rest.

--kernels adds a kernel section: bench/bench_peaks (measured int8/fp32 peaks and read
bandwidth) and bench/bench_onednn_kernels (tern's integer GEMM kernels and oneDNN int8/fp32 on the
same shapes, parsed generically from the benchmark names), at --threads threads.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from study_common import cpu_model  # noqa: E402

BUNDLED = ("resnet20", "vgg_small", "mobilenetv2_small")
PYTHON = "/usr/bin/python3"
GNU_TIME = "/usr/bin/time"
MiB = 1 << 20

# Quantized tern variants: engine -> (file suffix, `tern quantize` options, label).
TERN_QUANTIZED = {
    "tern_ternary": ("fgq4-w2a8", ["--weights", "ternary", "--method", "fgq", "--group", "4", "--acts", "8"],
                     "tern ternary W2A8 (FGQ N=4)"),
    "tern_w4a8": ("int4-w4a8", ["--weights", "int4", "--acts", "8"], "tern W4A8"),
    "tern_w8a8": ("int8-w8a8", ["--weights", "int8", "--acts", "8"], "tern W8A8"),
}
ENGINES = {  # engine -> (label, kind)
    "tern_ternary": (TERN_QUANTIZED["tern_ternary"][2], "tern"),
    "tern_w4a8": (TERN_QUANTIZED["tern_w4a8"][2], "tern"),
    "tern_w8a8": (TERN_QUANTIZED["tern_w8a8"][2], "tern"),
    "tern_fp32": ("tern FP32", "tern"),
    "onednn_fp32": ("oneDNN FP32", "fp32 peer"),
    "pytorch_eager": ("PyTorch FP32 eager", "fp32 peer"),
    "pytorch_frozen": ("PyTorch FP32 frozen", "fp32 peer"),
    "pytorch_int8": ("PyTorch int8", "int8 peer"),
    "ort_fp32": ("ONNX Runtime FP32", "fp32 peer"),
    "ort_int8": ("ONNX Runtime int8 (tern export of W8A8)", "int8 peer"),
}
GROUPS = {
    "all": list(ENGINES),
    "tern": [e for e in ENGINES if ENGINES[e][1] == "tern"],
    "peers": [e for e in ENGINES if ENGINES[e][1] != "tern"],
    "fp32": ["tern_fp32", "onednn_fp32", "pytorch_eager", "pytorch_frozen", "ort_fp32"],
    "int8": ["tern_ternary", "tern_w4a8", "tern_w8a8", "pytorch_int8", "ort_int8"],
}
FP32_PEERS = [e for e in ENGINES if ENGINES[e][1] == "fp32 peer"]
INT8_PEERS = [e for e in ENGINES if ENGINES[e][1] == "int8 peer"]
OPENMP_ENGINES = ("onednn_fp32", "pytorch_eager", "pytorch_frozen", "pytorch_int8")


class EngineError(Exception):
    """One engine failed on one configuration; the message is one line."""


class Missing(Exception):
    """A peer is not installed; the message is one line naming the fix."""


def fail(message):
    sys.exit(f"bench_speed: {message}")


def log(message):
    print(message, file=sys.stderr, flush=True)


def one_line(text):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else ""


def git(*args):
    try:
        return subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def rel(path):
    r = os.path.relpath(os.path.abspath(path), REPO)
    return path if r.startswith("..") else r


# ------------------------------------------------------------------------------------------------
# Running measured processes.

def run_measured(cmd, env=None, timeout=600, cwd=REPO):
    """Runs cmd in the repository root through a forking wrapper; returns (stdout, stderr,
    peak RSS bytes of cmd's process or None). Raises EngineError on failure or timeout.

    Linux copies a process's peak RSS into a program it execs (exec records the old address
    space's high-water mark), and Python starts children with vfork+exec, so a child started
    directly would report at least this script's peak. GNU time (or sh) forks first: the measured
    program gets a fresh accounting, and GNU time reports it (%M)."""
    env = {**os.environ, **(env or {})}
    rss_file = None
    if os.access(GNU_TIME, os.X_OK):
        fd, rss_file = tempfile.mkstemp(prefix="bench_speed.", suffix=".rss")
        os.close(fd)
        wrapped = [GNU_TIME, "-f", "%M", "-o", rss_file, *cmd]
    else:
        wrapped = ["/bin/sh", "-c", '"$@"; exit $?', "sh", *cmd]  # not the last command: sh forks
    try:
        # Own process group: on a timeout the measured program (the wrapper's child) goes too.
        proc = subprocess.Popen(wrapped, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise EngineError(f"timed out after {timeout} s: {shlex.join(cmd)}")
        except BaseException:  # Ctrl-C: leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    except OSError as e:
        raise EngineError(f"cannot run {cmd[0]}: {e}")
    finally:
        rss = None
        if rss_file:
            try:
                with open(rss_file) as f:
                    rss = int(f.read().strip().splitlines()[-1]) * 1024  # KiB
            except (OSError, ValueError, IndexError):
                pass
            os.unlink(rss_file)
    if proc.returncode != 0:
        program = os.path.basename(cmd[1] if cmd[0] in (PYTHON, "node") and not cmd[1].startswith("-") else cmd[0])
        raise EngineError(f"{program} exit {proc.returncode}: {one_line(stderr) or one_line(stdout)}")
    return stdout, stderr, rss


def last_json(stdout, what):
    for line in reversed(stdout.splitlines()):
        if line.strip().startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        raise EngineError(f"{what}: no JSON in its output")


def run_plain(cmd, what):
    """Build and set-up steps: stderr passes through; fails the whole run on error."""
    log("+ " + shlex.join(cmd))
    result = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        fail(f"{what} failed (exit {result.returncode}): {shlex.join(cmd)}")
    return result.stdout


# ------------------------------------------------------------------------------------------------
# Build, quantization, peer checks.

def build(args, targets):
    if not os.path.exists(os.path.join(args.build_dir, "CMakeCache.txt")):
        run_plain(["cmake", "-S", REPO, "-B", args.build_dir, "-DCMAKE_BUILD_TYPE=Release", "-DTERN_BUILD_TESTS=OFF",
                   "-DTERN_BUILD_BENCHMARKS=ON"], "configuring")
    run_plain(["nice", "cmake", "--build", args.build_dir, "-j2", "--target", *targets], "building " + " ".join(targets))


def binaries(args):
    return {"tern": os.path.join(args.build_dir, "src", "tern"),
            "bench_end_to_end": os.path.join(args.build_dir, "bench", "bench_end_to_end"),
            "bench_onednn_kernels": os.path.join(args.build_dir, "bench", "bench_onednn_kernels"),
            "bench_peaks": os.path.join(args.build_dir, "bench", "bench_peaks")}


def onednn_configured(build_dir):
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            return any(line.startswith("dnnl_DIR:") and "NOTFOUND" not in line for line in f)
    except OSError:
        return False


def check_peer(engine, args, bins):
    """Raises Missing with the fix when `engine` cannot run here."""
    if engine == "onednn_fp32":
        if not os.access(bins["bench_end_to_end"], os.X_OK):
            raise Missing(f"oneDNN FP32: {rel(bins['bench_end_to_end'])} was not built (oneDNN missing at configure "
                          "time: run scripts/install-deps.sh all, then remove the build directory's CMakeCache.txt)")
    elif engine.startswith("pytorch"):
        if not os.access(PYTHON, os.X_OK) or subprocess.run(
                [PYTHON, "-c", "import torch"], capture_output=True).returncode != 0:
            raise Missing(f"{ENGINES[engine][0]}: {PYTHON} cannot import torch (run scripts/install-deps.sh python)")
        if engine == "pytorch_int8":
            engines = subprocess.run([PYTHON, "-c", "import torch; print(','.join(torch.backends.quantized."
                                      "supported_engines))"], capture_output=True, text=True).stdout.strip().split(",")
            if not {"onednn", "qnnpack"} & set(engines):
                raise Missing(f"PyTorch int8: this PyTorch has neither the onednn nor the qnnpack quantized engine "
                              f"({','.join(engines)})")
    elif engine in ("ort_fp32", "ort_int8"):
        if not shutil.which("node"):
            raise Missing(f"{ENGINES[engine][0]}: node is not installed (run scripts/install-peers.sh)")
        probe = subprocess.run(["node", "-e", "require('onnxruntime-node')"], cwd=os.path.join(REPO, "bench"),
                               capture_output=True, text=True)
        if probe.returncode != 0:
            raise Missing(f"{ENGINES[engine][0]}: onnxruntime-node is not installed in bench/node_modules "
                          "(run scripts/install-peers.sh)")


def quantize(args, tern, onnx_path, engine):
    """The .tern file of `engine` for this model, quantized unless a newer one is cached."""
    suffix, options, _ = TERN_QUANTIZED[engine]
    name = os.path.splitext(os.path.basename(onnx_path))[0]
    out = os.path.join(args.build_dir, "models", f"{name}-{suffix}.tern")
    info_path = out + ".json"
    calib = ["--calib-images", str(args.calib_images)] if args.calib_images else []
    wanted = [*options, "--data", args.data, *calib]
    fresh = (os.path.exists(out) and os.path.exists(info_path) and
             os.path.getmtime(out) >= max(os.path.getmtime(onnx_path), os.path.getmtime(tern)))
    if fresh:
        try:
            with open(info_path) as f:
                fresh = json.load(f).get("options") == wanted
        except (OSError, ValueError):
            fresh = False
    if not fresh:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        cmd = [tern, "quantize", onnx_path, "-o", out, *options, "--data", args.data, *calib, "--json"]
        log("+ " + shlex.join(cmd))
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ,
                                                                                   "TERN_THREADS": str(args.threads)})
        if proc.returncode != 0:
            raise EngineError(f"tern quantize: {one_line(proc.stderr) or one_line(proc.stdout)}")
        report = last_json(proc.stdout, "tern quantize")
        info = {"command": shlex.join([rel(tern), "quantize", rel(onnx_path), "-o", rel(out), *options, "--data",
                                       args.data, *calib]),
                "options": wanted, "seconds": round(time.monotonic() - start, 1)}
        for key in ("size_bytes", "fp32_bytes", "ratio_to_fp32", "mults_eliminated"):
            if key in report:
                info[key] = report[key]
        with open(info_path, "w") as f:
            json.dump(info, f)
    with open(info_path) as f:
        info = json.load(f)
    info["file_bytes"] = os.path.getsize(out)
    return out, info


def export_qdq(args, tern, onnx_path):
    """tern's W8A8 model of onnx_path written as QDQ ONNX (for ONNX Runtime int8), unless a newer one exists."""
    tern_path, _ = quantize(args, tern, onnx_path, "tern_w8a8")
    out = os.path.splitext(tern_path)[0] + ".qdq.onnx"
    if not os.path.exists(out) or os.path.getmtime(out) < max(os.path.getmtime(tern_path), os.path.getmtime(tern)):
        cmd = [tern, "export", tern_path, "-o", out, "--json"]
        log("+ " + shlex.join(cmd))
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            raise EngineError(f"tern export: {one_line(proc.stderr) or one_line(proc.stdout)}")
    return out


# ------------------------------------------------------------------------------------------------
# One measurement: engine x model x batch x wait policy -> {"ips", "rss", ...}.

def measure(engine, model, batch, policy, args, bins):
    s = args.seconds
    reps = args.repetitions
    if engine.startswith("tern_"):
        path = model["tern_files"].get(engine) if engine != "tern_fp32" else model["path"]
        if path is None:
            raise EngineError(model["quantize_errors"].get(engine, "not quantized"))
        cmd = [bins["tern"], "bench", path, "--batch", str(batch), "--seconds", f"{s:g}", "--json"]
        if engine != "tern_fp32":
            cmd += ["--engine", "integer", "--verbose"]  # --verbose: each layer's kernel, once, on stderr
        out, err, rss = run_measured(cmd, env={"TERN_THREADS": str(args.threads)})
        j = last_json(out, "tern bench")
        if int(j.get("threads", -1)) != args.threads:
            raise EngineError(f"tern bench ran {j.get('threads')} threads, not {args.threads}")
        if engine != "tern_fp32" and j.get("engine") != "integer":
            raise EngineError(f"tern bench ran the {j.get('engine')} engine, not integer")
        kernels = {}
        for line in err.splitlines():
            parts = re.split(r"\s{2,}", line.strip(), maxsplit=1)
            if len(parts) == 2 and not line.startswith("{"):
                kernels[parts[1]] = kernels.get(parts[1], 0) + 1
        return {"ips": j["images_per_s"], "rss": j.get("peak_rss_bytes") or rss, "isa": j.get("isa"),
                "threads": j.get("threads"), "kernels": kernels}
    if engine == "onednn_fp32":
        cmd = [bins["bench_end_to_end"], model["path"], f"--batches={batch}", f"--threads={args.threads}",
               "--benchmark_filter=/onednn_fp32/", f"--benchmark_repetitions={reps}",
               f"--benchmark_min_time={s / reps:.3g}", "--benchmark_format=json"]
        out, err, rss = run_measured(cmd, env={"OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(args.threads)})
        report = json.loads(out)
        rates = [b["images_per_s"] for b in report["benchmarks"]
                 if b.get("run_type") == "aggregate" and b.get("aggregate_name") == "median"]
        if not rates:
            rates = [b["images_per_s"] for b in report["benchmarks"] if b.get("run_type") == "iteration"]
        if not rates:
            raise EngineError("bench_end_to_end reported no oneDNN figure")
        return {"ips": rates[0], "rss": rss, "context": report.get("context", {}),
                "cross_check": [l for l in err.splitlines() if "max |oneDNN - tern|" in l]}
    if engine in ("pytorch_eager", "pytorch_frozen"):
        mode = engine.split("_")[1]
        cmd = [PYTHON, os.path.join(REPO, "bench", "bench_pytorch.py"), "--models", model["name"], "--batches",
               str(batch), "--modes", mode, "--threads", str(args.threads), "--repetitions", str(reps),
               "--min-time", f"{s / reps:.3g}", "--warmup", f"{args.warmup:g}"]
        out, _, rss = run_measured(cmd, env={"OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(args.threads)})
        j = json.loads(out)
        r = j["results"][0]
        return {"ips": r[mode]["images_per_s"], "rss": r.get("peak_rss_bytes") or rss,
                "info": {k: v for k, v in j.items() if k != "results"}}
    if engine == "pytorch_int8":
        cmd = [PYTHON, os.path.join(REPO, "bench", "bench_pytorch_int8.py"), "--models", model["name"], "--batches",
               str(batch), "--modes", "int8_eager,int8_frozen", "--threads", str(args.threads), "--repetitions",
               str(reps), "--min-time", f"{s / reps:.3g}", "--warmup", f"{args.warmup:g}"]
        out, _, _ = run_measured(cmd, env={"OMP_WAIT_POLICY": policy, "OMP_NUM_THREADS": str(args.threads)},
                                 timeout=900)
        j = json.loads(out)
        r = j["results"][0]
        if "best_int8" not in r:
            raise EngineError("bench_pytorch_int8: " + "; ".join(
                f"{m}: {r[m].get('error')}" for m in ("int8_eager", "int8_frozen") if m in r))
        best = r["best_int8"]
        return {"ips": best["images_per_s"], "rss": best["peak_rss_bytes"], "mode": best["mode"],
                "info": {k: v for k, v in j.items() if k != "results"}}
    if engine in ("ort_fp32", "ort_int8"):
        path = model["path"] if engine == "ort_fp32" else model.get("ort_int8_path")
        if path is None:
            raise EngineError(model["quantize_errors"].get(engine, "not exported"))
        cmd = ["node", os.path.join(REPO, "bench", "bench_onnxruntime.js"), "--model", path, "--batch",
               str(batch), "--seconds", f"{s:g}", "--threads", str(args.threads), "--warmup", f"{args.warmup:g}"]
        if policy == "active":
            cmd.append("--spin")
        out, _, rss = run_measured(cmd)
        j = last_json(out, "bench_onnxruntime.js")
        return {"ips": j["images_per_s"], "rss": j.get("peak_rss_bytes") or rss, "ort_version": j.get("ort_version")}
    raise AssertionError(engine)


def policies_for(engine, args):
    if engine in OPENMP_ENGINES or engine in ("ort_fp32", "ort_int8"):
        return args.policy_list
    return ["-"]  # tern's own pool: sleeps while idle, nothing to choose


def baselines(args, engines):
    """Peak RSS of the peers' runtimes doing nothing: Node with onnxruntime-node loaded, Python
    with torch imported."""
    out = {}
    if "ort_fp32" in engines or "ort_int8" in engines:
        try:
            o, _, _ = run_measured(["node", "-e", "require('onnxruntime-node');"
                                    "console.log(process.resourceUsage().maxRSS * 1024)"],
                                   cwd=os.path.join(REPO, "bench"))
            out["node_ort"] = int(o.strip())
        except (EngineError, ValueError):
            pass
    if any(e.startswith("pytorch") for e in engines):
        try:
            o, _, _ = run_measured([PYTHON, "-c", "import resource, torch; "
                                    "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)"])
            out["python_torch"] = int(o.strip())
        except (EngineError, ValueError):
            pass
    return out


# ------------------------------------------------------------------------------------------------
# Kernel section.

def run_kernels(args, bins):
    """Runs bench_peaks and bench_onednn_kernels; returns (peaks, kernel rows, contexts)."""
    min_time = "0.05" if args.quick else None
    peaks_cmd = [bins["bench_peaks"], "--benchmark_format=json"]
    kern_cmd = [bins["bench_onednn_kernels"], "--benchmark_format=json",
                f"--benchmark_filter={args.kernels_filter or f'threads:{args.threads}'}"]
    if min_time:
        peaks_cmd.append(f"--benchmark_min_time={min_time}")
        kern_cmd.append(f"--benchmark_min_time={min_time}")
    env = {"OMP_WAIT_POLICY": "passive"}
    log("+ " + shlex.join(peaks_cmd))
    peaks_out, _, _ = run_measured(peaks_cmd, env=env, timeout=1800)
    log("+ " + shlex.join(kern_cmd))
    kern_out, kern_err, _ = run_measured(kern_cmd, env=env, timeout=3600)
    peaks_report, kern_report = json.loads(peaks_out), json.loads(kern_out)

    peaks = {}
    for b in peaks_report["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration" or b.get("error_occurred"):
            continue
        base = b["name"].split("/")[0]
        threads = int(b.get("threads", 1))
        size = next((p.split(":")[1] for p in b["name"].split("/") if p.startswith("bytes:")), None)
        key = (base if size is None else f"{base}/{size}", threads)
        value = next((b[c] for c in ("GMAC/s", "GFMA/s", "GB/s") if c in b), None)
        if value is not None:
            peaks[key] = (value, b.get("label", ""))

    rows = []
    for b in kern_report["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        parts = b.get("run_name", b["name"]).split("/")
        family, variant = parts[0], parts[1] if len(parts) > 1 else ""
        kv = {}
        for p in parts[2:]:
            if ":" in p:
                k, v = p.split(":", 1)
                kv[k] = v
        threads = kv.pop("threads", kv.pop("omp_threads", None))
        kind = "conv" if "conv" in family else "gemm"
        provider = "oneDNN" if family in ("matmul", "conv") else "tern" if family.startswith("tern") else family
        rows.append({"kind": kind, "shape": tuple(kv.items()), "impl": f"{provider} {variant}", "provider": provider,
                     "variant": variant, "threads": threads, "gmacs": b.get("GMAC/s"),
                     "weight_gbs": b.get("weight_GB/s"), "label": b.get("label", ""),
                     "error": b.get("error_message") if b.get("error_occurred") else None})
    return peaks, rows, {"peaks": peaks_report.get("context", {}), "kernels": kern_report.get("context", {}),
                         "impl_lines": [l for l in kern_err.splitlines() if ": " in l][:200]}


def shape_text(kind, shape):
    d = dict(shape)
    if kind == "gemm" and {"N", "K", "M"} <= set(d):
        rest = [f"{k}:{v}" for k, v in shape if k not in ("N", "K", "M")]
        return f"GEMM N={d['N']} K={d['K']} M={d['M']}" + (" " + " ".join(rest) if rest else "")
    if kind == "conv" and "C" in d:
        cin, _, cout = d["C"].partition("to")
        k = d.get("k", "3")
        return (f"conv {k}x{k} {cin}→{cout} {d.get('HW', '?')}² s{d.get('stride', '1')} batch {d.get('batch', '1')}" +
                "".join(f" {k}:{v}" for k, v in shape if k not in ("C", "HW", "stride", "batch", "k")))
    return f"{kind} " + " ".join(f"{k}:{v}" for k, v in shape)


def kernel_lines(args, peaks, rows, contexts):
    threads = args.threads
    lines = ["", "## Kernels", "",
             f"`bench/bench_peaks` and `bench/bench_onednn_kernels` (`--benchmark_filter="
             f"{args.kernels_filter or f'threads:{threads}'}`), OMP_WAIT_POLICY=passive, "
             f"{'quick mode (--benchmark_min_time=0.05)' if args.quick else 'default minimum times'}. "
             f"oneDNN {contexts['kernels'].get('onednn_version', '?')}, its ISA "
             f"{contexts['kernels'].get('onednn_isa', '?')}.", "",
             "### Measured peaks", "",
             "| peak | 1 thread (per CPU second) | 2 threads (wall clock, both together) |", "|---|---:|---:|"]
    names = [("BM_int8_vnni_zmm", "int8 vpdpbusd zmm (AVX-512 VNNI)", "GMAC/s"),
             ("BM_int8_avxvnni_ymm", "int8 vpdpbusd ymm (AVX-VNNI)", "GMAC/s"),
             ("BM_int8_avx2_maddubs", "int8 vpmaddubsw+vpmaddwd (AVX2)", "GMAC/s"),
             ("BM_int8_amx", "int8 AMX tdpbusd", "GMAC/s"),
             ("BM_fp32_fma_zmm", "fp32 FMA zmm", "GFMA/s"),
             ("BM_fp32_fma_ymm", "fp32 FMA ymm", "GFMA/s")]
    cache = {16 << 10: " (L1)", 1 << 20: " (L2)", 1 << 30: " (DRAM)"}
    for size in sorted({int(k.split("/")[1]) for k, _ in peaks if k.startswith("BM_read_bandwidth/")}):
        text = f"{size >> 30} GiB" if size >= 1 << 30 else f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"
        names.append((f"BM_read_bandwidth/{size}", f"read {text}{cache.get(size, '')}", "GB/s"))
    for key, label, unit in names:
        one, two = peaks.get((key, 1)), peaks.get((key, 2))
        if one or two:
            lines.append(f"| {label} | {f'{one[0]:,.0f} {unit}' if one else 'n/a'} | "
                         f"{f'{two[0]:,.0f} {unit}' if two else 'n/a'} |")

    def peak(keys):
        for key in keys:
            for t in (threads, 1):
                if (key, t) in peaks:
                    return peaks[(key, t)][0], key, t
        return None, None, None

    vnni, vnni_key, vnni_t = peak(["BM_int8_vnni_zmm", "BM_int8_avxvnni_ymm", "BM_int8_avx2_maddubs"])
    dram, _, dram_t = peak(["BM_read_bandwidth/1073741824"])
    lines += ["",
              "### tern's integer kernels vs oneDNN", "",
              f"At {threads} threads. *% VNNI* is GMAC/s over the measured int8 VNNI peak "
              f"({f'{vnni:,.0f} GMAC/s, {vnni_key}, {vnni_t} thread(s)' if vnni else 'not measured'}; fp32 rows "
              f"too, for scale; oneDNN may use AMX, whose peak is far higher). *Weight GB/s* is weight bytes "
              f"streamed per second in the layout each implementation keeps (the benchmark's weight_GB/s counter where "
              f"it has one, else derived from the same implementation's bytes per weight at M=1, divided by M); *% DRAM* is that "
              f"over the measured DRAM read bandwidth "
              f"({f'{dram:,.1f} GB/s, {dram_t} thread(s)' if dram else 'not measured'}) — above 100% means the weights "
              "came from cache. Ratios are this row's GMAC/s over the fastest oneDNN int8 variant and over oneDNN "
              "fp32 on the same shape. tern's `tern-conv-gemm` rows are the GEMM of the im2col (no im2col, "
              "requantization or bias in the time); its `tern-conv` rows (ResNet-50's shapes) are the integer "
              "engine's implicit-GEMM kernel reading a padded NHWC input in place, split over threads as the engine "
              "splits a layer (no requantization in the time; oneDNN's rows include their u8 output).", "",
              "| shape | implementation | GMAC/s | % VNNI | weight GB/s | % DRAM | / oneDNN int8 | / oneDNN fp32 |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    sel = [r for r in rows if r["threads"] in (None, str(threads))]
    bpw = {}  # (impl, N, K) -> weight bytes per MAC at M=1
    for r in sel:
        d = dict(r["shape"])
        if r["kind"] == "gemm" and d.get("M") == "1" and r["weight_gbs"] and r["gmacs"]:
            bpw[(r["impl"], d.get("N"), d.get("K"))] = r["weight_gbs"] / r["gmacs"]
    shapes = []
    for r in sel:
        if (r["kind"], r["shape"]) not in shapes:
            shapes.append((r["kind"], r["shape"]))

    def impl_order(r):
        return (0 if r["provider"] == "tern" else 1, 0 if r["variant"].startswith("ternary") else 1, r["variant"])

    errors = []
    for kind, shape in sorted(shapes, key=lambda ks: (ks[0] != "gemm", [(k, int(v) if v.isdigit() else v)
                                                                         for k, v in ks[1]])):
        group = sorted((r for r in sel if (r["kind"], r["shape"]) == (kind, shape)), key=impl_order)
        ok = [r for r in group if r["gmacs"]]
        int8 = [r for r in ok if r["provider"] == "oneDNN" and r["variant"].startswith("int8")]
        best_int8 = max(int8, key=lambda r: r["gmacs"]) if int8 else None
        fp32 = next((r for r in ok if r["provider"] == "oneDNN" and r["variant"] == "fp32"), None)
        d = dict(shape)
        for r in group:
            if r["error"] or not r["gmacs"]:
                errors.append(f"{shape_text(kind, shape)} {r['impl']}: {r['error'] or 'no GMAC/s'}")
                continue
            wgbs = r["weight_gbs"]
            if wgbs is None and kind == "gemm" and (r["impl"], d.get("N"), d.get("K")) in bpw and d.get("M"):
                wgbs = r["gmacs"] * bpw[(r["impl"], d.get("N"), d.get("K"))] / int(d["M"])
            cells = [shape_text(kind, shape), r["impl"], f"{r['gmacs']:,.1f}",
                     f"{100 * r['gmacs'] / vnni:.0f}%" if vnni else "n/a",
                     f"{wgbs:,.1f}" if wgbs else "—",
                     f"{100 * wgbs / dram:.0f}%" if wgbs and dram else "—",
                     f"{r['gmacs'] / best_int8['gmacs']:.2f}" + (f" ({best_int8['variant']})" if len(int8) > 1 else "")
                     if best_int8 and r is not best_int8 else "—",
                     f"{r['gmacs'] / fp32['gmacs']:.2f}" if fp32 and r is not fp32 else "—"]
            lines.append("| " + " | ".join(cells) + " |")
    impls = sorted({(r["impl"], r["label"]) for r in sel if r["label"] and r["provider"] == "oneDNN"})
    if impls:
        lines += ["", "Implementations oneDNN chose:", ""]
        seen = set()
        for impl, label in impls:
            text = f"- {impl}: `{label}`"
            if text not in seen:
                seen.add(text)
                lines.append(text)
    if errors:
        lines += ["", "Not measured:", ""] + [f"- {e}" for e in errors]
    return lines


# ------------------------------------------------------------------------------------------------
# Report.

def fmt_ips(fig):
    if not fig:
        return "n/a"
    spread = f" ±{fig['spread'] * 100:.0f}%" if fig.get("spread") is not None else ""
    return f"{fig['ips']:,.0f}{spread}"


def fmt_rss(fig):
    return f"{fig['rss'] / MiB:,.0f}" if fig and fig.get("rss") else "n/a"


def combine(samples):
    """samples: list of per-round dicts -> median figure with the spread over rounds."""
    ips = [s["ips"] for s in samples]
    rss = [s["rss"] for s in samples if s.get("rss")]
    med = statistics.median(ips)
    fig = {"ips": med, "rss": statistics.median(rss) if rss else None, "rounds": len(ips),
           "spread": (max(ips) - min(ips)) / 2 / med if len(ips) > 1 and med else None}
    for key in ("mode", "policy"):
        values = sorted({str(s[key]) for s in samples if s.get(key)})
        if values:
            fig[key] = "/".join(values)
    return fig


def ratio(a, b):
    return a / b if a and b else None


def fmt_ratio(r, digits=2):
    return f"{r:.{digits}f}" if r is not None else "n/a"


def times(r):
    return f"{r:.2f}×" if r is not None else "n/a"


def best_of(figs, engines):
    present = [(e, figs[e]) for e in engines if figs.get(e)]
    return max(present, key=lambda ef: ef[1]["ips"]) if present else (None, None)


def model_macs(tern, onnx_path):
    """Multiply-adds per image (`tern inspect --json`), or None where some layer's count is unknown."""
    try:
        out = subprocess.run([tern, "inspect", onnx_path, "--json"], capture_output=True, text=True, timeout=300)
        info = json.loads(out.stdout)
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    return None if info.get("layers_with_unknown_macs") else info.get("macs")


def vnni_peak(args, bins, kernels):
    """(GMAC/s, label) of this machine's int8 multiply-add peak at --threads: the kernel section's
    measurement when it ran, else bench_peaks' int8 rows alone (a few seconds)."""
    peaks = kernels[0] if kernels else None
    if peaks is None and os.access(bins["bench_peaks"], os.X_OK):
        try:
            out = subprocess.run([bins["bench_peaks"], "--benchmark_format=json", "--benchmark_filter=int8"],
                                 capture_output=True, text=True, timeout=600)
            peaks = {}
            for b in json.loads(out.stdout)["benchmarks"]:
                if b.get("run_type", "iteration") == "iteration" and not b.get("error_occurred") and "GMAC/s" in b:
                    peaks[(b["name"].split("/")[0], int(b.get("threads", 1)))] = (b["GMAC/s"], b.get("label", ""))
        except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError):
            return None
    for key, label in (("BM_int8_vnni_zmm", "vpdpbusd zmm"), ("BM_int8_avxvnni_ymm", "vpdpbusd ymm"),
                       ("BM_int8_avx2_maddubs", "vpmaddubsw+vpmaddwd")):
        if (key, args.threads) in peaks:
            return peaks[(key, args.threads)][0], f"{label}, {args.threads} thread(s), bench_peaks"
    return None


def write_report(path, args, models, figures, notes, meta, kernels):
    lines = ["# End-to-end speed: tern integer engine vs FP32 and int8 peers", ""]
    if args.quick:
        lines += ["> **Quick mode** (`--quick`: short runs, one round, passive waits only): for checking the script, "
                  "not for quoting.", ""]
    commit = git("rev-parse", "--short=12", "HEAD") or "unknown"
    # Results pages (an earlier run's output among them) do not change what was measured.
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!docs/results")
    loads = meta["loads"]
    lines += [
        "Generated by `scripts/bench_speed.py`; regenerate with:", "", "```",
        shlex.join([PYTHON, "scripts/bench_speed.py", *sys.argv[1:]]), "```", "",
        "**Measured on a shared VM**: other jobs may run at the same time, so absolute images/s drift from run to run. "
        f"Every engine runs each model and batch in its own process; the whole sequence repeats over {args.rounds} "
        f"round(s) with the engine order rotated, and each figure is the median over rounds (± is half the range over "
        "rounds). Within a round the OpenMP peers (oneDNN, PyTorch) run under "
        + " and ".join(f"`OMP_WAIT_POLICY={p}`" for p in args.policy_list) +
        " and ONNX Runtime with its pool's spinning " + ("off and on" if len(args.policy_list) > 1 else
                                                         "on" if args.policy_list == ["active"] else "off") +
        ", keeping the better figure; tern's pool sleeps while idle. Peak RSS is each process's maximum resident set "
        "(MiB), runtime start-up included.", "",
        "| | |", "|---|---|",
        f"| CPU | {cpu_model()} ({os.cpu_count()} logical CPUs) |",
        f"| ISA (CPU flags) | {meta['cpu_flags'] or 'unknown'} |",
        f"| tern kernel ISA | {meta.get('tern_isa') or 'unknown'} |",
        f"| memory | {meta['mem_total']} |",
        f"| OS | {meta['os']} |",
        f"| threads | {args.threads} for every engine (tern `TERN_THREADS`, oneDNN/PyTorch OpenMP threads, ONNX Runtime "
        f"intra-op threads; inter-op 1) |",
        f"| tern | commit `{commit}`{' + uncommitted changes' if dirty else ''}, {meta['compiler']}, Release |",
        f"| oneDNN | {meta.get('onednn_version', 'n/a')} (Debian libdnnl) |",
        f"| PyTorch | {meta.get('torch_version', 'n/a')} (Debian build), int8 engine "
        f"{meta.get('qengine', 'n/a')}; random-init weights of the same architectures |",
        f"| ONNX Runtime | {meta.get('ort_version', 'n/a')} (npm onnxruntime-node, CPU), Node {meta.get('node', 'n/a')} |",
        f"| wait policy kept (per model and batch) | {meta['policies'] or 'n/a'} |",
        f"| date | {meta['started']:%Y-%m-%d %H:%M} UTC, {meta['minutes']:.0f} min |",
        f"| load average (1 min) before / during (median, max) / after | {loads['before']:.2f} / "
        f"{loads['median']:.2f}, {loads['max']:.2f} / {loads['after']:.2f} |",
        f"| timing | per process ≥{args.seconds:g} s timed after ≥{args.warmup:g} s warm-up; tern and ONNX Runtime: "
        f"median run; oneDNN and PyTorch: median of {args.repetitions} blocks |",
        "",
    ]
    if notes:
        lines += ["**Not measured / failed:**", ""] + [f"- {n}" for n in notes] + [""]

    # Per model: engines x batches.
    lines += ["## Images/s and peak RSS", "",
              "Images/s (higher is better) and peak RSS in MiB (lower is better)."]
    for m in models:
        name = m["name"]
        lines += ["", f"### {name}", ""]
        header = "| engine |" + "".join(f" batch {b}: images/s | RSS MiB |" for b in args.batch_list)
        lines += [header, "|---|" + "---:|---:|" * len(args.batch_list)]
        for e in args.engine_list:
            cells = []
            for b in args.batch_list:
                fig = figures.get((name, b, e))
                cells += [fmt_ips(fig), fmt_rss(fig)]
                if fig and fig.get("mode"):  # PyTorch int8: which module was faster
                    cells[-2] += " (" + fig["mode"].replace("int8_", "") + ")"
            lines.append(f"| {ENGINES[e][0]} | " + " | ".join(cells) + " |")
        sizes = [f"{ENGINES[e][0]} {m['tern_info'][e]['file_bytes'] / 1024:,.0f} KiB"
                 for e in TERN_QUANTIZED if e in m["tern_info"]]
        if sizes:
            lines += ["", f".tern files: {', '.join(sizes)}; ONNX {os.path.getsize(m['path']) / 1024:,.0f} KiB."]

    # Arithmetic rate of tern's integer engine.
    peak = meta.get("vnni_peak")
    tern_int = [e for e in args.engine_list if e in TERN_QUANTIZED]
    if tern_int and any(m.get("macs") for m in models):
        lines += ["", "## Arithmetic rate", "",
                  "Multiply-adds per second of tern's integer engine: images/s times the model's multiply-adds per "
                  "image (`tern inspect`, every layer counted at full precision: ternary counts what it replaces), "
                  "and that over the machine's measured int8 multiply-add peak"
                  + (f" ({peak[0]:,.0f} GMAC/s: {peak[1]})" if peak else " (not measured)") +
                  ". The whole network: depthwise layers, epilogues, pooling and float steps included.", "",
                  "| model | MMAC/image | engine |" + "".join(f" batch {b}: GMAC/s | % peak |" for b in args.batch_list),
                  "|---|---:|---|" + "---:|---:|" * len(args.batch_list)]
        for m in models:
            if not m.get("macs"):
                continue
            for e in tern_int:
                cells = []
                for b in args.batch_list:
                    fig = figures.get((m["name"], b, e))
                    rate = fig["ips"] * m["macs"] / 1e9 if fig else None
                    cells += [f"{rate:,.0f}" if rate else "—", f"{100 * rate / peak[0]:.0f}%" if rate and peak else "—"]
                lines.append(f"| {m['name']} | {m['macs'] / 1e6:,.0f} | {ENGINES[e][0]} | " + " | ".join(cells) + " |")

    # Ratios.
    lines += ["", "## Ratios", "",
              "*Fastest FP32 peer*: the best of oneDNN, PyTorch eager/frozen and ONNX Runtime (tern FP32 is not a "
              "peer); *fastest int8 peer*: PyTorch int8 (best of its GraphModule and frozen TorchScript) or ONNX Runtime "
              "int8 on tern's QDQ export of its W8A8 model. Above 1: "
              "tern ternary is faster (or, for RSS, uses more).", "",
              "| model | batch | ternary images/s | fastest FP32 peer | ternary / it | fastest int8 peer | ternary / it | "
              "ternary / ORT FP32 | RSS ternary / RSS ORT |",
              "|---|---:|---:|---|---:|---|---:|---:|---:|"]
    ratios = {}
    for m in models:
        for b in args.batch_list:
            figs = {e: figures.get((m["name"], b, e)) for e in args.engine_list}
            t = figs.get("tern_ternary")
            fp_e, fp = best_of(figs, FP32_PEERS)
            i8_e, i8 = best_of(figs, INT8_PEERS)
            ort = figs.get("ort_fp32")
            r = {"fp32": ratio(t and t["ips"], fp and fp["ips"]), "int8": ratio(t and t["ips"], i8 and i8["ips"]),
                 "ort": ratio(t and t["ips"], ort and ort["ips"]),
                 "rss_ort": ratio(t and t.get("rss"), ort and ort.get("rss"))}
            ratios[(m["name"], b)] = r
            fp_text = f"{ENGINES[fp_e][0]} {fp['ips']:,.0f}" if fp else "n/a"
            i8_text = f"{ENGINES[i8_e][0]} {i8['ips']:,.0f}" if i8 else "n/a"
            lines.append(f"| {m['name']} | {b} | {fmt_ips(t)} | {fp_text} | {fmt_ratio(r['fp32'])} | {i8_text} | "
                         f"{fmt_ratio(r['int8'])} | {fmt_ratio(r['ort'])} | {fmt_ratio(r['rss_ort'])} |")

    # Targets.
    def verdict(value, goal, less=False):
        if value is None:
            return "not measured"
        ok = value <= goal if less else value >= goal
        return "**met**" if ok else "**missed**"

    lines += ["", "## Targets", "", "| target | measured | result |", "|---|---:|---|"]
    r64 = ratios.get(("resnet20", 64), {})
    r1 = ratios.get(("resnet20", 1), {})
    lines.append(f"| ResNet-20 batch 64: ternary ≥ 4× the fastest FP32 peer | {times(r64.get('fp32'))} | "
                 f"{verdict(r64.get('fp32'), 4.0)} |")
    lines.append(f"| ResNet-20 batch 64: ternary ≥ 1.0× the fastest int8 peer | {times(r64.get('int8'))} | "
                 f"{verdict(r64.get('int8'), 1.0)} |")
    lines.append(f"| ResNet-20 batch 1: ternary ≥ 2× ONNX Runtime FP32 | {times(r1.get('ort'))} | "
                 f"{verdict(r1.get('ort'), 2.0)} |")
    mem = [(k, v["rss_ort"]) for k, v in ratios.items() if v.get("rss_ort") is not None]
    for (name, b), v in sorted(mem):
        lines.append(f"| {name} batch {b}: peak RSS of ternary ≤ 0.5× ONNX Runtime's | {v:.2f}× | "
                     f"{verdict(v, 0.5, less=True)} |")
    if not mem:
        lines.append("| peak RSS of ternary ≤ 0.5× ONNX Runtime's (same model, batch) | n/a | not measured |")
    base = meta.get("baselines", {})
    if base:
        parts = []
        if "node_ort" in base:
            parts.append(f"Node with onnxruntime-node loaded and no session peaks at {base['node_ort'] / MiB:,.0f} MiB")
        if "python_torch" in base:
            parts.append(f"Python with torch imported at {base['python_torch'] / MiB:,.0f} MiB")
        lines += ["", "Runtime floors (doing nothing): " + "; ".join(parts) + ". The ONNX Runtime figures include "
                  "Node; a C/C++ host of ONNX Runtime would need less."]

    # How engines run + cross-checks.
    lines += ["", "## How each engine runs", "",
              "- **tern ternary / W4A8 / W8A8**: `tern bench MODEL.tern --engine integer --batch B --seconds S --json` "
              "(quantized Conv/Gemm layers on tern's integer kernels, 8-bit activations). The .tern files are "
              "quantized by this script:"]
    cmds = sorted({info["command"] for m in models for info in m["tern_info"].values()})
    lines += [f"  - `{c}`" for c in cmds]
    tk = meta.get("tern_kernels", {})
    if tk:
        lines.append("  - Kernels per layer (`tern bench --engine integer --verbose`):")
        for (name, engine), counts in sorted(tk.items(), key=lambda kv: (kv[0][0], list(ENGINES).index(kv[0][1]))):
            lines.append(f"    - {name} {ENGINES[engine][0]}: " +
                         ", ".join(f"{n}× {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])))
    lines += ["- **tern FP32**: `tern bench MODEL.onnx` (`tern::Executor` on the imported graph: BatchNorm folded, "
              "Relu/Clip fused into Conv/Gemm).",
              "- **oneDNN FP32** (`bench/bench_end_to_end`, `bench/onednn_fp32_runner.cpp`): the same imported graph "
              "lowered to oneDNN primitives, `format_tag::any` layouts with reorders only at boundaries, weights "
              "reordered once, residual Adds as `sum` post-ops. Its process also builds tern's FP32 executor for the "
              "cross-check, so its RSS is an upper bound. Before timing, its output is checked against tern's on the "
              "same random input:", ""]
    for key in sorted(meta.get("onednn_plans", {})):
        plan = meta["onednn_plans"][key]
        lines.append(f"  - `{key}`: {plan['plan']}; max |oneDNN − tern| / max |tern| = {plan['error']}")
    lines += ["- **PyTorch eager**: the `scripts/train_reference.py` module in eval mode under `torch.no_grad()` "
              "(BatchNorm not folded; Debian's PyTorch is built without MKL, so eager convolutions use generic BLAS).",
              "- **PyTorch frozen**: `torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))` "
              "(BatchNorm folded; convolutions converted to oneDNN). Its process also builds the eager module.",
              "- **PyTorch int8**: `bench/bench_pytorch_int8.py`, FX graph mode post-training static quantization "
              f"(`prepare_fx`/`convert_fx`, default qconfig mapping of the {meta.get('qengine', '?')} engine, BatchNorm "
              "folded, random calibration images); the better of the quantized GraphModule and the frozen TorchScript "
              "module reloaded from disk, each in its own process.",
              "- **ONNX Runtime FP32**: `bench/bench_onnxruntime.js` (onnxruntime-node, CPU execution provider, graph "
              "optimization level all, sequential execution), on the same ONNX file.", ""]
    if kernels:
        lines += kernel_lines(args, *kernels)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    log(f"wrote {path}")


# ------------------------------------------------------------------------------------------------

def machine_meta():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    wanted = ["sse4_2", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16",
              "amx_tile", "amx_int8"]
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(next(l for l in f if l.startswith("MemTotal")).split()[1])
            mem = f"{kb / (1 << 20):.1f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    os_name = platform.platform()
    try:
        with open("/etc/debian_version") as f:
            os_name = f"Debian {f.read().strip()}, Linux {platform.release()}"
    except OSError:
        pass
    return {"cpu_flags": " ".join(f for f in wanted if f in flags), "mem_total": mem, "os": os_name}


def compiler(build_dir):
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt")) as f:
            cxx = next(l.split("=", 1)[1].strip() for l in f if l.startswith("CMAKE_CXX_COMPILER:"))
        return subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    except (OSError, StopIteration, IndexError):
        return "unknown compiler"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", help="names (%s) or ONNX paths; comma or space separated" % ",".join(BUNDLED))
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--engines", default="all",
                    help="comma-separated engines (%s) or groups (%s)" % (",".join(ENGINES), ",".join(GROUPS)))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per engine, model and batch per round")
    ap.add_argument("--repetitions", type=int, default=5, help="timed blocks for oneDNN and PyTorch (median)")
    ap.add_argument("--warmup", type=float, default=0.3, help="untimed seconds per process")
    ap.add_argument("--wait-policies", default="passive,active", help="OpenMP wait policies tried for the peers")
    ap.add_argument("--data", default="fashion-mnist", help="calibration data for `tern quantize`")
    ap.add_argument("--calib-images", type=int, help="calibration images for `tern quantize` (its default: 512)")
    ap.add_argument("--imagenet", action="store_true",
                    help="ImageNet-size models instead of the bundled ones: torchvision ResNet-18/50, MobileNetV2/V3, "
                         "EfficientNet-B0 and ViT-B/16 at 224 with random weights (scripts/make_imagenet_models.py, "
                         "into BUILD/imagenet); defaults --batches 1,8 --engines tern,ort_fp32,ort_int8 --calib-images 64 "
                         "--out docs/results/speed_imagenet.md")
    ap.add_argument("--quick", action="store_true",
                    help="development: --seconds 0.3 --rounds 1 --repetitions 2 --warmup 0.1 --wait-policies passive, "
                         "report to BUILD/speed-quick.md (explicit options still win)")
    ap.add_argument("--kernels", action="store_true", help="add the kernel section (bench_peaks, bench_onednn_kernels)")
    ap.add_argument("--kernels-filter", help="--benchmark_filter for bench_onednn_kernels (default threads:THREADS)")
    ap.add_argument("--allow-missing", action="store_true",
                    help="skip peers that are not installed, and engines that fail, with a note in the report")
    ap.add_argument("--build-dir", default=os.path.join(REPO, "build", "bench-speed"))
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in --build-dir")
    ap.add_argument("--out", help="report path (default docs/results/speed.md; --quick: BUILD/speed-quick.md)")
    ap.add_argument("--raw", help="raw per-round figures as JSON (default BUILD/bench_speed_raw.json)")
    argv = sys.argv[1:]
    args = ap.parse_args(argv)
    given = {a.split("=")[0] for a in argv if a.startswith("--")}
    if args.quick:
        for opt, value in (("seconds", 0.3), ("rounds", 1), ("repetitions", 2), ("warmup", 0.1),
                           ("wait_policies", "passive")):
            if "--" + opt.replace("_", "-") not in given:
                setattr(args, opt, value)
    if args.imagenet:
        for opt, value in (("batches", "1,8"), ("engines", "tern,ort_fp32,ort_int8"), ("calib_images", 64),
                           ("out", os.path.join(REPO, "docs", "results", "speed_imagenet.md"))):
            if "--" + opt.replace("_", "-") not in given:
                setattr(args, opt, value)
    args.build_dir = os.path.abspath(args.build_dir)
    args.out = args.out or (os.path.join(args.build_dir, "speed-quick.md") if args.quick
                            else os.path.join(REPO, "docs", "results", "speed.md"))
    args.raw = args.raw or os.path.join(args.build_dir, "bench_speed_raw.json")
    try:
        args.batch_list = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        ap.error(f"--batches: expected comma-separated integers, got {args.batches!r}")
    if not args.batch_list or min(args.batch_list) < 1:
        ap.error("--batches: need positive batch sizes")
    engines = []
    for e in (x.strip() for x in args.engines.split(",") if x.strip()):
        if e in GROUPS:
            engines += GROUPS[e]
        elif e in ENGINES:
            engines.append(e)
        else:
            ap.error(f"--engines: unknown engine or group '{e}' (engines: {', '.join(ENGINES)}; groups: "
                     f"{', '.join(GROUPS)})")
    args.engine_list = [e for e in ENGINES if e in engines]  # canonical order, no duplicates
    args.policy_list = [p for p in args.wait_policies.split(",") if p]
    if not args.policy_list or any(p not in ("passive", "active") for p in args.policy_list):
        ap.error("--wait-policies: expected passive, active or both")
    if args.rounds < 1 or args.repetitions < 1 or args.seconds <= 0 or args.threads < 1:
        ap.error("--rounds, --repetitions, --threads must be at least 1 and --seconds positive")
    return args


def resolve_models(args):
    if args.imagenet:
        import make_imagenet_models
        names = [s for item in (args.models or []) for s in item.split(",") if s] or list(make_imagenet_models.MODELS)
        args.models = make_imagenet_models.main(["--out", os.path.join(args.build_dir, "imagenet"), "--models", *names])
    specs = [s for item in (args.models or BUNDLED) for s in item.split(",") if s]
    models = []
    for spec in specs:
        path = spec if spec.endswith(".onnx") or os.sep in spec else os.path.join(REPO, "models", spec + ".onnx")
        path = os.path.abspath(path)
        if not os.path.isfile(path):
            fail(f"{rel(path)} not found (train the bundled models with scripts/train_reference.py, or pass --models)")
        name = os.path.splitext(os.path.basename(path))[0]
        if name not in BUNDLED and any(e.startswith("pytorch") for e in args.engine_list):
            fail(f"no PyTorch architecture for '{name}': PyTorch engines need models named after "
                 f"scripts/train_reference.py's MODELS ({', '.join(BUNDLED)}); pass --engines without them")
        models.append({"name": name, "path": path, "tern_files": {}, "tern_info": {}, "quantize_errors": {}})
    return models


def main():
    args = parse_args()
    models = resolve_models(args)
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()

    bins = binaries(args)
    if not args.no_build:
        targets = ["tern_cli"]
        if not os.path.exists(os.path.join(args.build_dir, "CMakeCache.txt")) or onednn_configured(args.build_dir):
            targets += ["bench_end_to_end"] if "onednn_fp32" in args.engine_list else []
            targets += ["bench_onednn_kernels"] if args.kernels else []
        if args.kernels:
            targets.append("bench_peaks")
        build(args, targets)
    if not os.access(bins["tern"], os.X_OK):
        fail(f"{rel(bins['tern'])} not found: build it (cmake --build {rel(args.build_dir)} --target tern_cli)")

    # Peers present?
    notes = []
    for engine in list(args.engine_list):
        try:
            check_peer(engine, args, bins)
        except Missing as e:
            if not args.allow_missing:
                fail(f"{e} — or pass --allow-missing to skip it")
            notes.append(str(e))
            args.engine_list.remove(engine)
    if args.kernels:
        for b in ("bench_peaks", "bench_onednn_kernels"):
            if not os.access(bins[b], os.X_OK):
                msg = f"kernels: {rel(bins[b])} was not built (bench_onednn_kernels needs oneDNN: scripts/install-deps.sh all)"
                if not args.allow_missing:
                    fail(msg)
                notes.append(msg)
                args.kernels = False

    # Quantize (cached).
    for m in models:
        for engine in TERN_QUANTIZED:
            if engine not in args.engine_list:
                continue
            try:
                m["tern_files"][engine], m["tern_info"][engine] = quantize(args, bins["tern"], m["path"], engine)
            except EngineError as e:
                if not args.allow_missing:
                    fail(f"{m['name']} {ENGINES[engine][0]}: {e}")
                m["quantize_errors"][engine] = str(e)
        if "ort_int8" in args.engine_list:
            try:
                m["ort_int8_path"] = export_qdq(args, bins["tern"], m["path"])
            except EngineError as e:
                if not args.allow_missing:
                    fail(f"{m['name']} {ENGINES['ort_int8'][0]}: {e}")
                m["quantize_errors"]["ort_int8"] = str(e)

    for m in models:
        m["macs"] = model_macs(bins["tern"], m["path"])

    engines = args.engine_list
    meta = {**machine_meta(), "started": started, "compiler": compiler(args.build_dir),
            "baselines": baselines(args, engines), "onednn_plans": {}}
    try:
        meta["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip() or None
    except OSError:
        pass
    load_before = os.getloadavg()[0]
    load_samples = [load_before]
    samples = {}   # (model, batch, engine) -> [per-round best figure]
    raw = []
    failures = {}  # (model, batch, engine) -> message
    total = len(models) * len(args.batch_list) * sum(len(policies_for(e, args)) for e in engines) * args.rounds
    done = 0
    for rnd in range(args.rounds):
        k = rnd % len(engines) if engines else 0
        order = engines[k:] + engines[:k]
        for engine in order:
            for m in models:
                for batch in args.batch_list:
                    best = None
                    for policy in policies_for(engine, args):
                        done += 1
                        key = (m["name"], batch, engine)
                        if key in failures:
                            continue
                        log(f"[{done}/{total}] round {rnd + 1}: {engine} {m['name']} batch {batch}"
                            + (f" ({policy})" if policy != "-" else ""))
                        t_start = time.monotonic()
                        try:
                            fig = measure(engine, m, batch, policy, args, bins)
                        except (EngineError, KeyError, json.JSONDecodeError) as e:
                            msg = f"{ENGINES[engine][0]}, {m['name']} batch {batch}: {e}"
                            if not args.allow_missing:
                                fail(msg)
                            log("  failed: " + msg)
                            failures[key] = msg
                            continue
                        load_samples.append(os.getloadavg()[0])
                        fig["policy"] = policy if policy != "-" else None
                        wall = time.monotonic() - t_start
                        log(f"  {fig['ips']:,.1f} images/s, peak RSS "
                            f"{fig['rss'] / MiB if fig.get('rss') else float('nan'):.1f} MiB ({wall:.1f} s)")
                        raw.append({"round": rnd + 1, "model": m["name"], "batch": batch, "engine": engine,
                                    "policy": policy, "images_per_s": fig["ips"], "peak_rss_bytes": fig.get("rss"), "wall_s": round(wall, 2),
                                    **{k2: fig[k2] for k2 in ("mode", "isa") if k2 in fig}})
                        # Metadata from the runs.
                        if "isa" in fig:
                            meta["tern_isa"] = fig["isa"]
                        if fig.get("kernels"):
                            meta.setdefault("tern_kernels", {})[(m["name"], engine)] = fig["kernels"]
                        if "ort_version" in fig:
                            meta["ort_version"] = fig["ort_version"]
                        info = fig.get("info", {})
                        if "torch_version" in info:
                            meta["torch_version"] = info["torch_version"]
                        if "quantized_engine" in info:
                            meta["qengine"] = info["quantized_engine"]
                        ctx = fig.get("context", {})
                        if "onednn_version" in ctx:
                            meta["onednn_version"] = ctx["onednn_version"]
                        for ck, plan in ctx.items():
                            if ck.startswith("onednn_plan/"):
                                rest = ck.split("/", 1)[1]
                                meta["onednn_plans"][rest] = {
                                    "plan": plan, "error": ctx.get("max_relative_error/" + rest, "?")}
                        if best is None or fig["ips"] > best["ips"]:
                            best = fig
                    if best is not None:
                        samples.setdefault((m["name"], batch, engine), []).append(best)
    figures = {k: combine(v) for k, v in samples.items()}
    kept = {}
    for (_, _, engine), fig in figures.items():
        if fig.get("policy"):
            kept.setdefault(engine, set()).update(fig["policy"].split("/"))
    meta["policies"] = ", ".join(f"{ENGINES[e][0]}: {'/'.join(sorted(kept[e]))}" for e in engines if e in kept)
    for key, msg in failures.items():
        if key not in figures:
            notes.append(msg)
    for m in models:
        for engine, msg in m["quantize_errors"].items():
            notes.append(f"{ENGINES[engine][0]}, {m['name']}: quantization failed: {msg}")

    kernels = None
    if args.kernels:
        try:
            kernels = run_kernels(args, bins)
        except (EngineError, json.JSONDecodeError) as e:
            if not args.allow_missing:
                fail(f"kernels: {e}")
            notes.append(f"kernels: {e}")

    meta["vnni_peak"] = vnni_peak(args, bins, kernels)
    meta["loads"] = {"before": load_before, "after": os.getloadavg()[0], "median": statistics.median(load_samples),
                     "max": max(load_samples)}
    meta["minutes"] = (time.monotonic() - t0) / 60
    os.makedirs(os.path.dirname(os.path.abspath(args.raw)), exist_ok=True)
    with open(args.raw, "w") as f:
        json.dump({"argv": sys.argv[1:], "started": f"{started:%Y-%m-%dT%H:%M:%SZ}", "threads": args.threads,
                   "measurements": raw, "notes": notes}, f, indent=1)
    write_report(args.out, args, models, figures, notes, meta, kernels)
    log(f"done in {meta['minutes']:.1f} min")


if __name__ == "__main__":
    main()
