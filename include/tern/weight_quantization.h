// Quantizing one layer's weights: how the weights are cut into groups that share a scale, and the
// per-layer result (codes, scales, zero fraction, multiplications per output).
//
// Weights are seen in the canonical layout [out][in][taps]: a Conv's W[K][C/g][R][S] has
// out = K, in = C/g, taps = R*S; a Gemm's W[N][K] (transB) has taps = 1.
//
// Groups (FGQ's "N consecutive weights along the input-channel axis"):
//   kInputChannels: group = W[o][c0 .. c0+N-1][t] for each (o, channel block, tap). When N does not
//                   divide `in`, the last block of each filter is smaller (in % N channels): no
//                   weight is padded or shared across filters.
//   kKernelTaps:    for depthwise convolutions (in == 1), where there is no channel axis to group:
//                   group = W[o][0][t0 .. t0+N-1], the last block again smaller (taps % N).
//   kWholeFilter:   N = "channel": group = the whole filter W[o][*][*] (one scale per output).
//   kFilterClusters: cluster-based ternarization: N consecutive filters W[o0 .. o0+N-1][*][*]
//                   share one scale (the last cluster smaller).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "tern/quantizers.h"

namespace tern::quant {

// Stored in .tern files: append only.
enum class WeightFormat : uint8_t { kFloat32 = 0, kTernary = 1, kBinary = 2, kInt = 3 };
enum class TernaryMethod : uint8_t { kFgq = 0, kFgqAsymmetric = 1, kTwn = 2, kTnt = 3, kCluster = 4 };
enum class GroupAxis : uint8_t { kInputChannels = 0, kKernelTaps = 1, kWholeFilter = 2, kFilterClusters = 3 };

inline constexpr int64_t kWholeFilter = 0;  // group_size meaning "channel" (the whole filter)

struct WeightGrouping {
  int64_t out = 0, in = 0, taps = 0;
  GroupAxis axis = GroupAxis::kInputChannels;
  int64_t size = 1;  // N (channels, taps or filters per group); unused for kWholeFilter

  // The grouping FGQ uses for a layer: along input channels, along taps when in == 1 (depthwise),
  // whole filters for group_size == kWholeFilter; cluster => filter clusters.
  static WeightGrouping for_layer(int64_t out, int64_t in, int64_t taps, int64_t group_size, bool cluster);

  int64_t groups_per_filter() const;  // groups touching one output's filter (clusters: 1)
  int64_t count() const;              // total groups in the layer
  int64_t group_of(int64_t o, int64_t c, int64_t t) const;
  // Multiplications per output value when each group's partial sum is scaled once (FGQ's count).
  int64_t multiplies_per_output() const { return groups_per_filter(); }
  std::string describe() const;  // "N=4 along input channels", "whole filter", ...
};

struct WeightQuantConfig {
  WeightFormat format = WeightFormat::kTernary;
  TernaryMethod method = TernaryMethod::kFgq;
  int bits = 2;                // kInt: 2..8; ternary 2; binary 1
  int64_t group_size = 4;      // N, or kWholeFilter; for kInt: 0 = per output channel, -1 = per tensor
  bool float_scales = false;   // keep every group scale as float32 (see QuantizedWeights::filter_steps)
  bool log_scales = false;     // two-level scales on a logarithmic 8-bit grid (see unit_scale)
};

struct QuantizedWeights {
  WeightGrouping grouping;
  WeightFormat format = WeightFormat::kTernary;
  int bits = 2;
  std::vector<int8_t> codes;  // canonical [out][in][taps] order, as the FP32 weights
  std::vector<ScalePair> scales;  // one per group
  double zero_fraction = 0;   // share of zero codes
  double sqnr_db = 0;         // 10 log10(||W||^2 / ||W - Q(W)||^2); +inf when exact
  // Two-level scales, used when a filter has several groups (fine-grained groups along channels or
  // taps) unless config.float_scales: every group scale is u * filter_steps[o] with u an integer
  // in 0..127 (stored in a byte) and one float32 step per output filter. Storage drops from 32 to
  // 8 bits per group (N=4 ternary: 2 + 8/4 = 4 bits per weight instead of 10) and the group
  // multiply becomes an integer one: a ternary code times its unit is an int8 weight in
  // [-127, 127], so the integer runtime runs the layer as an int8 GEMM. The step is max scale /
  // 127, so a scale moves by at most step / 2. Empty: the scales are plain float32.
  std::vector<float> filter_steps;

