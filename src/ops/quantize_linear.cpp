// The ONNX operators of models quantized by other tools: QuantizeLinear, DequantizeLinear (QDQ
// models), DynamicQuantizeLinear and MatMulInteger (ONNX Runtime's dynamic quantization; its
// ConvInteger is a Conv record, src/ops/conv.cpp). Run as the reference arithmetic (integers
// exact: int64 accumulation).
#ifndef TERN_OPS_TORCH
#include <limits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// Per-tensor or per-axis (scale and zero point of shape [C] along `axis`).
void import_qdq(OnnxNode& n) {
  n.need_inputs(2, 3);
  n.node.attrs = AxisAttrs{n.get_int("axis", 1)};
  n.require(n.get_int("saturate", 1) == 1, "saturate=0");
}

// The index into a per-axis parameter for each element of x, or 0 for a per-tensor one.
struct AxisIndex {
  int64_t inner = 1, channels = 1;
  bool per_axis = false;
  int64_t operator()(int64_t i) const { return per_axis ? (i / inner) % channels : 0; }
};

AxisIndex axis_index(const OpContext& ctx, const Tensor& x, const Tensor& param) {
  AxisIndex a;
  if (param.size() == 1) return a;
  int64_t axis = normalize_axis(ctx.node.attr<AxisAttrs>().axis, x.rank(), ctx.who);
  check(param.rank() == 1 && param.dim(0) == x.dim(axis), ctx.who + ": scale " + to_string(param.shape()) +
                                                               " does not fit axis " + std::to_string(axis) + " of " + to_string(x.shape()));
  a.per_axis = true;
  a.channels = param.dim(0);
  for (int64_t d = axis + 1; d < x.rank(); ++d) a.inner *= x.dim(d);
  return a;
}

}  // namespace

int64_t integer_at(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DataType::kUInt8: return t.data<uint8_t>()[i];
    case DataType::kInt8: return t.data<int8_t>()[i];
    case DataType::kInt32: return t.data<int32_t>()[i];
    case DataType::kInt64: return t.data<int64_t>()[i];
    default: throw Error("expected integer data, got " + to_string(t.dtype()));
  }
}

namespace {

DataType quantized_type(const Node&, std::span<const DataType> in, size_t) {
  return in.size() > 2 && in[2] != DataType::kUndefined ? in[2] : DataType::kUInt8;
}

std::vector<Tensor> run_quantize_linear(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  const Tensor& scale = *in[1];
  const Tensor* zp = in.size() > 2 ? in[2] : nullptr;
  require_float(ctx, x, "x");
  require_float(ctx, scale, "y_scale");
  DataType type = zp ? zp->dtype() : DataType::kUInt8;
  check(type == DataType::kUInt8 || type == DataType::kInt8, ctx.who + ": y_zero_point must be uint8 or int8");
  AxisIndex at = axis_index(ctx, x, scale);
  Tensor y = Tensor::uninitialized(type, x.shape());
  int64_t lo = type == DataType::kUInt8 ? 0 : -128, hi = type == DataType::kUInt8 ? 255 : 127;
  for (int64_t i = 0; i < x.size(); ++i) {
    int64_t c = at(i);
    float s = scale.data<float>()[c];
    check(s > 0 && std::isfinite(s), ctx.who + ": y_scale must be positive");
    // x / scale in float, as the ONNX definition and ONNX Runtime compute it (a double quotient
    // rounds differently next to a tie), then to the nearest even integer.
    double q = static_cast<double>(std::nearbyint(x.data<float>()[i] / s)) + (zp ? integer_at(*zp, c) : 0);
    int64_t v = std::isnan(q) ? 0 : static_cast<int64_t>(std::clamp(q, static_cast<double>(lo), static_cast<double>(hi)));
    if (type == DataType::kUInt8) y.data<uint8_t>()[i] = static_cast<uint8_t>(v);
    else y.data<int8_t>()[i] = static_cast<int8_t>(v);
  }
  return {y};
}

DataType float_type(const Node&, std::span<const DataType>, size_t) { return DataType::kFloat32; }

std::vector<Tensor> run_dequantize_linear(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  const Tensor& scale = *in[1];
  const Tensor* zp = in.size() > 2 ? in[2] : nullptr;
  require_float(ctx, scale, "x_scale");
  if (zp) check(zp->dtype() == x.dtype(), ctx.who + ": x_zero_point's type differs from x's");
  AxisIndex at = axis_index(ctx, x, scale);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t i = 0; i < x.size(); ++i) {
    int64_t c = at(i);
    y.data<float>()[i] = static_cast<float>(integer_at(x, i) - (zp ? integer_at(*zp, c) : 0)) * scale.data<float>()[c];
  }
  return {y};
}

void export_qdq(OnnxWriter& w) {
  w.attr(w.emit(to_string(w.node.op), w.inputs, w.outputs), "axis", w.node.attr<AxisAttrs>().axis);
}

OpRecord quantize_linear() {
  OpRecord r;
  r.onnx_names = {"QuantizeLinear"};
  r.import = import_qdq;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = same_shape;
  r.type = quantized_type;
  r.run = run_quantize_linear;
  r.keeps_batch = keeps_batch_always;
  r.export_onnx = export_qdq;
  return r;
}

OpRecord dequantize_linear() {
  OpRecord r;
  r.onnx_names = {"DequantizeLinear"};
  r.import = import_qdq;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = same_shape;
  r.type = float_type;
  r.run = run_dequantize_linear;
  r.keeps_batch = keeps_batch_always;
  r.export_onnx = export_qdq;
  return r;
}

// ---- DynamicQuantizeLinear: uint8 codes, their scale and zero point from x's range (with 0).

