// Activation calibration: the histogram against direct binning, each method against brute force on
// the raw samples, and the scale / quantization conventions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "tern/calibration.h"
#include "tern/error.h"

namespace tern::quant {
namespace {

std::vector<float> gaussian(size_t n, float sigma, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<float> laplace(size_t n, float b, uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<float> dist(1.0f / b);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = (i % 2 ? 1.0f : -1.0f) * dist(rng);
  return v;
}

std::vector<float> relu(std::vector<float> v) {
  for (float& x : v) x = std::max(x, 0.0f);
  return v;
}

ActivationHistogram histogram_of(const std::vector<float>& v, int bins = 2048) {
  ActivationHistogram h(bins);
  h.add(v);
  return h;
}

// The values a calibration ranks: |x| signed, max(x, 0) unsigned.
std::vector<double> magnitudes(const std::vector<float>& v, bool is_unsigned) {
  std::vector<double> m;
  for (float x : v) m.push_back(is_unsigned ? std::max(x, 0.0f) : std::fabs(x));
  return m;
}

// Mean squared error of quantizing the raw samples at threshold t.
double true_mse(const std::vector<float>& v, float t, int bits, bool is_unsigned) {
  const float qmax = static_cast<float>(activation_qmax(bits, is_unsigned)), qmin = is_unsigned ? 0.0f : -qmax;
  const float scale = t / qmax;
  double sum = 0;
  for (float x : v) {  // quantize_activation, inlined: this runs 10^8 times
    double e = x - std::round(std::clamp(x / scale, qmin, qmax)) * static_cast<double>(scale);
    sum += e * e;
  }
  return sum / static_cast<double>(v.size());
}

TEST(Calibration, ParsesMethodNames) {
  EXPECT_EQ(parse_calibration_method("minmax"), CalibrationMethod::kMinMax);
  EXPECT_EQ(parse_calibration_method("percentile"), CalibrationMethod::kPercentile);
  EXPECT_EQ(parse_calibration_method("mse"), CalibrationMethod::kMse);
  EXPECT_EQ(parse_calibration_method("entropy"), CalibrationMethod::kEntropy);
  for (auto m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kMse,
                 CalibrationMethod::kEntropy})
    EXPECT_EQ(parse_calibration_method(calibration_method_name(m)), m);
  EXPECT_THROW(parse_calibration_method("kl"), Error);
  EXPECT_THROW(parse_calibration_method("MinMax"), Error);
  EXPECT_THROW(parse_calibration_method(""), Error);
}

TEST(Calibration, HistogramTracksExactStatistics) {
  ActivationHistogram h(64);
  h.add(std::vector<float>{-3.5f, 1.25f, 0.0f, 2.0f});
  h.add(std::vector<float>{-0.0f, 0.5f});
  EXPECT_EQ(h.count(), 6);
  EXPECT_EQ(h.negative_count(), 1);
  EXPECT_EQ(h.zero_count(), 2);
  EXPECT_FALSE(h.non_negative());
  EXPECT_EQ(h.min(), -3.5f);
  EXPECT_EQ(h.max(), 2.0f);
  EXPECT_EQ(h.range(), 4.0);  // smallest power of two above 3.5
  // Bin width 1/16: |x| = 3.5 -> 56, 1.25 -> 20, 2 -> 32, 0.5 -> 8, zeros -> 0.
  std::vector<int64_t> expected(64, 0);
  expected[56] = expected[20] = expected[32] = expected[8] = 1;
  expected[0] = 2;
  EXPECT_EQ(h.counts(false), expected);
  expected[56] = 0;  // unsigned: -3.5 is clipped to 0
  expected[0] = 3;
  EXPECT_EQ(h.counts(true), expected);

  ActivationHistogram r(64);
  r.add(std::vector<float>{0.0f, 1.0f, 3.0f});
  EXPECT_TRUE(r.non_negative());
  EXPECT_EQ(r.range(), 4.0);
  r.add(std::vector<float>{4.0f});  // a value equal to the range grows it: bins are half-open
  EXPECT_EQ(r.range(), 8.0);
  EXPECT_EQ(ActivationHistogram(64, 3.0f).range(), 4.0);
  EXPECT_EQ(ActivationHistogram(64, 4.0f).range(), 4.0);
  EXPECT_EQ(ActivationHistogram(64).range(), 0.0);
}

TEST(Calibration, MinMaxIsExact) {
  ActivationHistogram h(256);
  h.add(std::vector<float>{-3.5f, 1.25f, 2.0f, -0.75f});
  ActivationRange s = calibrate(h, CalibrationMethod::kMinMax, 8, false, false);
  EXPECT_EQ(s.threshold, 3.5f);
  EXPECT_EQ(s.scale, 3.5f / 127);
  ActivationRange u = calibrate(h, CalibrationMethod::kMinMax, 8, true, false);
  EXPECT_EQ(u.threshold, 2.0f);
  EXPECT_EQ(u.scale, 2.0f / 255);
  ActivationRange s4 = calibrate(h, CalibrationMethod::kMinMax, 4, false, false);
  EXPECT_EQ(s4.scale, 3.5f / 7);
  EXPECT_EQ(s4.bits, 4);
  EXPECT_FALSE(s4.is_unsigned);
  ActivationRange u4 = calibrate(h, CalibrationMethod::kMinMax, 4, true, false);
  EXPECT_EQ(u4.scale, 2.0f / 15);
  EXPECT_TRUE(u4.is_unsigned);
}

TEST(Calibration, SignedAndUnsignedRanges) {
  EXPECT_EQ(activation_qmax(8, true), 255);
  EXPECT_EQ(activation_qmax(8, false), 127);
  EXPECT_EQ(activation_qmax(4, true), 15);
  EXPECT_EQ(activation_qmax(4, false), 7);
  EXPECT_EQ(activation_qmax(2, false), 1);
  // Unsigned after a ReLU doubles the levels over the same threshold.
  ActivationHistogram h = histogram_of(relu(gaussian(10000, 1.0f, 7)));
  EXPECT_TRUE(h.non_negative());
  for (auto m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kMse,
                 CalibrationMethod::kEntropy}) {
    ActivationRange u = calibrate(h, m, 8, true, false);
    EXPECT_GT(u.threshold, 0.0f);
    EXPECT_LE(u.threshold, h.max());
    EXPECT_FLOAT_EQ(u.scale * 255, u.threshold);
  }
}

TEST(Calibration, PercentileMatchesSortedRawDataWithinOneBin) {
  std::vector<float> v = laplace(100003, 1.0f, 11);
  for (size_t i = 0; i < v.size(); i += 997) v[i] *= 20;  // a sparse far tail
  ActivationHistogram h = histogram_of(v);
  for (bool is_unsigned : {false, true}) {
    std::vector<double> m = magnitudes(v, is_unsigned);
    std::sort(m.begin(), m.end());
    for (double p : {99.99, 99.9, 99.0, 50.0, 12.5, 100.0}) {
      SCOPED_TRACE(testing::Message() << "p=" << p << " unsigned=" << is_unsigned);
      auto rank = static_cast<size_t>(std::ceil(p / 100 * static_cast<double>(m.size())));
      double truth = m[rank - 1];
      float t = calibrate(h, CalibrationMethod::kPercentile, 8, is_unsigned, false, p).threshold;
      EXPECT_GE(t, truth);  // never below the true percentile
      EXPECT_LE(t, truth + h.bin_width());
      if (p == 100.0) {
        EXPECT_EQ(t, static_cast<float>(m.back()));
      }
    }
  }
}

TEST(Calibration, PercentileUsesNearestRank) {
  // 10000 values 1..9999 and 20000 (in units of 1/1024): the 99.99th percentile is the 9999th
  // value, whose bin ends at 10000 (rank 10000 would give 20000).
  std::vector<float> v;
  for (int i = 1; i <= 9999; ++i) v.push_back(static_cast<float>(i) / 1024);
  v.push_back(20000.0f / 1024);
  ActivationHistogram h(32768);  // range 32: bin width 1/1024, value i in bin i
  h.add(v);
  EXPECT_EQ(calibrate(h, CalibrationMethod::kPercentile, 8, true, false, 99.99).threshold, 10000.0f / 1024);
  EXPECT_EQ(calibrate(h, CalibrationMethod::kPercentile, 8, true, false, 99.995).threshold, 20000.0f / 1024);
  EXPECT_EQ(calibrate(h, CalibrationMethod::kPercentile, 8, true, false, 99.985).threshold, 10000.0f / 1024);
  EXPECT_EQ(calibrate(h, CalibrationMethod::kPercentile, 8, true, false, 50.0).threshold, 5001.0f / 1024);
  EXPECT_EQ(calibrate(h, CalibrationMethod::kPercentile, 8, true, false, 0.001).threshold, 2.0f / 1024);
}

TEST(Calibration, RangeGrowthEqualsFinalRangeFromTheStart) {
  std::vector<std::vector<float>> batches = {gaussian(5000, 0.01f, 1), gaussian(5000, 0.3f, 2), gaussian(5000, 7.0f, 3),
                                             {0.0f, -0.0f}, laplace(5000, 300.0f, 4), gaussian(5000, 0.001f, 5)};
  for (int bins : {2048, 1000, 37}) {
    SCOPED_TRACE(bins);
    ActivationHistogram grown(bins);
    std::vector<float> all;
    std::vector<double> ranges;
    for (const auto& b : batches) {
      grown.add(b);
      all.insert(all.end(), b.begin(), b.end());
      ranges.push_back(grown.range());
    }
    EXPECT_LT(ranges.front(), ranges.back());  // it did grow, several times
    ActivationHistogram fixed(bins, static_cast<float>(grown.range()));
    fixed.add(all);
    ActivationHistogram once = histogram_of(all, bins);
    EXPECT_EQ(fixed.range(), grown.range());
    EXPECT_EQ(once.range(), grown.range());
    for (bool is_unsigned : {false, true}) {
      EXPECT_EQ(grown.counts(is_unsigned), fixed.counts(is_unsigned));
      EXPECT_EQ(grown.counts(is_unsigned), once.counts(is_unsigned));
    }
    // And against binning by hand in long double.
    std::vector<int64_t> direct(static_cast<size_t>(bins), 0);
    for (float x : all) ++direct[static_cast<size_t>(std::floor(std::fabs(static_cast<long double>(x)) / grown.range() * bins))];
    EXPECT_EQ(grown.counts(false), direct);
    EXPECT_EQ(grown.count(), static_cast<int64_t>(all.size()));
    EXPECT_EQ(grown.min(), *std::min_element(all.begin(), all.end()));
    EXPECT_EQ(grown.max(), *std::max_element(all.begin(), all.end()));
  }
}

// The histogram's MSE threshold against a search over every bin edge that measures the true error of
// quantizing the raw samples.
void expect_mse_near_brute_force(const std::vector<float>& v, int bits, bool is_unsigned) {
  SCOPED_TRACE(testing::Message() << "bits=" << bits << " unsigned=" << is_unsigned);
  ActivationHistogram h = histogram_of(v, 1024);
  const double w = h.bin_width();
  float max_value = is_unsigned ? h.max() : std::max(h.max(), -h.min());
  float best_t = max_value;
  double best = true_mse(v, max_value, bits, is_unsigned);
  for (int i = 1; i * w < max_value; ++i) {
    double e = true_mse(v, static_cast<float>(i * w), bits, is_unsigned);
    if (e < best) best = e, best_t = static_cast<float>(i * w);
  }
  float t = calibrate(h, CalibrationMethod::kMse, bits, is_unsigned, false).threshold;
  double e = true_mse(v, t, bits, is_unsigned);
  // At 8 bits the optimum lies where a handful of tail samples decide it and the error curve is flat
  // (3 bins off costs < 0.1%), so the threshold is held less tightly there than its error.
  EXPECT_NEAR(t, best_t, (bits == 8 ? 4 : 2) * w) << "brute-force mse " << best << ", histogram's " << e;
  EXPECT_LE(e, best * 1.01);
  EXPECT_LT(e, true_mse(v, max_value, bits, is_unsigned));  // better than not clipping
}

TEST(Calibration, MseMatchesBruteForceOnRawSamples) {
  expect_mse_near_brute_force(gaussian(40000, 1.0f, 21), 4, false);
  expect_mse_near_brute_force(laplace(40000, 0.5f, 22), 4, false);
  expect_mse_near_brute_force(relu(gaussian(40000, 2.0f, 23)), 4, true);
  expect_mse_near_brute_force(laplace(200000, 1.0f, 24), 8, false);
  expect_mse_near_brute_force(relu(laplace(200000, 1.0f, 26)), 8, true);
  expect_mse_near_brute_force(gaussian(200000, 1.0f, 27), 8, false);
}

TEST(Calibration, EntropyClipsOutliersButNotTheBulk) {
  std::vector<float> v = gaussian(200000, 1.0f, 31);
  std::mt19937 rng(32);
  std::uniform_real_distribution<float> far(20.0f, 50.0f);
  for (size_t i = 0; i < v.size(); i += 1000) v[i] = (i % 2000 ? -1.0f : 1.0f) * far(rng);  // 0.1% outliers
  ActivationHistogram h = histogram_of(v);
  float max_value = std::max(h.max(), -h.min());
  // Not 8-bit unsigned: 255 levels resolve the sparse outliers one per group, leaving KL flat over
  // thresholds from the bulk to the outliers, so where it settles is noise.
  for (auto [bits, is_unsigned] : {std::pair{8, false}, {4, false}, {4, true}}) {
    SCOPED_TRACE(testing::Message() << "bits=" << bits << " unsigned=" << is_unsigned);
    float t = calibrate(h, CalibrationMethod::kEntropy, bits, is_unsigned, false).threshold;
    EXPECT_GT(t, 2.0f);
    EXPECT_LT(t, 0.25f * max_value);
  }
  // Without outliers a uniform distribution needs its whole range.
  std::mt19937 urng(33);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  std::vector<float> u(100000);
  for (float& x : u) x = uniform(urng);
  ActivationHistogram hu = histogram_of(u);
  EXPECT_GT(calibrate(hu, CalibrationMethod::kEntropy, 8, false, false).threshold, 0.9f);
}

TEST(Calibration, PowerOfTwoScalesAreExactAndCoverTheThreshold) {
  for (float t : {0.001f, 0.3f, 1.0f, 6.35f, 127.0f, 31.75f, 1000.0f, 3.0e-30f}) {
    for (int32_t qmax : {1, 7, 15, 127, 255}) {
      SCOPED_TRACE(testing::Message() << "t=" << t << " qmax=" << qmax);
      float s = power_of_two_scale(t, qmax);
      int e = 0;
      EXPECT_EQ(std::frexp(s, &e), 0.5f);  // a power of two
      EXPECT_GE(static_cast<double>(s) * qmax, t);       // covers the threshold
      EXPECT_LT(static_cast<double>(s) / 2 * qmax, t);   // and is the finest that does
    }
  }
  EXPECT_EQ(power_of_two_scale(127.0f * 0.25f, 127), 0.25f);  // exact fit: no extra factor 2
  EXPECT_EQ(power_of_two_scale(255.0f, 255), 1.0f);

  ActivationHistogram h = histogram_of(gaussian(5000, 1.5f, 41));
  for (auto m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kMse,
                 CalibrationMethod::kEntropy}) {
    ActivationRange p = calibrate(h, m, 8, false, true, 99.9);
    ActivationRange r = calibrate(h, m, 8, false, false, 99.9);
    EXPECT_TRUE(p.power_of_two);
    EXPECT_EQ(p.threshold, r.threshold);
    EXPECT_EQ(p.scale, power_of_two_scale(p.threshold, 127));
    EXPECT_GE(p.scale, r.scale);
  }
}

