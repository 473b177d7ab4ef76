#include "graph/shape_inference.h"

#include <algorithm>
#include <numeric>

#include "tern/error.h"

namespace tern {

namespace {

std::string where(const Node& node, const InferenceContext& context) {
  std::string prefix = context.source && !context.source->empty() ? *context.source + ": " : std::string();
  return prefix + "node '" + node.name + "' (" + to_string(node.op) + ")";
}

// Dimension arithmetic on untrusted shapes and attributes: an Error instead of an overflow.
int64_t dim_mul(int64_t a, int64_t b, const std::string& who) {
  int64_t r = 0;
  check(!__builtin_mul_overflow(a, b, &r), who + ": dimensions overflow 64 bits");
  return r;
}

int64_t dim_add(int64_t a, int64_t b, const std::string& who) {
  int64_t r = 0;
  check(!__builtin_add_overflow(a, b, &r), who + ": dimensions overflow 64 bits");
  return r;
}

// Multiplies dims, propagating kDynamicDim.
int64_t product(const Shape& shape, size_t begin, size_t end, const std::string& who) {
  int64_t p = 1;
  for (size_t i = begin; i < end; ++i) {
    if (shape[i] < 0) return kDynamicDim;
    p = dim_mul(p, shape[i], who);
  }
  return p;
}

// Output length of a sliding window along one axis; ceil_mode drops a last window that would start
// in the end padding (PyTorch and the ONNX reference agree on this).
// The attributes are checked (>= 1, pads >= 0) but unbounded.
int64_t window_output(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin,
                      int64_t pad_end, bool ceil_mode, const std::string& who) {
  if (in < 0) return kDynamicDim;
  int64_t span = dim_add(dim_add(in, pad_begin, who), pad_end, who) - dim_mul(dilation, kernel - 1, who) - 1;
  if (span < 0) return -2;  // window larger than padded input: reported by the caller
  int64_t out = (ceil_mode ? span / stride + (span % stride != 0) : span / stride) + 1;
  if (ceil_mode && dim_mul(out - 1, stride, who) >= in + pad_begin) --out;
  return out;
}

void fill_default(std::vector<int64_t>& v, size_t n, int64_t value) {
  if (v.empty()) v.assign(n, value);
}

// Resolves auto_pad into explicit pads given the input's spatial sizes.
void resolve_auto_pad(AutoPad& auto_pad, std::vector<int64_t>& pads, const Shape& in_shape,
                      const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                      const std::vector<int64_t>& dilations, const std::string& who) {
  size_t n = kernel.size();
  if (auto_pad == AutoPad::kNotSet) return;
  pads.assign(2 * n, 0);
  if (auto_pad != AutoPad::kValid) {
    for (size_t i = 0; i < n; ++i) {
      int64_t in = in_shape[2 + i];
      check(in >= 0, who + ": auto_pad SAME needs a known spatial size");
      int64_t out = in / strides[i] + (in % strides[i] != 0);
      int64_t total = std::max<int64_t>(
          0, dim_add(dim_add(dim_mul(std::max<int64_t>(out - 1, 0), strides[i], who), dim_mul(dilations[i], kernel[i] - 1, who), who), 1, who) - in);
      int64_t small = total / 2, large = total - small;
      pads[i] = auto_pad == AutoPad::kSameUpper ? small : large;
      pads[i + n] = auto_pad == AutoPad::kSameUpper ? large : small;
    }
  }
  auto_pad = AutoPad::kNotSet;
}

void check_window_attrs(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                        const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, size_t spatial,
                        const std::string& who) {
  check(kernel.size() == spatial && strides.size() == spatial && dilations.size() == spatial &&
            pads.size() == 2 * spatial,
        who + ": kernel/strides/pads/dilations do not match the input's " + std::to_string(spatial) +
            " spatial axes");
  for (size_t i = 0; i < spatial; ++i) {
    check(kernel[i] >= 1 && strides[i] >= 1 && dilations[i] >= 1, who + ": kernel, strides and dilations must be >= 1");
    check(pads[i] >= 0 && pads[i + spatial] >= 0, who + ": negative pads are not supported");
  }
}

Shape infer_conv(Node& node, std::span<const Shape> in, const InferenceContext& ctx) {
  std::string who = where(node, ctx);
  auto& a = node.attr<ConvAttrs>();
  const Shape& x = in[0];
  const Shape& w = in[1];
  check(x.size() >= 3, who + ": input must have rank >= 3 (N, C, spatial...), got " + to_string(x));
  check(w.size() == x.size() && is_static(w), who + ": weight shape " + to_string(w) + " does not fit input " +
                                                   to_string(x));
  size_t spatial = x.size() - 2;
  if (a.kernel.empty()) a.kernel.assign(w.begin() + 2, w.end());
  fill_default(a.strides, spatial, 1);
  fill_default(a.dilations, spatial, 1);
  fill_default(a.pads, 2 * spatial, 0);
  check(a.group >= 1, who + ": group must be >= 1");
  check(a.kernel.size() == spatial && std::equal(a.kernel.begin(), a.kernel.end(), w.begin() + 2),
        who + ": kernel_shape does not match the weights");
  check_window_attrs(a.kernel, a.strides, a.pads, a.dilations, spatial, who);  // before auto_pad reads them
  resolve_auto_pad(a.auto_pad, a.pads, x, a.kernel, a.strides, a.dilations, who);
  check(w[0] % a.group == 0, who + ": " + std::to_string(w[0]) + " output channels not divisible by group " +
                                 std::to_string(a.group));
  check(x[1] < 0 || x[1] == w[1] * a.group, who + ": input has " + std::to_string(x[1]) + " channels, weights expect " +
                                                std::to_string(w[1] * a.group));
  if (in.size() > 2 && !in[2].empty())
    check(in[2].size() == 1 && (in[2][0] < 0 || in[2][0] == w[0]), who + ": bias shape " + to_string(in[2]) +
                                                                        " does not match " + std::to_string(w[0]) +
                                                                        " output channels");
  check(w[0] != 0 && w[1] != 0, who + ": weights " + to_string(w) + " have no channels");
  check(a.clamp_lo <= a.clamp_hi,
        who + ": fused clamp [" + std::to_string(a.clamp_lo) + ", " + std::to_string(a.clamp_hi) + "] is empty or NaN");
  Shape out = {x[0], w[0]};
  for (size_t i = 0; i < spatial; ++i) {
    int64_t o = window_output(x[2 + i], a.kernel[i], a.strides[i], a.dilations[i], a.pads[i], a.pads[i + spatial],
                              false, who);
    check(o != -2, who + ": kernel larger than the padded input " + to_string(x));
    if (o == 1 && x[2 + i] >= 0) {
      // One output along this axis: any stride past the padded extent gives the same result, and
      // the kernels index with it, so a stride of 2^62 must not reach them.
      int64_t extent = x[2 + i] + a.pads[i] + a.pads[i + spatial];
      a.strides[i] = std::min(a.strides[i], std::max<int64_t>(1, extent));
    }
    out.push_back(o);
  }
  return out;
}

Shape infer_pool(Node& node, std::span<const Shape> in, const InferenceContext& ctx) {
  std::string who = where(node, ctx);
  auto& a = node.attr<PoolAttrs>();
  const Shape& x = in[0];
  check(x.size() >= 3, who + ": input must have rank >= 3 (N, C, spatial...), got " + to_string(x));
  size_t spatial = x.size() - 2;
  check(a.kernel.size() == spatial, who + ": kernel_shape has " + std::to_string(a.kernel.size()) +
                                        " entries for " + std::to_string(spatial) + " spatial axes");
  fill_default(a.strides, spatial, 1);
  fill_default(a.dilations, spatial, 1);
  fill_default(a.pads, 2 * spatial, 0);
  check_window_attrs(a.kernel, a.strides, a.pads, a.dilations, spatial, who);  // before auto_pad reads them
  resolve_auto_pad(a.auto_pad, a.pads, x, a.kernel, a.strides, a.dilations, who);
  Shape out = {x[0], x[1]};
  for (size_t i = 0; i < spatial; ++i) {
    int64_t window = dim_mul(a.kernel[i], a.dilations[i], who);
    check(a.pads[i] < window && a.pads[i + spatial] < window,
          who + ": padding must be smaller than the window");
    int64_t o = window_output(x[2 + i], a.kernel[i], a.strides[i], a.dilations[i], a.pads[i], a.pads[i + spatial],
                              a.ceil_mode, who);
    check(o != -2 && o != 0, who + ": window larger than the padded input " + to_string(x));
    out.push_back(o);
  }
  return out;
}

Shape infer_matmul(const Shape& a0, const Shape& b0, const std::string& who) {
  check(!a0.empty() && !b0.empty(), who + ": MatMul inputs must have rank >= 1");
  Shape a = a0, b = b0;
  bool a_vec = a.size() == 1, b_vec = b.size() == 1;
  if (a_vec) a.insert(a.begin(), 1);
  if (b_vec) b.push_back(1);
  int64_t ka = a.back(), kb = b[b.size() - 2];
  check(ka < 0 || kb < 0 || ka == kb, who + ": inner dimensions differ: " + to_string(a0) + " x " + to_string(b0));
  Shape batch = broadcast_shapes(Shape(a.begin(), a.end() - 2), Shape(b.begin(), b.end() - 2), who);
  Shape out = batch;
  if (!a_vec) out.push_back(a[a.size() - 2]);
  if (!b_vec) out.push_back(b.back());
  return out;
}

Shape infer_reshape(const Node& node, std::span<const Shape> in, std::span<const Tensor* const> values,
                    const InferenceContext& ctx) {
  std::string who = where(node, ctx);
  check(values.size() > 1 && values[1] != nullptr,
        who + ": the target shape must be a constant or computable at import time");
  const Tensor& target = *values[1];
  check(target.dtype() == DataType::kInt64 && target.rank() == 1, who + ": target shape must be a 1-D int64 tensor");
  const Shape& x = in[0];
  bool allow_zero = node.attr<ReshapeAttrs>().allow_zero;
  Shape out;
  int infer_at = -1, batch_at = -1;
  for (int64_t i = 0; i < target.size(); ++i) {
    int64_t d = target.data<int64_t>()[i];
    if (d == kSymbolicBatch) {
      batch_at = static_cast<int>(i);
      out.push_back(ctx.batch);
    } else if (d == -1) {
      check(infer_at < 0, who + ": target shape has more than one -1");
      infer_at = static_cast<int>(i);
      out.push_back(kDynamicDim);
    } else if (d == 0 && !allow_zero) {
      check(static_cast<size_t>(i) < x.size(), who + ": target copies dimension " + std::to_string(i) +
                                                   " that the input " + to_string(x) + " lacks");
      out.push_back(x[static_cast<size_t>(i)]);
    } else {
      check(d >= 0, who + ": invalid target dimension " + std::to_string(d));
      out.push_back(d);
    }
  }
  // Element counts with the dynamic batch divided out on both sides when it is the only unknown
  // (x.view(x.size(0), -1) at import time).
  int64_t total = product(x, 0, x.size(), who);
  int64_t known = 1;
  bool unknown = false;
  for (size_t i = 0; i < out.size(); ++i) {
    if (static_cast<int>(i) == infer_at) continue;
    if (out[i] >= 0) known = dim_mul(known, out[i], who);
    else if (static_cast<int>(i) == batch_at && total < 0 && !x.empty() && x[0] < 0) continue;
    else unknown = true;
  }
  if (total < 0 && batch_at >= 0 && !x.empty() && x[0] < 0 && out[static_cast<size_t>(batch_at)] < 0)
    total = product(x, 1, x.size(), who);
  if (total >= 0 && !unknown) {
    if (infer_at >= 0) {
      check(known != 0 && total % known == 0, who + ": cannot reshape " + to_string(x) + " to the target");
      out[static_cast<size_t>(infer_at)] = total / known;
    } else {
      check(known == total, who + ": cannot reshape " + to_string(x) + " to " + to_string(out));
    }
  }
  return out;
}

std::vector<int64_t> int_values(std::span<const Tensor* const> values, size_t i, const std::string& who,
                                const char* what) {
  check(i < values.size() && values[i] != nullptr, who + ": input '" + what + "' must be known");
  const Tensor& t = *values[i];
  check(t.dtype() == DataType::kInt64 && t.rank() <= 1, who + ": input '" + what + "' must be a 1-D int64 tensor");
  return {t.data<int64_t>(), t.data<int64_t>() + t.size()};
}

}  // namespace

std::vector<SliceRange> slice_ranges(const SliceAttrs& a, const Shape& x, const std::string& who) {
  size_t n = a.starts.size();
  check(a.ends.size() == n && (a.axes.empty() || a.axes.size() == n) && (a.steps.empty() || a.steps.size() == n),
        who + ": starts, ends, axes and steps differ in length");
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<SliceRange> ranges;
  std::vector<bool> seen(x.size(), false);
  for (size_t i = 0; i < n; ++i) {
    int64_t axis = normalize_axis(a.axes.empty() ? static_cast<int64_t>(i) : a.axes[i], rank, who);
    check(!seen[static_cast<size_t>(axis)], who + ": repeated axis");
    seen[static_cast<size_t>(axis)] = true;
    int64_t step = a.steps.empty() ? 1 : a.steps[i];
    check(step != 0, who + ": step must not be 0");
    int64_t d = x[static_cast<size_t>(axis)];
    check(d >= 0, who + ": cannot slice a dynamic dimension");
    // Clamp as ONNX specifies, saturating so INT64_MIN/MAX sentinels cannot overflow.
    auto resolve = [d](int64_t v, int64_t lo, int64_t hi) {
      if (v < 0) v = v < -d ? -1 - d : v;  // keeps v + d >= -1
      if (v < 0) v += d;
      return std::clamp(v, lo, hi);
    };
    int64_t start, end, length;
    if (step > 0) {
      start = resolve(a.starts[i], 0, d);
      end = resolve(a.ends[i], 0, d);
      length = end > start ? (end - start - 1) / step + 1 : 0;  // no overflow for any step
    } else {
      start = resolve(a.starts[i], 0, d - 1);
      end = resolve(a.ends[i], -1, d - 1);
      length = start > end ? 1 - (start - end - 1) / step : 0;
    }
    ranges.push_back({axis, start, step, length});
  }
  return ranges;
}

bool shape_depends_on_value(const Node& node, size_t input_index) {
  switch (node.op) {
    case OpType::kSlice: return input_index >= 1;
    case OpType::kReshape:
    case OpType::kUnsqueeze:
    case OpType::kSqueeze:
    case OpType::kPad: return input_index == 1;
    default: return false;
  }
}

std::pair<int64_t, int64_t> shape_slice(const ShapeAttrs& attrs, int64_t rank) {
  auto clamp = [rank](int64_t i) { return std::clamp<int64_t>(i < 0 ? i + rank : i, 0, rank); };
  int64_t begin = clamp(attrs.start), end = clamp(attrs.end);
  return {begin, std::max(begin, end)};
}

int64_t normalize_axis(int64_t axis, int64_t rank, const std::string& what) {
  check(axis >= -rank && axis < rank, what + ": axis " + std::to_string(axis) + " out of range for rank " +
                                          std::to_string(rank));
  return axis < 0 ? axis + rank : axis;
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& what) {
  size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t i = 0; i < rank; ++i) {
    int64_t da = i < rank - a.size() ? 1 : a[i - (rank - a.size())];
    int64_t db = i < rank - b.size() ? 1 : b[i - (rank - b.size())];
    if (da == 1) out[i] = db;
    else if (db == 1) out[i] = da;
    else if (da < 0 || db < 0) out[i] = da < 0 ? db : da;
    else {
      check(da == db, what + ": shapes " + to_string(a) + " and " + to_string(b) + " do not broadcast");
      out[i] = da;
    }
  }
  return out;
}

