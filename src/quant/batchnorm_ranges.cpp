// Data-free activation thresholds from BatchNorm statistics (see tern/batchnorm_ranges.h).
#include "tern/batchnorm_ranges.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <limits>
#include <numbers>
#include <sstream>
#include <vector>

#include "tern/error.h"

namespace tern::quant {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double normal_cdf(double z) { return 0.5 * std::erfc(-z / std::sqrt(2.0)); }
double normal_sf(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }  // 1 - cdf, accurate in the tail
double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * std::numbers::pi); }

// One channel's statistics: Gaussian moments (when known), hard bounds, and the k-sigma interval
// within the hard bounds (what the threshold is read from).
struct Channel {
  bool gaussian = false;
  double mean = 0, var = 0;
  double lo = -kInf, hi = kInf;
  double tlo = -kInf, thi = kInf;
};

// Per channel along axis 1, or one entry that holds for every element.
struct Stats {
  std::vector<Channel> ch;
  std::string bound_source;  // where the hard bounds came from
  bool from_batchnorm = false;
};

Channel gaussian_channel(double mean, double var, double lo, double hi, double k) {
  Channel c;
  c.gaussian = true;
  c.mean = mean;
  c.var = std::max(var, 0.0);
  c.lo = lo;
  c.hi = hi;
  double s = std::sqrt(c.var);
  c.tlo = std::clamp(mean - k * s, lo, hi);
  c.thi = std::clamp(mean + k * s, lo, hi);
  return c;
}

Channel unbounded() { return Channel{}; }

Channel clip(const Channel& x, double a, double b) {
  Channel r;
  r.lo = std::clamp(x.lo, a, b);
  r.hi = std::clamp(x.hi, a, b);
  r.tlo = std::clamp(x.tlo, a, b);
  r.thi = std::clamp(x.thi, a, b);
  if (x.gaussian) {
    GaussianMoments g = clipped_gaussian_moments(x.mean, std::sqrt(x.var), a, b);
    r.gaussian = true;
    r.mean = g.mean;
    r.var = g.variance;
  }
  return r;
}

Channel leaky_relu(const Channel& x, double alpha) {  // alpha >= 0: monotone
  auto f = [alpha](double v) { return v >= 0 ? v : (alpha == 0 ? 0.0 : alpha * v); };
  Channel r;
  r.lo = f(x.lo);
  r.hi = f(x.hi);
  r.tlo = f(x.tlo);
  r.thi = f(x.thi);
  if (x.gaussian) {
    double s = std::sqrt(x.var);
    GaussianMoments pos = clipped_gaussian_moments(x.mean, s, 0, kInf);   // max(x, 0)
    GaussianMoments neg = clipped_gaussian_moments(-x.mean, s, 0, kInf);  // max(-x, 0)
    r.gaussian = true;
    r.mean = pos.mean - alpha * neg.mean;
    double second = pos.variance + pos.mean * pos.mean + alpha * alpha * (neg.variance + neg.mean * neg.mean);
    r.var = std::max(0.0, second - r.mean * r.mean);
  }
  return r;
}

Channel affine(const Channel& x, double a, double b) {  // a * x + b
  auto f = [a, b](double v) { return a == 0 ? b : a * v + b; };
  Channel r;
  r.lo = f(a >= 0 ? x.lo : x.hi);
  r.hi = f(a >= 0 ? x.hi : x.lo);
  r.tlo = f(a >= 0 ? x.tlo : x.thi);
  r.thi = f(a >= 0 ? x.thi : x.tlo);
  if (x.gaussian) {
    r.gaussian = true;
    r.mean = a * x.mean + b;
    r.var = a * a * x.var;
  }
  return r;
}

Channel add(const Channel& x, const Channel& y, double k) {
  double lo = x.lo + y.lo, hi = x.hi + y.hi;
  if (x.gaussian && y.gaussian) return gaussian_channel(x.mean + y.mean, x.var + y.var, lo, hi, k);
  Channel r;  // interval arithmetic on the k-sigma intervals
  r.lo = lo;
  r.hi = hi;
  r.tlo = x.tlo + y.tlo;
  r.thi = x.thi + y.thi;
  return r;
}

Channel include_value(Channel x, double v) {  // padding: v appears among the elements
  x.lo = std::min(x.lo, v);
  x.hi = std::max(x.hi, v);
  x.tlo = std::min(x.tlo, v);
  x.thi = std::max(x.thi, v);
  return x;
}

