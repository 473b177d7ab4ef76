// qgemm (u8 activations x s8 weights -> int32) on every ISA the CPU has, bit for bit against
// qgemm_reference: shapes that hit every row, column and K-step tail, one row and one column,
// garbage past the depth, the extreme values, the int32 bound, and a real thread pool.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/cpu_features.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_internal.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

class QgemmTest : public IsaTest {};

// Runs one shape on the active ISA and compares with the reference; weights in [-127, 127]
// (the quantizers' symmetric range), activations over all of u8 with extremes overrepresented.
void check_shape(int64_t rows, int64_t depth, int64_t cols, uint32_t seed, ThreadPool* pool, int64_t x_slack = 3,
                 int64_t ldc_slack = 2) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> wdist(-127, 127), xdist(0, 255), pick(0, 9);
  std::vector<int8_t> w(static_cast<size_t>(rows * depth));
  for (int8_t& v : w) v = static_cast<int8_t>(pick(gen) == 0 ? (pick(gen) < 5 ? 127 : -127) : wdist(gen));
  QPackedWeights packed = QPackedWeights::pack(w.data(), rows, depth, depth);
  const int64_t x_stride = packed.steps() * kQStep + x_slack;
  std::vector<uint8_t> x(static_cast<size_t>(std::max<int64_t>(cols, 1) * x_stride));
  for (uint8_t& v : x) v = static_cast<uint8_t>(pick(gen) == 0 ? (pick(gen) < 5 ? 255 : 0) : xdist(gen));
  const int64_t ldc = rows + ldc_slack;
  std::vector<int32_t> want(static_cast<size_t>(cols * ldc), -7), got(want);
  qgemm_reference(w.data(), rows, depth, depth, cols, x.data(), x_stride, want.data(), ldc);
  qgemm(packed, cols, x.data(), x_stride, got.data(), ldc, pool);
  for (int64_t c = 0; c < cols; ++c)
    for (int64_t r = 0; r < ldc; ++r)
      ASSERT_EQ(got[static_cast<size_t>(c * ldc + r)], want[static_cast<size_t>(c * ldc + r)])
          << "rows=" << rows << " depth=" << depth << " cols=" << cols << " at col " << c << " row " << r
          << (r >= rows ? " (slack must stay untouched)" : "");
}

TEST_P(QgemmTest, MatchesReferenceOnEveryTail) {
  uint32_t seed = 1;
  for (int64_t rows : {1, 3, 15, 16, 17, 31, 32, 33, 48, 64, 70, 80, 100, 112})
    for (int64_t depth : {1, 2, 3, 4, 5, 7, 8, 9, 36, 63, 64, 65, 147})
      for (int64_t cols : {1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 25}) check_shape(rows, depth, cols, seed++, nullptr);
}

TEST_P(QgemmTest, ThreadedMatchesReference) {
  ThreadPool pool(2);
  uint32_t seed = 100;
  for (auto [rows, depth, cols] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {64, 576, 49}, {16, 144, 784}, {10, 64, 1}, {4096 / 16, 4096 / 16, 1}, {33, 5, 100}, {1, 1, 1}})
    check_shape(rows, depth, cols, seed++, &pool, 0, 0);
}

