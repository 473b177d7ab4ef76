// Activation calibration: choosing one clipping threshold T per activation tensor from values
// observed on calibration images, and the scale that maps it onto 2..8-bit integer codes.
//
// Codes are unsigned [0, 2^b - 1] after a ReLU and symmetric signed [-(2^(b-1)-1), 2^(b-1)-1]
// elsewhere; real x ~= code * scale, scale = T / qmax (or the power of two 2^ceil(log2(T / qmax))
// for dynamic fixed point). Values with a short negative side (SiLU, HardSwish, GELU: >= -0.28,
// -0.375, -0.17) may instead take asymmetric codes: unsigned [0, 2^b - 1] with a zero point z,
// x ~= (code - z) * scale, which spends every level on the range actually used. Activations arrive batch by batch, so every method works from an
// ActivationHistogram rather than the raw values: memory stays O(bins) however many images are run.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace tern::quant {

enum class CalibrationMethod {
  kMinMax,      // T = max |x|: never clips, wastes levels on outliers
  kPercentile,  // T = p-th percentile of |x| (nearest rank, see calibrate)
  kMse,         // T minimizing the expected squared error of clipping plus rounding
  kEntropy,     // T minimizing KL(P || Q), TensorRT style
};

// "minmax", "percentile", "mse", "entropy"; anything else throws tern::Error.
CalibrationMethod parse_calibration_method(std::string_view name);
const char* calibration_method_name(CalibrationMethod method);

// Histogram of |x| with a fixed number of equal bins over [0, range), plus the exact min, max and
// counts of negatives and exact zeros.
//
// range is always a power of two (the smallest one above every |x| seen, or the initial range
// rounded up), so bin edges are exact binary fractions and the bin of a value is computed without
// rounding. Growing the range to 2^k times as large then maps old bin i to new bin i >> k exactly:
// a histogram that grew batch by batch holds the very same counts as one built with its final range
// from the start. Positive and negative values are binned separately so that one histogram serves
// both signed calibration (|x|) and unsigned calibration (max(x, 0)).
//
// Deterministic: the same values added in the same batches give the same histogram.
class ActivationHistogram {
 public:
  // bins in [16, 2^20]. initial_range > 0 fixes the starting range (rounded up to a power of two);
  // 0 takes it from the first batch with a non-zero value.
  explicit ActivationHistogram(int bins = 2048, float initial_range = 0.0f);

  // Throws tern::Error, leaving the histogram unchanged, if the batch holds NaN or infinity.
  void add(std::span<const float> values);

  int bins() const { return static_cast<int>(positive_.size()); }
  int64_t count() const { return count_; }
  int64_t negative_count() const { return negatives_; }
  int64_t zero_count() const { return zeros_; }  // values exactly +-0
  bool non_negative() const { return negatives_ == 0; }
  float min() const;  // of the raw values; throws when empty
  float max() const;
  // Upper edge of the last bin (a power of two); 0 until a non-zero value has been seen.
  double range() const;
  double bin_width() const { return range() / bins(); }

  // The distribution a calibration sees: per-bin counts of |x| (signed), or of max(x, 0)
  // (unsigned: negatives are clipped to zero, so they land in bin 0).
  std::vector<int64_t> counts(bool is_unsigned) const;

  // The histogram of -x: calibrating it as unsigned picks the threshold of the negative side.
  ActivationHistogram mirrored() const;

 private:
  std::vector<int64_t> positive_;  // x >= 0 (including -0), by bin of x
  std::vector<int64_t> negative_;  // x < 0, by bin of -x
  int range_exp_ = 0;              // range = 2^range_exp_ once has_range_
  bool has_range_ = false;
  int64_t count_ = 0, negatives_ = 0, zeros_ = 0;
  float min_ = 0.0f, max_ = 0.0f;
};

