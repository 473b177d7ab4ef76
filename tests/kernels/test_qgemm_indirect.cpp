// qgemm_indirect (implicit-GEMM convolution) on every ISA, bit for bit against qgemm_reference on
// an explicit im2col of the same padded NHWC input: 1x1, 3x3, strided, dilated and grouped
// convolutions, row and column tails, and the extremes of u8 x s8.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/int8/qgemm_indirect.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

class QgemmIndirectTest : public IsaTest {};

struct ConvCase {
  int64_t h, w, channels, rows, kernel, stride, dilation, group_offset;  // group_offset: first channel read
  int64_t group_channels;
};

void check_conv(const ConvCase& k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> wdist(-127, 127), xdist(0, 255), pick(0, 9);
  const int64_t out_h = (k.h - k.dilation * (k.kernel - 1) - 1) / k.stride + 1;
  const int64_t out_w = (k.w - k.dilation * (k.kernel - 1) - 1) / k.stride + 1;
  const int64_t taps = k.kernel * k.kernel, depth = taps * k.group_channels, steps = depth / kQStep;
  ASSERT_EQ(depth % kQStep, 0);
  std::vector<uint8_t> x(static_cast<size_t>(k.h * k.w * k.channels));
  for (uint8_t& v : x) v = static_cast<uint8_t>(pick(gen) == 0 ? (pick(gen) < 5 ? 255 : 0) : xdist(gen));
  std::vector<int8_t> w(static_cast<size_t>(k.rows * depth));
  for (int8_t& v : w) v = static_cast<int8_t>(pick(gen) == 0 ? (pick(gen) < 5 ? 127 : -127) : wdist(gen));
  QPackedWeights packed = QPackedWeights::pack(w.data(), k.rows, depth, depth);

  const int64_t cols = out_h * out_w;
  std::vector<const uint8_t*> base(static_cast<size_t>(cols));
  std::vector<uint8_t> patches(static_cast<size_t>(cols * depth));
  for (int64_t oh = 0; oh < out_h; ++oh)
    for (int64_t ow = 0; ow < out_w; ++ow) {
      int64_t n = oh * out_w + ow;
      base[static_cast<size_t>(n)] = &x[static_cast<size_t>(((oh * k.stride) * k.w + ow * k.stride) * k.channels + k.group_offset)];
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = 0; c < k.group_channels; ++c) {
          int64_t ih = oh * k.stride + (t / k.kernel) * k.dilation, iw = ow * k.stride + (t % k.kernel) * k.dilation;
          patches[static_cast<size_t>(n * depth + t * k.group_channels + c)] =
              x[static_cast<size_t>((ih * k.w + iw) * k.channels + k.group_offset + c)];
        }
    }
  std::vector<int64_t> offset(static_cast<size_t>(steps));
  for (int64_t s = 0; s < steps; ++s) {
    int64_t t = s * kQStep / k.group_channels, c = s * kQStep % k.group_channels;
    offset[static_cast<size_t>(s)] = ((t / k.kernel) * k.dilation * k.w + (t % k.kernel) * k.dilation) * k.channels + c;
  }
  const int64_t ldc = k.rows + 3;
  std::vector<int32_t> want(static_cast<size_t>(cols * ldc), -7), got(want), oracle(want);
  qgemm_reference(w.data(), k.rows, depth, depth, cols, patches.data(), depth, want.data(), ldc);
  qgemm_indirect_reference(packed.data(), k.rows, steps, cols, base.data(), offset.data(), oracle.data(), ldc);
  qgemm_indirect(packed.data(), packed.row_sums(), k.rows, steps, cols, base.data(), offset.data(), got.data(), ldc);
  ASSERT_EQ(oracle, want) << "the indirect reference disagrees with im2col";
  for (size_t i = 0; i < want.size(); ++i)
    ASSERT_EQ(got[i], want[i]) << "rows=" << k.rows << " kernel=" << k.kernel << " at col " << i / ldc << " row "
                               << i % ldc << (static_cast<int64_t>(i % ldc) >= k.rows ? " (slack must stay untouched)" : "");
}

TEST_P(QgemmIndirectTest, MatchesIm2colReference) {
  uint32_t seed = 1;
  for (ConvCase k : std::vector<ConvCase>{
           {7, 7, 16, 16, 3, 1, 1, 0, 16},   // a ResNet block at its smallest
           {9, 9, 32, 33, 3, 2, 1, 0, 32},   // strided, a row tail
           {6, 5, 8, 5, 1, 1, 1, 0, 8},      // 1x1, fewer rows than a panel
           {8, 8, 4, 70, 3, 1, 2, 0, 4},     // dilated, several panels
           {6, 6, 24, 12, 3, 1, 1, 8, 8},    // the second of three groups
           {30, 30, 16, 16, 3, 1, 1, 0, 16}, // many column blocks, a column tail
           {1, 1, 64, 48, 1, 1, 1, 0, 64},   // one column
           {5, 5, 16, 20, 3, 1, 1, 0, 16},   // 9 columns: tiles of 5 and 4
           {3, 16, 8, 40, 3, 1, 1, 0, 8},    // one row of 14: tiles of 7 and 7, evenly spaced
           {6, 10, 16, 64, 3, 1, 1, 0, 16},  // 4 panels: tiles of 6 columns (8 = 6 + 2 would not fit)
           {8, 9, 8, 112, 1, 1, 1, 0, 8},    // 7 panels: a group of 4, then 3 (3 x 8 tiles)
           {5, 12, 16, 100, 3, 1, 1, 0, 16}, // 4 + 3 panels, the last with a row tail
           {4, 31, 8, 80, 1, 1, 1, 0, 8},    // 4 + 1 panels, 31-column rows over 24-column chunks
           {5, 5, 16, 96, 3, 1, 1, 0, 16}})  // 4 + 2 panels on unevenly spaced columns
    check_conv(k, seed++);
}

INSTANTIATE_TEST_SUITE_P(Isas, QgemmIndirectTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

}  // namespace
}  // namespace tern::kernels