TEST_P(QgemmTest, ExtremesAtTheDepthLimitDoNotOverflow) {
  // Every product at its largest magnitude, over the longest depth int32 can hold.
  const int64_t depth = kQMaxDepth, rows = 18, cols = 2;
  std::vector<int8_t> w(static_cast<size_t>(rows * depth));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) w[static_cast<size_t>(r * depth + k)] = r % 2 ? -127 : 127;
  QPackedWeights packed = QPackedWeights::pack(w.data(), rows, depth, depth);
  const int64_t stride = packed.steps() * kQStep;
  std::vector<uint8_t> x(static_cast<size_t>(cols * stride), 255);
  std::vector<int32_t> got(static_cast<size_t>(cols * rows));
  qgemm(packed, cols, x.data(), stride, got.data(), rows, nullptr);
  for (int64_t r = 0; r < rows; ++r) {
    int64_t want = (r % 2 ? -1 : 1) * int64_t{255} * 127 * depth;
    EXPECT_EQ(got[static_cast<size_t>(r)], want) << "row " << r;
    EXPECT_EQ(got[static_cast<size_t>(rows + r)], want) << "row " << r;
  }
  EXPECT_LE(int64_t{255} * 127 * kQMaxDepth, int64_t{2147483647});
  EXPECT_GT(int64_t{255} * 127 * (kQMaxDepth + 1), int64_t{2147483647});
  EXPECT_THROW(QPackedWeights(1, kQMaxDepth + 1), Error);
}

TEST_P(QgemmTest, NamesItsKernel) {
  std::string name = qgemm_kernel_name();
  if (GetParam() == Isa::kScalar) {
    EXPECT_EQ(name, "scalar");
  } else if (GetParam() == Isa::kAvx2) {
    EXPECT_EQ(name, cpu_features().avx_vnni ? "avx2-vnni" : "avx2");
  } else {
    EXPECT_TRUE(name == "avx512-vnni" || name == "avx2-vnni" || name == "avx2") << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Isas, QgemmTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

// The AVX2 micro-kernels directly: where the CPU has AVX-VNNI the avx2 ISA runs the vpdpbusd ymm
// kernel, so the vpmaddubsw one (what AVX2 CPUs without it run) is checked here on its own, and
// the AVX-VNNI one likewise, every block shape they take.
TEST(QgemmAvx2Kernels, BothMicroKernelsMatchTheReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  std::vector<std::pair<const char*, void (*)(const QgemmBlock&)>> kernels = {{"vpmaddubsw", qgemm_block_avx2}};
  if (cpu_features().avx_vnni) kernels.push_back({"avx-vnni", qgemm_block_avxvnni});
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> wdist(-127, 127), xdist(0, 255);
  for (auto [name, block] : kernels)
    for (int64_t rows : {1, 15, 16, 17, 32, 40})
      for (int64_t depth : {4, 7, 64, 300})
        for (int64_t cols = 1; cols <= (block == qgemm_block_avx2 ? 4 : 6); ++cols) {
          std::vector<int8_t> w(static_cast<size_t>(rows * depth));
          for (int8_t& v : w) v = static_cast<int8_t>(wdist(gen));
          w[0] = 127;
          QPackedWeights packed = QPackedWeights::pack(w.data(), rows, depth, depth);
          const int64_t stride = packed.steps() * kQStep;
          std::vector<uint8_t> x(static_cast<size_t>(cols * stride));
          for (uint8_t& v : x) v = static_cast<uint8_t>(xdist(gen));
          x[0] = 255;
          const int64_t ldc = rows + 1;
          std::vector<int32_t> want(static_cast<size_t>(cols * ldc), -7), got(want);
          qgemm_reference(w.data(), rows, depth, depth, cols, x.data(), stride, want.data(), ldc);
          QgemmBlock b;
          b.panels = packed.data();
          b.steps = packed.steps();
          b.panel_count = (rows + kQPanelRows - 1) / kQPanelRows;
          b.rows_valid = rows;
          b.row_sums = packed.row_sums();
          b.x = x.data();
          b.x_stride = stride;
          b.cols = cols;
          b.c = got.data();
          b.ldc = ldc;
          block(b);
          ASSERT_EQ(got, want) << name << " rows=" << rows << " depth=" << depth << " cols=" << cols;
        }
}

TEST(QPackedWeights, RejectsMinus128) {
  int8_t w[4] = {1, -128, 3, 4};
  EXPECT_THROW(QPackedWeights::pack(w, 1, 4, 4), Error);
}

}  // namespace
}  // namespace tern::kernels
