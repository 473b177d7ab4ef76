#include "tern/weight_quantization.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "tern/error.h"

namespace tern::quant {

namespace {
int64_t ceil_div(int64_t a, int64_t b) { return a / b + (a % b != 0); }  // a >= 0, b >= 1; any b (a file's group size)
}  // namespace

WeightGrouping WeightGrouping::for_layer(int64_t out, int64_t in, int64_t taps, int64_t group_size, bool cluster) {
  check(out >= 1 && in >= 1 && taps >= 1, "weight quantization: empty layer");
  WeightGrouping g{out, in, taps, GroupAxis::kInputChannels, group_size};
  if (cluster) {
    check(group_size >= 1, "cluster ternarization needs a cluster size >= 1");
    g.axis = GroupAxis::kFilterClusters;
  } else if (group_size == kWholeFilter) {
    g.axis = GroupAxis::kWholeFilter;
  } else {
    check(group_size >= 1, "group size must be >= 1 or 'channel', got " + std::to_string(group_size));
    if (in == 1 && taps > 1) g.axis = GroupAxis::kKernelTaps;
  }
  return g;
}

int64_t WeightGrouping::groups_per_filter() const {
  switch (axis) {
    case GroupAxis::kInputChannels: return ceil_div(in, size) * taps;
    case GroupAxis::kKernelTaps: return ceil_div(taps, size);
    case GroupAxis::kWholeFilter:
    case GroupAxis::kFilterClusters: return 1;
  }
  return 1;
}

int64_t WeightGrouping::count() const {
  return axis == GroupAxis::kFilterClusters ? ceil_div(out, size) : out * groups_per_filter();
}

int64_t WeightGrouping::group_of(int64_t o, int64_t c, int64_t t) const {
  switch (axis) {
    case GroupAxis::kInputChannels: return (o * ceil_div(in, size) + c / size) * taps + t;
    case GroupAxis::kKernelTaps: return o * ceil_div(taps, size) + t / size;
    case GroupAxis::kWholeFilter: return o;
    case GroupAxis::kFilterClusters: return o / size;
  }
  return 0;
}

std::string WeightGrouping::describe() const {
  switch (axis) {
    case GroupAxis::kInputChannels: return "N=" + std::to_string(size) + " input channels";
    case GroupAxis::kKernelTaps: return "N=" + std::to_string(size) + " kernel taps";
    case GroupAxis::kWholeFilter: return "whole filter";
    case GroupAxis::kFilterClusters: return std::to_string(size) + "-filter clusters";
  }
  return "?";
}

float QuantizedWeights::dequantized(int64_t o, int64_t c, int64_t t) const {
  int8_t q = codes[static_cast<size_t>((o * grouping.in + c) * grouping.taps + t)];
  const ScalePair& s = scales[static_cast<size_t>(grouping.group_of(o, c, t))];
  return q > 0 ? q * s.positive : q * s.negative;
}

std::vector<float> QuantizedWeights::dequantize() const {
  std::vector<float> w(codes.size());
  for (int64_t o = 0; o < grouping.out; ++o)
    for (int64_t c = 0; c < grouping.in; ++c)
      for (int64_t t = 0; t < grouping.taps; ++t)
        w[static_cast<size_t>((o * grouping.in + c) * grouping.taps + t)] = dequantized(o, c, t);
  return w;
}

GroupScales quantize_group(std::span<const float> w, std::span<int8_t> codes, const WeightQuantConfig& config) {
  switch (config.format) {
    case WeightFormat::kBinary: return binarize(w, codes);
    case WeightFormat::kInt: return quantize_symmetric(w, config.bits, codes);
    case WeightFormat::kTernary:
      switch (config.method) {
        case TernaryMethod::kFgq:
        case TernaryMethod::kCluster: return ternarize_l2(w, codes);
        case TernaryMethod::kFgqAsymmetric: return ternarize_l2_asymmetric(w, codes);
        case TernaryMethod::kTwn: return ternarize_twn(w, codes);
        case TernaryMethod::kTnt: return ternarize_tnt(w, codes);
      }
      break;
    case WeightFormat::kFloat32: break;
  }
  throw Error("weight quantization: nothing to do for float32 weights");
}

WeightGrouping grouping_for(int64_t out, int64_t in, int64_t taps, const WeightQuantConfig& config) {
  if (config.format == WeightFormat::kInt) {
    check(config.bits >= 2 && config.bits <= 8, "integer weights need 2 to 8 bits, got " + std::to_string(config.bits));
    if (config.group_size == -1) {  // one tensor-wide scale: a single cluster of all filters
      check(out >= 1 && in >= 1 && taps >= 1, "weight quantization: empty layer");
      return WeightGrouping{out, in, taps, GroupAxis::kFilterClusters, out};
    }
    return WeightGrouping::for_layer(out, in, taps, config.group_size, false);
  }
  return WeightGrouping::for_layer(out, in, taps, config.group_size,
                                   config.format == WeightFormat::kTernary && config.method == TernaryMethod::kCluster);
}

QuantizedWeights quantize_weights(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                  const WeightQuantConfig& config) {
  check(static_cast<int64_t>(weights.size()) == out * in * taps, "weight quantization: weights do not match the layer shape");
  check(config.format != WeightFormat::kFloat32, "weight quantization: nothing to do for float32 weights");
  QuantizedWeights q;
  q.format = config.format;
  q.bits = config.format == WeightFormat::kTernary ? 2 : config.format == WeightFormat::kBinary ? 1 : config.bits;
  q.grouping = grouping_for(out, in, taps, config);
  // Gather each group's weights (groups are not contiguous in the canonical layout), quantize, scatter.
  const WeightGrouping& g = q.grouping;
  int64_t n_groups = g.count();
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(n_groups));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t c = 0; c < in; ++c)
      for (int64_t t = 0; t < taps; ++t) members[static_cast<size_t>(g.group_of(o, c, t))].push_back((o * in + c) * taps + t);
  q.codes.assign(weights.size(), 0);
  q.scales.resize(static_cast<size_t>(n_groups));
  std::vector<float> w;
  std::vector<int8_t> codes;
  for (int64_t gi = 0; gi < n_groups; ++gi) {
    const auto& idx = members[static_cast<size_t>(gi)];
    w.resize(idx.size());
    codes.resize(idx.size());
    for (size_t i = 0; i < idx.size(); ++i) w[i] = weights[static_cast<size_t>(idx[i])];
    GroupScales s = quantize_group(w, codes, config);
    q.scales[static_cast<size_t>(gi)] = s;
    for (size_t i = 0; i < idx.size(); ++i) q.codes[static_cast<size_t>(idx[i])] = codes[i];
  }
  if (uses_filter_steps(q.grouping, config)) round_group_scales(q, weights, config.log_scales);
  else measure(q, weights);
  return q;
}

