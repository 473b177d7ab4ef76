// Element-wise activations: Relu, Clip, LeakyRelu, Sigmoid, Tanh, HardSigmoid (and HardSwish),
// Sqrt, Erf.
#ifndef TERN_OPS_TORCH
#include <limits>

#include "kernels/activation_math.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// A float activation with no attributes: import, shape and FP32 kernel from one function.
template <float (*F)(float)>
std::vector<Tensor> run_unary(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  return {unary(ctx, *in[0], [](float v) { return F(v); })};  // F known here: inlined, the loop vectorized
}

template <float (*F)(float)>
OpRecord float_unary(std::string_view onnx_name) {
  OpRecord r;
  r.onnx_names = {onnx_name};
  r.import = import_plain<1>;
  r.shapes = same_shape;
  r.run = run_unary<F>;
  r.keeps_batch = keeps_batch_always;
  return r;
}

float relu_f(float v) { return v > 0.0f ? v : 0.0f; }
// The integer epilogue's sigmoid, bit for bit; NaN stays NaN.
float sigmoid_f(float v) { return std::isnan(v) ? v : kernels::sigmoid(v); }
float tanh_f(float v) { return std::tanh(v); }
float sqrt_f(float v) { return std::sqrt(v); }
// activation_math.h's erf (within 3 ulp of libm's, vectorized: a transformer's GELU runs it on
// every hidden activation).
float erf_f(float v) { return kernels::erf_approx(v); }

OpRecord relu() {
  OpRecord r = float_unary<relu_f>("Relu");
  r.non_negative = always_non_negative;
  r.integer = IntegerUse::kOnCodes;
  return r;
}
OpRecord sigmoid() {
  OpRecord r = float_unary<sigmoid_f>("Sigmoid");
  r.non_negative = always_non_negative;
  return r;
}
OpRecord tanh_op() { return float_unary<tanh_f>("Tanh"); }
OpRecord sqrt_op() {
  OpRecord r = float_unary<sqrt_f>("Sqrt");
  r.non_negative = always_non_negative;
  return r;
}
OpRecord erf_op() { return float_unary<erf_f>("Erf"); }

// ---- Clip: bounds as attributes (opset < 11), or inputs (folded into the attributes when constant).

void import_clip(OnnxNode& n) {
  ClipAttrs a;
  if (n.opset < 11) {
    n.need_inputs(1, 1);
    a.lo = n.get_float("min", a.lo);
    a.hi = n.get_float("max", a.hi);
  } else {
    n.need_inputs(1, 3);  // min/max stay inputs unless constant (passes: canonicalize)
  }
  n.node.attrs = a;
}

constexpr auto describe_clip = [](auto& a, auto&& field) {
  field("lo", a.lo);
  field("hi", a.hi);
};

template <typename T>
Tensor clip_typed(const OpContext& ctx, std::span<const Tensor* const> in) {
  const auto& a = ctx.node.attr<ClipAttrs>();
  auto bound = [&](size_t i, float fallback, T limit) -> T {
    if (i < in.size() && in[i]) {
      check(in[i]->dtype() == in[0]->dtype() && in[i]->size() == 1, ctx.who + ": min/max must be scalars of the input's type");
      return in[i]->data<T>()[0];
    }
    if constexpr (std::is_floating_point_v<T>) return static_cast<T>(fallback);
    // A float bound beyond the integer type (or infinite) clamps nothing on that side; NaN neither.
    double f = fallback;
    if (std::isnan(f)) return limit;
    if (f <= static_cast<double>(std::numeric_limits<T>::lowest())) return std::numeric_limits<T>::lowest();
    if (f >= static_cast<double>(std::numeric_limits<T>::max())) return std::numeric_limits<T>::max();
    return static_cast<T>(f);
  };
  T lo = bound(1, a.lo, std::numeric_limits<T>::lowest()), hi = bound(2, a.hi, std::numeric_limits<T>::max());
  const Tensor& x = *in[0];
  Tensor y = Tensor::uninitialized(x.dtype(), x.shape());
  for (int64_t i = 0; i < x.size(); ++i) y.data<T>()[i] = std::min(std::max(x.data<T>()[i], lo), hi);
  return y;
}

