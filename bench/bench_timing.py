"""Timing helpers shared by the PyTorch benchmarks (no torch import here: bench_pytorch_int8.py's
parent process must stay free of it, see its docstring)."""
import statistics
import time


def time_block(fn, x, min_time):
    """Runs fn(x) until min_time has passed; returns seconds per run."""
    runs, start = 0, time.perf_counter()
    while True:
        fn(x)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return elapsed / runs


def summarize(images, seconds_per_run):
    rates = [images / s for s in seconds_per_run]
    median = statistics.median(rates)
    return {
        "images_per_s": median,
        "median_ms": statistics.median(seconds_per_run) * 1e3,
        "cv": statistics.stdev(rates) / statistics.mean(rates) if len(rates) > 1 else 0.0,
        "repetitions": len(rates),
    }
