#include "tern/output_aware.h"

#include <algorithm>
#include <cmath>

#include "kernels/fp32/sgemm.h"
#include "tern/error.h"

namespace tern::quant {

namespace {

// In-place Cholesky factorization A = L L^T of a symmetric n x n matrix (lower triangle used and
// overwritten with L). False when A is not positive definite.
bool cholesky(std::vector<double>& a, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    double d = a[j * n + j];
    for (int64_t k = 0; k < j; ++k) d -= a[j * n + k] * a[j * n + k];
    if (!(d > 0)) return false;
    d = std::sqrt(d);
    a[j * n + j] = d;
    for (int64_t i = j + 1; i < n; ++i) {
      double s = a[i * n + j];
      for (int64_t k = 0; k < j; ++k) s -= a[i * n + k] * a[j * n + k];
      a[i * n + j] = s / d;
    }
  }
  return true;
}

// U, upper triangular, with H^-1 = U^T U (GPTQ's form of the inverse Hessian): Cholesky of H,
// inverse from it, Cholesky of the inverse. Retries with more damping until H is positive definite.
std::vector<double> inverse_hessian_factor(std::vector<double> h, int64_t n, double damping) {
  double mean_diag = 0;
  for (int64_t i = 0; i < n; ++i) mean_diag += h[i * n + i];
  mean_diag = n ? mean_diag / n : 1.0;
  if (!(mean_diag > 0)) mean_diag = 1.0;
  for (int64_t i = 0; i < n; ++i)
    if (h[i * n + i] <= 0) h[i * n + i] = mean_diag;  // an input that is always zero: any weight is as good
  for (int attempt = 0; attempt < 8; ++attempt, damping *= 10) {
    std::vector<double> l = h;
    for (int64_t i = 0; i < n; ++i) l[i * n + i] += damping * mean_diag;
    if (!cholesky(l, n)) continue;
    // inv = L^-T L^-1: invert L (lower) column by column, then multiply.
    std::vector<double> linv(static_cast<size_t>(n * n), 0.0);
    for (int64_t c = 0; c < n; ++c) {
      linv[c * n + c] = 1.0 / l[c * n + c];
      for (int64_t i = c + 1; i < n; ++i) {
        double s = 0;
        for (int64_t k = c; k < i; ++k) s += l[i * n + k] * linv[k * n + c];
        linv[i * n + c] = -s / l[i * n + i];
      }
    }
    std::vector<double> inv(static_cast<size_t>(n * n), 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        double s = 0;
        for (int64_t k = i; k < n; ++k) s += linv[k * n + i] * linv[k * n + j];
        inv[i * n + j] = inv[j * n + i] = s;
      }
    if (!cholesky(inv, n)) continue;
    std::vector<double> u(static_cast<size_t>(n * n), 0.0);  // U = L_inv^T
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) u[j * n + i] = inv[i * n + j];
    return u;
  }
  throw Error("output-aware rounding: the input covariance is not positive definite");
}

// The code of the level of `s` nearest to w (ties to the smaller magnitude for ternary).
int8_t nearest_code(double w, const ScalePair& s, const WeightQuantConfig& c) {
  switch (c.format) {
    case WeightFormat::kBinary: return w >= 0 ? 1 : -1;
    case WeightFormat::kInt: {
      if (!(s.positive > 0)) return 0;
      double qmax = (1 << (c.bits - 1)) - 1;
      return static_cast<int8_t>(std::clamp(std::round(w / s.positive), -qmax, qmax));
    }
    case WeightFormat::kTernary:
      if (w > 0) return w > 0.5 * s.positive && s.positive > 0 ? 1 : 0;
      return -w > 0.5 * s.negative && s.negative > 0 ? -1 : 0;
    case WeightFormat::kFloat32: break;
  }
  return 0;
}

double level(int8_t code, const ScalePair& s) { return code > 0 ? code * double(s.positive) : code * double(s.negative); }

}  // namespace

InputCovariance::InputCovariance(const Graph& graph, const Node& node, int64_t in, int64_t taps) : in_(in), taps_(taps) {
  if (node.op == OpType::kConv) {
    const auto& a = node.attr<ConvAttrs>();
    check(a.kernel.size() == 2, graph.source + ": node '" + node.name + "': output-aware rounding supports 2-D convolutions");
    conv_ = true;
    groups_ = a.group;
    kernel_ = a.kernel;
    strides_ = a.strides.empty() ? std::vector<int64_t>{1, 1} : a.strides;
    dilations_ = a.dilations.empty() ? std::vector<int64_t>{1, 1} : a.dilations;
    pads_ = a.pads.empty() ? std::vector<int64_t>{0, 0, 0, 0} : a.pads;
    check(kernel_[0] * kernel_[1] == taps, graph.source + ": node '" + node.name + "': kernel does not match the weights");
  } else {
    check(taps == 1, "output-aware rounding: a Gemm has one tap");
  }
  h_.assign(static_cast<size_t>(groups_), std::vector<double>(static_cast<size_t>(dim() * dim()), 0.0));
}

