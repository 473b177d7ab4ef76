// Reduced-precision accumulation: rounding to m mantissa bits, sums at m bits (plain and chunked),
// the Monte-Carlo variance retention ratio, the analytic model against it over a grid of n, m and
// chunk sizes, the minimal-width search (analytic and Monte-Carlo), per-layer accumulation lengths
// and the emulated GEMM (fast == reference, bit for bit).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>
#include <vector>

#include "kernels/cpu_features.h"
#include "onnx_builder.h"
#include "tern/accumulation.h"
#include "tern/error.h"
#include "tern/onnx_import.h"

namespace tern::accum {
namespace {

using tern::testing::OnnxBuilder;

// Restores the kernel ISA when a test leaves.
struct IsaGuard {
  ~IsaGuard() { kernels::set_isa_override(std::nullopt); }
};

TEST(RoundToMantissa, HandExamples) {
  // m = 2: [1, 2) holds 1, 1.25, 1.5, 1.75.
  EXPECT_EQ(round_to_mantissa(1.1, 2), 1.0);
  EXPECT_EQ(round_to_mantissa(1.2, 2), 1.25);
  EXPECT_EQ(round_to_mantissa(1.125, 2), 1.0);   // tie: to the even mantissa 00
  EXPECT_EQ(round_to_mantissa(1.375, 2), 1.5);   // tie between 01 and 10
  EXPECT_EQ(round_to_mantissa(1.875, 2), 2.0);   // tie between 11 and 2.0: carries into the exponent
  EXPECT_EQ(round_to_mantissa(-1.375, 2), -1.5);
  EXPECT_EQ(round_to_mantissa(-1.1, 2), -1.0);
  // m = 1: 2, 3, 4, 6, ...
  EXPECT_EQ(round_to_mantissa(2.5, 1), 2.0);
  EXPECT_EQ(round_to_mantissa(3.5, 1), 4.0);
  EXPECT_EQ(round_to_mantissa(5.0, 1), 4.0);
  EXPECT_EQ(round_to_mantissa(5.1, 1), 6.0);
  // m = 3, below 1: 0.3 = 1.2 * 2^-2 -> 1.25 * 2^-2.
  EXPECT_EQ(round_to_mantissa(0.3, 3), 0.3125);
  EXPECT_EQ(round_to_mantissa(1000.0, 4), 992.0);  // 1000 = 1.953125 * 2^9 -> 1.9375 * 2^9
  EXPECT_EQ(round_to_mantissa(0.0, 5), 0.0);
  EXPECT_TRUE(std::signbit(round_to_mantissa(-0.0, 5)));
}

TEST(RoundToMantissa, PowersOfTwoAndIdentity) {
  for (int e = -1022; e <= 1023; e += 7)  // normal powers (subnormals below 2^(-1022-m) are not m-bit values)
    for (int m : {1, 2, 10, 23, 51, 52}) {
      const double p = std::ldexp(1.0, e);
      EXPECT_EQ(round_to_mantissa(p, m), p);
      EXPECT_EQ(round_to_mantissa(-p, m), -p);
    }
  const double values[] = {0.1, -3.14159, 1e-300, 4.9e-324, 1.7e308, -2.5e-310, 12345.678};
  for (double v : values) EXPECT_EQ(std::bit_cast<uint64_t>(round_to_mantissa(v, 52)), std::bit_cast<uint64_t>(v));
}

TEST(RoundToMantissa, KeepsOnlyMBitsAndIsNearest) {
  uint64_t state = 7;
  for (int i = 0; i < 2000; ++i) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double x = std::ldexp(1.0 + static_cast<double>(state >> 12) * 0x1p-52, static_cast<int>(state % 200) - 100) *
                     ((state >> 5) & 1 ? 1 : -1);
    for (int m : {1, 3, 8, 23, 40}) {
      const double r = round_to_mantissa(x, m);
      int e = 0;
      const double frac = std::frexp(r, &e);  // |frac| in [0.5, 1): m + 1 significant bits
      EXPECT_EQ(std::ldexp(frac, m + 1), std::trunc(std::ldexp(frac, m + 1)));
      // Within half a unit in the last place of the m-bit format.
      std::frexp(x, &e);
      EXPECT_LE(std::abs(r - x), std::ldexp(1.0, e - 1 - m - 1));
    }
  }
}

TEST(RoundToMantissa, SpecialValuesAndRange) {
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(round_to_mantissa(inf, 3), inf);
  EXPECT_EQ(round_to_mantissa(-inf, 3), -inf);
  EXPECT_TRUE(std::isnan(round_to_mantissa(std::nan(""), 3)));
  // A NaN whose payload would carry into the sign if it were rounded.
  EXPECT_TRUE(std::isnan(round_to_mantissa(std::bit_cast<double>(0x7fffffffffffffffull), 3)));
  EXPECT_EQ(round_to_mantissa(std::numeric_limits<double>::max(), 10), inf);  // overflows like IEEE
  // Subnormals keep the quantum 2^(-1022-m): with m = 51 that is 2 * denorm_min; 3 * denorm_min is a
  // tie between 2 (odd multiple of the quantum) and 4 (even).
  const double d = std::numeric_limits<double>::denorm_min();
  EXPECT_EQ(round_to_mantissa(3 * d, 51), 4 * d);
  EXPECT_EQ(round_to_mantissa(5 * d, 51), 4 * d);
  EXPECT_THROW(round_to_mantissa(1.0, 0), Error);
  EXPECT_THROW(round_to_mantissa(1.0, 53), Error);
}

TEST(RoundToMantissa, FloatVersion) {
  EXPECT_EQ(round_to_mantissa(1.375f, 2), 1.5f);
  EXPECT_EQ(round_to_mantissa(1.125f, 2), 1.0f);
  EXPECT_EQ(round_to_mantissa(0.1f, 23), 0.1f);
  EXPECT_EQ(round_to_mantissa(std::numeric_limits<float>::max(), 5), std::numeric_limits<float>::infinity());
  EXPECT_THROW(round_to_mantissa(1.0f, 24), Error);
  // Normal floats round exactly as their double values do.
  uint32_t state = 3;
  for (int i = 0; i < 5000; ++i) {
    state = state * 1664525u + 1013904223u;
    float x = std::bit_cast<float>((state & 0x807fffffu) | ((64u + state % 128u) << 23));
    for (int m : {1, 4, 11, 22})
      EXPECT_EQ(round_to_mantissa(x, m), static_cast<float>(round_to_mantissa(static_cast<double>(x), m))) << x;
  }
}

TEST(AddRounded, RoundsTheExactSumOnce) {
  // 1.25 + (0.125 - 2^-55): the double sum is the tie 1.375, which would round to even (1.5); the
  // exact sum lies below the tie, so m = 2 gives 1.25.
  EXPECT_EQ(add_rounded(1.25, 0.125 - 0x1p-55, 2), 1.25);
  EXPECT_EQ(add_rounded(1.0, 0.125 + 0x1p-55, 2), 1.25);   // above the tie 1.125 (even: 1.0)
  EXPECT_EQ(add_rounded(-1.25, -0.125 + 0x1p-55, 2), -1.25);
  EXPECT_EQ(add_rounded(1.0, 0.125, 2), 1.0);  // a true tie: to even
  EXPECT_EQ(add_rounded(1.0, 1e-300, 52), 1.0);
}

TEST(Accumulate, SwampingAndChunks) {
  // m = 2: [4, 8) holds 4, 5, 6, 7. 4 + 0.5 is a tie that rounds back to 4, every time.
  const std::vector<double> terms = {4, 0.5, 0.5, 0.5, 0.5};
  EXPECT_EQ(accumulate(terms, 2, 0), 4.0);
  EXPECT_EQ(accumulate(terms, 2, 4), 4.0);  // {4, .5, .5, .5} -> 4, {.5} -> 0.5; 4 + 0.5 -> 4
  EXPECT_EQ(accumulate(terms, 2, 2), 6.0);  // {4, .5} -> 4, {.5, .5} -> 1, {.5}; 5 + 0.5 -> 6 (tie to even)
  EXPECT_EQ(accumulate(terms, 2, 5), 4.0);  // one chunk: unchunked
  EXPECT_EQ(accumulate(terms, 52, 0), 6.0);
  EXPECT_EQ(accumulate(std::vector<double>{}, 5, 0), 0.0);
  EXPECT_EQ(accumulate(std::vector<double>{1.1}, 2, 0), 1.0);  // the first term is rounded too
  EXPECT_THROW(accumulate(terms, 0, 0), Error);
  EXPECT_THROW(accumulate(terms, 5, -1), Error);
}

VrrOptions few_trials(int64_t trials, uint64_t seed = 1) {
  VrrOptions o;
  o.trials = trials;
  o.seed = seed;
  return o;
}

TEST(Vrr, WideAccumulatorsRetainAllVariance) {
  for (int m : {52, 40}) {
    VrrEstimate e = variance_retention_ratio(1000, m, 0, few_trials(64));
    EXPECT_EQ(e.trials, 64);
    EXPECT_NEAR(e.vrr, 1.0, std::max(3 * e.std_error, 1e-12)) << m;
    EXPECT_LT(e.error_ratio, 1e-18) << m;
  }
}

TEST(Vrr, FallsAsTheMantissaShrinks) {
  std::vector<VrrEstimate> curve = vrr_curve(4096, 1, 20, 0, few_trials(128));
  ASSERT_EQ(curve.size(), 20u);
  EXPECT_LT(curve[0].vrr, 0.1);  // m = 1: almost everything is swamped
  for (int m = 1; m < 6; ++m) EXPECT_LT(curve[m - 1].vrr, curve[m].vrr) << m;
  // Past the swamped widths, the error's variance shrinks by about 4x per bit.
  for (int m = 5; m < 20; ++m) EXPECT_LT(curve[m].error_ratio, 0.6 * curve[m - 1].error_ratio) << m;
  // One m alone uses the same draws as the curve.
  VrrEstimate one = variance_retention_ratio(4096, 5, 0, few_trials(128));
  EXPECT_EQ(one.vrr, curve[4].vrr);
  EXPECT_EQ(one.std_error, curve[4].std_error);
  // Products of normals are swamped too, and the seed matters.
  VrrOptions product = few_trials(128);
  product.terms = TermDistribution::kProduct;
  EXPECT_LT(variance_retention_ratio(4096, 3, 0, product).vrr, 0.5);
  EXPECT_NE(variance_retention_ratio(4096, 5, 0, few_trials(128, 2)).vrr, curve[4].vrr);
}

TEST(Vrr, ChunkingNeverLosesMoreVariance) {
  for (int64_t n : {256, 1024, 4096})
    for (int64_t chunk : {16, 64}) {
      std::vector<VrrEstimate> plain = vrr_curve(n, 1, 12, 0, few_trials(96));
      std::vector<VrrEstimate> chunked = vrr_curve(n, 1, 12, chunk, few_trials(96));
      for (size_t i = 0; i < plain.size(); ++i) {
        const std::string where = "n " + std::to_string(n) + " chunk " + std::to_string(chunk) + " m " + std::to_string(i + 1);
        const double slack = 3 * (plain[i].std_error + chunked[i].std_error);
        EXPECT_LE(1 - chunked[i].vrr, std::max(0.0, 1 - plain[i].vrr) + slack) << where;
        EXPECT_LE(chunked[i].error_ratio, plain[i].error_ratio + 3 * (plain[i].error_std_error + chunked[i].error_std_error))
            << where;
      }
    }
}

TEST(Vrr, KernelsAgreeBitForBit) {
  if (!kernels::isa_supported(kernels::Isa::kAvx512)) GTEST_SKIP() << "no AVX-512";
  IsaGuard guard;
  for (int64_t chunk : {0, 5, 64}) {
    kernels::set_isa_override(kernels::Isa::kScalar);
    std::vector<VrrEstimate> generic = vrr_curve(777, 1, 40, chunk, few_trials(8));
    kernels::set_isa_override(kernels::Isa::kAvx512);
    std::vector<VrrEstimate> avx512 = vrr_curve(777, 1, 40, chunk, few_trials(8));
    for (size_t i = 0; i < generic.size(); ++i) {
      EXPECT_EQ(generic[i].vrr, avx512[i].vrr) << i;
      EXPECT_EQ(generic[i].error_ratio, avx512[i].error_ratio) << i;
    }
  }
}

TEST(Vrr, RejectsBadArguments) {
  EXPECT_THROW(variance_retention_ratio(0, 5, 0), Error);
  EXPECT_THROW(variance_retention_ratio(10, 0, 0), Error);
  EXPECT_THROW(variance_retention_ratio(10, 53, 0), Error);
  EXPECT_THROW(variance_retention_ratio(10, 5, -1), Error);
  EXPECT_THROW(variance_retention_ratio(10, 5, 0, few_trials(1)), Error);
  EXPECT_THROW(vrr_curve(10, 6, 5, 0), Error);
}

TEST(Criterion, ParsesAndDecides) {
  EXPECT_EQ(parse_criterion("error-variance").name(), "error-variance:50");
  EXPECT_EQ(parse_criterion("variance-lost:20").name(), "variance-lost:20");
  EXPECT_EQ(parse_criterion("retention:0.001").name(), "retention:0.001");
  for (const char* bad : {"retention:2", "retention:x", "variance-lost:1", "loss", "error-variance:"})
    EXPECT_THROW(parse_criterion(bad), Error) << bad;
  VrrEstimate e;
  e.vrr = 0.995;
  e.error_ratio = 0.001;
  EXPECT_TRUE(parse_criterion("retention:0.01").accepts(e, 1000));
  EXPECT_FALSE(parse_criterion("retention:0.001").accepts(e, 1000));
  EXPECT_FALSE(parse_criterion("variance-lost:50").accepts(e, 1000));  // 5 terms lost > ln 50
  EXPECT_TRUE(parse_criterion("variance-lost:50").accepts(e, 100));
  EXPECT_TRUE(parse_criterion("error-variance:50").accepts(e, 1000));  // 1 term's variance
  EXPECT_FALSE(parse_criterion("error-variance:50").accepts(e, 10000));
}

TEST(MinMantissa, MonotoneInNAndChunkingHelps) {
  MantissaSearch search;
  search.vrr.trials = 128;
  int previous = 0;
  for (int64_t n : {16, 64, 256, 1024, 4096, 16384}) {
    const int m = min_mantissa_bits(n, 0, search), chunked = min_mantissa_bits(n, 32, search);
    EXPECT_GE(m, previous) << n;
    EXPECT_LE(chunked, m) << n;
    previous = m;
  }
  EXPECT_GE(previous, 8);  // 16384 terms need a real accumulator
  EXPECT_LE(previous, 16);
  search.criterion = parse_criterion("retention:0.01");
  EXPECT_LE(min_mantissa_bits(16384, 0, search), previous);
  EXPECT_THROW(min_mantissa_bits(0, 0, search), Error);
}

// The analytic model against the Monte-Carlo estimate of the same quantity, the accumulation
// error's variance, over n, m, chunk sizes and both term distributions: within a factor 1.4 (a
// quarter of a bit; docs/accumulation.md gives the spread seen with 2048 trials, lowest where
// thousands of terms are lost) wherever the simulation measures it to 10 %, from heavy swamping to a fraction of one
// term's variance.
TEST(AnalyticVrr, MatchesMonteCarloOverAGrid) {
  int compared = 0;
  for (TermDistribution terms : {TermDistribution::kNormal, TermDistribution::kProduct})
    for (int64_t n : {64, 512, 4096, 32768})
      for (int64_t chunk : {0, 32, 64}) {
        VrrOptions o;
        o.trials = n >= 32768 ? 256 : 1024;
        o.terms = terms;
        const std::vector<VrrEstimate> curve = vrr_curve(n, 3, 14, chunk, o);
        for (const VrrEstimate& mc : curve) {
          if (mc.error_std_error > 0.10 * mc.error_ratio || mc.error_ratio * static_cast<double>(n) < 1e-3) continue;
          const AnalyticVrr a = analytic_vrr(n, mc.mantissa_bits, chunk, terms);
          const double ratio = a.error_ratio / mc.error_ratio;
          EXPECT_TRUE(ratio > 1 / 1.4 && ratio < 1.4) << term_distribution_name(terms) << " n=" << n << " chunk=" << chunk << " m=" << mc.mantissa_bits
                             << ": analytic " << a.error_ratio * n << " terms, Monte-Carlo " << mc.error_ratio * n << " +- "
                             << mc.error_std_error * n;
          EXPECT_NEAR(a.vrr, 1.0 - a.error_ratio, 1e-12);
          ++compared;
        }
      }
  EXPECT_GT(compared, 120);
}

TEST(AnalyticVrr, ShapeOfTheModel) {
  // Each bit quarters the error once swamping is rare; chunking lowers it; m = 2 swamps most
  // addends of a long sum and m = 20 none; one term is only rounded.
  for (int m = 10; m < 16; ++m) {
    const double q = analytic_vrr(4096, m).error_ratio / analytic_vrr(4096, m + 1).error_ratio;
    EXPECT_GT(q, 3.5) << m;
    EXPECT_LT(q, 4.5) << m;
  }
  for (int m : {4, 8, 12}) EXPECT_LT(analytic_vrr(16384, m, 64).error_ratio, analytic_vrr(16384, m).error_ratio) << m;
  EXPECT_GT(analytic_vrr(16384, 2).swamped, 0.5);
  EXPECT_LT(analytic_vrr(16384, 20).swamped, 1e-4);
  EXPECT_LT(analytic_vrr(1, 23).error_ratio, 1e-14);
  EXPECT_EQ(analytic_vrr(100, 8, 100).error_ratio, analytic_vrr(100, 8, 0).error_ratio);  // one chunk = unchunked
  EXPECT_THROW(analytic_vrr(0, 8), Error);
  EXPECT_THROW(analytic_vrr(10, 0), Error);
  EXPECT_THROW(analytic_vrr(10, 53), Error);
  EXPECT_THROW(analytic_vrr(10, 8, -1), Error);
}

// The default search (analytic model, the paper's variance-lost criterion) and the project's own
// (Monte-Carlo error variance) agree within a bit.
TEST(MinMantissa, AnalyticDefaultAgreesWithMonteCarloWithinABit) {
  MantissaSearch analytic;
  EXPECT_EQ(analytic.estimator, Estimator::kAnalytic);
  EXPECT_EQ(analytic.criterion.name(), "variance-lost:50");
  MantissaSearch mc;
  mc.estimator = Estimator::kMonteCarlo;
  mc.criterion = parse_criterion("error-variance");
  mc.vrr.trials = 256;
  for (int64_t n : {64, 1024, 16384, 131072})
    for (int64_t chunk : {0, 64}) {
      const int a = min_mantissa_bits(n, chunk, analytic), m = min_mantissa_bits(n, chunk, mc);
      EXPECT_LE(std::abs(a - m), 1) << "n=" << n << " chunk=" << chunk << ": analytic " << a << ", Monte-Carlo " << m;
    }
  EXPECT_EQ(parse_estimator("monte-carlo"), Estimator::kMonteCarlo);
  EXPECT_STREQ(estimator_name(Estimator::kAnalytic), "analytic");
  EXPECT_THROW(parse_estimator("exact"), Error);
}

// conv1 (4 -> 8, 3x3, pad 1) -> conv2 (8 -> 16, 3x3, stride 2) -> depthwise (16, 3x3) -> Flatten -> Gemm (256 -> 10)
Graph small_network() {
  OnnxBuilder b;
  b.input("x", {-1, 4, 8, 8});
  b.floats("w1", {8, 4, 3, 3}, tern::testing::random_floats(288, 1));
  b.floats("w2", {16, 8, 3, 3}, tern::testing::random_floats(1152, 2));
  b.floats("w3", {16, 1, 3, 3}, tern::testing::random_floats(144, 3));
  b.floats("fc", {10, 256}, tern::testing::random_floats(2560, 4));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"a"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  auto& c2 = b.node("Conv", {"a", "w2"}, {"b"}, "conv2");
  OnnxBuilder::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(c2, "strides", std::vector<int64_t>{2, 2});
  auto& c3 = b.node("Conv", {"b", "w3"}, {"c"}, "depthwise");
  OnnxBuilder::attr(c3, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(c3, "group", int64_t{16});
  auto& f = b.node("Flatten", {"c"}, {"f"}, "flatten");
  OnnxBuilder::attr(f, "axis", int64_t{1});
  auto& g = b.node("Gemm", {"f", "fc"}, {"y"}, "fc");
  OnnxBuilder::attr(g, "transB", int64_t{1});
  b.output("y");
  return import_onnx_bytes(b.bytes(), "small.onnx");
}

TEST(Layers, AccumulationLengths) {
  MantissaSearch search;
  search.vrr.trials = 16;
  std::vector<LayerAccumulation> layers = layer_accumulation(small_network(), 32, 16, search);
  ASSERT_EQ(layers.size(), 4u);
  struct Expected {
    const char* node;
    const char* op;
    int64_t forward, backward, weight;
    bool input_gradient;
  };
  const Expected expected[] = {
      {"conv1", "Conv", 4 * 9, 8 * 9, 32 * 64, false},
      {"conv2", "Conv", 8 * 9, 16 * 2 * 2, 32 * 16, true},  // stride 2: an input meets at most 2 x 2 taps
      {"depthwise", "Conv", 9, 9, 32 * 16, true},
      {"fc", "Gemm", 256, 10, 32, true},
  };
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerAccumulation& l = layers[i];
    EXPECT_EQ(l.node, expected[i].node);
    EXPECT_EQ(l.op, expected[i].op);
    EXPECT_EQ(l.forward_n, expected[i].forward) << l.node;
    EXPECT_EQ(l.backward_n, expected[i].backward) << l.node;
    EXPECT_EQ(l.weight_grad_n, expected[i].weight) << l.node;
    EXPECT_EQ(l.input_gradient, expected[i].input_gradient) << l.node;
    for (auto [m, chunked] : {std::pair{l.forward_m, l.forward_m_chunked}, {l.backward_m, l.backward_m_chunked},
                              {l.weight_grad_m, l.weight_grad_m_chunked}}) {
      EXPECT_GE(m, 1) << l.node;
      EXPECT_GE(chunked, 1) << l.node;
      EXPECT_LE(chunked, m + 1) << l.node;  // noisy with 16 trials, but chunks never cost much
    }
  }
  // Equal lengths get equal widths (one search per distinct n).
  EXPECT_EQ(layers[2].forward_m, layers[2].backward_m);
  EXPECT_EQ(layers[1].weight_grad_m, layers[2].weight_grad_m);
  EXPECT_THROW(layer_accumulation(small_network(), 0, 16, search), Error);
  EXPECT_THROW(layer_accumulation(small_network(), 8, -1, search), Error);
}

// ---- GEMM ----

std::vector<float> wide_floats(size_t n, uint32_t seed, bool small_integers) {
  std::vector<float> v = tern::testing::random_floats(n, seed);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    // Small integers make exact ties frequent; otherwise spread the exponents over 2^-8..2^8.
    v[i] = small_integers ? std::round(v[i] * 3.0f) : std::ldexp(v[i], static_cast<int>(seed >> 28) - 8);
  }
  return v;
}

