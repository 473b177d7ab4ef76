#!/usr/bin/env python3
"""scripts/check_readme_figures.py fails where it should: on a figure no results file holds, a
table without a source comment, a stale source not marked for the reader, a missing file; and
passes a table whose figures are all in a clean results file."""
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECK = os.path.join(ROOT, "scripts", "check_readme_figures.py")


def run(text, root=ROOT):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "README.md")
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([sys.executable, CHECK, path, root], capture_output=True, text=True)
        return p.returncode, p.stdout


def main():
    # export.md is a clean results file (a command, a commit, no uncommitted changes) holding
    # resnet20's W8A8 figures.
    with open(os.path.join(ROOT, "docs/results/export.md")) as f:
        export = f.read()
    assert "uncommitted" not in export
    table = "| model | a |\n|---|---:|\n| resnet20 (16 channels) | {} |\n"
    good = [v for v in ("99.96", "100") if v in export][0]
    failures = []
    cases = [
        ("good", "<!-- figures: docs/results/export.md -->\n" + table.format(good), 0, ""),
        ("figure in no file", "<!-- figures: docs/results/export.md -->\n" + table.format("123.457"), 1, "123.457 is in no file"),
        ("no comment", "text\n" + table.format(good), 1, "without a <!-- figures"),
        ("missing file", "<!-- figures: docs/results/none.md -->\n" + table.format(good), 1, "no such file"),
        ("stale for the check only", "<!-- figures: docs/results/export.md stale -->\n" + table.format(good), 1,
         "not for the reader"),
        ("stale for both", "> **Stale:** pending.\n\n<!-- figures: docs/results/export.md stale -->\n" + table.format(good), 0, ""),
    ]
    for name, text, want, needle in cases:
        rc, out = run(text)
        if rc != want or needle not in out:
            failures.append(f"{name}: exit {rc} (want {want}), output: {out.strip()}")
    # A results file made with uncommitted changes, or naming no command or commit, is a problem
    # unless its table is marked stale.
    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "docs/results"))
        for name, text in (("dirty.md", "Made by `scripts/x.py` at commit `0123456789ab (with uncommitted changes)`: 12.5\n"),
                           ("bare.md", "12.5\n")):
            with open(os.path.join(root, "docs/results", name), "w") as f:
                f.write(text)
        for name, needle in (("dirty.md", "uncommitted"), ("bare.md", "records no commit")):
            rc, out = run(f"<!-- figures: docs/results/{name} -->\n" + table.format("12.5"), root)
            if rc != 1 or needle not in out:
                failures.append(f"{name}: exit {rc}, output: {out.strip()}")
    for f in failures:
        print("FAIL", f)
    rc, out = subprocess.run([sys.executable, CHECK], capture_output=True, text=True).returncode, ""
    if rc != 0:
        failures.append("the repository's README fails the check (run scripts/check_readme_figures.py)")
        print("FAIL the repository's README fails the check")
    total = len(cases) + 3  # the cases, the two bad sources, the README itself
    print(f"{total - len(failures)} of {total} checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
