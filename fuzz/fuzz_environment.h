// The settings every fuzz entry runs under, in the fuzz targets and tests/test_fuzz_regressions.cpp
// alike: TERN_MAX_MEMORY=256M unless set, so that tern's own size checks (include/tern/limits.h)
// refuse what a small input asks for well below the fuzzers' -rss_limit_mb=2048; an input that
// still takes the process past that limit allocated without checking. Set before main(), so
// before tern first reads it.
#pragma once

#include <cstdlib>

namespace tern::fuzz {

inline const bool kFuzzEnvironment = [] {
  setenv("TERN_MAX_MEMORY", "256M", 0);
  return true;
}();

}  // namespace tern::fuzz
