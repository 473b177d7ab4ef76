// Resize (opsets 10-18: nearest, linear and cubic; every coordinate transformation and nearest
// rounding mode; scales or sizes, axes and keep_aspect_ratio_policy) and Upsample (opsets 7-9).
// Separable resampling: per output axis, each output index reads a few input taps with weights.
#ifndef TERN_OPS_TORCH
#include <cstring>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

enum class ResizeMode { kNearest, kLinear, kCubic };
enum class Coordinates { kHalfPixel, kAsymmetric, kPytorchHalfPixel, kTfHalfPixelForNn, kAlignCorners, kTfCropAndResize, kHalfPixelSymmetric };
enum class Rounding { kRoundPreferFloor, kRoundPreferCeil, kFloor, kCeil };
enum class AspectPolicy { kStretch, kNotLarger, kNotSmaller };

struct ResizeAttrs {
  ResizeMode mode = ResizeMode::kNearest;
  Coordinates coordinates = Coordinates::kHalfPixel;
  Rounding rounding = Rounding::kRoundPreferFloor;
  float cubic_a = -0.75f;
  bool exclude_outside = false;
  float extrapolation = 0.0f;
  std::vector<int64_t> axes;  // empty: all
  AspectPolicy policy = AspectPolicy::kStretch;
};

template <typename E>
E parse(const OnnxNode& n, const char* attr, const char* fallback, std::initializer_list<std::pair<const char*, E>> names) {
  std::string s = n.get_string(attr, fallback);
  for (const auto& [name, value] : names)
    if (s == name) return value;
  throw Error(n.who + ": " + attr + " '" + s + "' is not supported");
}

void import_resize(OnnxNode& n) {
  ResizeAttrs a;
  bool upsample = n.op_type == "Upsample";
  std::string mode = n.get_string("mode", "nearest");
  if (mode == "nearest") a.mode = ResizeMode::kNearest;
  else if (mode == "linear" || mode == "bilinear") a.mode = ResizeMode::kLinear;
  else if (mode == "cubic" && !upsample) a.mode = ResizeMode::kCubic;
  else throw Error(n.who + ": mode '" + mode + "' is not supported");
  if (upsample || n.opset < 11) {
    // Upsample and Resize-10: asymmetric coordinates, nearest rounds down; X and scales only.
    a.coordinates = Coordinates::kAsymmetric;
    a.rounding = Rounding::kFloor;
    if (upsample && n.opset < 9) {
      n.need_inputs(1, 1);
      std::vector<float> scales = n.get_floats("scales");
      check(!scales.empty(), n.who + ": scales is required");
      n.node.inputs.push_back(kNoValue);
      n.node.inputs.push_back(n.graph.add_constant(n.node.name + ".scales",
                                                   Tensor::from_floats({static_cast<int64_t>(scales.size())}, scales)));
    } else {
      n.need_inputs(2, 2);
      n.node.inputs.insert(n.node.inputs.begin() + 1, kNoValue);  // [X, roi, scales]
    }
  } else {
    n.need_inputs(1, 4);
    a.coordinates = parse<Coordinates>(n, "coordinate_transformation_mode", "half_pixel",
                                       {{"half_pixel", Coordinates::kHalfPixel},
                                        {"asymmetric", Coordinates::kAsymmetric},
                                        {"pytorch_half_pixel", Coordinates::kPytorchHalfPixel},
                                        {"tf_half_pixel_for_nn", Coordinates::kTfHalfPixelForNn},
                                        {"align_corners", Coordinates::kAlignCorners},
                                        {"tf_crop_and_resize", Coordinates::kTfCropAndResize},
                                        {"half_pixel_symmetric", Coordinates::kHalfPixelSymmetric}});
    a.rounding = parse<Rounding>(n, "nearest_mode", "round_prefer_floor",
                                 {{"round_prefer_floor", Rounding::kRoundPreferFloor},
                                  {"round_prefer_ceil", Rounding::kRoundPreferCeil},
                                  {"floor", Rounding::kFloor},
                                  {"ceil", Rounding::kCeil}});
    a.policy = parse<AspectPolicy>(n, "keep_aspect_ratio_policy", "stretch",
                                   {{"stretch", AspectPolicy::kStretch},
                                    {"not_larger", AspectPolicy::kNotLarger},
                                    {"not_smaller", AspectPolicy::kNotSmaller}});
    a.cubic_a = n.get_float("cubic_coeff_a", -0.75f);
    a.exclude_outside = n.get_int("exclude_outside", 0) != 0;
    a.extrapolation = n.get_float("extrapolation_value", 0.0f);
    a.axes = n.get_ints("axes");
    n.require(n.get_int("antialias", 0) == 0, "antialias=1");
    bool has_scales = n.node.inputs.size() > 2 && n.node.inputs[2] != kNoValue;
    bool has_sizes = n.node.inputs.size() > 3 && n.node.inputs[3] != kNoValue;
    if (has_scales && n.constant_input(2) && n.constant_input(2)->size() == 0) {  // an empty scales means "use sizes"
      n.node.inputs[2] = kNoValue;
      has_scales = false;
    }
    check(has_scales != has_sizes, n.who + ": exactly one of scales and sizes must be given");
  }
  n.node.attrs = a;
}

