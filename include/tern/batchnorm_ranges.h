// Data-free activation ranges: a clipping threshold T per activation tensor, derived from the
// BatchNormalization parameters the model still carries (no calibration images).
//
// Why it works: in inference mode BN normalizes its input with the running statistics gathered on
// the training set and then applies gamma/beta, so on data like the training data BN's output in
// channel c has mean beta_c and standard deviation |gamma_c|; it is taken to be Gaussian,
// N(beta_c, gamma_c^2). batchnorm_ranges propagates, per channel, a mean m, a variance v, hard bounds
// [lo, hi] (from the input range and from clips; ±inf when none) and the k-sigma interval
// [m - k s, m + k s] (s = sqrt(v), k = sigmas) intersected with [lo, hi]:
//  - Relu / Clip / LeakyRelu / a Conv's or Gemm's fused clamp are monotone, so they map the
//    k-sigma interval exactly (a quantile of f(x) is f of x's quantile): after Relu the threshold
//    is min(hi, beta + k |gamma|), not the smaller m' + k s' of the rectified moments, which would
//    cut the rectified tail too early (m = 0: 2.7 s instead of 4 s). The moments m', v' of the
//    clipped Gaussian (closed form, clipped_gaussian_moments) are kept for later Adds. A clip with
//    both ends finite bounds even an unknown input (Relu6: [0, 6]).
//  - Add / Sub of two tensors: means and variances add. This assumes the two are independent
//    (a residual branch and its shortcut are correlated in practice; positive correlation would widen
//    the sum, so the threshold is an estimate, not a bound). The sum is again taken as Gaussian; hard
//    bounds add. Where one side has no Gaussian statistics (an input range), the k-sigma intervals
//    add instead (interval arithmetic).
//  - Add / Sub / Mul / Div by a constant scalar or per-channel constant: the affine map is exact.
//  - MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool / ReduceMean / Identity (Dropout) /
//    Flatten / Reshape / Squeeze / Unsqueeze / Pad / Concat keep the statistics. For averaging this is
//    conservative (averaging n correlated values shrinks the variance by an unknown factor between 1
//    and n); for max pooling it is slightly optimistic (the max of n values shifts the tail up; the
//    hard bounds still hold). A reshape keeps channels only when axes 0 and 1 are unchanged (e.g.
//    Flatten of [N, C, 1, 1] after a global pool); otherwise channels are pooled into one whose
//    interval is the union over channels (no Gaussian statistics any more).
//  - The graph inputs: input_range as hard bounds only (no Gaussian).
//  - A Conv / Gemm output not followed by BN, and every other op: unknown (no entry).
// T = max over channels of max(|L_c|, |H_c|), [L_c, H_c] the k-sigma interval within the hard bounds;
// for a provably non-negative tensor (every lo_c >= 0), max over channels of H_c.
//
// Default sigmas = 4: a Gaussian lies within ±4 s with probability 99.994%, about the 99.99th
// percentile that percentile calibration uses at 8 bits. Lower bit widths are better served by
// smaller cuts (the MSE-optimal clip of a Gaussian at 4 bits is about 2.5 s); pass them explicitly.
//
// Names: the map is keyed by value name in the unfolded graph. Every name the optimized graph gives a
// Conv/Gemm input is there too: fold_batchnorm gives the folded Conv/Gemm output the BN output's name,
// fuse_activations gives it the Relu/Clip output's name, and drop_identities keeps an Identity's input
// name (or renames it to the Identity's output name, which also has an entry with the same threshold).
#pragma once

#include <map>
#include <optional>
#include <string>
#include <utility>

#include "tern/graph.h"

namespace tern::quant {

struct BatchNormRange {
  float threshold = 0;        // clipping point for |x| (non_negative values: for x)
  bool non_negative = false;  // provably >= 0 (after Relu / Clip(lo >= 0) etc.)
  std::string source;         // "batchnorm 4 sigma", "input range", "relu6 bound", "clip bound", "sum of bounds"
};

inline constexpr double kDefaultBatchNormSigmas = 4.0;

// graph: an imported graph whose BatchNormalization nodes are not folded yet
// (import_onnx(path, {.optimize = false}): constants are folded and shapes inferred all the same).
// input_range: the exact [lo, hi] of every float graph input (e.g. the pixel range after
// normalization), or nullopt. sigmas: the Gaussian tail cut k (> 0).
// Returns, by value name, the threshold of every float value whose statistics can be derived and give
// a finite threshold. Throws tern::Error for sigmas <= 0 or an invalid input_range.
std::map<std::string, BatchNormRange> batchnorm_ranges(const Graph& graph,
                                                       std::optional<std::pair<float, float>> input_range,
                                                       double sigmas = kDefaultBatchNormSigmas);

// Mean and variance of clip(x, lo, hi) for x ~ N(mean, stddev^2); lo may be -inf, hi +inf, lo <= hi.
// stddev 0 gives the clipped point mass.
struct GaussianMoments {
  double mean = 0;
  double variance = 0;
};
GaussianMoments clipped_gaussian_moments(double mean, double stddev, double lo, double hi);

}  // namespace tern::quant
