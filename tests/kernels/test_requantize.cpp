// The integer engine's epilogue and depthwise kernel on every ISA, bit for bit against the
// reference loops: channel counts with every tail, 1-4 stacked terms, with and without a residual,
// a residual scaled per channel (a gate), a float output and codes (signed, unsigned, and unsigned
// with a zero point), values at the clamps and rounding ties, and each fused activation (on every
// ISA, the reference's bits). No terms and a residual is how the integer program turns float
// values into codes.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernel_test_util.h"
#include "kernels/activation_math.h"
#include "kernels/int8/requantize.h"

namespace tern::kernels {
namespace {

using testing::IsaTest;

class RequantizeTest : public IsaTest {};

TEST_P(RequantizeTest, EpilogueMatchesReference) {
  std::mt19937 gen(7);
  std::uniform_int_distribution<int32_t> accd(-40000, 40000), offd(-3000, 3000);
  std::uniform_real_distribution<float> md(1e-4f, 3e-3f), bd(-2.0f, 2.0f), rd(-3.0f, 3.0f);
  for (int64_t rows : {1, 5, 8, 15, 16, 17, 33, 64, 70})
    for (int terms : {0, 1, 2, 4})
      for (int variant = 0; variant < 12; ++variant) {
        const int64_t cols = 7, term_stride = rows + 3, acc_stride = terms * term_stride + 1;
        std::vector<int32_t> acc(static_cast<size_t>(cols * acc_stride)), offset(static_cast<size_t>(terms * term_stride));
        for (int32_t& v : acc) v = accd(gen);
        for (int32_t& v : offset) v = offd(gen);
        std::vector<float> mult(static_cast<size_t>(terms * term_stride)), bias(static_cast<size_t>(rows)),
            residual(static_cast<size_t>(cols * rows));
        for (float& v : mult) v = md(gen);
        for (float& v : bias) v = bd(gen);
        for (float& v : residual) v = rd(gen);
        // Exact rounding ties: a multiplier of 1/8 and integer sums land on .5 after inv_scale = 4.
        if (variant == 3) {
          for (float& v : mult) v = 0.125f;
          for (float& v : bias) v = 0.0f;
        }
        RequantArgs a;
        a.cols = cols;
        a.rows = rows;
        a.terms = terms;
        a.acc = acc.data();
        a.acc_stride = acc_stride;
        a.term_stride = term_stride;
        a.multiplier = mult.data();
        a.multiplier_term_stride = term_stride;
        a.offset = variant == 1 ? nullptr : offset.data();
        a.bias = bias.data();
        a.lo = variant == 0 ? 0.0f : -__builtin_inff();
        a.hi = variant == 0 ? 6.0f : __builtin_inff();
        std::vector<float> gate(static_cast<size_t>(rows));
        for (float& v : gate) v = md(gen) * 300.0f;
        if (variant == 1 || variant == 2 || variant == 4 || variant == 9 || terms == 0) {
          a.residual = residual.data();
          a.residual_stride = rows;
          a.lo2 = variant == 4 || terms == 0 ? -__builtin_inff() : 0.0f;  // negatives reach the zero point
          if (variant == 9) a.residual_scale = gate.data();  // a squeeze-excitation gate per channel
        }
        // Variants 5-8, 10, 11: each fused activation, on sums spread over [-100, 100] (exp's clamps
        // included); 10 and 11 GELU, dividing by sqrt(2) and multiplying by 1/sqrt(2).
        if (variant >= 5 && variant != 9) {
          a.act = variant == 10 ? Activation::kGelu : variant == 11 ? Activation::kGeluMul : static_cast<Activation>(variant - 4);
          a.act_alpha = variant == 5 ? 0.2f : variant == 10 ? 1.4142135f : variant == 11 ? 0.70710677f : 1.0f / 6.0f;
          a.act_beta = 0.5f;
          for (float& v : mult) v = 100.0f / 40000.0f;
        }
        a.inv_scale = variant == 3 ? 4.0f : 23.0f;
        a.qlo = variant == 2 ? -127.0f : variant == 4 ? -37.0f : 0.0f;  // variant 4: asymmetric, zero point 37
        a.qhi = variant == 2 ? 127.0f : variant == 4 ? 218.0f : 255.0f;
        a.zero = variant == 2 ? 128 : variant == 4 ? 37 : 0;
        std::vector<float> out_ref(static_cast<size_t>(cols * rows), -1), out(out_ref);
        std::vector<uint8_t> codes_ref(static_cast<size_t>(cols * rows), 7), codes(codes_ref);
        RequantArgs ref = a;
        ref.out = out_ref.data();
        ref.out_stride = rows;
        ref.codes = codes_ref.data();
        ref.codes_stride = rows;
        requantize_block_reference(ref);
        a.out = out.data();
        a.out_stride = rows;
        a.codes = codes.data();
        a.codes_stride = rows;
        requantize_block(a);
        ASSERT_EQ(std::memcmp(out.data(), out_ref.data(), out.size() * sizeof(float)), 0)
            << "rows=" << rows << " terms=" << terms << " variant=" << variant;
        ASSERT_EQ(codes, codes_ref) << "rows=" << rows << " terms=" << terms << " variant=" << variant;
        if (variant == 9 && terms == 0)  // no sums: the bias plus the gated values (no clamp)
          for (int64_t c = 0; c < cols; ++c)
            for (int64_t r = 0; r < rows; ++r) {
              const size_t i = static_cast<size_t>(c * rows + r);
              ASSERT_EQ(out[i], bias[static_cast<size_t>(r)] + residual[i] * gate[static_cast<size_t>(r)]) << "col " << c << " row " << r;
            }
      }
}

// The fused GELU is the exporters' node chain (x / sqrt(2), Erf, + 1, * x, * 0.5) rounded as those
// nodes round one by one, and within a few ulp of the exact function.
TEST(RequantizeGelu, IsTheExportersChainAndCloseToExact) {
  std::vector<float> x;
  for (float v = -9.0f; v <= 9.0f; v += 0.0137f) x.push_back(v);
  const int64_t rows = static_cast<int64_t>(x.size());
  const int32_t no_sums = 0;
  for (Activation act : {Activation::kGelu, Activation::kGeluMul}) {
    RequantArgs a;
    a.cols = 1;
    a.rows = rows;
    a.terms = 0;
    a.acc = &no_sums;
    a.bias = x.data();
    a.act = act;
    a.act_alpha = act == Activation::kGelu ? 1.4142135f : 0.70710677f;
    std::vector<float> out(x.size());
    a.out = out.data();
    requantize_block(a);
    for (size_t i = 0; i < x.size(); ++i) {
      volatile float t = act == Activation::kGelu ? x[i] / 1.4142135f : x[i] * 0.70710677f;  // one node at a time
      volatile float e = tern::kernels::erf_approx(t);
      volatile float s1 = e + 1.0f;
      volatile float m = x[i] * s1;
      const float chain = m * 0.5f;
      ASSERT_EQ(out[i], chain) << x[i];
      const double exact = 0.5 * x[i] * (1.0 + std::erf(x[i] / std::sqrt(2.0)));
      ASSERT_NEAR(out[i], exact, 4e-7 * std::max(1.0, std::fabs(exact))) << x[i];
    }
  }
}

// Codes round half away from zero exactly as std::round, on every ISA: ties, and the floats just
// below a half (0.49999997 + 0.5 would round up to 1).
TEST_P(RequantizeTest, CodesRoundLikeStdRound) {
  const float below_half = std::nextafter(0.5f, 0.0f);
  std::vector<float> values = {0.5f, -0.5f, 1.5f, -1.5f, 2.5f, -2.5f, 126.5f, -126.5f, below_half, -below_half,
                               std::nextafter(1.5f, 0.0f), std::nextafter(2.5f, 0.0f), std::nextafter(0.25f, 0.0f),
                               0.0f, -0.0f, 3.0f, 99.49999f, -7.5000005f};
  while (values.size() % 16 != 5) values.push_back(std::nextafter(static_cast<float>(values.size()) + 0.5f, 0.0f));
  const int64_t rows = static_cast<int64_t>(values.size());
  const std::vector<float> zeros(static_cast<size_t>(rows), 0.0f);
  const int32_t no_sums = 0;
  RequantArgs a;
  a.cols = 1;
  a.rows = rows;
  a.terms = 0;
  a.acc = &no_sums;
  a.bias = zeros.data();
  a.residual = values.data();
  a.residual_stride = rows;
  a.inv_scale = 1.0f;
  a.qlo = -127.0f;
  a.qhi = 127.0f;
  a.zero = 128;
  std::vector<uint8_t> codes(static_cast<size_t>(rows));
  a.codes = codes.data();
  a.codes_stride = rows;
  requantize_block(a);
  for (int64_t r = 0; r < rows; ++r) {
    const float v = std::min(std::max(values[static_cast<size_t>(r)], -127.0f), 127.0f);
    EXPECT_EQ(codes[static_cast<size_t>(r)], static_cast<uint8_t>(static_cast<int32_t>(std::round(v)) + 128))
        << "value " << values[static_cast<size_t>(r)];
  }
}

using DepthwiseRow = void (*)(const uint8_t*, int64_t, const int64_t*, int64_t, const int8_t*, int64_t, int64_t, int32_t*);

// Pixel steps of 2 pixels (stride 2) and of 1 (stride 1: with unpadded pixels, one run of
// out_w x channels elements on the VNNI kernels, its weights repeating every `channels`), rows of 5
// and 37 pixels, the extremes of u8 x s8 in some rows.
void check_depthwise_row(DepthwiseRow row, const char* name) {
  std::mt19937 gen(9);
  std::uniform_int_distribution<int> xd(0, 255), wd(-128, 127);
  for (int64_t channels : {1, 7, 16, 24, 31, 32, 33, 48, 72, 96, 120, 144})
    for (int64_t kernel : {2, 3, 5})  // 4, 9 and 25 taps (a last group of taps padded with zeros)
      for (int64_t step : {2, 1})
        for (int64_t out_w : {5, 37}) {
          const int64_t stride = (channels + 3) / 4 * 4, width = step * out_w + kernel, taps = kernel * kernel;
          const bool extremes = out_w == 37 && channels % 2 == 0;
          std::vector<uint8_t> x(static_cast<size_t>((kernel + 1) * width * stride));
          for (uint8_t& v : x) v = extremes ? 255 : static_cast<uint8_t>(xd(gen));
          std::vector<int8_t> w(static_cast<size_t>(taps * channels));
          for (int8_t& v : w) v = extremes ? -128 : static_cast<int8_t>(wd(gen));
          std::vector<int64_t> tap_offset;
          for (int64_t t = 0; t < taps; ++t) tap_offset.push_back(((t / kernel) * width + t % kernel) * stride);
          std::vector<int32_t> want(static_cast<size_t>(out_w * channels), -7), got(want);
          depthwise_row_int8_reference(x.data(), step * stride, tap_offset.data(), taps, w.data(), channels, out_w,
                                       want.data());
          row(x.data(), step * stride, tap_offset.data(), taps, w.data(), channels, out_w, got.data());
          ASSERT_EQ(got, want) << name << " channels=" << channels << " taps=" << taps << " step=" << step
                               << " out_w=" << out_w;
        }
}

TEST_P(RequantizeTest, DepthwiseRowMatchesReference) { check_depthwise_row(depthwise_row_int8, "dispatch"); }

// The AVX2-level kernels directly: where the CPU has AVX-VNNI the avx2 ISA runs the vpdpbusd ymm
// kernel, so the vpmaddwd one (AVX2 alone) is checked on its own, and the AVX-VNNI one for every
// channel count (the dispatch gives it only runs of 32 elements or more).
TEST(DepthwiseAvx2Kernels, BothMatchTheReference) {
  if (!isa_supported(Isa::kAvx2)) GTEST_SKIP() << "CPU lacks avx2";
  check_depthwise_row(depthwise_row_int8_avx2, "vpmaddwd");
  if (cpu_features().avx_vnni) check_depthwise_row(depthwise_row_int8_avxvnni, "avx-vnni");
}

// The epilogue's e^x (activation_math.h, also the FP32 Sigmoid's) against libm: within 2 ulp over
// the range it does not clamp, and the clamped ends stay finite and ordered.
TEST(ActivationMath, ExpIsWithinTwoUlpOfLibm) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.0f; x += 0.0137f) {
    double want = std::exp(static_cast<double>(x));
    float got = exp_approx(x);
    double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(want)) - 23);
    worst = std::max(worst, std::fabs(got - want) / ulp);
  }
  EXPECT_LE(worst, 2.0);
  EXPECT_EQ(exp_approx(0.0f), 1.0f);
  EXPECT_GT(exp_approx(-1000.0f), 0.0f);
  EXPECT_TRUE(std::isfinite(exp_approx(1000.0f)));
  EXPECT_EQ(exp_approx(std::nanf("")), exp_approx(-87.0f));  // as vmaxps clamps it; no NaN reaches the int cast
  EXPECT_EQ(sigmoid(1000.0f), 1.0f);
  EXPECT_LT(sigmoid(-1000.0f), 1e-37f);
  EXPECT_NEAR(sigmoid(1.0f), 1.0 / (1.0 + std::exp(-1.0)), 1e-7);
}