  float dequantized(int64_t o, int64_t c, int64_t t) const;
  std::vector<float> dequantize() const;  // canonical order
};

// Scales each group stores: 2 for methods with separate positive and negative scales (asymmetric
// FGQ, TNT), else 1.
int scales_per_group(const WeightQuantConfig& config);

// One group's codes and scales with the configured format and method.
GroupScales quantize_group(std::span<const float> w, std::span<int8_t> codes, const WeightQuantConfig& config);

// Residual expansion (ternary residual networks, arXiv 1707.04679): W ~= sum_j terms[j], where
// terms[0] = `first` (a quantization of W) and each further term quantizes what the terms so far
// leave: terms[j] = Q(W - sum_{i<j} terms[i]), with the same configuration and grouping. Each term
// is the per-group optimum for its residual, so the error never grows; the expansion stops early
// when a term comes out all zero (the error can no longer fall). At most max_terms terms. Each
// term's sqnr_db is that of the sum of the terms up to it against W.
std::vector<QuantizedWeights> expand_residual(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                              const WeightQuantConfig& config, QuantizedWeights first, int max_terms);
// The same with any quantizer for the residuals (e.g. output-aware rounding): `quantize(r)` returns
// a quantization of residual r in the layer's configuration.
std::vector<QuantizedWeights> expand_residual(const std::vector<float>& weights, QuantizedWeights first, int max_terms,
                                              const std::function<QuantizedWeights(const std::vector<float>&)>& quantize);
// ||W - sum of the terms' dequantized weights||^2.
double expansion_error(const std::vector<float>& weights, const std::vector<QuantizedWeights>& terms);

// Whether a layer with this grouping and configuration stores two-level scales.
bool uses_filter_steps(const WeightGrouping& grouping, const WeightQuantConfig& config);
// Rounds every group scale of q to u * step (see filter_steps); a group whose scale rounds to 0
// gets all-zero codes. Then refreshes zero_fraction and sqnr_db against `weights`.
void round_group_scales(QuantizedWeights& q, const std::vector<float>& weights, bool log_scales = false);
// The largest unit of a linear two-level group scale (7 bits, see filter_steps).
constexpr int kScaleUnitMax = 127;
// u * step with u = round(scale / step) clamped to [0, kScaleUnitMax] (linear) or the log grid's
// [0, 255]; 0 when step is 0. The one rounding of
// group scales (quantizer, output-aware rounding, file loader all use it).
float round_to_step(float scale, float step, bool log_scales = false);
// The unit of a two-level group scale and back. Linear (default): scale = u * step, u in 0..127,
// step = the filter's largest scale / 127. Logarithmic (log_scales; 8-bit units, simulation only:
// the integer runtime needs linear units): step = the filter's largest scale,
// scale = step * 2^((u - 255) / 16) for u >= 1 and 0 for u = 0: every scale within 2.2 % of its
// value over a 2^16 range, where linear steps lose small group scales entirely.
uint8_t scale_unit(float scale, float step, bool log_scales);
float unit_scale(uint8_t unit, float step, bool log_scales);
// zero_fraction and sqnr_db of q against the FP32 weights.
void measure(QuantizedWeights& q, const std::vector<float>& weights);

// The grouping quantize_weights uses for a layer and configuration (int: -1 = one scale per
// tensor, 0 = per output channel, N = per group). Throws Error for a bad group size or bit count.
WeightGrouping grouping_for(int64_t out, int64_t in, int64_t taps, const WeightQuantConfig& config);

// Quantizes weights in canonical layout [out][in][taps]. Throws Error on a bad configuration
// (group size < 0 for ternary, bits out of range, an empty layer).
QuantizedWeights quantize_weights(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                  const WeightQuantConfig& config);

}  // namespace tern::quant
