// Int4 panels: every ISA's decoder bit for bit against the reference (plain codes and codes
// times units, row and K tails); the decoded bytes are exactly QPackedWeights' layout of w;
// int4_qgemm (streaming and decoded paths) equals the reference GEMM; bad codes and units are
// errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/int8/int4_panels.h"
#include "kernels/int8/qgemm.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

struct Case {
  Int4Panels panels;
  std::vector<int8_t> dense;  // row-major w
};

// steps_per_unit 0: plain codes in [-8, 7]; else codes in [-7, 7] with units up to 127 / |max code|.
Case random_case(int64_t rows, int64_t depth, uint32_t seed, int64_t steps_per_unit = 0) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> code(-8, 7), pick(0, 7);
  Case c{Int4Panels(rows, depth, steps_per_unit), std::vector<int8_t>(static_cast<size_t>(rows * depth))};
  const int64_t steps = c.panels.steps(), block = steps_per_unit ? steps_per_unit : steps;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < steps; b += block) {
      const int64_t k_end = std::min(depth, (b + block) * kQStep);
      int unit = 1, limit = 8;
      if (steps_per_unit) {
        // Some blocks with the largest unit their codes allow, some with small codes and big units.
        limit = 1 + pick(gen);
        unit = pick(gen) == 0 ? 127 / limit : std::uniform_int_distribution<int>(0, 127 / limit)(gen);
        c.panels.set_unit(r, b, unit);
      }
      for (int64_t k = b * kQStep; k < k_end; ++k) {
        int t = std::clamp(code(gen), -limit, limit == 8 ? 7 : limit);
        if (steps_per_unit) t = std::clamp(t, -7, 7);
        c.panels.set_code(r, k, t);
        c.dense[static_cast<size_t>(r * depth + k)] = static_cast<int8_t>(t * unit);
      }
    }
  return c;
}

class Int4Test : public IsaTest {};

TEST_P(Int4Test, DecodeMatchesReferenceAndQgemmLayout) {
  uint32_t seed = 1;
  for (int64_t rows : {1, 5, 16, 17, 33, 64})
    for (int64_t depth : {1, 3, 4, 9, 36, 37, 144})
      for (int64_t spu : {0, 1, 2, 3, 16}) {
        Case c = random_case(rows, depth, seed++, spu);
        const int64_t bytes = c.panels.panels() * c.panels.steps() * kQPanelRows * kQStep;
        std::vector<int8_t> want(static_cast<size_t>(bytes)), got(static_cast<size_t>(bytes), 99);
        decode_int4_reference(c.panels, 0, c.panels.panels(), want.data());
        decode_int4(c.panels, 0, c.panels.panels(), got.data());
        ASSERT_EQ(got, want) << "rows=" << rows << " depth=" << depth << " steps per unit=" << spu;
        QPackedWeights packed = QPackedWeights::pack(c.dense.data(), rows, depth, depth);
        ASSERT_TRUE(std::equal(want.begin(), want.end(), packed.data())) << "layout differs from QPackedWeights";
        if (c.panels.panels() > 1) {
          std::vector<int8_t> part(static_cast<size_t>(bytes / c.panels.panels()));
          decode_int4(c.panels, 1, 2, part.data());
          EXPECT_TRUE(std::equal(part.begin(), part.end(), want.begin() + static_cast<long>(part.size())));
        }
      }
}

void expect_qgemm_matches(const Case& c, int64_t cols, uint32_t seed, ThreadPool* pool, std::vector<int8_t>& scratch) {
  const int64_t rows = c.panels.rows(), depth = c.panels.depth();
  const int64_t stride = c.panels.steps() * kQStep + 1;
  const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, seed);
  std::vector<int32_t> got(g.want.size(), -1);
  int4_qgemm(c.panels, g.row_sums.data(), cols, g.x.data(), stride, got.data(), rows, scratch, pool);
  ASSERT_EQ(got, g.want) << "rows=" << rows << " depth=" << depth << " spu=" << c.panels.steps_per_unit()
                       << " cols=" << cols;
}