std::vector<Shape> infer_output_shapes(Node& node, std::span<const Shape> in, std::span<const Tensor* const> values,
                                       const InferenceContext& ctx) {
  std::string who = where(node, ctx);
  auto require_inputs = [&](size_t n) {
    check(in.size() >= n, who + ": expects at least " + std::to_string(n) + " inputs, got " + std::to_string(in.size()));
  };
  require_inputs(1);
  const Shape& x = in[0];
  switch (node.op) {
    case OpType::kConv:
      require_inputs(2);
      return {infer_conv(node, in, ctx)};
    case OpType::kBatchNormalization:
      require_inputs(5);
      check(x.size() >= 2, who + ": input must have rank >= 2");
      for (size_t i = 1; i < 5; ++i)
        check(in[i].size() == 1 && (x[1] < 0 || in[i][0] == x[1]), who + ": parameter " + std::to_string(i) +
                                                                       " must have shape [C]");
      return {x};
    case OpType::kRelu:
    case OpType::kClip:
    case OpType::kLeakyRelu:
    case OpType::kSigmoid:
    case OpType::kTanh:
    case OpType::kCast:
    case OpType::kHardSigmoid:
    case OpType::kSqrt:
    case OpType::kErf:
    case OpType::kFakeQuantize:
      return {x};
    case OpType::kPow:
      require_inputs(2);
      return {broadcast_shapes(in[0], in[1], who)};
    case OpType::kLayerNormalization: {
      require_inputs(2);
      auto& a = node.attr<LayerNormAttrs>();
      a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), who);
      // Scale and bias broadcast to the normalized dims (x's dims from axis on), and no further.
      Shape normalized(x.begin() + a.axis, x.end());
      for (size_t i = 1; i < in.size() && i < 3; ++i) {
        const char* what = i == 1 ? "scale" : "bias";
        check(in[i].size() <= normalized.size(), who + ": " + what + " " + to_string(in[i]) +
                                                     " has more dims than the normalized shape " + to_string(normalized));
        for (size_t d = 0; d < in[i].size(); ++d) {
          int64_t want = normalized[normalized.size() - in[i].size() + d], have = in[i][d];
          check(have == 1 || have < 0 || want < 0 || have == want,
                who + ": " + what + " " + to_string(in[i]) + " does not broadcast to " + to_string(normalized));
        }
      }
      Shape stats = x;  // Mean and InvStdDev keep the leading dims, 1 elsewhere
      std::fill(stats.begin() + a.axis, stats.end(), 1);
      return {x, stats, stats};
    }
    case OpType::kSlice: {
      SliceAttrs a = node.attr<SliceAttrs>();
      if (in.size() > 1) {
        a.starts = int_values(values, 1, who, "starts");
        a.ends = int_values(values, 2, who, "ends");
        a.axes = in.size() > 3 && !in[3].empty() ? int_values(values, 3, who, "axes") : std::vector<int64_t>{};
        a.steps = in.size() > 4 && !in[4].empty() ? int_values(values, 4, who, "steps") : std::vector<int64_t>{};
      }
      Shape out = x;
      for (const auto& r : slice_ranges(a, x, who)) out[static_cast<size_t>(r.axis)] = r.length;
      return {out};
    }
    case OpType::kIdentity:
      return node.outputs.size() == 2 ? std::vector<Shape>{x, x} : std::vector<Shape>{x};  // Dropout's mask
    case OpType::kSoftmax: {
      auto& a = node.attr<AxisAttrs>();
      a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), who);
      return {x};
    }
    case OpType::kMaxPool:
    case OpType::kAveragePool:
      return {infer_pool(node, in, ctx)};
    case OpType::kGlobalAveragePool:
    case OpType::kGlobalMaxPool: {
      check(x.size() >= 3, who + ": input must have rank >= 3, got " + to_string(x));
      Shape out = x;
      std::fill(out.begin() + 2, out.end(), 1);
      return {out};
    }
    case OpType::kReduceMean: {
      auto& a = node.attr<ReduceAttrs>();
      int64_t rank = static_cast<int64_t>(x.size());
      std::vector<bool> reduce(x.size(), a.axes.empty());
      for (auto& axis : a.axes) {
        axis = normalize_axis(axis, rank, who);
        reduce[static_cast<size_t>(axis)] = true;
      }
      Shape out;
      for (size_t i = 0; i < x.size(); ++i) {
        if (!reduce[i]) out.push_back(x[i]);
        else if (a.keepdims) out.push_back(1);
      }
      return {out};
    }
    case OpType::kAdd:
    case OpType::kSub:
    case OpType::kMul:
    case OpType::kDiv:
      require_inputs(2);
      return {broadcast_shapes(in[0], in[1], who)};
    case OpType::kConcat: {
      auto& a = node.attr<AxisAttrs>();
      int64_t rank = static_cast<int64_t>(x.size());
      check(rank >= 1, who + ": cannot concatenate scalars");
      a.axis = normalize_axis(a.axis, rank, who);
      Shape out = x;
      for (size_t i = 1; i < in.size(); ++i) {
        check(in[i].size() == x.size(), who + ": inputs have different ranks");
        for (size_t d = 0; d < x.size(); ++d) {
          if (static_cast<int64_t>(d) == a.axis) {
            out[d] = (out[d] < 0 || in[i][d] < 0) ? kDynamicDim : dim_add(out[d], in[i][d], who);
          } else if (out[d] < 0) {
            out[d] = in[i][d];
          } else {
            check(in[i][d] < 0 || in[i][d] == out[d], who + ": input " + std::to_string(i) + " shape " +
                                                          to_string(in[i]) + " does not fit " + to_string(x));
          }
        }
      }
      return {out};
    }
    case OpType::kGemm: {
      require_inputs(2);
      const auto& a = node.attr<GemmAttrs>();
      check(a.clamp_lo <= a.clamp_hi, who + ": fused clamp [" + std::to_string(a.clamp_lo) + ", " +
                                          std::to_string(a.clamp_hi) + "] is empty or NaN");
      check(in[0].size() == 2 && in[1].size() == 2, who + ": Gemm inputs must be 2-D, got " + to_string(in[0]) +
                                                        " and " + to_string(in[1]));
      int64_t m = a.trans_a ? in[0][1] : in[0][0], ka = a.trans_a ? in[0][0] : in[0][1];
      int64_t kb = a.trans_b ? in[1][1] : in[1][0], n = a.trans_b ? in[1][0] : in[1][1];
      check(ka < 0 || kb < 0 || ka == kb, who + ": inner dimensions differ: " + to_string(in[0]) + " x " +
                                              to_string(in[1]));
      Shape out = {m, n};
      if (in.size() > 2 && !in[2].empty()) {
        Shape c = broadcast_shapes(out, in[2], who + " (bias C)");
        check(c.size() == 2 && (m < 0 || c[0] == m) && (n < 0 || c[1] == n),
              who + ": bias C " + to_string(in[2]) + " does not broadcast to " + to_string(out));
      }
      return {out};
    }
    case OpType::kMatMul:
      require_inputs(2);
      return {infer_matmul(in[0], in[1], who)};
    case OpType::kFlatten: {
      auto& a = node.attr<AxisAttrs>();
      int64_t rank = static_cast<int64_t>(x.size());
      check(a.axis >= -rank && a.axis <= rank, who + ": axis out of range");
      if (a.axis < 0) a.axis += rank;
      size_t axis = static_cast<size_t>(a.axis);
      return {{product(x, 0, axis, who), product(x, axis, x.size(), who)}};
    }
    case OpType::kReshape:
      require_inputs(2);
      return {infer_reshape(node, in, values, ctx)};
    case OpType::kTranspose: {
      auto& a = node.attr<TransposeAttrs>();
      size_t rank = x.size();
      if (a.perm.empty())
        for (size_t i = 0; i < rank; ++i) a.perm.push_back(static_cast<int64_t>(rank - 1 - i));
      check(a.perm.size() == rank, who + ": perm has " + std::to_string(a.perm.size()) + " entries for rank " +
                                       std::to_string(rank));
      std::vector<bool> seen(rank, false);
      Shape out;
      for (int64_t p : a.perm) {
        check(p >= 0 && p < static_cast<int64_t>(rank) && !seen[static_cast<size_t>(p)], who + ": perm is not a permutation");
        seen[static_cast<size_t>(p)] = true;
        out.push_back(x[static_cast<size_t>(p)]);
      }
      return {out};
    }
    case OpType::kShape: {
      auto [begin, end] = shape_slice(node.attr<ShapeAttrs>(), static_cast<int64_t>(x.size()));
      return {{end - begin}};
    }
    case OpType::kGather: {
      require_inputs(2);
      auto& a = node.attr<AxisAttrs>();
      a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), who);
      Shape out(x.begin(), x.begin() + a.axis);
      out.insert(out.end(), in[1].begin(), in[1].end());
      out.insert(out.end(), x.begin() + a.axis + 1, x.end());
      return {out};
    }
    case OpType::kUnsqueeze: {
      AxesAttrs a = node.attr<AxesAttrs>();
      if (in.size() > 1) a.axes = int_values(values, 1, who, "axes");
      int64_t rank = static_cast<int64_t>(x.size() + a.axes.size());
      std::vector<bool> inserted(static_cast<size_t>(rank), false);
      for (auto& axis : a.axes) {
        axis = normalize_axis(axis, rank, who);
        check(!inserted[static_cast<size_t>(axis)], who + ": repeated axis");
        inserted[static_cast<size_t>(axis)] = true;
      }
      Shape out;
      size_t next = 0;
      for (int64_t i = 0; i < rank; ++i) out.push_back(inserted[static_cast<size_t>(i)] ? 1 : x[next++]);
      return {out};
    }
    case OpType::kSqueeze: {
      AxesAttrs a = node.attr<AxesAttrs>();
      if (in.size() > 1) a.axes = int_values(values, 1, who, "axes");
      int64_t rank = static_cast<int64_t>(x.size());
      std::vector<bool> drop(x.size(), false);
      if (a.axes.empty()) {
        for (size_t i = 0; i < x.size(); ++i) {
          check(x[i] >= 0, who + ": squeeze without axes needs a static shape");
          if (x[i] == 1) a.axes.push_back(static_cast<int64_t>(i));
        }
      }
      for (auto& axis : a.axes) {
        axis = normalize_axis(axis, rank, who);
        check(x[static_cast<size_t>(axis)] == 1 || x[static_cast<size_t>(axis)] < 0,
              who + ": cannot squeeze axis " + std::to_string(axis) + " of " + to_string(x));
        drop[static_cast<size_t>(axis)] = true;
      }
      Shape out;
      for (size_t i = 0; i < x.size(); ++i)
        if (!drop[i]) out.push_back(x[i]);
      return {out};
    }
    case OpType::kPad: {
      PadAttrs a = node.attr<PadAttrs>();
      if (in.size() > 1) a.pads = int_values(values, 1, who, "pads");
      check(a.pads.size() == 2 * x.size(), who + ": pads has " + std::to_string(a.pads.size()) + " entries for rank " +
                                               std::to_string(x.size()));
      Shape out = x;
      for (size_t i = 0; i < x.size(); ++i) {
        if (out[i] < 0) continue;
        out[i] = dim_add(out[i], dim_add(a.pads[i], a.pads[i + x.size()], who), who);
        check(out[i] >= 0, who + ": negative output size");
      }
      return {out};
    }
    case OpType::kConstant:
      break;
  }
  throw Error(who + ": no shape inference for this operator");
}

