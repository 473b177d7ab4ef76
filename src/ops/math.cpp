// Element-wise math: Exp, Log, Neg, Abs, Reciprocal, Floor, Ceil, Softplus, PRelu, and the
// variadic broadcasting Min and Max.
#ifndef TERN_OPS_TORCH
#include <limits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

template <float (*F)(float)>
std::vector<Tensor> run_float(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  return {unary(ctx, *in[0], [](float v) { return F(v); })};  // F known here: inlined
}

template <float (*F)(float)>
OpRecord float_math(std::string_view onnx_name, SignRule sign) {
  OpRecord r;
  r.onnx_names = {onnx_name};
  r.import = import_plain<1>;
  r.shapes = same_shape;
  r.run = run_float<F>;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = sign;
  return r;
}

float exp_f(float v) { return std::exp(v); }
float log_f(float v) { return std::log(v); }
float reciprocal_f(float v) { return 1.0f / v; }
float floor_f(float v) { return std::floor(v); }
float ceil_f(float v) { return std::ceil(v); }
// log(1 + e^x) without overflow for large x.
float softplus_f(float v) { return v > 0.0f ? v + std::log1p(std::exp(-v)) : std::log1p(std::exp(v)); }

OpRecord exp_op() { return float_math<exp_f>("Exp", always_non_negative); }
OpRecord log_op() { return float_math<log_f>("Log", never_non_negative); }
OpRecord reciprocal() { return float_math<reciprocal_f>("Reciprocal", like_input0); }
OpRecord floor_op() { return float_math<floor_f>("Floor", like_input0); }
OpRecord ceil_op() { return float_math<ceil_f>("Ceil", like_input0); }
OpRecord softplus() { return float_math<softplus_f>("Softplus", always_non_negative); }

// Neg and Abs take every numeric type (shape arithmetic included).
std::vector<Tensor> run_neg_abs(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  bool neg = ctx.node.op == OpType::kNeg;
  Tensor y = Tensor::uninitialized(x.dtype(), x.shape());
  dispatch_numeric(ctx, x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < x.size(); ++i) {
      T v = x.data<T>()[i];
      if constexpr (std::is_unsigned_v<T>) y.data<T>()[i] = neg ? static_cast<T>(0 - v) : v;
      else y.data<T>()[i] = neg ? static_cast<T>(-v) : static_cast<T>(v < 0 ? -v : v);
    }
  });
  return {y};
}

std::optional<Content> neg_content(const ContentCall& c) {
  if (c.in.empty() || !c.in[0]) return std::nullopt;
  Content out;
  for (int64_t v : *c.in[0]) out.push_back(is_known(v) && v != INT64_MIN ? (c.node.op == OpType::kNeg ? -v : std::abs(v)) : kUnknownElement);
  return out;
}

OpRecord neg_abs(std::string_view name, SignRule sign) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_plain<1>;
  r.shapes = same_shape;
  r.content = neg_content;
  r.run = run_neg_abs;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = sign;
  return r;
}
OpRecord neg() { return neg_abs("Neg", never_non_negative); }
OpRecord abs_op() { return neg_abs("Abs", always_non_negative); }

// ---- PRelu: y = x < 0 ? slope * x : x, slope broadcasting to x.

std::vector<Shape> prelu_shapes(ShapeCall& c) {
  c.need_inputs(2);
  Shape out = broadcast_shapes(c.in[0], c.in[1], c.who);
  check(out.size() == c.in[0].size(), c.who + ": slope " + to_string(c.in[1]) + " does not broadcast to " + to_string(c.in[0]));
  return {out};
}

std::vector<Tensor> run_prelu(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  require_float(ctx, *in[0], "input");
  require_float(ctx, *in[1], "slope");
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out[0]);
  binary_typed<float>(*in[0], *in[1], y, [](float x, float s) { return x < 0.0f ? s * x : x; }, ctx.pool);
  return {y};
}

OpRecord prelu() {
  OpRecord r;
  r.onnx_names = {"PRelu"};
  r.import = import_plain<2>;
  r.shapes = prelu_shapes;
  r.run = run_prelu;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  return r;
}

// ---- Min / Max of any number of inputs, broadcasting.