TEST_P(Int4Test, Int4QgemmMatchesReference) {
  ThreadPool pool(2);
  std::vector<int8_t> scratch;
  uint32_t seed = 500;
  for (int64_t rows : {1, 16, 17, 40, 100})
    for (int64_t depth : {3, 36, 64, 130})
      for (int64_t spu : {0, 1, 4})
        for (int64_t cols : {1, 2, 3, 4, 5, 7, 8, 9, 13, 70}) {
          Case c = random_case(rows, depth, seed++, spu);
          expect_qgemm_matches(c, cols, seed, cols % 2 ? &pool : nullptr, scratch);
        }
}

// Weights larger than the whole-decode threshold: decoded a panel pair at a time per thread (past
// the streaming kernels' column limit), else streamed over many panels and a long K.
TEST_P(Int4Test, Int4QgemmLargeWeights) {
  ThreadPool pool(2);
  std::vector<int8_t> scratch;
  for (int64_t spu : {0, 2}) {
    Case c = random_case(300, 2001, 77 + static_cast<uint32_t>(spu), spu);
    for (int64_t cols : {1, 8, 13, 70}) expect_qgemm_matches(c, cols, 9, &pool, scratch);
  }
}

// Both AVX2 streaming kernels directly (dispatch picks only the one this CPU prefers).
TEST(Int4StreamAvx2, BothKernelsMatchReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  uint32_t seed = 900;
  for (int64_t rows : {1, 17, 40})
    for (int64_t depth : {3, 64, 130})
      for (int64_t spu : {0, 1, 4})
        for (int64_t cols : {1, 4, 5, 8}) {
          Case c = random_case(rows, depth, seed++, spu);
          const int64_t stride = c.panels.steps() * kQStep + 3;
          const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, seed);
          std::vector<int32_t> got(g.want.size(), -1);
          int4_stream_avx2_maddubs(c.panels, g.row_sums.data(), 0, c.panels.panels(), cols, g.x.data(), stride, got.data(),
                                        rows);
          ASSERT_EQ(got, g.want) << "maddubs rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
          if (!cpu_features().avx_vnni) continue;
          std::fill(got.begin(), got.end(), -1);
          int4_stream_avxvnni(c.panels, 0, c.panels.panels(), cols, g.x.data(), stride, got.data(), rows);
          ASSERT_EQ(got, g.want) << "avx-vnni rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
        }
}

INSTANTIATE_TEST_SUITE_P(Isas, Int4Test, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

TEST(Int4Panels, StoresCodesAndUnitsAndRejectsBadOnes) {
  Int4Panels p(20, 10);
  p.set_code(17, 9, -8);
  p.set_code(17, 8, 7);
  EXPECT_EQ(p.code(17, 9), -8);
  EXPECT_EQ(p.code(17, 8), 7);
  EXPECT_EQ(p.code(17, 7), 0);
  EXPECT_EQ(p.unit(17, 2), 1);
  EXPECT_THROW(p.set_code(0, 0, 8), Error);
  EXPECT_THROW(p.set_code(0, 0, -9), Error);
  EXPECT_THROW(p.set_code(20, 0, 1), Error);
  EXPECT_THROW(p.set_unit(0, 0, 1), Error);  // plain codes have no units
  EXPECT_EQ(p.bytes(), 2 * 3 * 32);          // 2 panels x 3 steps x 32 code bytes
  Int4Panels u(20, 64, 4);                    // one unit per 4 steps
  u.set_unit(3, 5, 18);
  EXPECT_EQ(u.unit(3, 4), 18);
  EXPECT_EQ(u.unit(3, 7), 18);
  EXPECT_EQ(u.unit(3, 8), 0);
  u.set_code(3, 20, -7);
  EXPECT_EQ(u.weight(3, 20), -126);
  EXPECT_THROW(u.set_code(3, 20, -8), Error);  // -144
  EXPECT_THROW(u.set_unit(3, 4, 19), Error);   // 7 * 19 > 127
  EXPECT_THROW(u.set_unit(3, 4, 128), Error);
  EXPECT_EQ(u.bytes(), 2 * 16 * 32 + 2 * 4 * 16);
}

}  // namespace
}  // namespace tern::kernels
