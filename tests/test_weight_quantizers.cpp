// The per-group weight quantizers against brute force over every code pattern, plus invariants.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/quantizers.h"

namespace tern::quant {
namespace {

// Enumerates all 3^n ternary patterns, calling f(pattern).
template <typename F>
void for_each_ternary(size_t n, F f) {
  std::vector<int8_t> t(n, -1);
  for (;;) {
    f(t);
    size_t i = 0;
    while (i < n && t[i] == 1) t[i++] = -1;
    if (i == n) return;
    ++t[i];
  }
}

double norm2(const std::vector<float>& w) {
  double s = 0;
  for (float v : w) s += static_cast<double>(v) * v;
  return s;
}

// min over t, alpha >= 0 of ||w - alpha t||^2: for fixed t the best alpha is max(0, <t,w>)/|t|^2.
double brute_force_l2(const std::vector<float>& w) {
  double best = norm2(w);
  for_each_ternary(w.size(), [&](const std::vector<int8_t>& t) {
    double dot = 0, k = 0;
    for (size_t i = 0; i < w.size(); ++i) dot += t[i] * static_cast<double>(w[i]), k += t[i] != 0;
    if (k > 0 && dot > 0) best = std::min(best, norm2(w) - dot * dot / k);
  });
  return best;
}

// Separate best scales for the +1 and -1 positions.
double brute_force_l2_asymmetric(const std::vector<float>& w) {
  double best = norm2(w);
  for_each_ternary(w.size(), [&](const std::vector<int8_t>& t) {
    double sp = 0, sn = 0, kp = 0, kn = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (t[i] > 0) sp += w[i], ++kp;
      if (t[i] < 0) sn -= w[i], ++kn;
    }
    double gain = (kp > 0 && sp > 0 ? sp * sp / kp : 0) + (kn > 0 && sn > 0 ? sn * sn / kn : 0);
    best = std::min(best, norm2(w) - gain);
  });
  return best;
}

double brute_force_best_cosine(const std::vector<float>& w) {
  double best = 0;
  for_each_ternary(w.size(), [&](const std::vector<int8_t>& t) {
    double dot = 0, k = 0;
    for (size_t i = 0; i < w.size(); ++i) dot += t[i] * static_cast<double>(w[i]), k += t[i] != 0;
    if (k > 0) best = std::max(best, dot / std::sqrt(k * norm2(w)));
  });
  return best;
}

std::vector<std::vector<float>> test_groups() {
  std::vector<std::vector<float>> groups = {
      {0.0f},
      {0, 0, 0, 0},
      {1, 1, 1, 1},
      {1, -1, 1, -1, 1, -1, 1, -1},     // all-equal magnitudes, mixed signs
      {3, 1, 1},                        // ties just below the optimum's boundary
      {2, 2, 1, 1, 0, 0, -2, -1},       // ties and zeros
      {5, 0, 0, 0, 0, 0, 0, 0},         // one non-zero
      {-1e-20f, 1e-20f, 3e10f, -3e10f}, // huge dynamic range
      {0.5f, -0.25f, 0.125f, -0.0625f, 0.03125f, 0, 0, 1},
  };
  for (uint32_t seed = 1; seed <= 60; ++seed) {
    size_t n = 1 + seed % 8;
    groups.push_back(tern::testing::random_floats(n, seed));
  }
  return groups;
}

TEST(Ternarize, L2IsTheExactOptimum) {
  for (const auto& w : test_groups()) {
    std::vector<int8_t> codes(w.size());
    GroupScales s = ternarize_l2(w, codes);
    EXPECT_EQ(s.positive, s.negative);
    double got = reconstruction_error(w, codes, s), want = brute_force_l2(w);
    EXPECT_NEAR(got, want, 1e-6 * (norm2(w) + 1e-30)) << "group of " << w.size();
  }
}

TEST(Ternarize, AsymmetricIsTheExactOptimumAndNeverWorse) {
  for (const auto& w : test_groups()) {
    std::vector<int8_t> codes(w.size()), sym(w.size());
    GroupScales s = ternarize_l2_asymmetric(w, codes);
    double got = reconstruction_error(w, codes, s);
    EXPECT_NEAR(got, brute_force_l2_asymmetric(w), 1e-6 * (norm2(w) + 1e-30));
    EXPECT_LE(got, reconstruction_error(w, sym, ternarize_l2(w, sym)) * (1 + 1e-6) + 1e-30);
  }
}

TEST(Ternarize, TntMaximizesCosineSimilarity) {
  for (const auto& w : test_groups()) {
    if (norm2(w) == 0) continue;
    std::vector<int8_t> codes(w.size());
    ternarize_tnt(w, codes);
    double dot = 0, k = 0;
    for (size_t i = 0; i < w.size(); ++i) dot += codes[i] * static_cast<double>(w[i]), k += codes[i] != 0;
    ASSERT_GT(k, 0);
    EXPECT_NEAR(dot / std::sqrt(k * norm2(w)), brute_force_best_cosine(w), 1e-9);
  }
}

TEST(Ternarize, L2AtLeastAsGoodAsTwnAndTnt) {
  for (const auto& w : test_groups()) {
    std::vector<int8_t> a(w.size()), b(w.size());
    double l2 = reconstruction_error(w, a, ternarize_l2(w, a));
    double l2_asym = reconstruction_error(w, a, ternarize_l2_asymmetric(w, a));
    for (auto method : {ternarize_twn, ternarize_tnt}) {
      GroupScales own = method(w, b);
      // Their codes with the best single scale: symmetric FGQ is at least as good.
      double k = 0, dot = 0;
      for (size_t i = 0; i < w.size(); ++i) dot += b[i] * static_cast<double>(w[i]), k += b[i] != 0;
      float alpha = static_cast<float>(k ? std::max(0.0, dot / k) : 0.0);
      EXPECT_LE(l2, reconstruction_error(w, b, {alpha, alpha}) * (1 + 1e-6) + 1e-30);
      // Their own scales (TNT's are per sign): asymmetric FGQ is at least as good.
      EXPECT_LE(l2_asym, reconstruction_error(w, b, own) * (1 + 1e-6) + 1e-30);
    }
  }
}

TEST(Ternarize, ThresholdSeparatesZerosFromNonZeros) {
  // Integer-valued weights keep the arithmetic exact.
  for (uint32_t seed = 1; seed < 200; ++seed) {
    auto r = tern::testing::random_floats(16, seed);
    std::vector<float> w;
    for (float v : r) w.push_back(std::round(v * 4));
    std::vector<int8_t> codes(w.size());
    GroupScales s = ternarize_l2(w, codes);
    for (size_t i = 0; i < w.size(); ++i) {
      EXPECT_EQ(codes[i] != 0, std::fabs(w[i]) > s.threshold) << "seed " << seed << " index " << i;
      if (codes[i]) EXPECT_EQ(codes[i] > 0, w[i] > 0);
    }
    // alpha is the mean magnitude of the support.
    double sum = 0, k = 0;
    for (size_t i = 0; i < w.size(); ++i)
      if (codes[i]) sum += std::fabs(w[i]), ++k;
    if (k) EXPECT_FLOAT_EQ(s.positive, static_cast<float>(sum / k));
  }
}

TEST(Ternarize, TwnThresholdIsSevenTenthsOfMeanMagnitude) {
  std::vector<float> w = {1, -2, 3, -4, 0, 0.5f};  // mean |w| = 10.5 / 6 = 1.75, delta = 1.225
  std::vector<int8_t> codes(w.size());
  GroupScales s = ternarize_twn(w, codes);
  EXPECT_FLOAT_EQ(s.threshold, 1.225f);
  EXPECT_EQ(codes, (std::vector<int8_t>{0, -1, 1, -1, 0, 0}));
  EXPECT_FLOAT_EQ(s.positive, 3.0f);  // mean of 2, 3, 4
}

TEST(Quantize, SymmetricIntegerAndBinary) {
  std::vector<float> w = {-1.0f, -0.52f, 0.0f, 0.26f, 1.0f};
  std::vector<int8_t> codes(w.size());
  GroupScales s = quantize_symmetric(w, 4, codes);  // qmax 7, scale 1/7
  EXPECT_FLOAT_EQ(s.positive, 1.0f / 7);
  EXPECT_EQ(codes, (std::vector<int8_t>{-7, -4, 0, 2, 7}));
  std::vector<float> ties = {-0.5f, 0.5f, 1.0f};  // 2 bits: qmax 1, scale 1; exact halves round away from zero
  std::vector<int8_t> tie_codes(3);
  quantize_symmetric(ties, 2, tie_codes);
  EXPECT_EQ(tie_codes, (std::vector<int8_t>{-1, 1, 1}));
  quantize_symmetric(w, 8, codes);
  EXPECT_EQ(codes[4], 127);
  EXPECT_THROW(quantize_symmetric(w, 1, codes), Error);
  EXPECT_THROW(quantize_symmetric(w, 9, codes), Error);
  GroupScales b = binarize(w, codes);
  EXPECT_EQ(codes, (std::vector<int8_t>{-1, -1, 1, 1, 1}));
  EXPECT_FLOAT_EQ(b.positive, 2.78f / 5);
  std::vector<float> bad = {1.0f, NAN};
  std::vector<int8_t> c2(2);
  EXPECT_THROW(ternarize_l2(bad, c2), Error);
}

}  // namespace
}  // namespace tern::quant
