// Ternary panels: every ISA's decoder bit for bit against the reference, on shapes with row and
// K tails; the decoded bytes are exactly QPackedWeights' layout of w = u * t (so qgemm on them
// equals the reference GEMM of those int8 weights); bad codes and units are errors.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

struct Case {
  TernaryPanels panels;
  std::vector<int8_t> dense;  // row-major w = u * t
};

Case random_case(int64_t rows, int64_t depth, uint32_t seed, int64_t steps_per_unit = 1) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> code(-1, 1), unit(0, 127), pick(0, 7);
  Case c{TernaryPanels(rows, depth, steps_per_unit), std::vector<int8_t>(static_cast<size_t>(rows * depth))};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t s = 0, u = 0; s < c.panels.steps(); ++s) {
      if (s % steps_per_unit == 0) {
        u = pick(gen) == 0 ? 127 : unit(gen);
        c.panels.set_unit(r, s, static_cast<int>(u));
      }
      for (int64_t k = s * kQStep; k < std::min(depth, (s + 1) * kQStep); ++k) {
        int t = code(gen);
        c.panels.set_code(r, k, t);
        c.dense[static_cast<size_t>(r * depth + k)] = static_cast<int8_t>(t * static_cast<int>(u));
      }
    }
  return c;
}

class TernaryDecodeTest : public IsaTest {};

TEST_P(TernaryDecodeTest, MatchesReferenceAndQgemmLayout) {
  uint32_t seed = 1;
  for (int64_t rows : {1, 5, 16, 17, 33, 64})
    for (int64_t depth : {1, 3, 4, 9, 36, 37, 144})
      for (int64_t spu : {1, 2, 3, 16}) {
      Case c = random_case(rows, depth, seed++, spu);
      const int64_t bytes = c.panels.panels() * c.panels.steps() * kQPanelRows * kQStep;
      std::vector<int8_t> want(static_cast<size_t>(bytes)), got(static_cast<size_t>(bytes), 99);
      decode_ternary_reference(c.panels, 0, c.panels.panels(), want.data());
      decode_ternary(c.panels, 0, c.panels.panels(), got.data());
      ASSERT_EQ(got, want) << "rows=" << rows << " depth=" << depth << " steps per unit=" << spu;
      QPackedWeights packed = QPackedWeights::pack(c.dense.data(), rows, depth, depth);
      ASSERT_TRUE(std::equal(want.begin(), want.end(), packed.data())) << "layout differs from QPackedWeights";
      // Decoding a sub-range of panels writes just those.
      if (c.panels.panels() > 1) {
        std::vector<int8_t> part(static_cast<size_t>(bytes / c.panels.panels()));
        decode_ternary(c.panels, 1, 2, part.data());
        EXPECT_TRUE(std::equal(part.begin(), part.end(), want.begin() + static_cast<long>(part.size())));
      }
    }
}

// ternary_qgemm (streaming for few columns, decode + qgemm for more) against the reference GEMM
// of the dense int8 weights.
TEST_P(TernaryDecodeTest, TernaryQgemmMatchesReference) {
  ThreadPool pool(2);
  std::vector<int8_t> scratch;
  uint32_t seed = 500;
  for (int64_t rows : {1, 16, 17, 40, 100})
    for (int64_t depth : {3, 36, 64, 130})
      for (int64_t spu : {1, 4, 16})  // 16: the table kernel at ISA avx2 for few columns
        for (int64_t cols : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 70}) {
          Case c = random_case(rows, depth, seed++, spu);
          const int64_t stride = c.panels.steps() * kQStep + 1;
          const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, seed);
          std::vector<int32_t> got(g.want.size(), -1);
          ternary_qgemm(c.panels, g.row_sums.data(), cols, g.x.data(), stride, got.data(), rows, scratch, cols % 2 ? &pool : nullptr);
          ASSERT_EQ(got, g.want) << "rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
        }
}

// Weights larger than the whole-decode threshold (decoded a panel pair at a time per thread, past
// the streaming kernels' column limit) and the streaming kernels on many panels and a long K.
TEST_P(TernaryDecodeTest, TernaryQgemmLargeWeights) {
  ThreadPool pool(2);
  std::vector<int8_t> scratch;
  for (int64_t spu : {1, 16}) {
    Case c = random_case(300, 2001, 91 + static_cast<uint32_t>(spu), spu);
    const int64_t rows = 300, depth = 2001, stride = c.panels.steps() * kQStep;
    for (int64_t cols : {1, 2, 8, 13, 70}) {
      const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, static_cast<uint32_t>(cols));
      std::vector<int32_t> got(g.want.size(), -1);
      ternary_qgemm(c.panels, g.row_sums.data(), cols, g.x.data(), stride, got.data(), rows, scratch, &pool);
      ASSERT_EQ(got, g.want) << "spu=" << spu << " cols=" << cols;
    }
  }
}

// Both AVX2 streaming kernels directly (dispatch picks only the one this CPU prefers).
TEST(TernaryStreamAvx2, BothKernelsMatchReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  uint32_t seed = 900;
  for (int64_t rows : {1, 17, 40})
    for (int64_t depth : {3, 64, 130})
      for (int64_t spu : {1, 4})
        for (int64_t cols : {1, 4, 5, 8}) {
          Case c = random_case(rows, depth, seed++, spu);
          const int64_t stride = c.panels.steps() * kQStep + 3;
          const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, seed);
          std::vector<int32_t> got(g.want.size(), -1);
          ternary_stream_avx2_maddubs(c.panels, g.row_sums.data(), 0, c.panels.panels(), cols, g.x.data(), stride, got.data(),
                                           rows);
          ASSERT_EQ(got, g.want) << "maddubs rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
          if (!cpu_features().avx_vnni) continue;
          std::fill(got.begin(), got.end(), -1);
          ternary_stream_avxvnni(c.panels, 0, c.panels.panels(), cols, g.x.data(), stride, got.data(), rows);
          ASSERT_EQ(got, g.want) << "avx-vnni rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
        }
}