TEST(Calibration, QuantizeRoundsHalfAwayFromZeroAndSaturates) {
  EXPECT_EQ(quantize_activation(2.5f, 1.0f, 8, false), 3);
  EXPECT_EQ(quantize_activation(-2.5f, 1.0f, 8, false), -3);
  EXPECT_EQ(quantize_activation(0.5f, 1.0f, 8, false), 1);
  EXPECT_EQ(quantize_activation(-0.5f, 1.0f, 8, false), -1);
  EXPECT_EQ(quantize_activation(0.49f, 1.0f, 8, false), 0);
  EXPECT_EQ(quantize_activation(1.5f, 0.5f, 8, false), 3);
  EXPECT_EQ(quantize_activation(0.75f, 0.5f, 8, true), 2);  // 1.5 rounds up
  EXPECT_EQ(quantize_activation(126.5f, 1.0f, 8, false), 127);
  EXPECT_EQ(quantize_activation(127.5f, 1.0f, 8, false), 127);
  EXPECT_EQ(quantize_activation(1e30f, 1.0f, 8, false), 127);
  EXPECT_EQ(quantize_activation(-1e30f, 1.0f, 8, false), -127);
  EXPECT_EQ(quantize_activation(std::numeric_limits<float>::infinity(), 0.1f, 8, false), 127);
  EXPECT_EQ(quantize_activation(-std::numeric_limits<float>::infinity(), 0.1f, 8, false), -127);
  EXPECT_EQ(quantize_activation(300.0f, 1.0f, 8, true), 255);
  EXPECT_EQ(quantize_activation(-5.0f, 1.0f, 8, true), 0);
  EXPECT_EQ(quantize_activation(100.0f, 1.0f, 4, false), 7);
  EXPECT_EQ(quantize_activation(-100.0f, 1.0f, 4, false), -7);
  EXPECT_EQ(quantize_activation(100.0f, 1.0f, 4, true), 15);
  EXPECT_EQ(quantize_activation(14.5f, 1.0f, 4, true), 15);
  EXPECT_EQ(quantize_activation(-0.4f, 1.0f, 4, true), 0);
}

