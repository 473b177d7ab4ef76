// Comparisons and logic (bool outputs): Equal, Less, Greater, LessOrEqual, GreaterOrEqual, Not,
// And, Or, Xor; and Where, which selects by a bool condition.
#ifndef TERN_OPS_TORCH
#include <cstring>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

DataType bool_type(const Node&, std::span<const DataType>, size_t) { return DataType::kBool; }

template <typename T>
bool compare(OpType op, T a, T b) {
  switch (op) {
    case OpType::kEqual: return a == b;
    case OpType::kLess: return a < b;
    case OpType::kGreater: return a > b;
    case OpType::kLessOrEqual: return a <= b;
    default: return a >= b;  // GreaterOrEqual
  }
}

std::vector<Tensor> run_compare(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& a = *in[0];
  const Tensor& b = *in[1];
  if (a.dtype() != b.dtype())
    throw Error(ctx.who + ": inputs have different types " + to_string(a.dtype()) + " and " + to_string(b.dtype()));
  Tensor y = Tensor::uninitialized(DataType::kBool, out[0]);
  OpType op = ctx.node.op;
  DataType type = a.dtype() == DataType::kBool ? DataType::kUInt8 : a.dtype();  // bools compare as bytes
  dispatch_numeric(ctx, type, [&](auto tag) {
    using T = decltype(tag);
    binary_typed<T, uint8_t>(a, b, y, [op](T p, T q) { return static_cast<uint8_t>(compare(op, p, q)); });
  });
  return {y};
}

std::optional<Content> compare_content(const ContentCall& c) {
  if (c.in.size() != 2 || !c.in[0] || !c.in[1]) return std::nullopt;
  const Content& a = *c.in[0];
  const Content& b = *c.in[1];
  if (a.size() != b.size() && a.size() != 1 && b.size() != 1) return std::nullopt;
  Content out(std::max(a.size(), b.size()));
  for (size_t i = 0; i < out.size(); ++i) {
    int64_t p = a[a.size() == 1 ? 0 : i], q = b[b.size() == 1 ? 0 : i];
    // The batch is >= 1: against itself or a constant below 1 (exporters' Equal(shape, -1)) the
    // answer is known; 1 stands for it.
    if (p == kSymbolicBatch && q == kSymbolicBatch) p = q = 1;
    else if (p == kSymbolicBatch && is_known(q) && q < 1) p = 1;
    else if (q == kSymbolicBatch && is_known(p) && p < 1) q = 1;
    out[i] = is_known(p) && is_known(q) ? compare(c.node.op, p, q) : kUnknownElement;
  }
  return out;
}

OpRecord comparison(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_plain<2>;
  r.shapes = broadcast_shape;
  r.type = bool_type;
  r.content = compare_content;
  r.run = run_compare;
  r.keeps_batch = keeps_batch_broadcast;
  return r;
}
OpRecord equal() { return comparison("Equal"); }
OpRecord less() { return comparison("Less"); }
OpRecord greater() { return comparison("Greater"); }
OpRecord less_or_equal() { return comparison("LessOrEqual"); }
OpRecord greater_or_equal() { return comparison("GreaterOrEqual"); }

// ---- Not, And, Or, Xor on bool tensors

void require_bool(const OpContext& ctx, const Tensor& t) {
  if (t.dtype() != DataType::kBool) throw Error(ctx.who + ": inputs must be bool, got " + to_string(t.dtype()));
}

std::vector<Tensor> run_logic(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  for (const Tensor* t : in) require_bool(ctx, *t);
  Tensor y = Tensor::uninitialized(DataType::kBool, out[0]);
  OpType op = ctx.node.op;
  if (op == OpType::kNot) {
    for (int64_t i = 0; i < y.size(); ++i) y.data<uint8_t>()[i] = in[0]->data<uint8_t>()[i] ? 0 : 1;
    return {y};
  }
  binary_typed<uint8_t>(*in[0], *in[1], y, [op](uint8_t p, uint8_t q) {
    bool a = p != 0, b = q != 0;
    return static_cast<uint8_t>(op == OpType::kAnd ? (a && b) : op == OpType::kOr ? (a || b) : (a != b));
  });
  return {y};
}