// The lookup-table kernel directly, against the reference GEMM: rows not a multiple of its 32,
// K tails, units spanning 1 to 40 steps (its int16 sums are cut every 32 steps), 1-9 columns (in
// passes of 4) and x padding past K that the zero codes must ignore.
std::vector<int32_t> run_lut(const TernaryPanels& t, const std::vector<uint8_t>& x, int64_t cols, int64_t stride,
                             ThreadPool* pool = nullptr) {
  std::vector<int32_t> got(static_cast<size_t>(cols * t.rows()), -1);
  ternary_lut_gemm(t, cols, x.data(), stride, got.data(), t.rows(), pool);
  return got;
}

TEST(TernaryLut, MatchesReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  ThreadPool pool(2);
  uint32_t seed = 1300;
  for (int64_t rows : {1, 31, 32, 33, 70})
    for (int64_t depth : {3, 64, 130, 260})
      for (int64_t spu : {1, 3, 16, 40})
        for (int64_t cols : {1, 2, 4, 5, 9}) {
          Case c = random_case(rows, depth, seed++, spu);
          const int64_t stride = c.panels.steps() * kQStep + 2;
          const testing::GemmCheck g = testing::gemm_check(c.dense, rows, depth, c.panels.panels(), cols, stride, seed);
          ASSERT_EQ(run_lut(c.panels, g.x, cols, stride, cols % 2 ? &pool : nullptr), g.want)
              << "rows=" << rows << " depth=" << depth << " spu=" << spu << " cols=" << cols;
        }
}

// The largest partial sums: every code +1 (then -1), every unit 127, every input 255, a unit over
// 40 steps: 32 steps of 4 x 255 reach 32,640 in int16 before the unit multiplies them.
TEST(TernaryLut, LargestSumsStayExact) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  for (int sign : {1, -1}) {
    const int64_t rows = 40, depth = 160, spu = 40;
    TernaryPanels t(rows, depth, spu);
    std::vector<int8_t> dense(static_cast<size_t>(rows * depth), static_cast<int8_t>(sign * 127));
    for (int64_t r = 0; r < rows; ++r) {
      t.set_unit(r, 0, 127);
      for (int64_t k = 0; k < depth; ++k) t.set_code(r, k, sign);
    }
    const std::vector<uint8_t> x(static_cast<size_t>(depth), 255);
    std::vector<int32_t> want(static_cast<size_t>(rows));
    qgemm_reference(dense.data(), rows, depth, depth, 1, x.data(), depth, want.data(), rows);
    EXPECT_EQ(run_lut(t, x, 1, depth), want) << "sign " << sign;
  }
}

// The table copy is made on first use and made again after a setter, on the panels and on a copy
// that shared it, never for the other.
TEST(TernaryLut, CopyFollowsTheCodes) {
  TernaryPanels p(40, 64, 16);
  p.set_unit(5, 0, 3);
  p.set_code(5, 0, 1);
  const TernaryLut& before = p.lut();
  EXPECT_EQ(&before, &p.lut());  // kept
  EXPECT_EQ(before.index[5] & 0x0F, 3 * 2 + 1);  // row 5, first pair of step 0: (t0, t1) = (1, 0)
  TernaryPanels copy = p;
  copy.set_code(5, 1, -1);
  EXPECT_EQ(copy.lut().index[5] & 0x0F, 3 * 2 + 0);
  EXPECT_EQ(p.lut().index[5] & 0x0F, 3 * 2 + 1);
  p.set_code(5, 0, 0);
  EXPECT_EQ(p.lut().index[5] & 0x0F, 3 * 1 + 1);
  EXPECT_EQ(p.lut().units[5], 3);
}

INSTANTIATE_TEST_SUITE_P(Isas, TernaryDecodeTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

TEST(TernaryPanels, StoresCodesAndUnitsAndRejectsBadOnes) {
  TernaryPanels p(20, 10);
  p.set_code(17, 9, -1);
  p.set_code(17, 8, 1);
  p.set_unit(17, 2, 127);
  EXPECT_EQ(p.code(17, 9), -1);
  EXPECT_EQ(p.code(17, 8), 1);
  EXPECT_EQ(p.code(17, 7), 0);
  EXPECT_EQ(p.unit(17, 2), 127);
  p.set_code(17, 9, 0);
  EXPECT_EQ(p.code(17, 9), 0);
  EXPECT_THROW(p.set_code(0, 0, 2), Error);
  EXPECT_THROW(p.set_unit(0, 0, 128), Error);
  EXPECT_THROW(p.set_code(20, 0, 1), Error);
  EXPECT_THROW(p.set_unit(0, 3, 1), Error);
  EXPECT_EQ(p.bytes(), 2 * 3 * 32);  // 2 panels x 3 steps x (16 mask + 16 unit bytes)
  TernaryPanels shared(20, 64, 4);       // N = 16: one unit per 4 steps
  shared.set_unit(3, 5, 9);
  EXPECT_EQ(shared.unit(3, 4), 9);
  EXPECT_EQ(shared.unit(3, 7), 9);
  EXPECT_EQ(shared.unit(3, 8), 0);
  EXPECT_EQ(shared.bytes(), 2 * 16 * 16 + 2 * 4 * 16);
}

}  // namespace
}  // namespace tern::kernels