void import_min_max(OnnxNode& n) { n.need_inputs(1, 1u << 16); }

std::vector<Tensor> run_min_max(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  bool is_max = ctx.node.op == OpType::kMax;
  DataType type = in[0]->dtype();
  for (const Tensor* t : in)
    if (t->dtype() != type)
      throw Error(ctx.who + ": inputs have different types " + to_string(type) + " and " + to_string(t->dtype()));
  std::vector<Shape> shapes;
  for (const Tensor* t : in) shapes.push_back(t->shape());
  Tensor y = Tensor::uninitialized(type, out[0]);
  dispatch_numeric(ctx, type, [&](auto tag) {
    using T = decltype(tag);
    T* py = y.data<T>();
    for_each_broadcast(out[0], shapes, [&](int64_t o, const std::vector<int64_t>& at) {
      T v = in[0]->data<T>()[at[0]];
      for (size_t k = 1; k < in.size(); ++k) {
        T w = in[k]->data<T>()[at[k]];
        if constexpr (std::is_floating_point_v<T>) {
          if (std::isnan(w) || std::isnan(v)) {
            v = std::numeric_limits<T>::quiet_NaN();
            continue;
          }
        }
        v = is_max ? std::max(v, w) : std::min(v, w);
      }
      py[o] = v;
    });
  });
  return {y};
}

std::optional<Content> min_max_content(const ContentCall& c) {
  size_t n = 0;
  for (const Content* in : c.in) {
    if (!in) return std::nullopt;
    if (in->size() != 1 && n > 1 && in->size() != n) return std::nullopt;
    n = std::max(n, in->size());
  }
  Content out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t v = 0;
    bool known = true;
    for (size_t k = 0; k < c.in.size(); ++k) {
      int64_t e = (*c.in[k])[c.in[k]->size() == 1 ? 0 : i];
      known &= is_known(e);
      v = k == 0 ? e : c.node.op == OpType::kMax ? std::max(v, e) : std::min(v, e);
    }
    out[i] = known ? v : kUnknownElement;
  }
  return out;
}

bool max_non_negative(const SignCall& c) {
  for (size_t i = 0; i < c.node.inputs.size(); ++i)
    if (c.input_non_negative(i)) return true;
  return false;
}

OpRecord min_max(std::string_view name, SignRule sign) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_min_max;
  r.shapes = broadcast_shape;
  r.content = min_max_content;
  r.run = run_min_max;
  r.keeps_batch = keeps_batch_broadcast;
  r.non_negative = sign;
  return r;
}
OpRecord max_op() { return min_max("Max", max_non_negative); }
OpRecord min_op() { return min_max("Min", like_all_inputs); }

// ---- Mod: the remainder with the divisor's sign (integers, fmod=0), or C's fmod (fmod=1).

struct ModAttrs {
  bool fmod = false;
};

void import_mod(OnnxNode& n) {
  n.need_inputs(2, 2);
  n.node.attrs = ModAttrs{n.get_int("fmod", 0) != 0};
}

constexpr auto describe_mod = [](auto& a, auto&& field) { field("fmod", a.fmod); };

template <typename T>
T mod_of(T a, T b, bool fmod) {
  if constexpr (std::is_floating_point_v<T>) {
    T r = std::fmod(a, b);
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
  } else {
    if (b == 0) return 0;
    if constexpr (std::is_signed_v<T>) {
      if (a == std::numeric_limits<T>::min() && b == -1) return 0;
    }
    T r = static_cast<T>(a % b);
    if (!fmod && r != 0 && ((r < 0) != (b < 0))) r = static_cast<T>(r + b);
    return r;
  }
}

std::vector<Tensor> run_mod(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  check(a.dtype() == b.dtype(), ctx.who + ": inputs have different types");
  bool fmod = ctx.node.attr<ModAttrs>().fmod;
  check(fmod || a.dtype() != DataType::kFloat32, ctx.who + ": float inputs need fmod=1");
  Tensor y = Tensor::uninitialized(a.dtype(), out[0]);
  bool zero = false;
  dispatch_numeric(ctx, a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    binary_typed<T>(a, b, y, [&](T p, T q) {
      if constexpr (std::is_integral_v<T>) zero |= q == 0;
      return mod_of(p, q, fmod);
    });
  });
  check(!zero, ctx.who + ": integer modulo by zero");
  return {y};
}

