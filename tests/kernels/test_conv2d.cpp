// conv2d (im2col + sgemm, pointwise pass-through, direct depthwise) vs conv2d_reference on every
// ISA the CPU has, over strides, pads, dilations, groups, kernel shapes, batches and epilogues.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/fp32/conv2d.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;
using testing::random_floats;

Conv2dShape make(int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t kh, int64_t kw, int64_t stride,
                 int64_t pad, int64_t groups = 1, int64_t dilation = 1) {
  Conv2dShape s;
  s.in_channels = cin;
  s.in_h = h;
  s.in_w = w;
  s.out_channels = cout;
  s.kernel_h = kh;
  s.kernel_w = kw;
  s.stride_h = s.stride_w = stride;
  s.pad_top = s.pad_left = s.pad_bottom = s.pad_right = pad;
  s.dilation_h = s.dilation_w = dilation;
  s.groups = groups;
  return s;
}

Conv2dShape with_pads(Conv2dShape s, int64_t top, int64_t left, int64_t bottom, int64_t right) {
  s.pad_top = top;
  s.pad_left = left;
  s.pad_bottom = bottom;
  s.pad_right = right;
  return s;
}

std::string describe(const Conv2dShape& s) {
  std::ostringstream out;
  out << "b" << s.batch << " " << s.in_channels << "x" << s.in_h << "x" << s.in_w << " -> " << s.out_channels << " k"
      << s.kernel_h << "x" << s.kernel_w << " s" << s.stride_h << "x" << s.stride_w << " p" << s.pad_top << ","
      << s.pad_left << "," << s.pad_bottom << "," << s.pad_right << " d" << s.dilation_h << "x" << s.dilation_w
      << " g" << s.groups;
  return out.str();
}

// Runs conv2d on shape s (with and without bias, with and without ReLU6, on a null pool and
// on pool) and compares each output with the reference within the reordering bound.
void check_conv(Conv2dShape s, ThreadPool* pool, uint32_t seed = 1) {
  const int64_t in_count = s.batch * s.in_channels * s.in_h * s.in_w;
  const int64_t w_count = s.out_channels * (s.in_channels / s.groups) * s.kernel_h * s.kernel_w;
  const int64_t out_count = s.batch * s.out_channels * s.out_h() * s.out_w();
  std::vector<float> input = random_floats(in_count, seed), weights = random_floats(w_count, seed + 1, -0.5f, 0.5f);
  std::vector<float> bias = random_floats(s.out_channels, seed + 2, -2.0f, 2.0f);
  PackedConvWeights packed(s, weights.data());

  // |input| * |weights| + |bias| bounds the rounding of any summation order.
  std::vector<float> abs_in(input), abs_w(weights), abs_bias(bias), magnitude(out_count);
  for (float& x : abs_in) x = std::fabs(x);
  for (float& x : abs_w) x = std::fabs(x);
  for (float& x : abs_bias) x = std::fabs(x);
  conv2d_reference(s, abs_in.data(), abs_w.data(), abs_bias.data(), magnitude.data(), {});

  for (bool with_bias : {false, true}) {
    for (bool relu6 : {false, true}) {
      Conv2dEpilogue ep;
      if (relu6) ep = Conv2dEpilogue{0.0f, 6.0f};
      const float* b = with_bias ? bias.data() : nullptr;
      std::vector<float> want(out_count), got(out_count, std::nanf(""));
      conv2d_reference(s, input.data(), weights.data(), b, want.data(), ep);
      for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), pool}) {
        conv2d(s, input.data(), packed, b, got.data(), ep, p);
        int64_t bad = 0, first = -1;
        for (int64_t i = 0; i < out_count; ++i) {
          if (!(std::fabs(got[i] - want[i]) <= 1e-5f * magnitude[i] + 1e-6f)) {
            if (first < 0) first = i;
            ++bad;
          }
        }
        EXPECT_EQ(bad, 0) << describe(s) << (with_bias ? " bias" : "") << (relu6 ? " relu6" : "")
                          << (p ? " pool" : " serial") << ": first mismatch at " << first << " got "
                          << (first >= 0 ? got[first] : 0) << " want " << (first >= 0 ? want[first] : 0);
      }
    }
  }
}

class Conv2dTest : public IsaTest {
 protected:
  void check(Conv2dShape s) {
    for (int64_t batch : {1, 3}) {
      s.batch = batch;
      check_conv(s, &pool_);
    }
  }
  ThreadPool pool_{2};
};

TEST_P(Conv2dTest, Dense3x3) {
  check(make(3, 5, 7, 8, 3, 3, 1, 1));
  check(make(16, 28, 28, 16, 3, 3, 1, 1));
  check(make(16, 28, 28, 32, 3, 3, 2, 1));
  check(make(5, 9, 9, 7, 3, 3, 2, 0));
  check(make(4, 1, 1, 6, 3, 3, 1, 1));  // 1x1 image: every tap but the centre is padding
}

TEST_P(Conv2dTest, PointwiseAndStrided1x1) {
  check(make(16, 7, 7, 24, 1, 1, 1, 0));  // im2col skipped
  check(make(33, 5, 7, 17, 1, 1, 1, 0));
  check(make(16, 14, 14, 32, 1, 1, 2, 0));  // ResNet projection
  check(make(8, 1, 1, 10, 1, 1, 1, 0));
  check(make(8, 5, 7, 10, 1, 1, 1, 1));  // padded 1x1 goes through im2col
}