void expect_same_bits(const std::vector<float>& x, const std::vector<float>& y, const std::string& where) {
  ASSERT_EQ(x.size(), y.size());
  EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)), 0) << where;
}

void expect_fast_matches_reference(int64_t M, int64_t N, int64_t K, bool integers, const std::vector<int>& ms,
                                   const std::vector<int64_t>& chunks) {
  std::vector<float> a = wide_floats(static_cast<size_t>(M * K), 11 + static_cast<uint32_t>(M), integers);
  std::vector<float> b = wide_floats(static_cast<size_t>(K * N), 23 + static_cast<uint32_t>(N), integers);
  for (int m : ms)
    for (int64_t chunk : chunks) {
      std::vector<float> ref(static_cast<size_t>(M * N), -1.0f), fast(ref), generic(ref);
      gemm_reduced_accumulation_reference(a.data(), b.data(), ref.data(), M, N, K, m, chunk);
      kernels::set_isa_override(std::nullopt);
      gemm_reduced_accumulation(a.data(), b.data(), fast.data(), M, N, K, m, chunk);
      kernels::set_isa_override(kernels::Isa::kScalar);
      gemm_reduced_accumulation(a.data(), b.data(), generic.data(), M, N, K, m, chunk);
      const std::string where = std::to_string(M) + "x" + std::to_string(N) + "x" + std::to_string(K) + " m " +
                                std::to_string(m) + " chunk " + std::to_string(chunk) + (integers ? " integers" : "");
      expect_same_bits(ref, fast, where);
      expect_same_bits(ref, generic, where + " (scalar)");
    }
}