void InputCovariance::add(const Tensor& x, ThreadPool* pool) {
  const int64_t d = dim();
  const int64_t chunk = std::max<int64_t>(64, (1 << 22) / std::max<int64_t>(1, d));  // patches per GEMM
  std::vector<float> patches, hf(static_cast<size_t>(d * d));
  auto accumulate = [&](int64_t rows) {  // hf += P^T P, P = patches [rows, d] row-major
    kernels::GemmEpilogue e;
    e.accumulate = true;
    kernels::sgemm(d, d, rows, {patches.data(), 1, d}, {patches.data(), d, 1}, hf.data(), d, e, pool);
  };
  auto flush = [&](int64_t group) {
    std::vector<double>& h = h_[static_cast<size_t>(group)];
    for (int64_t i = 0; i < d * d; ++i) h[static_cast<size_t>(i)] += hf[static_cast<size_t>(i)];
    std::fill(hf.begin(), hf.end(), 0.0f);
  };
  if (!conv_) {
    // Every row of [..., K] is a sample (a token of a transformer's linear layer).
    check(x.rank() >= 2 && x.shape().back() == in_, "output-aware rounding: Gemm input must be [..., " + std::to_string(in_) + "]");
    const int64_t samples = x.size() / in_;
    for (int64_t b = 0; b < samples; b += chunk) {
      int64_t rows = std::min(chunk, samples - b);
      patches.assign(x.data<float>() + b * d, x.data<float>() + (b + rows) * d);
      accumulate(rows);
    }
    flush(0);
    samples_ += samples;
    return;
  }
  check(x.rank() == 4 && x.dim(1) == groups_ * in_, "output-aware rounding: Conv input has the wrong shape");
  const int64_t batch = x.dim(0), height = x.dim(2), width = x.dim(3);
  const int64_t kh = kernel_[0], kw = kernel_[1];
  const int64_t oh = (height + pads_[0] + pads_[2] - dilations_[0] * (kh - 1) - 1) / strides_[0] + 1;
  const int64_t ow = (width + pads_[1] + pads_[3] - dilations_[1] * (kw - 1) - 1) / strides_[1] + 1;
  const int64_t positions = batch * oh * ow;
  for (int64_t g = 0; g < groups_; ++g) {
    for (int64_t p0 = 0; p0 < positions; p0 += chunk) {
      int64_t rows = std::min(chunk, positions - p0);
      patches.assign(static_cast<size_t>(rows * d), 0.0f);
      for (int64_t r = 0; r < rows; ++r) {
        int64_t p = p0 + r, n = p / (oh * ow), y = (p / ow) % oh, xo = p % ow;
        float* patch = patches.data() + r * d;
        for (int64_t c = 0; c < in_; ++c) {
          const float* plane = x.data<float>() + ((n * groups_ * in_) + g * in_ + c) * height * width;
          for (int64_t i = 0; i < kh; ++i) {
            int64_t yy = y * strides_[0] - pads_[0] + i * dilations_[0];
            if (yy < 0 || yy >= height) continue;
            for (int64_t j = 0; j < kw; ++j) {
              int64_t xx = xo * strides_[1] - pads_[1] + j * dilations_[1];
              if (xx >= 0 && xx < width) patch[c * taps_ + i * kw + j] = plane[yy * width + xx];
            }
          }
        }
      }
      accumulate(rows);
    }
    flush(g);
  }
  samples_ += positions;
}

