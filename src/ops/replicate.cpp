// Operators whose output shape is an input's content: Expand, Tile, ConstantOfShape, Range.
#ifndef TERN_OPS_TORCH
#include <cstring>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// Copies x broadcast to `out` (any element type).
Tensor broadcast_to(const Tensor& x, const Shape& out) {
  Tensor y = Tensor::uninitialized(x.dtype(), out);
  size_t es = element_size(x.dtype());
  std::vector<Shape> shapes = {x.shape()};
  for_each_broadcast(out, shapes, [&](int64_t o, const std::vector<int64_t>& at) {
    std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + at[0] * static_cast<int64_t>(es), es);
  });
  return y;
}

// ---- Expand(input, shape): numpy broadcast of input and shape.

std::vector<Shape> expand_shapes(ShapeCall& c) {
  c.need_inputs(2);
  std::vector<int64_t> target = c.ints(1, "shape");
  for (int64_t& d : target) {
    if (d == kSymbolicBatch || d == kUnknownElement) d = kDynamicDim;
    else check(d >= 0, c.who + ": shape has a negative dimension " + std::to_string(d));
  }
  // An unknown target dim of 1 keeps the input's; broadcast_shapes treats it as unknown.
  return {broadcast_shapes(c.in[0], target, c.who)};
}

std::vector<Tensor> run_expand(const OpContext&, std::span<const Tensor* const> in, std::span<const Shape> out) {
  return {broadcast_to(*in[0], out[0])};
}

OpRecord expand() {
  OpRecord r;
  r.onnx_names = {"Expand"};
  r.import = import_plain<2>;
  r.shapes = expand_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.shape_reads_partial = true;
  r.run = run_expand;
  r.non_negative = like_input0;
  return r;
}

// ---- Tile(input, repeats)

std::vector<Shape> tile_shapes(ShapeCall& c) {
  c.need_inputs(2);
  std::vector<int64_t> repeats = c.ints(1, "repeats");
  const Shape& x = c.in[0];
  check(repeats.size() == x.size(), c.who + ": repeats has " + std::to_string(repeats.size()) + " entries for rank " +
                                        std::to_string(x.size()));
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    check(repeats[i] >= 0, c.who + ": negative repeat");
    out.push_back(x[i] < 0 ? kDynamicDim : dim_mul(x[i], repeats[i], c.who));
  }
  return {out};
}

std::vector<Tensor> run_tile(const OpContext&, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const Shape& out = outs[0];
  Tensor y = Tensor::uninitialized(x.dtype(), out);
  size_t es = element_size(x.dtype()), rank = out.size();
  std::vector<int64_t> xs = strides_of(x.shape()), index(rank, 0);
  for (int64_t o = 0; o < y.size(); ++o) {
    int64_t src = 0;
    for (size_t d = 0; d < rank; ++d) src += (index[d] % x.dim(static_cast<int64_t>(d))) * xs[d];
    std::memcpy(y.raw() + o * static_cast<int64_t>(es), x.raw() + src * static_cast<int64_t>(es), es);
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < out[d]) break;
      index[d] = 0;
    }
  }
  return {y};
}

OpRecord tile() {
  OpRecord r;
  r.onnx_names = {"Tile"};
  r.import = import_plain<2>;
  r.shapes = tile_shapes;
  r.shape_reads_inputs = 1u << 1;
  r.run = run_tile;
  r.non_negative = like_input0;
  return r;
}

// ---- ConstantOfShape(shape): a tensor of that shape filled with one value.

struct FillAttrs {
  DataType type = DataType::kFloat32;
  double value = 0.0;
};

void import_constant_of_shape(OnnxNode& n) {
  n.need_inputs(1, 1);
  FillAttrs a;
  if (n.has_tensor("value")) {
    Tensor v = n.get_tensor("value");
    check(v.size() == 1, n.who + ": value must hold one element");
    a.type = v.dtype();
    switch (v.dtype()) {
      case DataType::kFloat32: a.value = v.data<float>()[0]; break;
      case DataType::kInt64: a.value = static_cast<double>(v.data<int64_t>()[0]); break;
      case DataType::kInt32: a.value = v.data<int32_t>()[0]; break;
      case DataType::kInt8: a.value = v.data<int8_t>()[0]; break;
      case DataType::kUInt8:
      case DataType::kBool: a.value = v.data<uint8_t>()[0]; break;
      default: throw Error(n.who + ": unsupported value type");
    }
  }
  n.node.attrs = a;
}

void validate_fill(const FillAttrs& a) {
  switch (a.type) {
    case DataType::kFloat32:
    case DataType::kInt64:
    case DataType::kInt32:
    case DataType::kInt8:
    case DataType::kUInt8:
    case DataType::kBool: break;
    default: throw Error("invalid fill type");
  }
  check(std::isfinite(a.value), "invalid fill value");
}

constexpr auto describe_fill = [](auto& a, auto&& field) {
  field("type", a.type, 1, 9);
  field("value", a.value);
};

std::vector<Shape> constant_of_shape_shapes(ShapeCall& c) {
  c.need_inputs(1);
  Shape out = c.ints(0, "shape");
  for (int64_t& d : out) {
    if (d == kSymbolicBatch || d == kUnknownElement) d = kDynamicDim;
    else check(d >= 0, c.who + ": negative dimension " + std::to_string(d));
  }
  return {out};
}

DataType fill_type(const Node& node, std::span<const DataType>, size_t) { return node.attr<FillAttrs>().type; }

