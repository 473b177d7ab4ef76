#!/usr/bin/env bash
# Writes docs/results/reliability.md: the hostile-input counts per category
# (scripts/hostile_report.sh), a fuzzing run of every target (scripts/fuzz.sh FUZZ_SECONDS) with
# executions and coverage, and the last sanitizer run's ctest summary (scripts/sanitize.sh, read
# from build/asan if it has run), with the commit, CPU and date that produced them.
# Usage: scripts/reliability_report.sh [FUZZ_SECONDS]   (default 600: 100 s a target)
# Build first (scripts/test.sh builds build/all). Refuses a tree with uncommitted changes under
# src/, include/, tests/ or fuzz/, so that the figures belong to the recorded commit.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzz_seconds=${1:-600}
if [ -n "$(git status --porcelain -- src include tests fuzz)" ]; then
  echo "reliability_report: uncommitted changes under src/ include/ tests/ fuzz/: commit first" >&2
  exit 2
fi
commit=$(git rev-parse --short HEAD)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
out=docs/results/reliability.md
tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp".*' EXIT

hostile_status=0
scripts/hostile_report.sh build/all >"$tmp.hostile" 2>&1 || hostile_status=$?
fuzz_status=0
TERN_FUZZ_BUILD=build/fuzz scripts/fuzz.sh "$fuzz_seconds" >"$tmp.fuzz" 2>&1 || fuzz_status=$?

{
  echo "# Reliability figures"
  echo
  echo "Produced by \`scripts/reliability_report.sh $fuzz_seconds\` at commit \`$commit\` on $(date -u +%Y-%m-%d),"
  echo "$cpu, $(nproc) cores. What is guaranteed and how the tests work: \`docs/reliability.md\`."
  echo
  echo "## Hostile inputs (\`scripts/hostile_report.sh\`)"
  echo
  echo "Each input runs as a real \`tern\` process (\`TERN_MAX_MEMORY=1G\`); *clean* = exit 1 or 2, one"
  echo "stderr line naming the input, no crash, no hang (60 s, idle-CPU detector), peak RSS under 1 GiB,"
  echo "no stray output file. Controls are ordinary commands that must succeed under the same bounds."
  echo
  echo "| category | inputs tried | handled cleanly | failing |"
  echo "|---|---:|---:|---:|"
  awk '/^category +tried +clean +failing/{table=1; next} table && NF>=4 && $1!="total" {rows[$1]=$2" "$3" "$4} /^total/{total=$2" "$3" "$4}
       END {for (c in rows) {split(rows[c], v, " "); printf "| %s | %s | %s | %s |\n", c, v[1], v[2], v[3]}
            if (total != "") {split(total, v, " "); printf "| **total** | **%s** | **%s** | **%s** |\n", v[1], v[2], v[3]}}' \
      "$tmp.hostile" | sort
  echo
  echo "Exit status of the report: $hostile_status (0: every case clean)."
  failures=$(sed -n '/^failures:/,/^$/p' "$tmp.hostile")
  if [ -n "$failures" ]; then echo; echo '```'; echo "$failures"; echo '```'; fi
  echo
  echo "## Fuzzing (\`scripts/fuzz.sh $fuzz_seconds\`, libFuzzer, ASan + UBSan)"
  echo
  echo "| target | executions | coverage (cov) | features (ft) | result |"
  echo "|---|---:|---:|---:|---|"
  grep -E '^  fuzz_' "$tmp.fuzz" | awk '{r = ($NF=="FAILED") ? "crash saved to fuzz/regressions" : "no crash";
      printf "| %s | %s | %s | %s | %s |\n", $1, $2, $5, $7, r}'
  echo
  echo "Exit status: $fuzz_status (0: no crash, hang, OOM or leak)."
  echo
  echo "## Sanitizer build of the whole test suite (\`scripts/sanitize.sh\`)"
  echo
  summary=build/asan/ctest-summary.txt
  if [ -f "$summary" ]; then
    echo '```'
    cat "$summary"
    echo '```'
  else
    echo "Not run on this machine yet (no $summary)."
  fi
} >"$tmp"
mv "$tmp" "$out"
echo "reliability_report: wrote $out (hostile $hostile_status, fuzz $fuzz_status)"
