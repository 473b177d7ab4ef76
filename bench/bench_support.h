// Start-up shared by tern's benchmark programs.
#pragma once

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace tern::bench {

// libgomp reads OMP_WAIT_POLICY when it is loaded, before main, so the only way to set it from
// here is to run again. Its default (spin at every barrier) is ruinous when the two cores are
// shared: a thread spinning for a preempted partner waits out whole scheduler ticks, and oneDNN
// ran ~10x slower than with passive waiting. tern's own pool sleeps too, so passive is also the
// like-for-like setting. An explicit OMP_WAIT_POLICY in the environment is respected.
inline void rerun_with_passive_omp_wait(char** argv, const char* program) {
  if (std::getenv("OMP_WAIT_POLICY")) return;
  setenv("OMP_WAIT_POLICY", "passive", 1);
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "%s: warning: could not re-run with OMP_WAIT_POLICY=passive\n", program);
}

// Google Benchmark's Initialize with default flags placed before the command line's, which
// therefore override them (a per-benchmark MinTime() would not yield to the command line).
// Returns false after reporting unrecognized arguments.
inline bool initialize_with_defaults(int argc, char** argv, std::vector<const char*> defaults) {
  std::vector<char*> args{argv[0]};
  for (const char* flag : defaults) args.push_back(const_cast<char*>(flag));
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  int remaining = static_cast<int>(args.size());
  benchmark::Initialize(&remaining, args.data());
  return !benchmark::ReportUnrecognizedArguments(remaining, args.data());
}

}  // namespace tern::bench