std::vector<Tensor> run_clip(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  if (in[0]->dtype() == DataType::kFloat32 && in.size() == 1) {
    const auto& a = ctx.node.attr<ClipAttrs>();
    return {unary(ctx, *in[0], [lo = a.lo, hi = a.hi](float v) { return std::min(std::max(v, lo), hi); })};
  }
  return {dispatch_numeric(ctx, in[0]->dtype(), [&](auto tag) { return clip_typed<decltype(tag)>(ctx, in); })};
}

bool clip_non_negative(const SignCall& c) { return c.node.attr<ClipAttrs>().lo >= 0.0f || c.input_non_negative(0); }

void export_clip(OnnxWriter& w) {
  std::vector<std::string> ins = w.inputs;
  if (ins.size() == 1) {  // bounds folded into the attributes
    const ClipAttrs& a = w.node.attr<ClipAttrs>();
    auto bound = [&](float v, const char* hint) {
      return std::isfinite(v) ? w.constant(w.outputs[0] + hint, Tensor::from_floats({}, std::vector<float>{v})) : std::string();
    };
    ins.push_back(bound(a.lo, "/min"));
    ins.push_back(bound(a.hi, "/max"));
    while (ins.size() > 1 && ins.back().empty()) ins.pop_back();
  }
  w.emit("Clip", ins, w.outputs);
}

OpRecord clip() {
  OpRecord r;
  r.onnx_names = {"Clip"};
  r.import = import_clip;
  r.attrs = attrs_codec<ClipAttrs, describe_clip>("clip");
  r.shapes = same_shape;
  r.run = run_clip;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = clip_non_negative;
  r.integer = IntegerUse::kOnCodes;
  r.export_onnx = export_clip;
  return r;
}

// ---- LeakyRelu

void import_leaky_relu(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = LeakyReluAttrs{n.get_float("alpha", 0.01f)};
}

constexpr auto describe_leaky_relu = [](auto& a, auto&& field) { field("alpha", a.alpha); };

std::vector<Tensor> run_leaky_relu(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  float alpha = ctx.node.attr<LeakyReluAttrs>().alpha;
  return {unary(ctx, *in[0], [alpha](float v) { return v >= 0.0f ? v : v * alpha; })};
}

void export_leaky_relu(OnnxWriter& w) {
  w.attr(w.emit("LeakyRelu", w.inputs, w.outputs), "alpha", w.node.attr<LeakyReluAttrs>().alpha);
}

OpRecord leaky_relu() {
  OpRecord r;
  r.onnx_names = {"LeakyRelu"};
  r.import = import_leaky_relu;
  r.attrs = attrs_codec<LeakyReluAttrs, describe_leaky_relu>("leaky_relu");
  r.shapes = same_shape;
  r.run = run_leaky_relu;
  r.keeps_batch = keeps_batch_always;
  r.export_onnx = export_leaky_relu;
  return r;
}

// ---- HardSigmoid clamp(alpha x + beta, 0, 1); HardSwish x * HardSigmoid(x) with 1/6, 1/2.

void import_hard_sigmoid(OnnxNode& n) {
  n.need_inputs(1, 1);
  AffineAttrs a;
  if (n.op_type == "HardSwish") a = {1.0f / 6.0f, 0.5f, true};
  else a = {n.get_float("alpha", 0.2f), n.get_float("beta", 0.5f), false};
  n.node.attrs = a;
}

constexpr auto describe_affine = [](auto& a, auto&& field) {
  field("alpha", a.alpha);
  field("beta", a.beta);
  field("multiply_input", a.multiply_input);
};

std::vector<Tensor> run_hard_sigmoid(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const auto& a = ctx.node.attr<AffineAttrs>();
  return {unary(ctx, *in[0], [a](float v) {
    float h = kernels::hard_sigmoid(v, a.alpha, a.beta);
    return a.multiply_input ? v * h : h;
  })};
}