constexpr auto describe_resize = [](auto& a, auto&& field) {
  field("mode", a.mode, 0, 2);
  field("coordinates", a.coordinates, 0, 6);
  field("rounding", a.rounding, 0, 3);
  field("cubic_a", a.cubic_a);
  field("exclude_outside", a.exclude_outside);
  field("extrapolation", a.extrapolation);
  field("axes", a.axes);
  field("policy", a.policy, 0, 2);
};

// Per-axis scales and output sizes for input `x` (sizes elements may be kDynamicDim at import).
struct Plan {
  std::vector<double> scales;
  Shape out;
};

Plan resize_plan(const ResizeAttrs& a, const Shape& x, const std::vector<float>* scales, const std::vector<int64_t>* sizes,
                 const std::string& who) {
  size_t rank = x.size();
  std::vector<int64_t> axes = a.axes;
  if (axes.empty())
    for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
  for (int64_t& ax : axes) ax = normalize_axis(ax, static_cast<int64_t>(rank), who);
  Plan p;
  p.scales.assign(rank, 1.0);
  p.out = x;
  if (scales) {
    check(scales->size() == axes.size(), who + ": scales has " + std::to_string(scales->size()) + " entries for " +
                                             std::to_string(axes.size()) + " axes");
    for (size_t i = 0; i < axes.size(); ++i) {
      double s = (*scales)[i];
      check(s > 0 && std::isfinite(s), who + ": scales must be positive");
      size_t ax = static_cast<size_t>(axes[i]);
      p.scales[ax] = s;
      if (x[ax] >= 0) {
        double o = static_cast<double>(x[ax]) * s;
        check(o < 9.0e15, who + ": output too large");
        p.out[ax] = static_cast<int64_t>(o);
      }
    }
    return p;
  }
  check(sizes->size() == axes.size(), who + ": sizes has " + std::to_string(sizes->size()) + " entries for " +
                                          std::to_string(axes.size()) + " axes");
  if (a.policy != AspectPolicy::kStretch) {
    double scale = a.policy == AspectPolicy::kNotLarger ? INFINITY : 0.0;
    bool known = true;
    for (size_t i = 0; i < axes.size(); ++i) {
      int64_t in = x[static_cast<size_t>(axes[i])], want = (*sizes)[i];
      if (in <= 0 || want < 0) {
        known = false;
        continue;
      }
      double s = static_cast<double>(want) / static_cast<double>(in);
      scale = a.policy == AspectPolicy::kNotLarger ? std::min(scale, s) : std::max(scale, s);
    }
    for (int64_t ax : axes) {
      size_t i = static_cast<size_t>(ax);
      p.scales[i] = scale;
      p.out[i] = known && x[i] >= 0 ? static_cast<int64_t>(std::round(scale * static_cast<double>(x[i]))) : kDynamicDim;
    }
    return p;
  }
  for (size_t i = 0; i < axes.size(); ++i) {
    size_t ax = static_cast<size_t>(axes[i]);
    int64_t want = (*sizes)[i];
    check(want >= 0 || want == kDynamicDim, who + ": negative size");
    p.out[ax] = want;
    p.scales[ax] = want >= 0 && x[ax] > 0 ? static_cast<double>(want) / static_cast<double>(x[ax]) : 1.0;
  }
  return p;
}