TEST_P(Conv2dTest, OtherKernelShapes) {
  check(make(4, 9, 11, 6, 5, 5, 1, 2));
  check(make(3, 8, 8, 5, 5, 5, 2, 2));
  check(with_pads(make(6, 5, 7, 4, 1, 3, 1, 0), 0, 1, 0, 1));  // 1x3
  check(with_pads(make(6, 7, 5, 4, 3, 1, 1, 0), 1, 0, 1, 0));  // 3x1
}

TEST_P(Conv2dTest, AsymmetricPadsAndDilation) {
  check(with_pads(make(5, 9, 8, 7, 3, 3, 1, 0), 0, 1, 2, 0));
  check(with_pads(make(5, 9, 8, 7, 3, 3, 2, 0), 1, 0, 0, 2));
  check(make(6, 11, 10, 5, 3, 3, 1, 2, 1, 2));  // dilation 2
  Conv2dShape s = make(4, 12, 9, 6, 3, 3, 2, 1, 1, 2);
  s.stride_w = 1;
  s.dilation_h = 1;
  check(s);
}

TEST_P(Conv2dTest, Grouped) {
  check(make(8, 9, 7, 12, 3, 3, 1, 1, 2));
  check(make(8, 10, 10, 8, 3, 3, 2, 1, 4));
  check(make(6, 5, 7, 12, 3, 3, 1, 1, 6));  // channel multiplier 2: the grouped gemm path
  check(make(4, 6, 6, 4, 1, 1, 1, 0, 2));   // grouped pointwise
}

TEST_P(Conv2dTest, Depthwise) {
  check(make(16, 14, 14, 16, 3, 3, 1, 1, 16));
  check(make(16, 14, 14, 16, 3, 3, 2, 1, 16));
  check(make(7, 5, 7, 7, 3, 3, 1, 1, 7));
  check(make(7, 5, 7, 7, 3, 3, 2, 1, 7));
  check(make(5, 6, 6, 5, 3, 3, 1, 0, 5));  // unpadded stride 1: read in place
  check(make(3, 9, 11, 3, 5, 5, 1, 2, 3));
  check(make(3, 9, 11, 3, 5, 5, 2, 2, 3));
  check(make(4, 11, 9, 4, 3, 3, 1, 2, 4, 2));  // dilation 2
  check(with_pads(make(4, 8, 9, 4, 3, 3, 2, 0, 4), 0, 1, 1, 0));
  check(with_pads(make(4, 6, 7, 4, 1, 3, 1, 0, 4), 0, 1, 0, 1));  // 1x3
  check(make(6, 1, 1, 6, 3, 3, 1, 1, 6));
  check(make(6, 40, 37, 6, 3, 3, 1, 1, 6));  // rows longer than one vector step
  check(make(6, 40, 37, 6, 3, 3, 2, 1, 6));
  check(make(6, 4, 4, 6, 3, 3, 1, 1, 6));
  check(make(6, 4, 4, 6, 3, 3, 2, 1, 6));
  for (auto [sh, sw] : {std::pair{1, 2}, {2, 1}, {3, 3}}) {
    Conv2dShape s = make(5, 13, 21, 5, 3, 3, 1, 1, 5);
    s.stride_h = sh;
    s.stride_w = sw;
    check(s);
    check(with_pads(s, 0, 0, 1, 1));
  }
}

TEST_P(Conv2dTest, LargeEnoughToSplitOverThreads) {
  // Several MFLOP each, so that every path really runs split over the pool's threads.
  check(make(32, 28, 28, 32, 3, 3, 1, 1));     // shifted windows
  check(make(24, 28, 28, 40, 3, 3, 2, 1));     // shifted windows, stride 2, M not a panel multiple
  check(make(64, 28, 28, 64, 1, 1, 1, 0));     // pointwise
  check(make(64, 12, 12, 64, 7, 7, 1, 0));     // im2col fallback (junk columns would double the work)
  check(make(32, 20, 20, 64, 3, 3, 1, 1, 2));  // grouped
  check(make(256, 40, 40, 256, 3, 3, 1, 1, 256));  // depthwise
  check(make(256, 40, 40, 256, 3, 3, 2, 1, 256));
}

INSTANTIATE_TEST_SUITE_P(Isas, Conv2dTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

TEST(Conv2d, RejectsMismatchedShapes) {
  Conv2dShape s = make(4, 5, 5, 6, 3, 3, 1, 1);
  std::vector<float> w(6 * 4 * 9, 0.1f), in(4 * 25, 1.0f), out(6 * 25);
  PackedConvWeights packed(s, w.data());
  Conv2dShape other = s;
  other.out_channels = 8;
  EXPECT_THROW(conv2d(other, in.data(), packed, nullptr, out.data(), {}, nullptr), Error);
  Conv2dShape bad_groups = s;
  bad_groups.groups = 3;
  EXPECT_THROW(PackedConvWeights(bad_groups, w.data()), Error);
  Conv2dShape too_small = make(1, 2, 2, 1, 5, 5, 1, 0);
  EXPECT_THROW(PackedConvWeights(too_small, w.data()), Error);
  // The spatial size may change after packing.
  Conv2dShape bigger = s;
  bigger.in_h = 7;
  std::vector<float> in2(4 * 7 * 5, 1.0f), out2(6 * 7 * 5);
  EXPECT_NO_THROW(conv2d(bigger, in2.data(), packed, nullptr, out2.data(), {}, nullptr));
}

}  // namespace
}  // namespace tern::kernels
