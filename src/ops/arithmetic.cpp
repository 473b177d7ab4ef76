// Broadcasting arithmetic: Add, Sub, Mul, Div (float32 and the integer types, for shape
// arithmetic too) and Pow.
#ifndef TERN_OPS_TORCH
#include <limits>
#include <type_traits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

void import_arith(OnnxNode& n) {
  n.need_inputs(2, 2);
  // Before opset 7, broadcast=1 with an axis aligned B at that axis; numpy rules cover axis-free use.
  check(n.opset >= 7 || !n.has("axis"), n.who + ": legacy broadcast with an axis attribute is not supported");
}

template <typename T>
void arith(const OpContext& ctx, const Tensor& a, const Tensor& b, Tensor& y) {
  switch (ctx.node.op) {
    case OpType::kAdd: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p + q); }, ctx.pool); break;
    case OpType::kSub: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p - q); }); break;
    case OpType::kMul: binary_typed<T>(a, b, y, [](T p, T q) { return static_cast<T>(p * q); }); break;
    default: {
      bool zero_division = false;
      binary_typed<T>(a, b, y, [&](T p, T q) {
        if constexpr (std::is_integral_v<T>) {
          if (q == 0) {
            zero_division = true;
            return T(0);
          }
        }
        return static_cast<T>(p / q);
      });
      check(!zero_division, ctx.who + ": integer division by zero");
    }
  }
}

std::vector<Tensor> run_arith(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  if (a.dtype() != b.dtype())  // (the message built only on failure: this runs on every call)
    throw Error(ctx.who + ": inputs have different types " + to_string(a.dtype()) + " and " + to_string(b.dtype()));
  Tensor y = Tensor::uninitialized(a.dtype(), out[0]);
  dispatch_numeric(ctx, a.dtype(), [&](auto tag) { arith<decltype(tag)>(ctx, a, b, y); });
  return {y};
}

// Shape arithmetic (x.size(0) * 2, (H + 1) / 2, ...): computed where both elements are numbers; the
// dynamic batch survives multiplying or dividing by 1 and adding 0; anything else is unknown until
// run time.
std::optional<Content> arith_content(const ContentCall& c) {
  if (c.in.size() != 2 || !c.in[0] || !c.in[1]) return std::nullopt;
  const Content& a = *c.in[0];
  const Content& b = *c.in[1];
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1) return std::nullopt;
  bool is_float = c.values[0] && c.values[0]->dtype == DataType::kFloat32;
  Content out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t p = a[a.size() == 1 ? 0 : i], q = b[b.size() == 1 ? 0 : i];
    int64_t r = kUnknownElement;
    if (is_known(p) && is_known(q)) {
      int64_t v = 0;
      switch (c.node.op) {
        case OpType::kAdd: r = __builtin_add_overflow(p, q, &v) ? kUnknownElement : v; break;
        case OpType::kSub: r = __builtin_sub_overflow(p, q, &v) ? kUnknownElement : v; break;
        case OpType::kMul: r = __builtin_mul_overflow(p, q, &v) ? kUnknownElement : v; break;
        default:  // Div: integers truncate; a float quotient is tracked only when it is whole
          if (q != 0 && !(p == INT64_MIN && q == -1) && (!is_float || p % q == 0)) r = p / q;
          break;
      }
      if (!is_known(r)) r = kUnknownElement;
    } else if (p == kSymbolicBatch && is_known(q)) {
      bool keeps = (c.node.op == OpType::kMul || c.node.op == OpType::kDiv) ? q == 1 : q == 0;
      r = keeps ? kSymbolicBatch : kUnknownElement;
    } else if (q == kSymbolicBatch && is_known(p)) {
      bool keeps = c.node.op == OpType::kMul ? p == 1 : (c.node.op == OpType::kAdd && p == 0);
      r = keeps ? kSymbolicBatch : kUnknownElement;
    }
    out[i] = r;
  }
  return out;
}

OpRecord arithmetic(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_arith;
  r.shapes = broadcast_shape;
  r.content = arith_content;
  r.run = run_arith;
  r.keeps_batch = keeps_batch_broadcast;
  return r;
}

OpRecord add() {
  OpRecord r = arithmetic("Add");
  r.non_negative = like_all_inputs;
  r.integer = IntegerUse::kFloat;
  return r;
}
OpRecord sub() { return arithmetic("Sub"); }
OpRecord mul() {
  OpRecord r = arithmetic("Mul");
  r.non_negative = like_all_inputs;
  return r;
}
OpRecord div() { return arithmetic("Div"); }

std::vector<Tensor> run_pow(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Shape& out = outs[0];
  if (in[0]->dtype() == DataType::kFloat32 && in[1]->dtype() == DataType::kFloat32) {
    Tensor y = Tensor::uninitialized(DataType::kFloat32, out);
    binary_typed<float>(*in[0], *in[1], y, [](float p, float q) { return q == 2.0f ? p * p : std::pow(p, q); });
    return {y};
  }
  // Mixed types (ONNX allows any numeric pair; the result has the base's type): via double.
  auto to_float = [&](const Tensor& t) {
    Tensor f = Tensor::uninitialized(DataType::kFloat32, t.shape());
    dispatch_numeric(ctx, t.dtype(), [&](auto tag) {
      for (int64_t i = 0; i < t.size(); ++i) f.data<float>()[i] = static_cast<float>(t.data<decltype(tag)>()[i]);
    });
    return f;
  };
  Tensor base = to_float(*in[0]), exponent = to_float(*in[1]);
  Tensor y = Tensor::uninitialized(in[0]->dtype(), out);
  dispatch_numeric(ctx, in[0]->dtype(), [&](auto tag) {
    using T = decltype(tag);
    binary_typed<float, T>(base, exponent, y, [&](float p, float q) {
      double v = std::pow(static_cast<double>(p), static_cast<double>(q));
      if constexpr (std::is_integral_v<T>) {
        if (!(std::isfinite(v) && v > static_cast<double>(std::numeric_limits<T>::lowest()) - 1.0 &&
              v < static_cast<double>(std::numeric_limits<T>::max()) + 1.0))  // per element: no message built
          throw Error(ctx.who + ": " + std::to_string(v) + " is outside " + to_string(in[0]->dtype()));
      }
      return static_cast<T>(v);
    });
  });
  return {y};
}

OpRecord pow_op() {
  OpRecord r;
  r.onnx_names = {"Pow"};
  r.import = import_plain<2>;
  r.shapes = broadcast_shape;
  r.run = run_pow;
  r.keeps_batch = keeps_batch_broadcast;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Add, add)
TERN_REGISTER_OP(Sub, sub)
TERN_REGISTER_OP(Mul, mul)
TERN_REGISTER_OP(Div, div)
TERN_REGISTER_OP(Pow, pow_op)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor add_forward(TorchCall& c) { return c.input(0) + c.input(1); }
torch::Tensor sub_forward(TorchCall& c) { return c.input(0) - c.input(1); }
torch::Tensor mul_forward(TorchCall& c) { return c.input(0) * c.input(1); }
torch::Tensor div_forward(TorchCall& c) { return c.input(0) / c.input(1); }
torch::Tensor pow_forward(TorchCall& c) { return torch::pow(c.input(0), c.input(1)); }

}  // namespace

TERN_REGISTER_TORCH_OP(Add, add_forward)
TERN_REGISTER_TORCH_OP(Sub, sub_forward)
TERN_REGISTER_TORCH_OP(Mul, mul_forward)
TERN_REGISTER_TORCH_OP(Div, div_forward)
TERN_REGISTER_TORCH_OP(Pow, pow_forward)

}  // namespace tern::train
#endif