bool hard_sigmoid_non_negative(const SignCall& c) { return !c.node.attr<AffineAttrs>().multiply_input; }

// HardSwish when the constants are its own (opset 14), else x * HardSigmoid(x).
void export_hard_sigmoid(OnnxWriter& w) {
  const AffineAttrs& a = w.node.attr<AffineAttrs>();
  if (a.multiply_input && a.alpha == 1.0f / 6.0f && a.beta == 0.5f) {
    w.emit("HardSwish", w.inputs, w.outputs);
    return;
  }
  std::string gate = a.multiply_input ? w.temp(w.outputs[0] + "/gate") : w.outputs[0];
  size_t n = w.emit("HardSigmoid", w.inputs, {gate});
  w.attr(n, "alpha", a.alpha);
  w.attr(n, "beta", a.beta);
  if (a.multiply_input) w.emit("Mul", {w.inputs[0], gate}, w.outputs);
}

OpRecord hard_sigmoid() {
  OpRecord r;
  r.onnx_names = {"HardSigmoid", "HardSwish"};
  r.import = import_hard_sigmoid;
  r.attrs = attrs_codec<AffineAttrs, describe_affine>("affine");
  r.shapes = same_shape;
  r.run = run_hard_sigmoid;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = hard_sigmoid_non_negative;
  r.export_onnx = export_hard_sigmoid;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Relu, relu)
TERN_REGISTER_OP(Sigmoid, sigmoid)
TERN_REGISTER_OP(Tanh, tanh_op)
TERN_REGISTER_OP(Sqrt, sqrt_op)
TERN_REGISTER_OP(Erf, erf_op)
TERN_REGISTER_OP(Clip, clip)
TERN_REGISTER_OP(LeakyRelu, leaky_relu)
TERN_REGISTER_OP(HardSigmoid, hard_sigmoid)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor relu_forward(TorchCall& c) { return torch::relu(c.input(0)); }
torch::Tensor sigmoid_forward(TorchCall& c) { return torch::sigmoid(c.input(0)); }
torch::Tensor tanh_forward(TorchCall& c) { return torch::tanh(c.input(0)); }
torch::Tensor sqrt_forward(TorchCall& c) { return torch::sqrt(c.input(0)); }
torch::Tensor erf_forward(TorchCall& c) { return torch::erf(c.input(0)); }

torch::Tensor clip_forward(TorchCall& c) {
  const auto& a = c.node.attr<ClipAttrs>();
  torch::Tensor y = clamp_if(c.input(0), a.lo, a.hi);
  if (torch::Tensor lo = c.input(1); lo.defined()) y = torch::max(y, lo.to(y.dtype()));
  if (torch::Tensor hi = c.input(2); hi.defined()) y = torch::min(y, hi.to(y.dtype()));
  return y;
}

torch::Tensor leaky_relu_forward(TorchCall& c) {
  return torch::leaky_relu(c.input(0), c.node.attr<LeakyReluAttrs>().alpha);
}

torch::Tensor hard_sigmoid_forward(TorchCall& c) {
  const auto& a = c.node.attr<AffineAttrs>();
  torch::Tensor x = c.input(0);
  torch::Tensor y = torch::clamp(x * static_cast<double>(a.alpha) + static_cast<double>(a.beta), 0.0, 1.0);
  return a.multiply_input ? x * y : y;
}

}  // namespace

TERN_REGISTER_TORCH_OP(Relu, relu_forward)
TERN_REGISTER_TORCH_OP(Sigmoid, sigmoid_forward)
TERN_REGISTER_TORCH_OP(Tanh, tanh_forward)
TERN_REGISTER_TORCH_OP(Sqrt, sqrt_forward)
TERN_REGISTER_TORCH_OP(Erf, erf_forward)
TERN_REGISTER_TORCH_OP(Clip, clip_forward)
TERN_REGISTER_TORCH_OP(LeakyRelu, leaky_relu_forward)
TERN_REGISTER_TORCH_OP(HardSigmoid, hard_sigmoid_forward)

}  // namespace tern::train
#endif
