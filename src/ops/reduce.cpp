// Reductions: ReduceMean (axes as an attribute, or a constant input from opset 18).
#ifndef TERN_OPS_TORCH
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

void import_reduce(OnnxNode& n) {
  ReduceAttrs a;
  a.keepdims = n.get_int("keepdims", 1) != 0;
  if (n.opset >= 18) {
    n.need_inputs(1, 2);
    if (n.node.inputs.size() > 1) a.axes = n.constant_ints(1, "axes");
    check(!(a.axes.empty() && n.get_int("noop_with_empty_axes", 0)), n.who + ": noop_with_empty_axes is not supported");
    n.node.inputs.resize(1);
  } else {
    n.need_inputs(1, 1);
    a.axes = n.get_ints("axes");
  }
  n.node.attrs = a;
}

constexpr auto describe_reduce = [](auto& a, auto&& field) {
  field("axes", a.axes);
  field("keepdims", a.keepdims);
};

std::vector<Shape> reduce_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<ReduceAttrs>();
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<bool> reduce(x.size(), a.axes.empty());
  for (auto& axis : a.axes) {
    axis = normalize_axis(axis, rank, c.who);
    reduce[static_cast<size_t>(axis)] = true;
  }
  Shape out;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!reduce[i]) out.push_back(x[i]);
    else if (a.keepdims) out.push_back(1);
  }
  return {out};
}

std::vector<Tensor> run_reduce_mean(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<ReduceAttrs>();
  size_t rank = static_cast<size_t>(x.rank());
  std::vector<bool> reduce(rank, a.axes.empty());
  for (int64_t axis : a.axes) reduce[static_cast<size_t>(axis)] = true;
  // Output index space = input dims with reduced axes set to 1.
  Shape kept = x.shape();
  int64_t reduced_count = 1;
  for (size_t i = 0; i < rank; ++i)
    if (reduce[i]) {
      reduced_count *= kept[i];
      kept[i] = 1;
    }
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out[0]);
  std::vector<double> acc(static_cast<size_t>(element_count(kept)), 0.0);
  std::vector<int64_t> ks = strides_of(kept);
  std::vector<int64_t> index(rank, 0);
  const float* src = x.data<float>();
  for (int64_t i = 0; i < x.size(); ++i) {
    int64_t o = 0;
    for (size_t d = 0; d < rank; ++d) o += reduce[d] ? 0 : index[d] * ks[d];
    acc[static_cast<size_t>(o)] += src[i];
    for (size_t d = rank; d-- > 0;) {
      if (++index[d] < x.dim(static_cast<int64_t>(d))) break;
      index[d] = 0;
    }
  }
  for (size_t i = 0; i < acc.size(); ++i)
    y.data<float>()[i] = reduced_count ? static_cast<float>(acc[i] / static_cast<double>(reduced_count)) : NAN;
  return {y};
}

OpRecord reduce_mean() {
  OpRecord r;
  r.onnx_names = {"ReduceMean"};
  r.import = import_reduce;
  r.attrs = attrs_codec<ReduceAttrs, describe_reduce>("reduce");
  r.shapes = reduce_shapes;
  r.run = run_reduce_mean;
  r.non_negative = like_input0;
  r.integer = IntegerUse::kFloat;
  return r;
}

}  // namespace

TERN_REGISTER_OP(ReduceMean, reduce_mean)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor reduce_mean_forward(TorchCall& c) {
  const auto& a = c.node.attr<ReduceAttrs>();
  torch::Tensor x = c.input(0);
  std::vector<int64_t> dims;
  for (int64_t d : a.axes) dims.push_back(torch_axis(d, x.dim()));
  if (dims.empty())
    for (int64_t d = 0; d < x.dim(); ++d) dims.push_back(d);
  return x.mean(dims, a.keepdims);
}

}  // namespace

TERN_REGISTER_TORCH_OP(ReduceMean, reduce_mean_forward)

}  // namespace tern::train
#endif
