#!/usr/bin/env bash
# Hostile-input counts: per category, the inputs tried, those handled cleanly (exit 1 or 2, one
# "tern: " line naming the input, no crash, hang, runaway memory or stray output file) and every
# failure with its exit code, stderr line, peak RSS and time. The same cases as ctest's
# test_hostile_inputs (tests/data/hostile/cases.tsv plus the families make_hostile_inputs
# generates), and the output-file checks of tests/cli_output_safety_test.sh as category "files".
#
#   scripts/hostile_report.sh [BUILD_DIR] [CATEGORY...]      (BUILD_DIR default: build/all)
#   HOSTILE_JOBS=N (parallel cases, default 2), HOSTILE_TIMEOUT_S=S (hang bound, default 60)
#
# Exit status 0 when everything is clean. Build first:
#   cmake --build build/all --target tern_cli make_hostile_inputs test_hostile_inputs
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/all}
[ $# -gt 0 ] && shift
runner=$build/tests/test_hostile_inputs
tern=$build/src/tern
for f in "$runner" "$tern"; do
  [ -x "$f" ] || { echo "hostile_report: $f is not built" >&2; exit 2; }
done

status=0
"$runner" --report "$@" || status=1

if [ $# -eq 0 ] || printf '%s\n' "$@" | grep -qx files; then
  out=$(bash "$root/tests/cli_output_safety_test.sh" "$tern" "$root/models/lenet5.onnx" 2>&1)
  summary=$(echo "$out" | grep -E '^[0-9]+ checks, [0-9]+ failures$' | tail -1)
  checks=${summary%% checks*}
  failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) failures/\1/')
  echo
  printf '%-16s %6s %6s %8s\n' category tried clean failing
  printf '%-16s %6s %6s %8s\n' files "${checks:-?}" "$((${checks:-0} - ${failed:-0}))" "${failed:-?}"
  echo "$out" | grep -E '^(FAIL|SKIP)' | sed 's/^/  [files] /'
  [ "${failed:-1}" = 0 ] || status=1
fi
exit $status