std::vector<Tensor> run_constant_of_shape(const OpContext& ctx, std::span<const Tensor* const>, std::span<const Shape> out) {
  const auto& a = ctx.node.attr<FillAttrs>();
  Tensor y = Tensor::uninitialized(a.type, out[0]);
  switch (a.type) {
    case DataType::kFloat32: std::fill(y.data<float>(), y.data<float>() + y.size(), static_cast<float>(a.value)); break;
    case DataType::kInt64: std::fill(y.data<int64_t>(), y.data<int64_t>() + y.size(), static_cast<int64_t>(a.value)); break;
    case DataType::kInt32: std::fill(y.data<int32_t>(), y.data<int32_t>() + y.size(), static_cast<int32_t>(a.value)); break;
    case DataType::kInt8: std::fill(y.data<int8_t>(), y.data<int8_t>() + y.size(), static_cast<int8_t>(a.value)); break;
    default: std::fill(y.data<uint8_t>(), y.data<uint8_t>() + y.size(), static_cast<uint8_t>(a.value)); break;
  }
  return {y};
}

std::optional<Content> constant_of_shape_content(const ContentCall& c) {
  if (c.in.empty() || !c.in[0] || c.in[0]->size() > 1) return std::nullopt;
  int64_t n = c.in[0]->empty() ? 1 : (*c.in[0])[0];
  const auto& a = c.node.attr<FillAttrs>();
  if (!is_known(n) || n < 0 || n > static_cast<int64_t>(kMaxContent) || a.value != std::floor(a.value)) return std::nullopt;
  return Content(static_cast<size_t>(n), static_cast<int64_t>(a.value));
}

bool fill_non_negative(const SignCall& c) { return c.node.attr<FillAttrs>().value >= 0; }

OpRecord constant_of_shape() {
  OpRecord r;
  r.onnx_names = {"ConstantOfShape"};
  r.import = import_constant_of_shape;
  r.attrs = attrs_codec<FillAttrs, describe_fill, validate_fill>("fill");
  r.shapes = constant_of_shape_shapes;
  r.shape_reads_inputs = 1u << 0;
  r.shape_reads_partial = true;
  r.type = fill_type;
  r.content = constant_of_shape_content;
  r.run = run_constant_of_shape;
  r.non_negative = fill_non_negative;
  return r;
}

// ---- Range(start, limit, delta): max(ceil((limit - start) / delta), 0) elements.

double scalar_of(const Tensor& t) {
  switch (t.dtype()) {
    case DataType::kFloat32: return t.data<float>()[0];
    case DataType::kInt64: return static_cast<double>(t.data<int64_t>()[0]);
    case DataType::kInt32: return t.data<int32_t>()[0];
    default: throw Error("Range takes float32, int32 or int64 scalars");
  }
}

int64_t range_length(double start, double limit, double delta, const std::string& who) {
  check(delta != 0 && std::isfinite(start) && std::isfinite(limit) && std::isfinite(delta),
        who + ": delta must be non-zero and the bounds finite");
  double n = std::ceil((limit - start) / delta);
  check(n < 9.0e15, who + ": too many elements");
  return std::max<int64_t>(0, static_cast<int64_t>(n));
}

std::vector<Shape> range_shapes(ShapeCall& c) {
  c.need_inputs(3);
  for (size_t i = 0; i < 3; ++i) {
    check(element_count(c.in[i]) == 1, c.who + ": start, limit and delta must be scalars");
    check(i < c.values.size() && c.values[i], c.who + ": start, limit and delta must be known");
  }
  return {{range_length(scalar_of(*c.values[0]), scalar_of(*c.values[1]), scalar_of(*c.values[2]), c.who)}};
}

std::vector<Tensor> run_range(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  DataType type = in[0]->dtype();
  for (size_t i = 1; i < 3; ++i) check(in[i]->dtype() == type, ctx.who + ": start, limit and delta differ in type");
  Tensor y = Tensor::uninitialized(type, out[0]);
  double start = scalar_of(*in[0]), delta = scalar_of(*in[2]);
  for (int64_t i = 0; i < y.size(); ++i) {
    double v = start + static_cast<double>(i) * delta;
    if (type == DataType::kFloat32) y.data<float>()[i] = static_cast<float>(in[0]->data<float>()[0] + static_cast<float>(i) * in[2]->data<float>()[0]);
    else if (type == DataType::kInt64) y.data<int64_t>()[i] = in[0]->data<int64_t>()[0] + i * in[2]->data<int64_t>()[0];
    else y.data<int32_t>()[i] = static_cast<int32_t>(v);
  }
  return {y};
}

std::optional<Content> range_content(const ContentCall& c) {
  if (c.in.size() != 3 || !c.in[0] || !c.in[1] || !c.in[2]) return std::nullopt;
  int64_t start = (*c.in[0])[0], limit = (*c.in[1])[0], delta = (*c.in[2])[0];
  if (!is_known(start) || !is_known(limit) || !is_known(delta) || delta == 0) return std::nullopt;
  Content out;
  for (int64_t v = start; (delta > 0 ? v < limit : v > limit) && out.size() <= kMaxContent; v += delta) out.push_back(v);
  return out;
}

OpRecord range() {
  OpRecord r;
  r.onnx_names = {"Range"};
  r.import = import_plain<3>;
  r.shapes = range_shapes;
  r.shape_reads_inputs = 0b111;
  r.content = range_content;
  r.run = run_range;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Expand, expand)
TERN_REGISTER_OP(Tile, tile)
TERN_REGISTER_OP(ConstantOfShape, constant_of_shape)
TERN_REGISTER_OP(Range, range)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(Expand)
TERN_REGISTER_TORCH_OP(Tile)
TERN_REGISTER_TORCH_OP(ConstantOfShape)
TERN_REGISTER_TORCH_OP(Range)
}  // namespace tern::train
#endif