void import_dynamic_quantize(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.max_outputs = n.kept_outputs = 3;
}

std::vector<Shape> dynamic_quantize_shapes(ShapeCall& c) {
  c.need_inputs(1);
  return {c.in[0], {}, {}};
}

DataType dynamic_quantize_type(const Node&, std::span<const DataType>, size_t output) {
  return output == 1 ? DataType::kFloat32 : DataType::kUInt8;
}

std::vector<Tensor> run_dynamic_quantize(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "x");
  float lo = 0.0f, hi = 0.0f;
  for (float v : x.floats()) {
    if (!std::isfinite(v)) throw Error(ctx.who + ": x holds a non-finite value");  // per element: no message built
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  float scale = (hi - lo) / 255.0f;
  float zero = scale > 0 ? std::clamp(std::nearbyint(-lo / scale), 0.0f, 255.0f) : 0.0f;
  Tensor y = Tensor::uninitialized(DataType::kUInt8, x.shape());
  for (int64_t i = 0; i < x.size(); ++i) {
    float q = scale > 0 ? std::nearbyint(x.data<float>()[i] / scale) + zero : zero;
    y.data<uint8_t>()[i] = static_cast<uint8_t>(std::clamp(q, 0.0f, 255.0f));
  }
  std::vector<Tensor> out = {y, Tensor::from_floats({}, std::vector<float>{scale}),
                             Tensor(DataType::kUInt8, Shape{})};
  out[2].data<uint8_t>()[0] = static_cast<uint8_t>(zero);
  out.resize(ctx.node.outputs.size());
  return out;
}

OpRecord dynamic_quantize_linear() {
  OpRecord r;
  r.onnx_names = {"DynamicQuantizeLinear"};
  r.import = import_dynamic_quantize;
  r.shapes = dynamic_quantize_shapes;
  r.type = dynamic_quantize_type;
  r.run = run_dynamic_quantize;
  r.keeps_batch = keeps_batch_always;
  return r;
}

// ---- MatMulInteger: (A - a_zero_point) x (B - b_zero_point) in int32; a's zero point per row or
// tensor, b's per column or tensor.

void import_matmul_integer(OnnxNode& n) { n.need_inputs(2, 4); }

std::vector<Shape> matmul_integer_shapes(ShapeCall& c) {
  c.need_inputs(2);
  Node plain = c.node;
  plain.op = OpType::kMatMul;
  ShapeCall inner{plain, c.in.subspan(0, 2), c.values.subspan(0, std::min<size_t>(2, c.values.size())), c.context, c.who};
  return record(OpType::kMatMul).shapes(inner);
}

}  // namespace

DataType int32_type(const Node&, std::span<const DataType>, size_t) { return DataType::kInt32; }

namespace {

std::vector<Tensor> run_matmul_integer(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& A = *in[0];
  const Tensor& B = *in[1];
  const Tensor* az = in.size() > 2 ? in[2] : nullptr;
  const Tensor* bz = in.size() > 3 ? in[3] : nullptr;
  Shape a = A.shape(), b = B.shape();
  if (a.size() == 1) a.insert(a.begin(), 1);
  if (b.size() == 1) b.push_back(1);
  int64_t M = a[a.size() - 2], K = a.back(), N = b.back();
  const Shape& out_shape = outs[0];
  Shape batch(out_shape.begin(), out_shape.end() - static_cast<int64_t>((A.rank() > 1) + (B.rank() > 1)));
  std::vector<int64_t> sa = broadcast_strides(Shape(a.begin(), a.end() - 2), batch), sb = broadcast_strides(Shape(b.begin(), b.end() - 2), batch);
  Tensor Y = Tensor::uninitialized(DataType::kInt32, out_shape);
  int64_t count = batch.empty() ? 1 : element_count(batch);
  std::vector<int64_t> index(batch.size(), 0);
  auto zero = [](const Tensor* z, int64_t i) { return z ? integer_at(*z, z->size() == 1 ? 0 : i) : 0; };
  for (int64_t n = 0; n < count; ++n) {
    int64_t oa = 0, ob = 0;
    for (size_t d = 0; d < batch.size(); ++d) {
      oa += index[d] * sa[d];
      ob += index[d] * sb[d];
    }
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        int64_t acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += (integer_at(A, oa * M * K + i * K + k) - zero(az, i)) * (integer_at(B, ob * K * N + k * N + j) - zero(bz, j));
        check(acc >= INT32_MIN && acc <= INT32_MAX, ctx.who + ": the int32 result overflows");
        Y.data<int32_t>()[n * M * N + i * N + j] = static_cast<int32_t>(acc);
      }
    for (size_t d = batch.size(); d-- > 0;) {
      if (++index[d] < batch[d]) break;
      index[d] = 0;
    }
  }
  return {Y};
}

OpRecord matmul_integer() {
  OpRecord r;
  r.onnx_names = {"MatMulInteger"};
  r.import = import_matmul_integer;
  r.shapes = matmul_integer_shapes;
  r.type = int32_type;
  r.run = run_matmul_integer;
  r.macs = macs_per_output_times_last_dim;
  return r;
}

}  // namespace

TERN_REGISTER_OP(QuantizeLinear, quantize_linear)
TERN_REGISTER_OP(DequantizeLinear, dequantize_linear)
TERN_REGISTER_OP(DynamicQuantizeLinear, dynamic_quantize_linear)
TERN_REGISTER_OP(MatMulInteger, matmul_integer)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(QuantizeLinear)
TERN_REGISTER_TORCH_OP(DequantizeLinear)
TERN_REGISTER_TORCH_OP(DynamicQuantizeLinear)
TERN_REGISTER_TORCH_OP(MatMulInteger)
}  // namespace tern::train
#endif