// SiLU(x) for x ~ N(0, 2): a long positive side and a short negative one (>= -0.2785).
std::vector<float> silu(std::vector<float> v) {
  for (float& x : v) x = x / (1.0f + std::exp(-x));
  return v;
}

TEST(Calibration, MirroredHistogramIsTheHistogramOfMinusX) {
  std::vector<float> v = laplace(5001, 1.0f, 3);
  v.push_back(0.0f);
  v.push_back(-0.0f);
  std::vector<float> minus;
  for (float x : v) minus.push_back(-x);
  ActivationHistogram h = histogram_of(v, 256), m = histogram_of(minus, 256);
  ActivationHistogram r = h.mirrored();
  EXPECT_EQ(r.count(), m.count());
  EXPECT_EQ(r.negative_count(), m.negative_count());
  EXPECT_EQ(r.zero_count(), m.zero_count());
  EXPECT_EQ(r.min(), m.min());
  EXPECT_EQ(r.max(), m.max());
  EXPECT_EQ(r.range(), m.range());
  for (bool is_unsigned : {false, true}) EXPECT_EQ(r.counts(is_unsigned), m.counts(is_unsigned)) << is_unsigned;
}

TEST(Calibration, AsymmetricCodesSpendEveryLevelOnTheRangeUsed) {
  std::vector<float> v = silu(gaussian(20000, 2.0f, 5));
  ActivationHistogram h = histogram_of(v);
  const float lo = h.min(), hi = h.max();
  ASSERT_LT(lo, 0.0f);
  ASSERT_GT(lo, -0.28f);
  ActivationRange a = calibrate_asymmetric(h, CalibrationMethod::kMinMax, 8);
  EXPECT_TRUE(a.is_unsigned);
  EXPECT_FLOAT_EQ(a.scale, (hi - lo) / 255);
  EXPECT_EQ(a.zero_point, static_cast<int32_t>(std::lround(-lo / a.scale)));
  EXPECT_FLOAT_EQ(a.lower, -a.zero_point * a.scale);
  EXPECT_FLOAT_EQ(a.threshold, (255 - a.zero_point) * a.scale);
  // Nearly twice as fine as symmetric codes over max |x|.
  ActivationRange s = calibrate(h, CalibrationMethod::kMinMax, 8, false, false);
  EXPECT_LT(a.scale, 0.53f * s.scale);
  // Every value is within half a step of its quantized value (minmax clips nothing but the
  // rounding of the zero point, less than half a step at either end).
  std::vector<float> y(v.size());
  fake_quantize(v, y, a.scale, 255, true, a.zero_point);
  double worst = 0;
  for (size_t i = 0; i < v.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(y[i]) - v[i]));
  EXPECT_LE(worst, a.scale * 1.0001);
  for (size_t i = 0; i < v.size(); i += 97) {
    int32_t code = quantize_activation(v[i], a.scale, 8, true, a.zero_point);
    EXPECT_GE(code, 0);
    EXPECT_LE(code, 255);
    EXPECT_EQ(y[i], static_cast<float>(code - a.zero_point) * a.scale) << v[i];
  }
  // Percentile clips each side at its own tail: both thresholds within the range, below the max.
  ActivationRange p = calibrate_asymmetric(h, CalibrationMethod::kPercentile, 8, 99.9);
  EXPECT_LT(p.threshold, hi);
  EXPECT_GT(p.threshold, 0.5f * hi);
  EXPECT_LE(p.lower, 0.0f);
  EXPECT_GE(p.lower, lo - p.scale);
  // Values that are never negative get plain unsigned codes.
  ActivationRange u = calibrate_asymmetric(histogram_of(relu(gaussian(1000, 1.0f, 2))), CalibrationMethod::kMinMax, 8);
  EXPECT_EQ(u.zero_point, 0);
  // 4 bits: 15 levels over the same range.
  ActivationRange a4 = calibrate_asymmetric(h, CalibrationMethod::kMinMax, 4);
  EXPECT_FLOAT_EQ(a4.scale, (hi - lo) / 15);
  EXPECT_EQ(a4.zero_point, static_cast<int32_t>(std::lround(-lo / a4.scale)));
}

