#include "exec/fp32_ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "graph/shape_inference.h"
#include "kernels/fp32/sgemm.h"
#include "ops/support.h"
#include "tern/error.h"

namespace tern::ops {

using kernels::MatrixView;

kernels::Conv2dShape conv_shape(const ConvAttrs& a, const Shape& x, const Shape& w) {
  kernels::Conv2dShape s;
  bool one_d = x.size() == 3;
  s.batch = x[0];
  s.in_channels = x[1];
  s.in_h = one_d ? 1 : x[2];
  s.in_w = one_d ? x[2] : x[3];
  s.out_channels = w[0];
  s.kernel_h = one_d ? 1 : a.kernel[0];
  s.kernel_w = one_d ? a.kernel[0] : a.kernel[1];
  s.stride_h = one_d ? 1 : a.strides[0];
  s.stride_w = one_d ? a.strides[0] : a.strides[1];
  s.dilation_h = one_d ? 1 : a.dilations[0];
  s.dilation_w = one_d ? a.dilations[0] : a.dilations[1];
  if (one_d) {
    s.pad_left = a.pads[0];
    s.pad_right = a.pads[1];
  } else {
    s.pad_top = a.pads[0];
    s.pad_left = a.pads[1];
    s.pad_bottom = a.pads[2];
    s.pad_right = a.pads[3];
  }
  s.groups = a.group;
  return s;
}

Tensor conv_packed(const OpContext& ctx, const Tensor& input, const kernels::PackedConvWeights& weights,
                   const Tensor* bias, const Shape& out_shape) {
  require_float(ctx, input, "input");
  const auto& a = ctx.node.attr<ConvAttrs>();
  kernels::Conv2dShape s = weights.shape();
  bool one_d = input.rank() == 3;
  s.batch = input.dim(0);
  s.in_h = one_d ? 1 : input.dim(2);
  s.in_w = one_d ? input.dim(2) : input.dim(3);
  // Padding as resolved for this input (SAME padding of a model with dynamic H/W differs per size).
  kernels::Conv2dShape resolved = conv_shape(a, input.shape(), Shape{s.out_channels, 1, 1, 1});
  s.pad_top = resolved.pad_top;
  s.pad_left = resolved.pad_left;
  s.pad_bottom = resolved.pad_bottom;
  s.pad_right = resolved.pad_right;
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  kernels::conv2d(s, input.data<float>(), weights, bias ? bias->data<float>() : nullptr, y.data<float>(),
                  {a.clamp_lo, a.clamp_hi}, ctx.pool);
  return y;
}

std::optional<PackedGemm> pack_gemm(const Node& node, const Graph& graph) {
  const auto& a = node.attr<GemmAttrs>();
  if (a.trans_a || !graph.is_constant(node.inputs[1])) return std::nullopt;
  const Tensor& w = graph.constant(node.inputs[1]);
  if (w.dtype() != DataType::kFloat32 || w.rank() != 2) return std::nullopt;
  int64_t n = a.trans_b ? w.dim(0) : w.dim(1), k = a.trans_b ? w.dim(1) : w.dim(0);
  PackedGemm p;
  if (node.inputs.size() > 2 && node.inputs[2] != kNoValue) {
    if (!graph.is_constant(node.inputs[2])) return std::nullopt;
    const Tensor& c = graph.constant(node.inputs[2]);
    if (c.dtype() != DataType::kFloat32) return std::nullopt;
    bool per_column = c.size() == n && c.rank() >= 1 && c.shape().back() == n;
    if (!per_column && c.size() != 1) return std::nullopt;
    p.bias.resize(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) p.bias[static_cast<size_t>(j)] = a.beta * c.data<float>()[per_column ? j : 0];
  }
  std::vector<float> scaled;
  const float* data = w.data<float>();
  if (a.alpha != 1.0f) {
    scaled.assign(data, data + w.size());
    for (float& v : scaled) v *= a.alpha;
    data = scaled.data();
  }
  p.weights = kernels::PackedMatrixA(n, k, a.trans_b ? MatrixView{data, k, 1} : MatrixView{data, 1, n});
  return p;
}

Tensor gemm_packed(const OpContext& ctx, const Tensor& x, const PackedGemm& packed, const Shape& out_shape) {
  require_float(ctx, x, "A");
  const auto& a = ctx.node.attr<GemmAttrs>();
  // Rows: every leading index of the output ([..., N]: a Gemm on tokens).
  int64_t n = out_shape.back(), k = packed.weights.depth(), m = element_count(out_shape) / std::max<int64_t>(n, 1);
  kernels::GemmEpilogue epi;
  epi.bias = packed.bias.empty() ? nullptr : packed.bias.data();
  epi.bias_kind = packed.bias.empty() ? kernels::BiasKind::kNone : kernels::BiasKind::kPerRow;
  epi.clamp_lo = a.clamp_lo;
  epi.clamp_hi = a.clamp_hi;
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out_shape);
  if (m == 1) {  // [N, 1] and [1, N] share a layout
    kernels::sgemm_packed(packed.weights, 1, MatrixView{x.data<float>(), 1, k}, y.data<float>(), 1, epi, ctx.pool);
    return y;
  }
  Tensor z = Tensor::uninitialized(DataType::kFloat32, {n, m});
  kernels::sgemm_packed(packed.weights, m, MatrixView{x.data<float>(), 1, k}, z.data<float>(), m, epi, ctx.pool);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) y.data<float>()[i * n + j] = z.data<float>()[j * m + i];
  return y;
}

std::vector<Tensor> run(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out_shapes) {
  const OpRecord& r = record(ctx.node.op);
  if (r.run == nullptr) throw Error(ctx.who + ": operator has no implementation");  // (every run: no message built)
  return r.run(ctx, in, out_shapes);
}

}  // namespace tern::ops