int scales_per_group(const WeightQuantConfig& c) {
  return c.format == WeightFormat::kTernary &&
                 (c.method == TernaryMethod::kFgqAsymmetric || c.method == TernaryMethod::kTnt)
             ? 2
             : 1;
}

std::vector<QuantizedWeights> expand_residual(const std::vector<float>& weights, QuantizedWeights first, int max_terms,
                                              const std::function<QuantizedWeights(const std::vector<float>&)>& quantize) {
  check(max_terms >= 1, "residual expansion needs at least one term");
  std::vector<QuantizedWeights> terms;
  terms.push_back(std::move(first));
  std::vector<float> residual = weights;
  double signal = 0;
  for (float v : weights) signal += static_cast<double>(v) * v;
  for (int j = 1; j < max_terms; ++j) {
    std::vector<float> last = terms.back().dequantize();
    for (size_t i = 0; i < residual.size(); ++i) residual[i] -= last[i];
    QuantizedWeights next = quantize(residual);
    if (std::all_of(next.codes.begin(), next.codes.end(), [](int8_t c) { return c == 0; })) break;
    measure(next, residual);  // zero fraction; the SQNR below is the whole sum's against W
    terms.push_back(std::move(next));
    double noise = expansion_error(weights, terms);
    terms.back().sqnr_db = noise > 0 ? 10.0 * std::log10(signal / noise) : INFINITY;
  }
  return terms;
}

std::vector<QuantizedWeights> expand_residual(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                              const WeightQuantConfig& config, QuantizedWeights first, int max_terms) {
  return expand_residual(weights, std::move(first), max_terms,
                         [&](const std::vector<float>& r) { return quantize_weights(r, out, in, taps, config); });
}

double expansion_error(const std::vector<float>& weights, const std::vector<QuantizedWeights>& terms) {
  std::vector<double> sum(weights.size(), 0.0);
  for (const QuantizedWeights& t : terms) {
    std::vector<float> d = t.dequantize();
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += d[i];
  }
  double e = 0;
  for (size_t i = 0; i < sum.size(); ++i) e += (weights[i] - sum[i]) * (weights[i] - sum[i]);
  return e;
}

