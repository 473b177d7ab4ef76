// Layer-level weight quantization: grouping geometry, multiplication counts, zero fraction, SQNR.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/weight_quantization.h"

namespace tern::quant {
namespace {

// Every weight lands in exactly one group, groups are numbered densely, and sizes are N except one
// smaller remainder group per filter (or per layer, for clusters).
void check_partition(const WeightGrouping& g, const std::map<int64_t, int64_t>& expected_sizes_histogram) {
  std::vector<int64_t> size(static_cast<size_t>(g.count()), 0);
  for (int64_t o = 0; o < g.out; ++o)
    for (int64_t c = 0; c < g.in; ++c)
      for (int64_t t = 0; t < g.taps; ++t) {
        int64_t gi = g.group_of(o, c, t);
        ASSERT_GE(gi, 0);
        ASSERT_LT(gi, g.count());
        ++size[static_cast<size_t>(gi)];
      }
  std::map<int64_t, int64_t> histogram;
  for (int64_t s : size) ++histogram[s];
  EXPECT_EQ(histogram, expected_sizes_histogram) << g.describe();
}

TEST(Grouping, InputChannelsWithRemainder) {
  auto g = WeightGrouping::for_layer(/*out*/ 2, /*in*/ 6, /*taps*/ 9, /*N*/ 4, false);
  EXPECT_EQ(g.axis, GroupAxis::kInputChannels);
  EXPECT_EQ(g.groups_per_filter(), 2 * 9);  // channel blocks {0..3}, {4,5} at each of 9 taps
  EXPECT_EQ(g.count(), 36);
  check_partition(g, {{2, 18}, {4, 18}});
  EXPECT_EQ(g.group_of(1, 5, 8), g.count() - 1);
  EXPECT_EQ(g.group_of(0, 0, 3), g.group_of(0, 3, 3));
  EXPECT_NE(g.group_of(0, 3, 3), g.group_of(0, 4, 3));
}

TEST(Grouping, DepthwiseGroupsAlongTaps) {
  auto g = WeightGrouping::for_layer(8, 1, 9, 4, false);
  EXPECT_EQ(g.axis, GroupAxis::kKernelTaps);
  EXPECT_EQ(g.groups_per_filter(), 3);  // taps {0..3}, {4..7}, {8}
  check_partition(g, {{4, 16}, {1, 8}});
}

TEST(Grouping, WholeFilterAndClusters) {
  auto whole = WeightGrouping::for_layer(5, 16, 9, kWholeFilter, false);
  EXPECT_EQ(whole.groups_per_filter(), 1);
  check_partition(whole, {{144, 5}});
  auto clusters = WeightGrouping::for_layer(10, 3, 9, 4, true);
  EXPECT_EQ(clusters.count(), 3);
  check_partition(clusters, {{108, 2}, {54, 1}});
  EXPECT_THROW(WeightGrouping::for_layer(5, 16, 9, -2, false), Error);
  EXPECT_THROW(WeightGrouping::for_layer(0, 16, 9, 4, false), Error);
}

TEST(Grouping, MultiplicationsEliminatedOnAHandComputedLayer) {
  // 3x3 conv, 16 -> 8 channels: 144 MACs per output. N=4: 4 blocks x 9 taps = 36 multiplies (75% gone);
  // N=64 > 16 channels: one block per tap, 9 multiplies; whole filter: 1.
  EXPECT_EQ(WeightGrouping::for_layer(8, 16, 9, 4, false).multiplies_per_output(), 36);
  EXPECT_EQ(WeightGrouping::for_layer(8, 16, 9, 64, false).multiplies_per_output(), 9);
  EXPECT_EQ(WeightGrouping::for_layer(8, 16, 9, kWholeFilter, false).multiplies_per_output(), 1);
}

TEST(QuantizeWeights, GroupsAreQuantizedIndependentlyWithTheExactOptimum) {
  const int64_t out = 3, in = 5, taps = 4;
  std::vector<float> w = tern::testing::random_floats(static_cast<size_t>(out * in * taps), 21);
  WeightQuantConfig exact{WeightFormat::kTernary, TernaryMethod::kFgq, 2, 2};
  exact.float_scales = true;  // the per-group optimum itself, without rounding scales to 8 bits
  QuantizedWeights q = quantize_weights(w, out, in, taps, exact);
  ASSERT_EQ(q.scales.size(), static_cast<size_t>(q.grouping.count()));
  EXPECT_TRUE(q.filter_steps.empty());
  // Re-derive one group by hand: filter 1, channels {2,3}, tap 1.
  std::vector<float> group = {w[(1 * in + 2) * taps + 1], w[(1 * in + 3) * taps + 1]};
  std::vector<int8_t> codes(2);
  GroupScales s = ternarize_l2(group, codes);
  int64_t gi = q.grouping.group_of(1, 2, 1);
  EXPECT_EQ(q.scales[static_cast<size_t>(gi)].positive, s.positive);
  EXPECT_EQ(q.codes[(1 * in + 2) * taps + 1], codes[0]);
  EXPECT_EQ(q.codes[(1 * in + 3) * taps + 1], codes[1]);
  EXPECT_FLOAT_EQ(q.dequantized(1, 3, 1), codes[1] * s.positive);
}

TEST(QuantizeWeights, TwoLevelScalesAreEightBitMultiplesOfAFilterStep) {
  const int64_t out = 4, in = 16, taps = 9;
  std::vector<float> w = tern::testing::random_floats(static_cast<size_t>(out * in * taps), 5);
  WeightQuantConfig config{WeightFormat::kTernary, TernaryMethod::kFgq, 2, 4};
  QuantizedWeights q = quantize_weights(w, out, in, taps, config);
  config.float_scales = true;
  QuantizedWeights exact = quantize_weights(w, out, in, taps, config);
  ASSERT_EQ(q.filter_steps.size(), static_cast<size_t>(out));
  const int64_t per_filter = q.grouping.groups_per_filter();
  for (int64_t o = 0; o < out; ++o) {
    float step = q.filter_steps[static_cast<size_t>(o)], top = 0;
    for (int64_t g = o * per_filter; g < (o + 1) * per_filter; ++g) {
      const ScalePair& s = q.scales[static_cast<size_t>(g)];
      const ScalePair& e = exact.scales[static_cast<size_t>(g)];
      top = std::max(top, e.positive);
      float u = std::round(s.positive / step);
      EXPECT_TRUE(u >= 0 && u <= kScaleUnitMax && u * step == s.positive) << "group " << g;
      EXPECT_LE(std::fabs(s.positive - e.positive), 0.5f * step * 1.0001f) << "group " << g;
    }
    EXPECT_FLOAT_EQ(step, top / static_cast<float>(kScaleUnitMax));
  }
  // Per-channel groups (one per filter) keep float scales: nothing to gain.
  config = {WeightFormat::kInt, TernaryMethod::kFgq, 8, 0};
  EXPECT_TRUE(quantize_weights(w, out, in, taps, config).filter_steps.empty());
  // The rounding costs little: within 0.5 dB of the exact optimum here.
  EXPECT_GT(q.sqnr_db, exact.sqnr_db - 0.5);
}

TEST(QuantizeWeights, LogarithmicScaleUnits) {
  const float top = 0.75f;
  EXPECT_EQ(unit_scale(0, top, true), 0.0f);
  EXPECT_EQ(unit_scale(255, top, true), top);
  EXPECT_EQ(unit_scale(255 - 16, top, true), top / 2);
  for (float s : {0.75f, 0.5f, 0.1f, 1e-3f, 3e-5f}) {
    float r = unit_scale(scale_unit(s, top, true), top, true);
    EXPECT_NEAR(r, s, s * 0.022f) << s;  // half a 2^(1/16) step
  }
  EXPECT_EQ(scale_unit(1e-9f, top, true), 0);  // far below the grid: zero
  for (int u = 0; u < 256; ++u)               // every unit decodes and re-encodes to itself
    EXPECT_EQ(scale_unit(unit_scale(static_cast<uint8_t>(u), top, true), top, true), u);
}

TEST(ResidualExpansion, ErrorStrictlyFallsWithEveryNonZeroTerm) {
  const int64_t out = 6, in = 10, taps = 9;
  for (uint32_t seed : {1u, 2u, 3u}) {
    std::vector<float> w = tern::testing::random_floats(static_cast<size_t>(out * in * taps), seed);
    for (WeightQuantConfig config : {WeightQuantConfig{WeightFormat::kTernary, TernaryMethod::kFgq, 2, 4},
                                     WeightQuantConfig{WeightFormat::kTernary, TernaryMethod::kFgq, 2, kWholeFilter},
                                     WeightQuantConfig{WeightFormat::kTernary, TernaryMethod::kFgqAsymmetric, 2, 8}}) {
      QuantizedWeights first = quantize_weights(w, out, in, taps, config);
      std::vector<QuantizedWeights> terms = expand_residual(w, out, in, taps, config, first, 6);
      ASSERT_GE(terms.size(), 3u) << "seed " << seed;
      EXPECT_EQ(terms[0].codes, first.codes);
      double previous = expansion_error(w, {terms[0]});
      for (size_t k = 1; k < terms.size(); ++k) {
        EXPECT_EQ(terms[k].grouping.describe(), first.grouping.describe());
        EXPECT_TRUE(std::any_of(terms[k].codes.begin(), terms[k].codes.end(), [](int8_t c) { return c != 0; }));
        double e = expansion_error(w, std::vector<QuantizedWeights>(terms.begin(), terms.begin() + static_cast<long>(k) + 1));
        EXPECT_LT(e, previous) << "term " << k << " seed " << seed;
        previous = e;
      }
    }
  }
  // An exactly ternary weight tensor needs one term: the residual is zero.
  std::vector<float> exact(36);
  for (size_t i = 0; i < exact.size(); ++i) exact[i] = static_cast<float>(static_cast<int>(i % 3) - 1) * 0.5f;
  WeightQuantConfig whole{WeightFormat::kTernary, TernaryMethod::kFgq, 2, kWholeFilter};
  EXPECT_EQ(expand_residual(exact, 4, 9, 1, whole, quantize_weights(exact, 4, 9, 1, whole), 4).size(), 1u);
}

TEST(QuantizeWeights, ZeroFractionAndSqnr) {
  // One filter, N=4, weights chosen so the optimum keeps exactly the two large ones per group.
  std::vector<float> w = {1.0f, -1.0f, 0.01f, 0.0f, 0.9f, 0.02f, -1.1f, 0.0f};
  QuantizedWeights q = quantize_weights(w, 1, 8, 1, {WeightFormat::kTernary, TernaryMethod::kFgq, 2, 4});
  EXPECT_EQ(q.codes, (std::vector<int8_t>{1, -1, 0, 0, 1, 0, -1, 0}));
  EXPECT_DOUBLE_EQ(q.zero_fraction, 0.5);
  double noise = 0.01 * 0.01 + 0.1 * 0.1 + 0.02 * 0.02 + 0.1 * 0.1, signal = 1 + 1 + 1e-4 + 0.81 + 4e-4 + 1.21;
  EXPECT_NEAR(q.sqnr_db, 10 * std::log10(signal / noise), 1e-3);
  // More bits, less noise.
  QuantizedWeights q8 = quantize_weights(w, 1, 8, 1, {WeightFormat::kInt, TernaryMethod::kFgq, 8, 4});
  EXPECT_GT(q8.sqnr_db, q.sqnr_db + 20);
  QuantizedWeights per_tensor = quantize_weights(w, 1, 8, 1, {WeightFormat::kInt, TernaryMethod::kFgq, 4, -1});
  EXPECT_EQ(per_tensor.grouping.count(), 1);
}

TEST(QuantizeWeights, SmallerGroupsNeverIncreaseTheError) {
  // Refining the partition can only lower the per-layer L2 error of the exact method.
  std::vector<float> w = tern::testing::random_floats(16 * 32 * 9, 33);
  double previous = -1;
  for (int64_t n : {kWholeFilter, int64_t{32}, int64_t{16}, int64_t{8}, int64_t{4}, int64_t{2}, int64_t{1}}) {
    QuantizedWeights q = quantize_weights(w, 16, 32, 9, {WeightFormat::kTernary, TernaryMethod::kFgq, 2, n});
    if (previous >= 0) {
      EXPECT_GE(q.sqnr_db, previous - 1e-9) << "N=" << n;
    }
    previous = q.sqnr_db;
  }
}

TEST(QuantizeWeights, BadConfigurations) {
  std::vector<float> w(8, 0.5f);
  EXPECT_THROW(quantize_weights(w, 1, 8, 1, {WeightFormat::kTernary, TernaryMethod::kFgq, 2, -3}), Error);
  EXPECT_THROW(quantize_weights(w, 1, 8, 1, {WeightFormat::kInt, TernaryMethod::kFgq, 9, 4}), Error);
  EXPECT_THROW(quantize_weights(w, 1, 4, 1, {WeightFormat::kTernary, TernaryMethod::kFgq, 2, 4}), Error);
  EXPECT_THROW(quantize_weights(w, 1, 8, 1, {WeightFormat::kFloat32, TernaryMethod::kFgq, 32, 4}), Error);
}

}  // namespace
}  // namespace tern::quant