Channel union_of(const std::vector<Channel>& cs) {
  Channel r;
  r.lo = r.tlo = kInf;
  r.hi = r.thi = -kInf;
  for (const Channel& c : cs) {
    r.lo = std::min(r.lo, c.lo);
    r.hi = std::max(r.hi, c.hi);
    r.tlo = std::min(r.tlo, c.tlo);
    r.thi = std::max(r.thi, c.thi);
  }
  return r;
}

Stats pooled(const Stats& s) {
  if (s.ch.size() == 1) return s;
  Stats r = s;
  r.ch = {union_of(s.ch)};
  return r;
}

// s expanded to n channels (a single entry is broadcast), or nullopt when the counts differ.
std::optional<Stats> expanded(const Stats& s, size_t n) {
  if (s.ch.size() == n) return s;
  if (s.ch.size() != 1) return std::nullopt;
  Stats r = s;
  r.ch.assign(n, s.ch[0]);
  return r;
}

std::string combine_sources(const std::string& a, const std::string& b) {
  if (a == b || b.empty()) return a;
  if (a.empty()) return b;
  return "combined bounds";
}

std::string clip_source(double a, double b) {
  if (a == 0 && b == 6) return "relu6 bound";
  return "clip bound";
}

int64_t rank_of(const Value& v) { return v.shape_known ? static_cast<int64_t>(v.shape.size()) : -1; }

// Axis 1 of `in` lines up with axis 1 of `out` (same rank, so broadcasting does not shift it).
bool aligned(const Value& in, const Value& out) { return rank_of(in) >= 2 && rank_of(in) == rank_of(out); }

// A reshape-like op keeps every [n, c] block in place when axes 0 and 1 are unchanged.
bool keeps_channels(const Value& in, const Value& out) {
  return rank_of(in) >= 2 && rank_of(out) >= 2 && in.shape[0] == out.shape[0] && in.shape[1] == out.shape[1];
}

// A constant operand of an elementwise op as one value per channel of `out` (size 1: a scalar),
// or nullopt when it varies along another axis.
std::optional<std::vector<double>> per_channel_constant(const Tensor& t, const Value& out) {
  if (t.dtype() != DataType::kFloat32 || t.size() < 1) return std::nullopt;
  const float* p = t.data<float>();
  if (t.size() == 1) return std::vector<double>{p[0]};
  int64_t r = rank_of(out);
  if (r < 2 || t.rank() > r) return std::nullopt;
  for (int64_t i = 0; i < t.rank(); ++i) {
    int64_t axis = r - t.rank() + i;
    int64_t d = t.dim(i);
    if (axis == 1 ? (d != t.size() || (out.shape[1] >= 0 && out.shape[1] != d)) : d != 1) return std::nullopt;
  }
  return std::vector<double>(p, p + t.size());
}

bool all_finite(const Tensor& t) {
  for (float v : t.floats())
    if (!std::isfinite(v)) return false;
  return true;
}

}  // namespace

GaussianMoments clipped_gaussian_moments(double mean, double stddev, double lo, double hi) {
  check(lo <= hi, "clipped_gaussian_moments: lo must not exceed hi");
  if (!(stddev > 0)) return {std::clamp(mean, lo, hi), 0.0};
  // Standardize: clip(z, a, b), z ~ N(0, 1); then y = mean + stddev * that.
  bool lo_finite = std::isfinite(lo), hi_finite = std::isfinite(hi);
  double a = (lo - mean) / stddev, b = (hi - mean) / stddev;
  double cdf_a = lo_finite ? normal_cdf(a) : 0.0;
  double sf_b = hi_finite ? normal_sf(b) : 0.0;
  double pdf_a = lo_finite ? normal_pdf(a) : 0.0;
  double pdf_b = hi_finite ? normal_pdf(b) : 0.0;
  // P(a < z < b), computed on the side that avoids cancellation.
  double inside = a > 0 ? normal_sf(a) - sf_b : (hi_finite ? normal_cdf(b) : 1.0) - cdf_a;
  double a_mass = lo_finite ? a * cdf_a : 0.0, b_mass = hi_finite ? b * sf_b : 0.0;
  double a_pdf = lo_finite ? a * pdf_a : 0.0, b_pdf = hi_finite ? b * pdf_b : 0.0;
  // E[clip] = a P(z<a) + b P(z>b) + int_a^b z phi; E[clip^2] likewise, with int z^2 phi = [-z phi] + int phi.
  double m1 = a_mass + b_mass + (pdf_a - pdf_b);
  double m2 = (lo_finite ? a * a_mass : 0.0) + (hi_finite ? b * b_mass : 0.0) + inside + (a_pdf - b_pdf);
  double var = std::max(0.0, m2 - m1 * m1);
  return {mean + stddev * m1, stddev * stddev * var};
}