std::vector<float> float_values(const Tensor& t) {
  std::vector<float> v;
  for (float f : t.floats()) v.push_back(f);
  return v;
}

std::vector<Shape> resize_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const auto& a = c.node.attr<ResizeAttrs>();
  const Shape& x = c.in[0];
  bool has_sizes = c.in.size() > 3 && c.node.inputs.size() > 3 && c.node.inputs[3] != kNoValue;
  if (has_sizes) {
    std::vector<int64_t> sizes = c.ints(3, "sizes");
    for (int64_t& s : sizes)
      if (s == kSymbolicBatch || s == kUnknownElement) s = kDynamicDim;
    return {resize_plan(a, x, nullptr, &sizes, c.who).out};
  }
  check(c.in.size() > 2 && c.values.size() > 2 && c.values[2], c.who + ": scales must be known");
  const Tensor& t = *c.values[2];
  if (t.dtype() == DataType::kInt64) {  // import time: scales computed by a sub-graph, known in part
    std::vector<float> scales;
    std::vector<bool> known;
    for (int64_t v : t.int64s()) {
      known.push_back(v != kSymbolicBatch && v != kUnknownElement && v > 0);
      scales.push_back(known.back() ? static_cast<float>(v) : 1.0f);
    }
    Plan p = resize_plan(a, x, &scales, nullptr, c.who);
    std::vector<int64_t> axes = a.axes;
    if (axes.empty())
      for (size_t i = 0; i < x.size(); ++i) axes.push_back(static_cast<int64_t>(i));
    for (size_t i = 0; i < axes.size() && i < known.size(); ++i)
      if (!known[i]) p.out[static_cast<size_t>(normalize_axis(axes[i], static_cast<int64_t>(x.size()), c.who))] = kDynamicDim;
    return {p.out};
  }
  check(t.dtype() == DataType::kFloat32, c.who + ": scales must be float32");
  std::vector<float> scales = float_values(t);
  return {resize_plan(a, x, &scales, nullptr, c.who).out};
}

// The taps one output index reads along an axis: input indices and weights (-1: the
// extrapolation value).
struct Taps {
  std::vector<int64_t> index;
  std::vector<float> weight;
};

// out_len: the resized length as the coordinate formulas use it, in * scale when scales were
// given (not floored: the ONNX reference's choice), the size otherwise.
double source_coordinate(const ResizeAttrs& a, int64_t o, double scale, int64_t in_len, double out_len, float roi_start,
                         float roi_end) {
  double x = static_cast<double>(o);
  switch (a.coordinates) {
    case Coordinates::kHalfPixel: return (x + 0.5) / scale - 0.5;
    case Coordinates::kHalfPixelSymmetric: {
      double adjustment = out_len / (scale * static_cast<double>(in_len));
      double center = static_cast<double>(in_len) / 2.0;
      double offset = center * (1.0 - adjustment);
      return offset + (x + 0.5) / scale - 0.5;
    }
    case Coordinates::kPytorchHalfPixel: return out_len > 1 ? (x + 0.5) / scale - 0.5 : 0.0;
    case Coordinates::kAlignCorners:
      return out_len == 1 ? 0.0 : x * static_cast<double>(in_len - 1) / (out_len - 1);
    case Coordinates::kAsymmetric: return x / scale;
    case Coordinates::kTfHalfPixelForNn: return (x + 0.5) / scale;
    case Coordinates::kTfCropAndResize:
      return out_len > 1 ? roi_start * static_cast<double>(in_len - 1) +
                               x * static_cast<double>(roi_end - roi_start) * static_cast<double>(in_len - 1) /
                                   (out_len - 1)
                         : 0.5 * static_cast<double>(roi_start + roi_end) * static_cast<double>(in_len - 1);
  }
  return x;
}