struct ActivationRange {
  float threshold = 0.0f;  // calibrated clipping threshold T > 0
  // code = clamp(round(x / scale)). T / qmax, or with power_of_two the power of two
  // 2^ceil(log2(T / qmax)), whose clipping point qmax * scale is >= T.
  float scale = 0.0f;
  int bits = 8;
  bool is_unsigned = false;
  bool power_of_two = false;
  // Asymmetric (unsigned codes only): x ~= (code - zero_point) * scale; lower is the clipping
  // point of the negative side (<= 0) it was derived from.
  int32_t zero_point = 0;
  float lower = 0.0f;
};

// Largest code: 2^bits - 1 unsigned, 2^(bits-1) - 1 signed. bits in [2, 8].
int32_t activation_qmax(int bits, bool is_unsigned);

// Picks T from the histogram (see the method comments in calibration.cpp for the exact
// procedures) and derives the scale. Summary:
//   minmax:     T = max |x| (unsigned: max x).
//   percentile: nearest rank r = ceil(p/100 * n) over all n values (negatives count as 0 when
//               unsigned); T = upper edge of the bin holding the r-th smallest value, capped at the
//               max. So T is at most one bin width above the true r-th smallest value, never below.
//   mse:        the bin edge minimizing the expected squared error, modelling values as uniform
//               within their bin.
//   entropy:    the bin edge minimizing KL(P || Q) with Q merged into qmax levels; exact zeros
//               (a ReLU's spike at 0) are left out, and Q = 0 < P is smoothed to 1e-4.
// T is never above max |x|. A histogram whose values are all zero (or, unsigned, all <= 0) gets
// T = 1: any scale represents it exactly and 1 keeps the scale normal.
// Throws tern::Error for an empty histogram, bits outside [2, 8], a percentile outside (0, 100],
// or entropy with fewer bins than levels.
ActivationRange calibrate(const ActivationHistogram& histogram, CalibrationMethod method, int bits, bool is_unsigned,
                          bool power_of_two, double percentile = 99.99);

// Asymmetric codes for values of both signs: each side's threshold is picked by `method` on its own
// (T+ from max(x, 0), T- from max(-x, 0), as unsigned calibration sees them: mse and entropy then
// model the side's rounding with all qmax levels, an approximation), scale = (T+ + T-) / qmax and
// zero_point = round(T- / scale), so the codes [0, qmax] cover [-zero_point, qmax - zero_point]
// steps. Static scales only (no power of two). Throws as calibrate.
ActivationRange calibrate_asymmetric(const ActivationHistogram& histogram, CalibrationMethod method, int bits,
                                     double percentile = 99.99);

// The clamp bounds of x / scale, in steps: [-zero_point, qmax - zero_point] unsigned, [-qmax, qmax]
// signed (whose zero_point is 0).
struct CodeBounds {
  float lo = 0.0f, hi = 0.0f;
};
CodeBounds code_bounds(int32_t qmax, bool is_unsigned, int32_t zero_point = 0);

// 2^ceil(log2(threshold / qmax)), exactly: the finest power-of-two scale whose range covers the
// threshold. threshold > 0 and finite, qmax >= 1.
float power_of_two_scale(float threshold, int32_t qmax);

// clamp(round(x / scale), lo, hi) + zero_point with the bounds of code_bounds: [0, qmax] unsigned,
// [-qmax, qmax] signed. x / scale is computed in float and rounded half away from zero
// (std::lround), as everywhere else in tern; infinities saturate. Throws tern::Error for NaN x, a
// non-positive or non-finite scale, bits outside [2, 8] or a zero point outside [0, qmax] (or
// non-zero on signed codes).
int32_t quantize_activation(float x, float scale, int bits, bool is_unsigned, int32_t zero_point = 0);

// y[i] = scale * clamp(round(x[i] / scale), lo, hi) with the bounds of code_bounds: the values of
// quantize_activation's codes; NaN stays NaN. The one loop behind the simulation's FakeQuantize and
// fine-tuning's fake quantization, so training sees exactly the values inference computes. qmax
// from activation_qmax; scale > 0 and the zero point in range (not checked here: callers validate
// once, not per element).
void fake_quantize(std::span<const float> x, std::span<float> y, float scale, int32_t qmax, bool is_unsigned,
                   int32_t zero_point = 0);

}  // namespace tern::quant