std::map<std::string, BatchNormRange> batchnorm_ranges(const Graph& graph,
                                                       std::optional<std::pair<float, float>> input_range,
                                                       double sigmas) {
  const std::string where = graph.source.empty() ? "batchnorm_ranges" : graph.source + ": batchnorm_ranges";
  check(std::isfinite(sigmas) && sigmas > 0, where + ": sigmas must be a positive number");
  if (input_range)
    check(std::isfinite(input_range->first) && std::isfinite(input_range->second) &&
              input_range->first <= input_range->second,
          where + ": input range must be finite with lo <= hi");
  const double k = sigmas;

  std::vector<std::optional<Stats>> stats(graph.values.size());
  auto get = [&](ValueId id) -> const Stats* {
    if (id == kNoValue || !stats[static_cast<size_t>(id)]) return nullptr;
    return &*stats[static_cast<size_t>(id)];
  };

  if (input_range) {
    for (ValueId id : graph.inputs) {
      if (graph.is_constant(id) || graph.value(id).dtype != DataType::kFloat32) continue;
      Channel c;
      c.lo = c.tlo = input_range->first;
      c.hi = c.thi = input_range->second;
      stats[static_cast<size_t>(id)] = Stats{{c}, "input range", false};
    }
  }

  for (const Node& node : graph.nodes) {
    if (node.outputs.empty() || node.inputs.empty()) continue;
    const Value& out = graph.value(node.outputs[0]);
    if (out.dtype != DataType::kFloat32) continue;
    const Value* in_value = node.inputs[0] == kNoValue ? nullptr : &graph.value(node.inputs[0]);
    const Stats* in = get(node.inputs[0]);
    std::optional<Stats> result;

    // Clip of `in`, or of an unknown input (only the clip's own bounds then).
    auto clipped = [&](double a, double b) {
      Stats s = in ? *in : Stats{{unbounded()}, "", false};
      for (Channel& c : s.ch) c = clip(c, a, b);
      if (std::isfinite(b)) s.bound_source = clip_source(a, b);
      return s;
    };

    switch (node.op) {
      case OpType::kBatchNormalization: {
        if (node.inputs.size() < 3 || !graph.is_constant(node.inputs[1]) || !graph.is_constant(node.inputs[2])) break;
        const Tensor& gamma = graph.constant(node.inputs[1]);
        const Tensor& beta = graph.constant(node.inputs[2]);
        if (gamma.dtype() != DataType::kFloat32 || beta.dtype() != DataType::kFloat32 || gamma.size() < 1 ||
            gamma.size() != beta.size() || !all_finite(gamma) || !all_finite(beta))
          break;
        if (rank_of(out) >= 2 && out.shape[1] >= 0 && out.shape[1] != gamma.size()) break;
        Stats s{{}, "", true};
        for (int64_t c = 0; c < gamma.size(); ++c) {
          double g = gamma.data<float>()[c];
          s.ch.push_back(gaussian_channel(beta.data<float>()[c], g * g, -kInf, kInf, k));
        }
        result = std::move(s);
        break;
      }
      case OpType::kRelu:
        result = clipped(0.0, kInf);
        break;
      case OpType::kClip: {
        if (node.inputs.size() > 1) break;  // min/max known only at run time
        const auto& a = node.attr<ClipAttrs>();
        if (!(a.lo <= a.hi)) break;
        result = clipped(a.lo, a.hi);
        break;
      }
      case OpType::kConv:
      case OpType::kGemm: {
        // Unknown, except for the bounds of a fused clamp (e.g. Relu6).
        float lo = node.op == OpType::kConv ? node.attr<ConvAttrs>().clamp_lo : node.attr<GemmAttrs>().clamp_lo;
        float hi = node.op == OpType::kConv ? node.attr<ConvAttrs>().clamp_hi : node.attr<GemmAttrs>().clamp_hi;
        if (std::isfinite(hi) && lo <= hi) {
          in = nullptr;
          result = clipped(lo, hi);
        }
        break;
      }
      case OpType::kLeakyRelu: {
        double alpha = node.attr<LeakyReluAttrs>().alpha;
        if (!in || !(alpha >= 0)) break;
        Stats s = *in;
        for (Channel& c : s.ch) c = leaky_relu(c, alpha);
        result = std::move(s);
        break;
      }
      case OpType::kAdd:
      case OpType::kSub:
      case OpType::kMul:
      case OpType::kDiv: {
        if (node.inputs.size() != 2) break;
        ValueId x = node.inputs[0], y = node.inputs[1];
        bool cx = graph.is_constant(x), cy = graph.is_constant(y);
        if (cx && cy) break;
        if (cx || cy) {  // an affine map per channel
          ValueId var = cx ? y : x;
          const Stats* s = get(var);
          if (!s) break;
          auto cv = per_channel_constant(graph.constant(cx ? x : y), out);
          if (!cv) break;
          Stats base = aligned(graph.value(var), out) ? *s : pooled(*s);
          size_t n = std::max(base.ch.size(), cv->size());
          auto e = expanded(base, n);
          if (!e || (cv->size() != 1 && cv->size() != n)) break;
          bool ok = true;
          for (size_t c = 0; c < n && ok; ++c) {
            double v = (*cv)[cv->size() == 1 ? 0 : c];
            double a = 1, b = 0;
            switch (node.op) {
              case OpType::kAdd: b = v; break;
              case OpType::kSub: a = cx ? -1 : 1; b = cx ? v : -v; break;
              case OpType::kMul: a = v; break;
              default:  // kDiv
                ok = !cx && v != 0;
                a = ok ? 1.0 / v : 0.0;
                break;
            }
            e->ch[c] = affine(e->ch[c], a, b);
          }
          if (ok) result = std::move(*e);
          break;
        }
        if (node.op != OpType::kAdd && node.op != OpType::kSub) break;
        const Stats* sx = get(x);
        const Stats* sy = get(y);
        if (!sx || !sy) break;
        Stats ax = aligned(graph.value(x), out) ? *sx : pooled(*sx);
        Stats ay = aligned(graph.value(y), out) ? *sy : pooled(*sy);
        size_t n = std::max(ax.ch.size(), ay.ch.size());
        auto ex = expanded(ax, n), ey = expanded(ay, n);
        if (!ex || !ey) {
          ex = pooled(ax);
          ey = pooled(ay);
          n = 1;
        }
        Stats s{{}, combine_sources(ex->bound_source, ey->bound_source), ex->from_batchnorm || ey->from_batchnorm};
        for (size_t c = 0; c < n; ++c)
          s.ch.push_back(add(ex->ch[c], node.op == OpType::kSub ? affine(ey->ch[c], -1, 0) : ey->ch[c], k));
        result = std::move(s);
        break;
      }
      case OpType::kMaxPool:
      case OpType::kGlobalMaxPool:
      case OpType::kGlobalAveragePool:
      case OpType::kIdentity:
        if (in) result = *in;
        break;
      case OpType::kAveragePool: {
        if (!in) break;
        Stats s = *in;
        const auto& a = node.attr<PoolAttrs>();
        bool padded = a.auto_pad == AutoPad::kSameUpper || a.auto_pad == AutoPad::kSameLower ||
                      std::any_of(a.pads.begin(), a.pads.end(), [](int64_t p) { return p != 0; });
        if (a.count_include_pad && padded)  // zeros enter the average
          for (Channel& c : s.ch) c = include_value(c, 0.0);
        result = std::move(s);
        break;
      }
      case OpType::kReduceMean: {
        if (!in) break;
        const auto& a = node.attr<ReduceAttrs>();
        int64_t r = rank_of(*in_value);
        bool keep = r >= 2 && !a.axes.empty();
        for (int64_t axis : a.axes) {
          int64_t ax = axis < 0 ? axis + r : axis;
          keep &= ax >= 2;
        }
        result = keep ? *in : pooled(*in);
        break;
      }
      case OpType::kFlatten:
      case OpType::kReshape:
      case OpType::kSqueeze:
      case OpType::kUnsqueeze:
      case OpType::kTranspose: {
        if (!in) break;
        bool keep = keeps_channels(*in_value, out);
        if (node.op == OpType::kTranspose) {
          const auto& perm = node.attr<TransposeAttrs>().perm;
          keep &= perm.size() >= 2 && perm[0] == 0 && perm[1] == 1;
        }
        result = keep ? *in : pooled(*in);
        break;
      }
      case OpType::kCast:
        if (in && in_value->dtype == DataType::kFloat32) result = *in;
        break;
      case OpType::kPad: {
        if (!in || node.inputs.size() > 1) break;  // pads known only at run time
        const auto& a = node.attr<PadAttrs>();
        int64_t r = rank_of(*in_value);
        bool any = std::any_of(a.pads.begin(), a.pads.end(), [](int64_t p) { return p != 0; });
        bool channel_padded = r < 2 || static_cast<int64_t>(a.pads.size()) != 2 * r || a.pads[1] != 0 ||
                              a.pads[static_cast<size_t>(r + 1)] != 0;
        Stats s = channel_padded ? pooled(*in) : *in;
        if (any && a.mode == PadMode::kConstant)  // other modes repeat the input's own values
          for (Channel& c : s.ch) c = include_value(c, a.value);
        result = std::move(s);
        break;
      }
      case OpType::kConcat: {
        std::vector<const Stats*> parts;
        for (ValueId id : node.inputs) parts.push_back(get(id));
        if (std::any_of(parts.begin(), parts.end(), [](const Stats* p) { return p == nullptr; })) break;
        Stats s{{}, parts[0]->bound_source, false};
        for (const Stats* p : parts) {
          s.bound_source = combine_sources(s.bound_source, p->bound_source);
          s.from_batchnorm |= p->from_batchnorm;
        }
        bool per_channel = node.attr<AxisAttrs>().axis == 1;
        for (size_t i = 0; i < parts.size() && per_channel; ++i) {
          const Value& v = graph.value(node.inputs[i]);
          std::optional<Stats> e;
          if (aligned(v, out) && v.shape[1] >= 0) e = expanded(*parts[i], static_cast<size_t>(v.shape[1]));
          if (!e) {
            per_channel = false;
            break;
          }
          s.ch.insert(s.ch.end(), e->ch.begin(), e->ch.end());
        }
        if (!per_channel) {
          std::vector<Channel> all;
          for (const Stats* p : parts) all.insert(all.end(), p->ch.begin(), p->ch.end());
          s.ch = {union_of(all)};
        }
        result = std::move(s);
        break;
      }
      default:
        break;  // unknown
    }
    if (result && !result->ch.empty()) stats[static_cast<size_t>(node.outputs[0])] = std::move(result);
  }

  std::ostringstream sigma_text;
  sigma_text << "batchnorm " << std::setprecision(3) << k << " sigma";

  std::map<std::string, BatchNormRange> ranges;
  for (size_t id = 0; id < stats.size(); ++id) {
    if (!stats[id] || graph.values[id].dtype != DataType::kFloat32) continue;
    const Stats& s = *stats[id];
    bool non_negative = std::all_of(s.ch.begin(), s.ch.end(), [](const Channel& c) { return c.lo >= 0; });
    double t = -1;
    bool at_bound = false;
    for (const Channel& c : s.ch) {
      double tc;
      bool bound;
      if (non_negative) {
        tc = c.thi;
        bound = c.thi == c.hi;
      } else if (std::fabs(c.tlo) >= std::fabs(c.thi)) {
        tc = std::fabs(c.tlo);
        bound = c.tlo == c.lo;
      } else {
        tc = std::fabs(c.thi);
        bound = c.thi == c.hi;
      }
      if (tc > t) {
        t = tc;
        at_bound = bound;
      }
    }
    if (!std::isfinite(t) || t < 0) continue;
    BatchNormRange range;
    range.threshold = static_cast<float>(t);
    range.non_negative = non_negative;
    if (at_bound || !s.from_batchnorm) range.source = s.bound_source.empty() ? "hard bound" : s.bound_source;
    else range.source = sigma_text.str();
    ranges[graph.values[id].name] = std::move(range);
  }
  return ranges;
}

}  // namespace tern::quant
