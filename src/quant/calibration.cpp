#include "tern/calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "kernels/int8/requantize.h"
#include "tern/error.h"

namespace tern::quant {

namespace {

constexpr int kMinBins = 16;
constexpr int kMaxBins = 1 << 20;  // keeps v * 2^-e * bins exact in double (24 + 20 bits < 53)

void check_bits(int bits) {
  check(bits >= 2 && bits <= 8, "activation quantization: bits must be in [2, 8], got " + std::to_string(bits));
}

// Smallest e with 2^e > v, for finite v > 0.
int exponent_above(double v) {
  int k = 0;
  std::frexp(v, &k);  // v = f * 2^k, f in [0.5, 1): 2^(k-1) <= v < 2^k
  return k;
}

// Smallest e with 2^e >= v, for finite v > 0: ceil(log2(v)) without log2's rounding.
int exponent_at_least(double v) {
  int k = 0;
  double f = std::frexp(v, &k);
  return f == 0.5 ? k - 1 : k;
}

// The calibration's view of a histogram, in units of one bin width (the argmin of every method is
// invariant to that scale, and bin edges become the integers 0..bins).
struct Distribution {
  std::vector<int64_t> counts;
  int64_t total = 0;
  int64_t exact_zeros = 0;  // the part of counts[0] that is exactly 0 (or clipped to 0)
  double max_value = 0;     // largest value, in bin units
  int top_bin = 0;          // bin holding max_value
};

Distribution make_distribution(const ActivationHistogram& h, bool is_unsigned, float max_value) {
  Distribution d;
  d.counts = h.counts(is_unsigned);
  d.total = h.count();
  d.exact_zeros = h.zero_count() + (is_unsigned ? h.negative_count() : 0);
  d.max_value = static_cast<double>(max_value) / h.bin_width();
  d.top_bin = static_cast<int>(d.counts.size()) - 1;
  while (d.top_bin > 0 && d.counts[d.top_bin] == 0) --d.top_bin;
  return d;
}

// Nearest rank: r = ceil(p/100 * n) (at least 1), the r-th smallest value. The factor 1 - 1e-12
// absorbs the binary error of decimal percentiles, so that 99.99 of 10000 values is rank 9999, not
// 10000. T is the upper edge of the bin holding that value: never below it, at most one bin above.
double percentile_threshold(const Distribution& d, double percentile) {
  double exact = percentile / 100.0 * static_cast<double>(d.total);
  int64_t rank = static_cast<int64_t>(std::ceil(exact * (1 - 1e-12)));
  rank = std::clamp<int64_t>(rank, 1, d.total);
  int64_t cumulative = 0;
  for (size_t k = 0; k < d.counts.size(); ++k) {
    cumulative += d.counts[k];
    if (cumulative >= rank) return static_cast<double>(k + 1);
  }
  return static_cast<double>(d.counts.size());
}

// Integral over [0, v] of (u - s * round(u / s))^2: each whole step contributes s^3/12; within a
// step the error is u^2 up to s/2, then (s - u)^2.
double rounding_error_integral(double v, double s) {
  double steps = std::floor(v / s);
  double r = v - steps * s;
  double partial = r < 0.5 * s ? r * r * r / 3 : s * s * s / 12 - (s - r) * (s - r) * (s - r) / 3;
  return steps * s * s * s / 12 + partial;
}

// Mean of (v - s * round(v / s))^2 for v uniform on [a, b].
double mean_rounding_error(double a, double b, double s) {
  if (b - a < 1e-9) {
    double e = a - s * std::round(a / s);
    return e * e;
  }
  // Whole steps cancel between the two integrals; subtracting them first keeps precision.
  double steps_a = std::floor(a / s);
  return (rounding_error_integral(b - steps_a * s, s) - rounding_error_integral(a - steps_a * s, s)) / (b - a);
}

// Expected squared error sum over the histogram when clipping at t (bin units) with qmax steps,
// values modelled as uniform within their bin (the top bin ends at the exact max; exact zeros, which
// quantize without error, are left out of bin 0). Values above t all become t: their clipping error
// and the rounding error of the last half step are the same (v - t)^2.
double expected_squared_error(const Distribution& d, double t, int32_t qmax) {
  double s = t / qmax;
  double sum = 0;
  for (int k = 0; k <= d.top_bin; ++k) {
    double n = static_cast<double>(k == 0 ? d.counts[0] - d.exact_zeros : d.counts[k]);
    if (n == 0) continue;
    double a = k, b = k == d.top_bin ? std::max(a, std::min(k + 1.0, d.max_value)) : k + 1.0;
    if (b <= t) {
      sum += n * mean_rounding_error(a, b, s);
    } else if (a >= t) {
      double lo = a - t, hi = b - t;  // mean of (v - t)^2 over [a, b]
      sum += n * (lo * lo + lo * hi + hi * hi) / 3;
    } else {  // t inside the bin: not reached for bin-edge candidates, kept so any t is right
      double below = t - a, above = b - t;
      sum += n * (below * mean_rounding_error(a, t, s) + above * above * above / 3) / (b - a);
    }
  }
  return sum;
}

// Candidates: every bin edge 1..top_bin, then the max itself. Ties go to the smallest threshold.
double mse_threshold(const Distribution& d, int32_t qmax) {
  double best_t = d.max_value, best = expected_squared_error(d, d.max_value, qmax);
  for (int i = 1; i <= d.top_bin && i < d.max_value; ++i) {
    double e = expected_squared_error(d, i, qmax);
    if (e < best || (e == best && i < best_t)) best = e, best_t = i;
  }
  return best_t;
}

// TensorRT's entropy calibration ("8-bit Inference with TensorRT", Migacz 2017), on the histogram of
// |x| (or max(x, 0)) starting at 0, less the exact zeros: those are represented exactly whatever T
// is, and after a ReLU they are half the tensor, a spike in bin 0 that would otherwise dominate the
// divergence (NVIDIA's pytorch-quantization overwrites bin 0 with bin 1 for the same reason). For
// each candidate i in [levels, max(levels, top_bin + 1)], with levels = qmax (the non-zero codes of
// one sign):
//   P: bins 0..i-1 of the histogram, with the outliers (bins >= i) added to bin i-1.
//   Q: bins 0..i-1 *without* the outliers, merged into `levels` groups, group g holding bins
//      [floor(g*i/levels), floor((g+1)*i/levels)); each group's count is spread evenly over the
//      bins of the group where P is non-zero, bins where P is zero stay zero.
//   KL(P || Q) = sum over P_j > 0 of p_j log(p_j / q_j) after normalizing each to sum 1. Q is zero
//   where P is not only in bin i-1, when the outliers land in a group with no retained values (a gap
//   between the bulk and the outliers); like MXNet and ONNX Runtime, such bins get q = 1e-4, taken
//   from the other bins in proportion, so that the clipping costs a large but finite divergence
//   instead of ruling out every threshold inside the gap. Candidates retaining nothing are skipped.
// T = i bin widths (the upper edge of bin i-1) for the i of least KL, ties to the smallest i. Since
// Q lacks the outliers, clipping much mass costs KL; since Q is coarse, a long sparse tail costs
// resolution: the minimum balances the two.
double entropy_threshold(const Distribution& d, int32_t levels) {
  const int bins = static_cast<int>(d.counts.size());
  check(bins >= levels, "entropy calibration: needs at least " + std::to_string(levels) + " histogram bins, got " +
                            std::to_string(bins));
  std::vector<int64_t> counts = d.counts;
  counts[0] -= d.exact_zeros;
  const double total = static_cast<double>(d.total - d.exact_zeros);
  constexpr double kSmoothing = 1e-4;
  const int last = std::max(levels, d.top_bin + 1);
  std::vector<double> p(last), q(last);
  double best_kl = std::numeric_limits<double>::infinity();
  int best_i = last;
  int64_t outliers = 0;
  for (int k = bins - 1; k >= levels; --k) outliers += counts[k];  // bins >= levels
  for (int i = levels; i <= last; ++i) {
    if (i > levels) outliers -= counts[i - 1];
    for (int j = 0; j < i; ++j) p[j] = static_cast<double>(counts[j]);
    double kept = 0;  // sum of Q before normalization
    for (int g = 0; g < levels; ++g) {
      int begin = static_cast<int>(int64_t{g} * i / levels), end = static_cast<int>(int64_t{g + 1} * i / levels);
      double mass = 0;
      int nonzero = 0;
      for (int j = begin; j < end; ++j) mass += p[j], nonzero += p[j] > 0;
      // Outliers make bin i-1 of P non-zero even when the histogram's bin is empty.
      if (end == i && p[i - 1] == 0 && outliers > 0) ++nonzero;
      for (int j = begin; j < end; ++j) q[j] = (p[j] > 0 || (j == i - 1 && outliers > 0)) ? mass / nonzero : 0.0;
      kept += mass;
    }
    p[i - 1] += static_cast<double>(outliers);
    if (kept == 0) continue;
    int missing = 0;  // bins with P > 0 = Q
    for (int j = 0; j < i; ++j) missing += p[j] > 0 && q[j] == 0;
    const double q_scale = (1 - missing * kSmoothing) / kept;
    double kl = 0;
    for (int j = 0; j < i; ++j) {
      if (p[j] == 0) continue;
      double pj = p[j] / total, qj = q[j] > 0 ? q[j] * q_scale : kSmoothing;
      kl += pj * std::log(pj / qj);
    }
    if (kl < best_kl) best_kl = kl, best_i = i;
  }
  return best_i;
}

}  // namespace

CalibrationMethod parse_calibration_method(std::string_view name) {
  if (name == "minmax") return CalibrationMethod::kMinMax;
  if (name == "percentile") return CalibrationMethod::kPercentile;
  if (name == "mse") return CalibrationMethod::kMse;
  if (name == "entropy") return CalibrationMethod::kEntropy;
  throw Error("unknown calibration method '" + std::string(name) + "' (expected minmax, percentile, mse or entropy)");
}

const char* calibration_method_name(CalibrationMethod method) {
  switch (method) {
    case CalibrationMethod::kMinMax: return "minmax";
    case CalibrationMethod::kPercentile: return "percentile";
    case CalibrationMethod::kMse: return "mse";
    case CalibrationMethod::kEntropy: return "entropy";
  }
  return "unknown";
}

ActivationHistogram::ActivationHistogram(int bins, float initial_range) {
  check(bins >= kMinBins && bins <= kMaxBins, "activation histogram: bins must be in [" + std::to_string(kMinBins) +
                                                  ", " + std::to_string(kMaxBins) + "], got " + std::to_string(bins));
  check(std::isfinite(initial_range) && initial_range >= 0,
        "activation histogram: initial range must be finite and non-negative");
  positive_.assign(static_cast<size_t>(bins), 0);
  negative_.assign(static_cast<size_t>(bins), 0);
  if (initial_range > 0) {
    range_exp_ = exponent_at_least(initial_range);
    has_range_ = true;
  }
}

void ActivationHistogram::add(std::span<const float> values) {
  float batch_max = 0.0f;
  for (float v : values) {
    check(std::isfinite(v), "activation histogram: values contain NaN or infinity");
    batch_max = std::max(batch_max, std::fabs(v));
  }
  if (batch_max > 0) {
    int needed = exponent_above(batch_max);
    if (!has_range_) {
      range_exp_ = needed;
      has_range_ = true;
    } else if (needed > range_exp_) {
      // floor(x / 2^k) == floor(x) >> k for x >= 0: merging bins equals binning afresh.
      int shift = needed - range_exp_;
      for (auto* counts : {&positive_, &negative_}) {
        std::vector<int64_t> merged(counts->size(), 0);
        for (size_t i = 0; i < counts->size(); ++i) merged[shift >= 62 ? 0 : i >> shift] += (*counts)[i];
        *counts = std::move(merged);
      }
      range_exp_ = needed;
    }
  }
  const double bins = static_cast<double>(positive_.size());
  const int64_t last = static_cast<int64_t>(positive_.size()) - 1;
  for (float v : values) {
    if (count_ == 0) min_ = max_ = v;
    min_ = std::min(min_, v);
    max_ = std::max(max_, v);
    ++count_;
    if (v == 0) ++zeros_;
    // Exact: scaling by a power of two, then a product of at most 24 + 20 significant bits.
    int64_t bin = v == 0 ? 0 : static_cast<int64_t>(std::floor(std::ldexp(std::fabs(static_cast<double>(v)), -range_exp_) * bins));
    bin = std::min(bin, last);
    if (v < 0) {
      ++negatives_;
      ++negative_[static_cast<size_t>(bin)];
    } else {
      ++positive_[static_cast<size_t>(bin)];
    }
  }
}

float ActivationHistogram::min() const {
  check(count_ > 0, "activation histogram: min of an empty histogram");
  return min_;
}

float ActivationHistogram::max() const {
  check(count_ > 0, "activation histogram: max of an empty histogram");
  return max_;
}

double ActivationHistogram::range() const { return has_range_ ? std::ldexp(1.0, range_exp_) : 0.0; }

std::vector<int64_t> ActivationHistogram::counts(bool is_unsigned) const {
  std::vector<int64_t> c = positive_;
  if (is_unsigned) {
    c[0] += negatives_;
  } else {
    for (size_t i = 0; i < c.size(); ++i) c[i] += negative_[i];
  }
  return c;
}

ActivationHistogram ActivationHistogram::mirrored() const {
  ActivationHistogram m = *this;
  // -0 and +0 both count as exact zeros and live in positive_[0]; a mirrored negative value is
  // positive, a mirrored positive one negative (zeros stay in bin 0 of the positive side).
  m.positive_ = negative_;
  m.negative_ = positive_;
  m.negative_[0] -= zeros_;
  m.positive_[0] += zeros_;
  m.negatives_ = count_ - negatives_ - zeros_;
  m.min_ = -max_;
  m.max_ = -min_;
  return m;
}

int32_t activation_qmax(int bits, bool is_unsigned) {
  check_bits(bits);
  return is_unsigned ? (1 << bits) - 1 : (1 << (bits - 1)) - 1;
}

ActivationRange calibrate(const ActivationHistogram& histogram, CalibrationMethod method, int bits, bool is_unsigned,
                          bool power_of_two, double percentile) {
  const int32_t qmax = activation_qmax(bits, is_unsigned);
  check(histogram.count() > 0, "calibration: no activations were observed");
  check(percentile > 0 && percentile <= 100, "calibration: percentile must be in (0, 100]");

  float max_value = is_unsigned ? std::max(histogram.max(), 0.0f) : std::max(histogram.max(), -histogram.min());
  float threshold = 1.0f;
  if (max_value > 0) {
    double t_bins = 0;  // threshold in bin widths
    if (method != CalibrationMethod::kMinMax) {
      Distribution d = make_distribution(histogram, is_unsigned, max_value);
      switch (method) {
        case CalibrationMethod::kPercentile: t_bins = percentile_threshold(d, percentile); break;
        case CalibrationMethod::kMse: t_bins = mse_threshold(d, qmax); break;
        case CalibrationMethod::kEntropy: t_bins = entropy_threshold(d, qmax); break;
        case CalibrationMethod::kMinMax: break;
      }
    }
    threshold = method == CalibrationMethod::kMinMax
                    ? max_value
                    : static_cast<float>(std::min(t_bins * histogram.bin_width(), static_cast<double>(max_value)));
  }

  ActivationRange r;
  r.threshold = threshold;
  r.bits = bits;
  r.is_unsigned = is_unsigned;
  r.power_of_two = power_of_two;
  r.scale = power_of_two ? power_of_two_scale(threshold, qmax) : threshold / static_cast<float>(qmax);
  check(r.scale > 0 && std::isfinite(r.scale), "calibration: threshold gives no usable scale");
  return r;
}

ActivationRange calibrate_asymmetric(const ActivationHistogram& histogram, CalibrationMethod method, int bits,
                                     double percentile) {
  const int32_t qmax = activation_qmax(bits, true);
  ActivationRange r = calibrate(histogram, method, bits, true, false, percentile);
  if (histogram.min() >= 0) return r;  // nothing below zero: plain unsigned codes
  const float upper = histogram.max() > 0 ? r.threshold : 0.0f;
  const float lower = calibrate(histogram.mirrored(), method, bits, true, false, percentile).threshold;
  r.scale = (upper + lower) / static_cast<float>(qmax);
  check(r.scale > 0 && std::isfinite(r.scale), "calibration: thresholds give no usable scale");
  r.zero_point = std::clamp(static_cast<int32_t>(std::lround(lower / r.scale)), int32_t{0}, qmax);
  r.threshold = static_cast<float>(qmax - r.zero_point) * r.scale;
  r.lower = -static_cast<float>(r.zero_point) * r.scale;
  return r;
}

CodeBounds code_bounds(int32_t qmax, bool is_unsigned, int32_t zero_point) {
  if (!is_unsigned) return {-static_cast<float>(qmax), static_cast<float>(qmax)};
  return {-static_cast<float>(zero_point), static_cast<float>(qmax - zero_point)};
}

float power_of_two_scale(float threshold, int32_t qmax) {
  check(std::isfinite(threshold) && threshold > 0, "power-of-two scale: threshold must be positive and finite");
  check(qmax >= 1, "power-of-two scale: qmax must be at least 1");
  int e = exponent_at_least(static_cast<double>(threshold) / qmax);
  check(e >= -149 && e <= 127, "power-of-two scale: 2^" + std::to_string(e) + " is outside float's range");
  return std::ldexp(1.0f, e);
}

int32_t quantize_activation(float x, float scale, int bits, bool is_unsigned, int32_t zero_point) {
  const int32_t qmax = activation_qmax(bits, is_unsigned);
  check(std::isfinite(scale) && scale > 0, "quantize activation: scale must be positive and finite");
  check(!std::isnan(x), "quantize activation: value is NaN");
  check(zero_point >= 0 && zero_point <= qmax && (is_unsigned || zero_point == 0),
        "quantize activation: zero point " + std::to_string(zero_point) + " is outside the codes");
  const CodeBounds b = code_bounds(qmax, is_unsigned, zero_point);
  // Clamping before rounding keeps lround in range; it gives the same code as rounding first.
  return static_cast<int32_t>(std::lround(std::clamp(x / scale, b.lo, b.hi))) + zero_point;
}

void fake_quantize(std::span<const float> x, std::span<float> y, float scale, int32_t qmax, bool is_unsigned,
                   int32_t zero_point) {
  const auto [lo, hi] = code_bounds(qmax, is_unsigned, zero_point);
  const size_t n = std::min(x.size(), y.size());
  // std::round (half away from zero) of the clamped value as the integer engine rounds its codes
  // (kernels::round_half_away: no libm call, so the loop vectorizes). NaN stays NaN.
  for (size_t i = 0; i < n; ++i) {
    const float v = x[i] / scale;
    const bool nan = v != v;
    const float c = nan ? 0.0f : (v < lo ? lo : (v > hi ? hi : v));
    y[i] = nan ? v : static_cast<float>(kernels::round_half_away(c)) * scale;
  }
}

}  // namespace tern::quant