bool uses_filter_steps(const WeightGrouping& grouping, const WeightQuantConfig& config) {
  return !config.float_scales && config.format != WeightFormat::kFloat32 &&
         (grouping.axis == GroupAxis::kInputChannels || grouping.axis == GroupAxis::kKernelTaps) &&
         grouping.groups_per_filter() > 1;
}

void measure(QuantizedWeights& q, const std::vector<float>& weights) {
  int64_t zeros = 0;
  for (int8_t c : q.codes) zeros += c == 0;
  q.zero_fraction = q.codes.empty() ? 0.0 : static_cast<double>(zeros) / static_cast<double>(q.codes.size());
  std::vector<float> r = q.dequantize();
  double signal = 0, noise = 0;
  for (size_t i = 0; i < weights.size(); ++i) {
    signal += static_cast<double>(weights[i]) * weights[i];
    noise += (static_cast<double>(weights[i]) - r[i]) * (static_cast<double>(weights[i]) - r[i]);
  }
  q.sqnr_db = noise > 0 ? 10.0 * std::log10(signal / noise) : INFINITY;
}

void round_group_scales(QuantizedWeights& q, const std::vector<float>& weights, bool log_scales) {
  const WeightGrouping& g = q.grouping;
  const int64_t per_filter = g.groups_per_filter();
  q.filter_steps.assign(static_cast<size_t>(g.out), 0.0f);
  for (int64_t o = 0; o < g.out; ++o) {
    float top = 0.0f;
    for (int64_t i = o * per_filter; i < (o + 1) * per_filter; ++i)
      top = std::max({top, q.scales[static_cast<size_t>(i)].positive, q.scales[static_cast<size_t>(i)].negative});
    float step = log_scales ? top : top / static_cast<float>(kScaleUnitMax);
    q.filter_steps[static_cast<size_t>(o)] = step;
    for (int64_t i = o * per_filter; i < (o + 1) * per_filter; ++i) {
      ScalePair& s = q.scales[static_cast<size_t>(i)];
      s.positive = round_to_step(s.positive, step, log_scales);
      s.negative = round_to_step(s.negative, step, log_scales);
    }
  }
  // A scale that rounded to zero leaves codes that mean nothing: make them zeros (binary has no
  // zero code; its level is zero anyway).
  for (int64_t o = 0; q.format != WeightFormat::kBinary && o < g.out; ++o)
    for (int64_t c = 0; c < g.in; ++c)
      for (int64_t t = 0; t < g.taps; ++t) {
        int8_t& code = q.codes[static_cast<size_t>((o * g.in + c) * g.taps + t)];
        const ScalePair& s = q.scales[static_cast<size_t>(g.group_of(o, c, t))];
        if ((code > 0 && s.positive == 0.0f) || (code < 0 && s.negative == 0.0f)) code = 0;
      }
  measure(q, weights);
}

float unit_scale(uint8_t unit, float step, bool log_scales) {
  if (!log_scales) return static_cast<float>(unit) * step;
  if (unit == 0) return 0.0f;
  // 2^(-i/16), i = 0..15: one table, so every build decodes the same floats.
  static const std::array<float, 16> fraction = [] {
    std::array<float, 16> t{};
    for (int i = 0; i < 16; ++i) t[static_cast<size_t>(i)] = static_cast<float>(std::exp2(-i / 16.0));
    return t;
  }();
  const int d = 255 - unit;
  return std::ldexp(step * fraction[static_cast<size_t>(d % 16)], -(d / 16));
}

uint8_t scale_unit(float scale, float step, bool log_scales) {
  if (!(step > 0.0f) || !(scale > 0.0f)) return 0;
  if (!log_scales) return static_cast<uint8_t>(std::min(static_cast<float>(kScaleUnitMax), std::round(scale / step)));
  int d = static_cast<int>(std::lround(-16.0 * std::log2(static_cast<double>(scale) / step)));
  uint8_t best = 0;
  float best_error = scale;  // unit 0 (zero)
  for (int dd = d - 1; dd <= d + 1; ++dd) {
    int u = 255 - std::clamp(dd, 0, 254);
    float error = std::fabs(unit_scale(static_cast<uint8_t>(u), step, true) - scale);
    if (error < best_error) best = static_cast<uint8_t>(u), best_error = error;
  }
  return best;
}

float round_to_step(float scale, float step, bool log_scales) {
  return unit_scale(scale_unit(scale, step, log_scales), step, log_scales);
}

}  // namespace tern::quant
