"""Helpers shared by tern's study and benchmark scripts (ptq_study.py, residual_study.py,
bench_speed.py): the machine and commit a result was measured on, and running the CLI."""
import json
import os
import platform
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def git_commit():
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return out + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def rel(path):
    """Path relative to the repository when inside it (keeps recorded commands reproducible)."""
    path = os.path.abspath(path)
    r = os.path.relpath(path, REPO)
    return path if r.startswith("..") else r


def last_line(text):
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else ""


def run_json(cmd, timeout):
    """Runs cmd in the repository root; returns (parsed JSON of the last '{' stdout line, None,
    seconds) or (None, error message, seconds)."""
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s", time.monotonic() - start
    except OSError as e:
        return None, f"cannot run: {e}", time.monotonic() - start
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        return None, f"exit {proc.returncode}: {last_line(proc.stderr) or last_line(proc.stdout)}", seconds
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), None, seconds
            except json.JSONDecodeError as e:
                return None, f"unparsable JSON output: {e}", seconds
    return None, f"no JSON line on stdout; stderr: {last_line(proc.stderr)}", seconds


def tern_text(tern, *args):
    try:
        p = subprocess.run([tern, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
