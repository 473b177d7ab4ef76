// Shared helpers for the kernel tests: ISA parameterization and deterministic random data.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu_features.h"
#include "kernels/int8/qgemm.h"

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

// What a packed-weight integer GEMM is checked against: random u8 activations for `cols` columns
// `stride` bytes apart, the row sums of the row-major weights `dense` (padded to `panels` whole
// panels, as the kernels take them) and qgemm_reference's product (ldc = rows).
struct GemmCheck {
  std::vector<uint8_t> x;
  std::vector<int32_t> row_sums, want;
};

inline GemmCheck gemm_check(const std::vector<int8_t>& dense, int64_t rows, int64_t depth, int64_t panels, int64_t cols,
                            int64_t stride, uint32_t seed) {
  GemmCheck g;
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> xd(0, 255);
  g.x.resize(static_cast<size_t>(cols * stride));
  for (uint8_t& v : g.x) v = static_cast<uint8_t>(xd(gen));
  g.row_sums.assign(static_cast<size_t>(panels * kQPanelRows), 0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) g.row_sums[static_cast<size_t>(r)] += dense[static_cast<size_t>(r * depth + k)];
  g.want.resize(static_cast<size_t>(cols * rows));
  qgemm_reference(dense.data(), rows, depth, depth, cols, g.x.data(), stride, g.want.data(), rows);
  return g;
}

}  // namespace tern::kernels::testing