TEST(Calibration, ZeroPointShiftsTheCodes) {
  EXPECT_EQ(quantize_activation(0.0f, 1.0f, 8, true, 10), 10);
  EXPECT_EQ(quantize_activation(-2.5f, 1.0f, 8, true, 10), 7);   // half away from zero: -3
  EXPECT_EQ(quantize_activation(-50.0f, 1.0f, 8, true, 10), 0);  // clipped at -zero_point
  EXPECT_EQ(quantize_activation(300.0f, 1.0f, 8, true, 10), 255);
  EXPECT_EQ(quantize_activation(244.6f, 1.0f, 8, true, 10), 255);
  std::vector<float> x = {-50.0f, -2.5f, 0.0f, 1.4f, 244.6f, 300.0f}, y(x.size());
  fake_quantize(x, y, 1.0f, 255, true, 10);
  EXPECT_EQ(y, (std::vector<float>{-10.0f, -3.0f, 0.0f, 1.0f, 245.0f, 245.0f}));
  EXPECT_THROW(quantize_activation(0.0f, 1.0f, 8, false, 10), Error);  // signed codes have no zero point
  EXPECT_THROW(quantize_activation(0.0f, 1.0f, 8, true, 256), Error);
  EXPECT_THROW(quantize_activation(0.0f, 1.0f, 8, true, -1), Error);
  CodeBounds b = code_bounds(255, true, 10);
  EXPECT_EQ(b.lo, -10.0f);
  EXPECT_EQ(b.hi, 245.0f);
  b = code_bounds(127, false);
  EXPECT_EQ(b.lo, -127.0f);
  EXPECT_EQ(b.hi, 127.0f);
}