TEST(Gemm, FastMatchesReferenceBitForBit) {
  IsaGuard guard;
  // Around the 16- and 8-column groups, 4-row groups and 16 x 64 tasks.
  const std::tuple<int64_t, int64_t, int64_t> small[] = {{1, 1, 1},    {1, 17, 5},   {3, 8, 7},    {5, 33, 64},
                                                         {4, 16, 100}, {7, 130, 37}, {9, 65, 129}, {2, 3, 0}};
  for (auto [M, N, K] : small)
    for (bool integers : {false, true})
      expect_fast_matches_reference(M, N, K, integers, {1, 5, 10, 23}, {0, 1, 7, 64, K, K + 1});
  // Across blocks of 256 k (chunk boundaries inside and across blocks).
  const std::tuple<int64_t, int64_t, int64_t> large[] = {{18, 75, 300}, {33, 140, 513}, {2, 9, 1000}};
  for (auto [M, N, K] : large)
    for (bool integers : {false, true}) expect_fast_matches_reference(M, N, K, integers, {9}, {0, 7, 100, 256, K + 1});
}

TEST(Gemm, ElementsAreAccumulateOfTheProducts) {
  const int64_t M = 3, N = 5, K = 50;
  std::vector<float> a = wide_floats(M * K, 5, false), b = wide_floats(K * N, 6, false), c(M * N);
  gemm_reduced_accumulation(a.data(), b.data(), c.data(), M, N, K, 7, 8);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      std::vector<double> products;
      for (int64_t k = 0; k < K; ++k) products.push_back(static_cast<double>(a[i * K + k]) * b[k * N + j]);
      EXPECT_EQ(c[i * N + j], static_cast<float>(accumulate(products, 7, 8)));
    }
  // m = 23 with small integers: exact sums.
  std::vector<float> ai = wide_floats(M * K, 7, true), bi = wide_floats(K * N, 8, true);
  gemm_reduced_accumulation(ai.data(), bi.data(), c.data(), M, N, K, 23, 0);
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      double exact = 0;
      for (int64_t k = 0; k < K; ++k) exact += static_cast<double>(ai[i * K + k]) * bi[k * N + j];
      EXPECT_EQ(c[i * N + j], static_cast<float>(exact));
    }
}