// erf_approx against libm over [-6, 6] and tiny arguments: within 3 ulp; odd; +-1 in the tails;
// NaN stays NaN.
TEST(ActivationMath, ErfIsWithinThreeUlpOfLibm) {
  double worst = 0;
  float at = 0;
  auto check = [&](float x) {
    const float want = std::erf(x), got = erf_approx(x);
    ASSERT_EQ(erf_approx(-x), -got) << x;
    if (want == 0.0f) return;
    const double ulp = std::nextafter(std::fabs(want), 2.0f) - std::fabs(want);
    const double e = std::fabs(static_cast<double>(got) - want) / ulp;
    if (e > worst) worst = e, at = x;
  };
  for (int i = -600000; i <= 600000; ++i) check(static_cast<float>(i) * 1e-5f);
  for (float x = 1e-30f; x < 1.0f; x *= 1.01f) check(x);
  EXPECT_LE(worst, 3.0) << "at " << at;
  EXPECT_EQ(erf_approx(0.0f), 0.0f);
  EXPECT_EQ(erf_approx(10.0f), 1.0f);
  EXPECT_EQ(erf_approx(-1e30f), -1.0f);
  EXPECT_TRUE(std::isnan(erf_approx(std::nanf(""))));
}

INSTANTIATE_TEST_SUITE_P(Isas, RequantizeTest, ::testing::ValuesIn(testing::all_isas()), testing::isa_name);

}  // namespace
}  // namespace tern::kernels