QuantizedWeights quantize_weights_output_aware(const std::vector<float>& weights, int64_t out, int64_t in, int64_t taps,
                                               const WeightQuantConfig& config, const InputCovariance& cov,
                                               double damping) {
  check(static_cast<int64_t>(weights.size()) == out * in * taps, "output-aware rounding: weights do not match the layer");
  check(cov.dim() == in * taps && out % cov.groups() == 0, "output-aware rounding: covariance does not match the layer");
  check(config.format != WeightFormat::kFloat32, "output-aware rounding: nothing to do for float32 weights");
  QuantizedWeights q;
  q.format = config.format;
  q.bits = config.format == WeightFormat::kTernary ? 2 : config.format == WeightFormat::kBinary ? 1 : config.bits;
  q.grouping = grouping_for(out, in, taps, config);
  const WeightGrouping& grouping = q.grouping;
  const int64_t d = in * taps;

  // Column order: group by group (see the header).
  std::vector<int64_t> order;
  if (grouping.axis == GroupAxis::kInputChannels) {
    for (int64_t c0 = 0; c0 < in; c0 += grouping.size)
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t c = c0; c < std::min(in, c0 + grouping.size); ++c) order.push_back(c * taps + t);
  } else {
    for (int64_t i = 0; i < d; ++i) order.push_back(i);
  }
  // Members of each group (canonical indices), to compute its scale from the current weights.
  std::vector<std::vector<int64_t>> members(static_cast<size_t>(grouping.count()));
  for (int64_t o = 0; o < out; ++o)
    for (int64_t k = 0; k < d; ++k) members[static_cast<size_t>(grouping.group_of(o, k / taps, k % taps))].push_back(o * d + k);

  // Two-level scales: every scale is rounded to its filter's 8-bit grid as soon as it is chosen, so
  // the error feedback sees the rounding. The grid must cover the scales the feedback will produce,
  // which can exceed the original weights' (clamping them cost MobileNetV2 8 points): take each
  // filter's largest scale from a first pass with float scales.
  if (uses_filter_steps(grouping, config)) {
    WeightQuantConfig exact = config;
    exact.float_scales = true;
    QuantizedWeights first = quantize_weights_output_aware(weights, out, in, taps, exact, cov, damping);
    const int64_t per_filter = grouping.groups_per_filter();
    q.filter_steps.assign(static_cast<size_t>(out), 0.0f);
    for (int64_t o = 0; o < out; ++o) {
      float top = 0.0f;
      for (int64_t i = o * per_filter; i < (o + 1) * per_filter; ++i)
        top = std::max({top, first.scales[static_cast<size_t>(i)].positive, first.scales[static_cast<size_t>(i)].negative});
      q.filter_steps[static_cast<size_t>(o)] = config.log_scales ? top : top / static_cast<float>(kScaleUnitMax);
    }
  }
  std::vector<double> current(weights.begin(), weights.end());
  q.codes.assign(weights.size(), 0);
  q.scales.assign(static_cast<size_t>(grouping.count()), ScalePair{});
  std::vector<bool> scale_set(static_cast<size_t>(grouping.count()), false);
  std::vector<float> group_w;
  std::vector<int8_t> group_codes;
  const int64_t rows_per_group = out / cov.groups();
  for (int64_t g = 0; g < cov.groups(); ++g) {
    const std::vector<double>& h = cov.matrix(g);
    std::vector<double> hp(static_cast<size_t>(d * d));
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j) hp[i * d + j] = h[order[i] * d + order[j]];
    std::vector<double> u = inverse_hessian_factor(std::move(hp), d, damping);
    for (int64_t i = 0; i < d; ++i) {
      const int64_t col = order[i];
      for (int64_t o = g * rows_per_group; o < (g + 1) * rows_per_group; ++o) {
        const int64_t gi = grouping.group_of(o, col / taps, col % taps);
        if (!scale_set[static_cast<size_t>(gi)]) {
          const auto& idx = members[static_cast<size_t>(gi)];
          group_w.resize(idx.size());
          group_codes.resize(idx.size());
          for (size_t k = 0; k < idx.size(); ++k) group_w[k] = static_cast<float>(current[static_cast<size_t>(idx[k])]);
          GroupScales gs = quantize_group(group_w, group_codes, config);
          if (!q.filter_steps.empty()) {
            gs.positive = round_to_step(gs.positive, q.filter_steps[static_cast<size_t>(o)], config.log_scales);
            gs.negative = round_to_step(gs.negative, q.filter_steps[static_cast<size_t>(o)], config.log_scales);
          }
          q.scales[static_cast<size_t>(gi)] = gs;
          scale_set[static_cast<size_t>(gi)] = true;
        }
        double* row = current.data() + o * d;
        const ScalePair& s = q.scales[static_cast<size_t>(gi)];
        int8_t code = nearest_code(row[col], s, config);
        q.codes[static_cast<size_t>(o * d + col)] = code;
        double err = (row[col] - level(code, s)) / u[i * d + i];
        for (int64_t j = i + 1; j < d; ++j) row[order[j]] -= err * u[i * d + j];
      }
    }
  }
  measure(q, weights);
  return q;
}

double relative_output_error(const std::vector<float>& weights, const QuantizedWeights& q, const InputCovariance& cov) {
  return relative_output_error(weights, q.dequantize(), cov);
}

double relative_output_error(const std::vector<float>& weights, const std::vector<float>& r, const InputCovariance& cov) {
  check(r.size() == weights.size(), "relative output error: approximation and weights differ in size");
  const int64_t d = cov.dim(), out = static_cast<int64_t>(weights.size()) / d, rows = out / cov.groups();
  double err = 0, sig = 0;
  for (int64_t o = 0; o < out; ++o) {
    const std::vector<double>& h = cov.matrix(o / rows);
    for (int64_t i = 0; i < d; ++i) {
      double ei = static_cast<double>(weights[o * d + i]) - r[o * d + i];
      double wi = weights[o * d + i];
      for (int64_t j = 0; j < d; ++j) {
        double ej = static_cast<double>(weights[o * d + j]) - r[o * d + j];
        err += ei * h[i * d + j] * ej;
        sig += wi * h[i * d + j] * weights[o * d + j];
      }
    }
  }
  return sig > 0 ? err / sig : 0.0;
}

}  // namespace tern::quant