std::vector<Taps> axis_taps(const ResizeAttrs& a, int64_t in_len, int64_t out_len, double scale, bool from_scales,
                            float roi_start, float roi_end) {
  double resized = from_scales ? static_cast<double>(in_len) * scale : static_cast<double>(out_len);
  std::vector<Taps> taps(static_cast<size_t>(out_len));
  auto clamp = [in_len](int64_t i) { return std::clamp<int64_t>(i, 0, in_len - 1); };
  for (int64_t o = 0; o < out_len; ++o) {
    Taps& t = taps[static_cast<size_t>(o)];
    if (in_len == out_len && scale == 1.0 && a.coordinates != Coordinates::kTfCropAndResize) {
      t.index = {o};
      t.weight = {1.0f};
      continue;
    }
    double x = source_coordinate(a, o, scale, in_len, resized, roi_start, roi_end);
    if (a.coordinates == Coordinates::kTfCropAndResize && (x < 0 || x > static_cast<double>(in_len - 1))) {
      t.index = {-1};
      t.weight = {1.0f};
      continue;
    }
    if (a.mode == ResizeMode::kNearest) {
      double f = std::floor(x);
      int64_t i = 0;
      switch (a.rounding) {
        case Rounding::kRoundPreferFloor: i = static_cast<int64_t>(x - f == 0.5 ? f : std::round(x)); break;
        case Rounding::kRoundPreferCeil: i = static_cast<int64_t>(x - f == 0.5 ? f + 1 : std::round(x)); break;
        case Rounding::kFloor: i = static_cast<int64_t>(f); break;
        case Rounding::kCeil: i = static_cast<int64_t>(std::ceil(x)); break;
      }
      t.index = {clamp(i)};
      t.weight = {1.0f};
      continue;
    }
    double f = std::floor(x), r = x - f;
    int64_t base = static_cast<int64_t>(f);
    std::vector<double> w;
    int64_t first;
    if (a.mode == ResizeMode::kLinear) {
      w = {1.0 - r, r};
      first = base;
    } else {
      double A = a.cubic_a;
      auto far = [A](double s) { return ((A * s - 5 * A) * s + 8 * A) * s - 4 * A; };   // 1 < |s| < 2
      auto near = [A](double s) { return ((A + 2) * s - (A + 3)) * s * s + 1; };          // |s| <= 1
      w = {far(r + 1), near(r), near(1 - r), far(2 - r)};
      first = base - 1;
    }
    double total = 0;
    for (size_t k = 0; k < w.size(); ++k) {
      int64_t i = first + static_cast<int64_t>(k);
      bool outside = i < 0 || i >= in_len;
      if (outside && a.exclude_outside) continue;
      t.index.push_back(clamp(i));
      t.weight.push_back(static_cast<float>(w[k]));
      total += w[k];
    }
    if (a.exclude_outside && total != 0)
      for (float& v : t.weight) v = static_cast<float>(v / total);
  }
  return taps;
}