TEST(Calibration, IsDeterministic) {
  std::vector<float> a = laplace(30000, 2.0f, 51), b = gaussian(30000, 9.0f, 52);
  ActivationHistogram h1(2048), h2(2048);
  for (auto* h : {&h1, &h2}) h->add(a), h->add(b);
  EXPECT_EQ(h1.counts(false), h2.counts(false));
  for (auto m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kMse,
                 CalibrationMethod::kEntropy}) {
    for (int bits : {4, 8}) {
      ActivationRange r1 = calibrate(h1, m, bits, false, false), r2 = calibrate(h2, m, bits, false, false);
      EXPECT_EQ(r1.threshold, r2.threshold);
      EXPECT_EQ(r1.scale, r2.scale);
    }
  }
}

TEST(Calibration, AllZeroTensorGetsUnitThreshold) {
  ActivationHistogram h(64);
  h.add(std::vector<float>(100, 0.0f));
  EXPECT_EQ(h.range(), 0.0);
  for (auto m : {CalibrationMethod::kMinMax, CalibrationMethod::kPercentile, CalibrationMethod::kMse,
                 CalibrationMethod::kEntropy})
    EXPECT_EQ(calibrate(h, m, 8, true, false).threshold, 1.0f);
  ActivationHistogram negative(64);
  negative.add(std::vector<float>{-1.0f, -2.0f});
  EXPECT_EQ(calibrate(negative, CalibrationMethod::kMse, 4, true, false).threshold, 1.0f);
}

