#!/usr/bin/env python3
"""Checks that every figure in the README's result tables comes from a committed results file.

    python3 scripts/check_readme_figures.py [README.md [ROOT]]

(ROOT, where the named files are found: the repository by default.)

Every table in the README (a run of lines starting with `|`) must be preceded, within the lines
since the previous table, by a comment naming where its figures come from:

    <!-- figures: docs/results/ptq.md -->
    <!-- figures: docs/results/faq.md, docs/results/faq.json -->

and then:

* every number in the table's body (not its header row, nor its first column, which names the
  row: "ResNet-20", "ViT (4 layers, width 128)") appears in one of those files, at the
  README's precision or finer (94.51 matches 94.51 and 94.507, not 94.5; the sign and thousands
  separators are ignored, as are numbers inside backticks, which are options such as `--group 4`);
* each named file under docs/results/ records the command that made it (a `scripts/...` or
  `tern ...` command) and the commit it was made at, and does not say it was made with uncommitted
  changes. A table whose file is known to be stale may say so to the reader, on a line of its own
  between the previous table and this one starting with `> **Stale:**`, and its comment then
  ends in `stale`:
  `<!-- figures: docs/results/faq.md stale -->`; its numbers are still checked.

Prints one line per problem and exits 1 when there is any; 0 and a summary otherwise.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMENT = re.compile(r"<!--\s*figures:\s*(.*?)\s*-->")
NUMBER = re.compile(r"(?<![\w.])[+\-−]?(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?(?![\w])")
COMMIT = re.compile(r"\b(commit|at)\s*`?[0-9a-f]{7,40}\b", re.I)
COMMAND = re.compile(r"scripts/[\w./-]+|`tern [a-z]+")


def numbers(text):
    """(value, decimals) of every number in text, code spans removed."""
    text = re.sub(r"`[^`]*`", " ", text)
    out = []
    for m in NUMBER.finditer(text):
        whole, frac = m.group(1).replace(",", ""), m.group(2) or ""
        out.append((float(whole + frac), len(frac) - 1 if frac else 0, m.group(0)))
    return out


def source_numbers(text):
    """The numbers of a results file: as numbers() but with code spans kept (commands there are
    not figures, but keeping them costs nothing), as a list of (value, decimals)."""
    out = []
    for m in NUMBER.finditer(text):
        whole, frac = m.group(1).replace(",", ""), m.group(2) or ""
        out.append((float(whole + frac), len(frac) - 1 if frac else 0))
    return out


def found(value, decimals, pool):
    for v, d in pool:
        if d >= decimals and abs(round(v, decimals) - value) < 0.5 * 10 ** -(decimals + 3):
            return True
    return False


def provenance_problems(path, text):
    problems = []
    if not COMMAND.search(text):
        problems.append("names no command that made it (scripts/... or `tern ...`)")
    if not COMMIT.search(text):
        problems.append("records no commit")
    if re.search(r"uncommitted", text, re.I):
        problems.append("says it was made with uncommitted changes")
    return problems


def tables(lines):
    """(first line index, last line index) of each table."""
    out, start = [], None
    for i, line in enumerate(lines + [""]):
        if line.startswith("|"):
            if start is None:
                start = i
        elif start is not None:
            out.append((start, i - 1))
            start = None
    return out


def main(argv):
    readme = argv[1] if len(argv) > 1 else os.path.join(ROOT, "README.md")
    root = argv[2] if len(argv) > 2 else ROOT
    with open(readme, encoding="utf-8") as f:
        lines = f.read().split("\n")
    problems, checked_numbers, checked_tables = [], 0, 0
    previous_end = -1
    cache = {}
    for start, end in tables(lines):
        where = f"{os.path.basename(readme)}:{start + 1}"
        previous_start = previous_end + 1
        comments = [COMMENT.search(l) for l in lines[previous_start:start]]
        comments = [c.group(1) for c in comments if c]
        previous_end = end
        if not comments:
            problems.append(f"{where}: table without a <!-- figures: FILE --> comment naming its results file")
            continue
        spec = comments[-1]
        stale = spec.endswith(" stale")
        if stale:
            spec = spec[: -len(" stale")]
            if not any(l.startswith("> **Stale:**") for l in lines[previous_start:start]):
                problems.append(f"{where}: marked stale for the check but not for the reader (a '> **Stale:**' line)")
        files = [s.strip() for s in spec.split(",") if s.strip()]
        pool = []
        for rel in files:
            path = os.path.join(root, rel)
            if not os.path.isfile(path):
                problems.append(f"{where}: {rel}: no such file")
                continue
            if path not in cache:
                with open(path, encoding="utf-8") as f:
                    cache[path] = f.read()
            text = cache[path]
            pool += source_numbers(text)
            if rel.startswith("docs/results/") and rel.endswith(".md") and not stale:
                for p in provenance_problems(rel, text):
                    problems.append(f"{where}: {rel} {p}")
        checked_tables += 1
        body = [l for l in lines[start:end + 1][2:]]  # header and separator rows left out
        for k, row in enumerate(body):
            cells = row.strip().strip("|").split("|")
            for value, decimals, token in numbers("|".join(cells[1:])):
                checked_numbers += 1
                if not found(value, decimals, pool):
                    problems.append(f"{where}+{k + 2}: {token.strip()} is in no file of {', '.join(files)}")
    for p in problems:
        print(p)
    if problems:
        print(f"check_readme_figures: {len(problems)} problem(s)")
        return 1
    print(f"check_readme_figures: {checked_numbers} numbers in {checked_tables} tables, each in its results file")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
