// Softmax (before opset 13: over the input coerced to 2-D at `axis`).
#ifndef TERN_OPS_TORCH
#include <limits>

#include "kernels/activation_math.h"
#include "kernels/fp32/rows.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

void import_softmax(OnnxNode& n) {
  n.need_inputs(1, 1);
  n.node.attrs = AxisAttrs{n.get_int("axis", n.opset >= 13 ? -1 : 1), n.opset < 13};
}

std::vector<Shape> softmax_shapes(ShapeCall& c) {
  c.need_inputs(1);
  auto& a = c.node.attr<AxisAttrs>();
  a.axis = normalize_axis(a.axis, static_cast<int64_t>(c.in[0].size()), c.who);
  return {c.in[0]};
}

std::vector<Tensor> run_softmax(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<AxisAttrs>();
  int64_t outer = 1, n = 1, inner = 1;
  for (int64_t d = 0; d < x.rank(); ++d) {
    int64_t dim = x.dim(d);
    if (d < a.axis) outer *= dim;
    else if (d == a.axis || a.coerce_2d) n *= dim;
    else inner *= dim;
  }
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  // Rows of n values, split over the pool; e^x by activation_math.h's exp_approx (within 2 ulp,
  // vectorized, no libm call: as the FP32 Sigmoid and the integer engine's epilogues compute it).
  // Contiguous rows (the last axis, as attention's): kernels/fp32/rows.h, the maximum and the sum
  // in eight running parts (a fixed order: the same bits on every ISA), vectorized per ISA.
  auto last_axis_rows = [&](int64_t begin, int64_t end) {
    kernels::softmax_rows(x.data<float>() + begin * n, y.data<float>() + begin * n, end - begin, n);
  };
  auto rows = [&](int64_t begin, int64_t end) {
    if (inner == 1) return last_axis_rows(begin, end);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t o = r / inner, i = r % inner;
      const float* src = x.data<float>() + o * n * inner + i;
      float* dst = y.data<float>() + o * n * inner + i;
      float m = -std::numeric_limits<float>::infinity();
      for (int64_t j = 0; j < n; ++j) m = std::max(m, src[j * inner]);
      for (int64_t j = 0; j < n; ++j) dst[j * inner] = kernels::exp_approx(src[j * inner] - m);
      float sum = 0.0f;
      for (int64_t j = 0; j < n; ++j) sum += dst[j * inner];
      for (int64_t j = 0; j < n; ++j) dst[j * inner] /= sum;
    }
  };
  if (ctx.pool && x.size() >= (1 << 14)) ctx.pool->parallel_for(outer * inner, rows, std::max<int64_t>(1, (1 << 12) / std::max<int64_t>(n, 1)));
  else rows(0, outer * inner);
  return {y};
}

void export_softmax(OnnxWriter& w) {
  const AxisAttrs& a = w.node.attr<AxisAttrs>();
  const Value& x = w.graph.value(w.node.inputs[0]);
  // Before opset 13 the input was coerced to 2-D at axis: the same as opset 13's only for the last axis.
  if (a.coerce_2d && !(x.shape_known && a.axis == static_cast<int64_t>(x.shape.size()) - 1))
    w.fail("opset-12 Softmax over several trailing axes");
  w.attr(w.emit("Softmax", w.inputs, w.outputs), "axis", a.axis);
}

OpRecord softmax() {
  OpRecord r;
  r.onnx_names = {"Softmax"};
  r.import = import_softmax;
  r.attrs = attrs_codec<AxisAttrs, describe_axis>("axis");
  r.shapes = softmax_shapes;
  r.run = run_softmax;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = always_non_negative;
  r.export_onnx = export_softmax;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Softmax, softmax)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor softmax_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  const auto& a = c.node.attr<AxisAttrs>();
  check(!a.coerce_2d || torch_axis(a.axis, x.dim()) == x.dim() - 1,
        c.who + ": opset < 13 Softmax over several axes is not supported for fine-tuning");
  return torch::softmax(x, torch_axis(a.axis, x.dim()));
}

}  // namespace

TERN_REGISTER_TORCH_OP(Softmax, softmax_forward)

}  // namespace tern::train
#endif