TEST(Calibration, RejectsBadInput) {
  ActivationHistogram empty;
  EXPECT_THROW(calibrate(empty, CalibrationMethod::kMinMax, 8, false, false), Error);
  EXPECT_THROW((void)empty.min(), Error);

  ActivationHistogram h(64);
  h.add(std::vector<float>{1.0f, -2.0f});
  for (int bits : {0, 1, 9, 16}) EXPECT_THROW(calibrate(h, CalibrationMethod::kMinMax, bits, false, false), Error);
  for (double p : {0.0, -1.0, 100.5, std::nan("")})
    EXPECT_THROW(calibrate(h, CalibrationMethod::kPercentile, 8, false, false, p), Error);
  EXPECT_THROW(calibrate(h, CalibrationMethod::kEntropy, 8, false, false), Error);  // 64 bins < 127 levels
  EXPECT_NO_THROW(calibrate(h, CalibrationMethod::kEntropy, 4, false, false));

  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_THROW(h.add(std::vector<float>{3.0f, std::nanf("")}), Error);
  EXPECT_THROW(h.add(std::vector<float>{100.0f, inf}), Error);
  EXPECT_THROW(h.add(std::vector<float>{-inf}), Error);
  EXPECT_EQ(h.count(), 2);  // failed batches leave no trace
  EXPECT_EQ(h.range(), 4.0);
  EXPECT_EQ(h.max(), 1.0f);

  EXPECT_THROW(ActivationHistogram(8), Error);
  EXPECT_THROW(ActivationHistogram(64, -1.0f), Error);
  EXPECT_THROW(ActivationHistogram(64, inf), Error);

  EXPECT_THROW(quantize_activation(std::nanf(""), 1.0f, 8, false), Error);
  EXPECT_THROW(quantize_activation(1.0f, 0.0f, 8, false), Error);
  EXPECT_THROW(quantize_activation(1.0f, -1.0f, 8, false), Error);
  EXPECT_THROW(quantize_activation(1.0f, inf, 8, false), Error);
  EXPECT_THROW(quantize_activation(1.0f, 1.0f, 1, false), Error);
  EXPECT_THROW(power_of_two_scale(0.0f, 127), Error);
  EXPECT_THROW(power_of_two_scale(inf, 127), Error);
  EXPECT_THROW(power_of_two_scale(1.0f, 0), Error);
  EXPECT_THROW(power_of_two_scale(std::numeric_limits<float>::max(), 1), Error);  // 2^128
}

}  // namespace
}  // namespace tern::quant