std::optional<Content> mod_content(const ContentCall& c) {
  if (c.in.size() != 2 || !c.in[0] || !c.in[1]) return std::nullopt;
  const Content& a = *c.in[0];
  const Content& b = *c.in[1];
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1) return std::nullopt;
  Content out(std::max(a.size(), b.size()));
  bool fmod = c.node.attr<ModAttrs>().fmod;
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t p = a[a.size() == 1 ? 0 : i], q = b[b.size() == 1 ? 0 : i];
    out[i] = is_known(p) && is_known(q) && q != 0 ? mod_of(p, q, fmod) : kUnknownElement;
  }
  return out;
}

void export_mod(OnnxWriter& w) { w.attr(w.emit("Mod", w.inputs, w.outputs), "fmod", int64_t{w.node.attr<ModAttrs>().fmod}); }

OpRecord mod() {
  OpRecord r;
  r.onnx_names = {"Mod"};
  r.import = import_mod;
  r.attrs = attrs_codec<ModAttrs, describe_mod>("mod");
  r.shapes = broadcast_shape;
  r.content = mod_content;
  r.run = run_mod;
  r.keeps_batch = keeps_batch_broadcast;
  r.export_onnx = export_mod;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Mod, mod)
TERN_REGISTER_OP(Exp, exp_op)
TERN_REGISTER_OP(Log, log_op)
TERN_REGISTER_OP(Reciprocal, reciprocal)
TERN_REGISTER_OP(Floor, floor_op)
TERN_REGISTER_OP(Ceil, ceil_op)
TERN_REGISTER_OP(Softplus, softplus)
TERN_REGISTER_OP(Neg, neg)
TERN_REGISTER_OP(Abs, abs_op)
TERN_REGISTER_OP(PRelu, prelu)
TERN_REGISTER_OP(Max, max_op)
TERN_REGISTER_OP(Min, min_op)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor exp_forward(TorchCall& c) { return torch::exp(c.input(0)); }
torch::Tensor log_forward(TorchCall& c) { return torch::log(c.input(0)); }
torch::Tensor reciprocal_forward(TorchCall& c) { return torch::reciprocal(c.input(0)); }
torch::Tensor floor_forward(TorchCall& c) { return torch::floor(c.input(0)); }
torch::Tensor ceil_forward(TorchCall& c) { return torch::ceil(c.input(0)); }
torch::Tensor softplus_forward(TorchCall& c) { return torch::softplus(c.input(0)); }
torch::Tensor neg_forward(TorchCall& c) { return -c.input(0); }
torch::Tensor abs_forward(TorchCall& c) { return torch::abs(c.input(0)); }
torch::Tensor prelu_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  return torch::where(x < 0, c.input(1) * x, x);
}
torch::Tensor max_forward(TorchCall& c) {
  torch::Tensor y = c.input(0);
  for (size_t i = 1; i < c.node.inputs.size(); ++i) y = torch::maximum(y, c.input(i));
  return y;
}
torch::Tensor min_forward(TorchCall& c) {
  torch::Tensor y = c.input(0);
  for (size_t i = 1; i < c.node.inputs.size(); ++i) y = torch::minimum(y, c.input(i));
  return y;
}

}  // namespace

TERN_REGISTER_TORCH_OP(Mod)
TERN_REGISTER_TORCH_OP(Exp, exp_forward)
TERN_REGISTER_TORCH_OP(Log, log_forward)
TERN_REGISTER_TORCH_OP(Reciprocal, reciprocal_forward)
TERN_REGISTER_TORCH_OP(Floor, floor_forward)
TERN_REGISTER_TORCH_OP(Ceil, ceil_forward)
TERN_REGISTER_TORCH_OP(Softplus, softplus_forward)
TERN_REGISTER_TORCH_OP(Neg, neg_forward)
TERN_REGISTER_TORCH_OP(Abs, abs_forward)
TERN_REGISTER_TORCH_OP(PRelu, prelu_forward)
TERN_REGISTER_TORCH_OP(Max, max_forward)
TERN_REGISTER_TORCH_OP(Min, min_forward)

}  // namespace tern::train
#endif