std::vector<Tensor> run_resize(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const auto& a = ctx.node.attr<ResizeAttrs>();
  const Shape& out = outs[0];
  bool nearest = a.mode == ResizeMode::kNearest;
  if (!nearest) require_float(ctx, x, "input");
  size_t rank = static_cast<size_t>(x.rank());
  std::vector<float> scales;
  std::vector<int64_t> sizes;
  bool has_sizes = in.size() > 3 && in[3];
  if (has_sizes) sizes.assign(in[3]->data<int64_t>(), in[3]->data<int64_t>() + in[3]->size());
  else scales = float_values(*in[2]);
  Plan p = resize_plan(a, x.shape(), has_sizes ? nullptr : &scales, has_sizes ? &sizes : nullptr, ctx.who);
  std::vector<float> roi(2 * rank, 0.0f);
  for (size_t i = 0; i < rank; ++i) roi[rank + i] = 1.0f;
  if (a.coordinates == Coordinates::kTfCropAndResize) {
    check(in.size() > 1 && in[1] && in[1]->dtype() == DataType::kFloat32, ctx.who + ": tf_crop_and_resize needs a float roi");
    std::vector<float> r = float_values(*in[1]);
    std::vector<int64_t> axes = a.axes;
    if (axes.empty())
      for (size_t i = 0; i < rank; ++i) axes.push_back(static_cast<int64_t>(i));
    check(r.size() == 2 * axes.size(), ctx.who + ": roi has the wrong length");
    for (size_t i = 0; i < axes.size(); ++i) {
      size_t ax = static_cast<size_t>(normalize_axis(axes[i], static_cast<int64_t>(rank), ctx.who));
      roi[ax] = r[i];
      roi[rank + ax] = r[axes.size() + i];
    }
  }
  std::vector<std::vector<Taps>> taps(rank);
  for (size_t d = 0; d < rank; ++d) taps[d] = axis_taps(a, x.dim(static_cast<int64_t>(d)), out[d], p.scales[d], !has_sizes, roi[d], roi[rank + d]);
  Tensor y = Tensor::uninitialized(x.dtype(), out);
  std::vector<int64_t> xs = strides_of(x.shape()), index(rank, 0);
  size_t es = element_size(x.dtype());
  std::vector<size_t> k(rank, 0);  // which tap of each axis: the product of the axes' taps is summed
  for (int64_t o = 0; o < y.size(); ++o) {
    double acc = 0;
    bool extrapolated = false;
    std::fill(k.begin(), k.end(), 0);
    if (nearest) {
      int64_t src = 0;
      for (size_t d = 0; d < rank; ++d) {
        int64_t i = taps[d][static_cast<size_t>(index[d])].index[0];
        extrapolated |= i < 0;
        src += i * xs[d];
      }
      if (extrapolated) {
        check(x.dtype() == DataType::kFloat32, ctx.who + ": extrapolation needs float32 data");
        y.data<float>()[o] = a.extrapolation;
      } else {
        std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + src * static_cast<int64_t>(es), es);
      }
    } else {
      for (;;) {
        int64_t src = 0;
        double w = 1;
        for (size_t d = 0; d < rank; ++d) {
          const Taps& t = taps[d][static_cast<size_t>(index[d])];
          int64_t i = t.index[k[d]];
          extrapolated |= i < 0;
          src += i * xs[d];
          w *= t.weight[k[d]];
        }
        if (extrapolated) break;
        acc += w * x.data<float>()[src];
        size_t d = rank;
        while (d-- > 0) {
          if (++k[d] < taps[d][static_cast<size_t>(index[d])].index.size()) break;
          k[d] = 0;
        }
        if (d == static_cast<size_t>(-1)) break;
      }
      y.data<float>()[o] = extrapolated ? a.extrapolation : static_cast<float>(acc);
    }
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
  return {y};
}

bool resize_non_negative(const SignCall& c) {
  const auto& a = c.node.attr<ResizeAttrs>();
  return a.mode != ResizeMode::kCubic && (a.coordinates != Coordinates::kTfCropAndResize || a.extrapolation >= 0) &&
         c.input_non_negative(0);
}

// The batch survives a resize that leaves axis 0 alone: a constant scale of 1 there, or axes
// without it.
bool resize_keeps_batch(const Node& n, const Graph& g) {
  const auto& a = n.attr<ResizeAttrs>();
  if (!a.axes.empty()) return std::none_of(a.axes.begin(), a.axes.end(), [](int64_t x) { return x == 0; });
  if (n.inputs.size() > 2 && n.inputs[2] != kNoValue && g.is_constant(n.inputs[2])) {
    const Tensor& s = g.constant(n.inputs[2]);
    return s.dtype() == DataType::kFloat32 && s.size() > 0 && s.data<float>()[0] == 1.0f;
  }
  return false;
}

OpRecord resize() {
  OpRecord r;
  r.onnx_names = {"Resize", "Upsample"};
  r.import = import_resize;
  r.attrs = attrs_codec<ResizeAttrs, describe_resize>("resize");
  r.shapes = resize_shapes;
  r.shape_reads_inputs = (1u << 2) | (1u << 3);
  r.shape_reads_partial = true;
  r.run = run_resize;
  r.keeps_batch = resize_keeps_batch;
  r.non_negative = resize_non_negative;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Resize, resize)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(Resize)
}  // namespace tern::train
#endif