TEST(Gemm, SingleRoundingOfInexactTies) {
  // acc = 2^30 + 2^20 (odd at m = 10, unit 2^20), then + (2^19 - 2^-25) = (1 + 2^-22) * 2^19 (1 - 2^-22):
  // the double sum drops 2^-25 and lands on the tie 2^30 + 2^20 + 2^19, which would round to even
  // (2^30 + 2^21); the exact sum is below the tie, so it rounds back to 2^30 + 2^20. With the signs
  // of the second product flipped, the exact sum is above the tie 2^30 + 2^19 and rounds up to 2^30 + 2^20.
  IsaGuard guard;
  const int64_t N = 21;  // one full AVX-512 tile of 16 and a masked tail
  const float x = 1.0f + 0x1p-22f, y = 0x1p19f * (1.0f - 0x1p-22f);
  for (float sign : {1.0f, -1.0f}) {
    const std::vector<float> a = {1.0f, x};
    std::vector<float> b(2 * N);
    for (int64_t j = 0; j < N; ++j) {
      b[j] = 0x1p30f + 0x1p20f;
      b[N + j] = sign * y;
    }
    for (std::optional<kernels::Isa> isa : {std::optional<kernels::Isa>{}, std::optional{kernels::Isa::kScalar}}) {
      kernels::set_isa_override(isa);
      std::vector<float> c(N), ref(N);
      gemm_reduced_accumulation(a.data(), b.data(), c.data(), 1, N, 2, 10, 0);
      gemm_reduced_accumulation_reference(a.data(), b.data(), ref.data(), 1, N, 2, 10, 0);
      for (int64_t j = 0; j < N; ++j) {
        EXPECT_EQ(c[j], 0x1p30f + 0x1p20f) << sign << " " << j;
        EXPECT_EQ(ref[j], 0x1p30f + 0x1p20f) << sign << " " << j;
      }
    }
  }
}

TEST(Gemm, RejectsBadArguments) {
  float a = 1, b = 1, c = 0;
  EXPECT_THROW(gemm_reduced_accumulation(&a, &b, &c, 1, 1, 1, 0, 0), Error);
  EXPECT_THROW(gemm_reduced_accumulation(&a, &b, &c, 1, 1, 1, 24, 0), Error);
  EXPECT_THROW(gemm_reduced_accumulation(&a, &b, &c, 1, 1, 1, 10, -1), Error);
  EXPECT_THROW(gemm_reduced_accumulation(&a, &b, &c, -1, 1, 1, 10, 0), Error);
  EXPECT_THROW(gemm_reduced_accumulation(nullptr, &b, &c, 1, 1, 1, 10, 0), Error);
  EXPECT_THROW(gemm_reduced_accumulation_reference(&a, &b, &c, 1, 1, 1, 30, 0), Error);
  gemm_reduced_accumulation(nullptr, nullptr, nullptr, 0, 0, 0, 10, 0);  // nothing to do
}

}  // namespace
}  // namespace tern::accum