OpRecord logic(std::string_view name, void (*import)(OnnxNode&), ShapeRule shapes) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import;
  r.shapes = shapes;
  r.type = bool_type;
  r.run = run_logic;
  r.keeps_batch = keeps_batch_broadcast;
  return r;
}
OpRecord not_op() { return logic("Not", import_plain<1>, same_shape); }
OpRecord and_op() { return logic("And", import_plain<2>, broadcast_shape); }
OpRecord or_op() { return logic("Or", import_plain<2>, broadcast_shape); }
OpRecord xor_op() { return logic("Xor", import_plain<2>, broadcast_shape); }

// ---- Where(condition, X, Y)

std::vector<Shape> where_shapes(ShapeCall& c) {
  c.need_inputs(3);
  return {broadcast_all(c.in, c.who)};
}

DataType where_type(const Node&, std::span<const DataType> in, size_t) { return in.size() > 1 ? in[1] : DataType::kFloat32; }

std::vector<Tensor> run_where(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  require_bool(ctx, *in[0]);
  if (in[1]->dtype() != in[2]->dtype())
    throw Error(ctx.who + ": X and Y have different types " + to_string(in[1]->dtype()) + " and " + to_string(in[2]->dtype()));
  DataType type = in[1]->dtype();
  Tensor y = Tensor::uninitialized(type, out[0]);
  std::vector<Shape> shapes = {in[0]->shape(), in[1]->shape(), in[2]->shape()};
  size_t es = element_size(type);
  const uint8_t* cond = in[0]->data<uint8_t>();
  for_each_broadcast(out[0], shapes, [&](int64_t o, const std::vector<int64_t>& at) {
    const Tensor* src = cond[at[0]] ? in[1] : in[2];
    std::memcpy(y.raw() + o * static_cast<int64_t>(es), src->raw() + at[cond[at[0]] ? 1 : 2] * static_cast<int64_t>(es), es);
  });
  return {y};
}

std::optional<Content> where_content(const ContentCall& c) {
  if (c.in.size() != 3 || !c.in[0] || !c.in[1] || !c.in[2]) return std::nullopt;
  size_t n = std::max({c.in[0]->size(), c.in[1]->size(), c.in[2]->size()});
  for (const Content* p : c.in)
    if (p->size() != 1 && p->size() != n) return std::nullopt;
  Content out(n);
  for (size_t i = 0; i < n; ++i) {
    auto at = [&](size_t k) { return (*c.in[k])[c.in[k]->size() == 1 ? 0 : i]; };
    out[i] = is_known(at(0)) ? (at(0) ? at(1) : at(2)) : kUnknownElement;
  }
  return out;
}

bool where_non_negative(const SignCall& c) { return c.input_non_negative(1) && c.input_non_negative(2); }

OpRecord where() {
  OpRecord r;
  r.onnx_names = {"Where"};
  r.import = import_plain<3>;
  r.shapes = where_shapes;
  r.type = where_type;
  r.content = where_content;
  r.run = run_where;
  r.keeps_batch = keeps_batch_broadcast;
  r.non_negative = where_non_negative;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Equal, equal)
TERN_REGISTER_OP(Less, less)
TERN_REGISTER_OP(Greater, greater)
TERN_REGISTER_OP(LessOrEqual, less_or_equal)
TERN_REGISTER_OP(GreaterOrEqual, greater_or_equal)
TERN_REGISTER_OP(Not, not_op)
TERN_REGISTER_OP(And, and_op)
TERN_REGISTER_OP(Or, or_op)
TERN_REGISTER_OP(Xor, xor_op)
TERN_REGISTER_OP(Where, where)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor where_forward(TorchCall& c) { return torch::where(c.input(0).to(torch::kBool), c.input(1), c.input(2)); }

}  // namespace

// Comparisons and logic have no gradient; a trainable graph reads them only on shape paths.
TERN_REGISTER_TORCH_OP(Equal)
TERN_REGISTER_TORCH_OP(Less)
TERN_REGISTER_TORCH_OP(Greater)
TERN_REGISTER_TORCH_OP(LessOrEqual)
TERN_REGISTER_TORCH_OP(GreaterOrEqual)
TERN_REGISTER_TORCH_OP(Not)
TERN_REGISTER_TORCH_OP(And)
TERN_REGISTER_TORCH_OP(Or)
TERN_REGISTER_TORCH_OP(Xor)
TERN_REGISTER_TORCH_OP(Where, where_forward)

}  // namespace tern::train
#endif
