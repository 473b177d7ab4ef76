// Shared helpers for the kernel tests: ISA parameterization and deterministic random data.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"

namespace tern::kernels {
// Readable ISA names in gtest messages.
inline void PrintTo(Isa isa, std::ostream* os) { *os << to_string(isa); }
}  // namespace tern::kernels

namespace tern::kernels::testing {

inline std::vector<Isa> all_isas() { return {Isa::kScalar, Isa::kAvx2, Isa::kAvx512}; }

inline std::string isa_name(const ::testing::TestParamInfo<Isa>& info) { return to_string(info.param); }

// Forces an ISA for the test's lifetime; skips the test where the CPU lacks it.
class IsaTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!isa_supported(GetParam())) GTEST_SKIP() << "CPU lacks " << to_string(GetParam());
    set_isa_override(GetParam());
  }
  void TearDown() override { set_isa_override(std::nullopt); }
};

inline std::vector<float> random_floats(size_t count, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

}  // namespace tern::kernels::testing