DataType infer_output_type(const Node& node, std::span<const DataType> input_types, size_t output_index) {
  switch (node.op) {
    case OpType::kShape: return DataType::kInt64;
    case OpType::kIdentity: return output_index == 1 ? DataType::kBool : input_types[0];
    case OpType::kCast: return node.attr<CastAttrs>().to;
    default: return input_types.empty() ? DataType::kFloat32 : input_types[0];
  }
}

void infer_shapes(Graph& graph) {
  for (Node& node : graph.nodes) infer_node_shapes(graph, node);
}

void infer_node_shapes(Graph& graph, Node& node) {
  InferenceContext ctx;
  ctx.source = &graph.source;
  {
    std::vector<Shape> shapes;
    std::vector<const Tensor*> values;
    std::vector<DataType> types;
    bool unknown = false;
    for (ValueId id : node.inputs) {
      if (id == kNoValue) {
        shapes.emplace_back();
        values.push_back(nullptr);
        types.push_back(DataType::kUndefined);
        continue;
      }
      const Value& v = graph.value(id);
      if (!v.shape_known || (shape_depends_on_value(node, shapes.size()) && !v.constant)) unknown = true;
      shapes.push_back(v.shape);
      values.push_back(v.constant ? &*v.constant : nullptr);
      types.push_back(v.dtype);
    }
    if (unknown) {  // known only at run time, when the executor infers again with real inputs
      for (size_t i = 0; i < node.outputs.size(); ++i) {
        Value& v = graph.value(node.outputs[i]);
        v.shape_known = false;
        v.dtype = infer_output_type(node, types, i);
      }
      return;
    }
    std::vector<Shape> out = infer_output_shapes(node, shapes, values, ctx);
    for (size_t i = 0; i < node.outputs.size() && i < out.size(); ++i) {
      Value& v = graph.value(node.outputs[i]);
      v.shape = out[i];
      v.shape_known = true;
      v.dtype = infer_output_type(node, types, i);
    }
  }
}

}  // namespace tern
