// BatchNormalization (inference: running statistics) and LayerNormalization.
#ifndef TERN_OPS_TORCH
#include "exec/fp32_ops.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {

RowMoments layer_norm_moments(const float* x, int64_t n, float eps) {
  double mean = 0, var = 0;
  for (int64_t i = 0; i < n; ++i) mean += x[i];
  mean /= static_cast<double>(n);
  for (int64_t i = 0; i < n; ++i) var += (x[i] - mean) * (x[i] - mean);
  var /= static_cast<double>(n);
  return {static_cast<float>(mean), static_cast<float>(1.0 / std::sqrt(var + eps))};
}

namespace {

void import_batchnorm(OnnxNode& n) {
  n.need_inputs(5, 5);
  check(n.get_int("training_mode", 0) == 0, n.who + ": training_mode=1 is not supported (inference only)");
  check(n.get_int("spatial", 1) == 1, n.who + ": spatial=0 is not supported");
  for (size_t i = 1; i < n.output_count(); ++i)
    check(!n.output_used(i), n.who + ": training outputs (running mean/variance) are not supported");
  n.max_outputs = 5;
  n.node.attrs = BatchNormAttrs{n.get_float("epsilon", 1e-5f)};
}

constexpr auto describe_batchnorm = [](auto& a, auto&& field) { field("epsilon", a.epsilon); };

std::vector<Shape> batchnorm_shapes(ShapeCall& c) {
  c.need_inputs(5);
  const Shape& x = c.in[0];
  check(x.size() >= 2, c.who + ": input must have rank >= 2");
  for (size_t i = 1; i < 5; ++i)
    check(c.in[i].size() == 1 && (x[1] < 0 || c.in[i][0] == x[1]), c.who + ": parameter " + std::to_string(i) +
                                                                       " must have shape [C]");
  return {x};
}

std::vector<Tensor> run_batchnorm(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  for (size_t i = 1; i < 5; ++i) require_float(ctx, *in[i], "parameters");
  float eps = ctx.node.attr<BatchNormAttrs>().epsilon;
  int64_t N = x.dim(0), C = x.dim(1), inner = x.size() / std::max<int64_t>(1, N * C);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t c = 0; c < C; ++c) {
    float s = in[1]->data<float>()[c] / std::sqrt(in[4]->data<float>()[c] + eps);
    float t = in[2]->data<float>()[c] - in[3]->data<float>()[c] * s;
    for (int64_t n = 0; n < N; ++n) {
      const float* p = x.data<float>() + (n * C + c) * inner;
      float* q = y.data<float>() + (n * C + c) * inner;
      for (int64_t i = 0; i < inner; ++i) q[i] = p[i] * s + t;
    }
  }
  return {y};
}

void export_batchnorm(OnnxWriter& w) {
  w.attr(w.emit(w.node.op == OpType::kInstanceNormalization ? "InstanceNormalization" : "BatchNormalization", w.inputs,
                w.outputs),
         "epsilon", w.node.attr<BatchNormAttrs>().epsilon);
}

OpRecord batchnorm() {
  OpRecord r;
  r.onnx_names = {"BatchNormalization"};
  r.import = import_batchnorm;
  r.attrs = attrs_codec<BatchNormAttrs, describe_batchnorm>("batchnorm");
  r.shapes = batchnorm_shapes;
  r.run = run_batchnorm;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  r.export_onnx = export_batchnorm;
  return r;
}

void import_layernorm(OnnxNode& n) {
  n.need_inputs(2, 3);
  check(n.get_int("stash_type", 1) == 1, n.who + ": only float32 stash_type is supported");
  n.max_outputs = n.kept_outputs = 3;
  n.node.attrs = LayerNormAttrs{n.get_int("axis", -1), n.get_float("epsilon", 1e-5f)};
}

constexpr auto describe_layernorm = [](auto& a, auto&& field) {
  field("axis", a.axis);
  field("epsilon", a.epsilon);
};

std::vector<Shape> layernorm_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const Shape& x = c.in[0];
  auto& a = c.node.attr<LayerNormAttrs>();
  a.axis = normalize_axis(a.axis, static_cast<int64_t>(x.size()), c.who);
  // Scale and bias broadcast to the normalized dims (x's dims from axis on), and no further.
  Shape normalized(x.begin() + a.axis, x.end());
  for (size_t i = 1; i < c.in.size() && i < 3; ++i) {
    const char* what = i == 1 ? "scale" : "bias";
    check(c.in[i].size() <= normalized.size(), c.who + ": " + what + " " + to_string(c.in[i]) +
                                                   " has more dims than the normalized shape " + to_string(normalized));
    for (size_t d = 0; d < c.in[i].size(); ++d) {
      int64_t want = normalized[normalized.size() - c.in[i].size() + d], have = c.in[i][d];
      check(have == 1 || have < 0 || want < 0 || have == want,
            c.who + ": " + what + " " + to_string(c.in[i]) + " does not broadcast to " + to_string(normalized));
    }
  }
  Shape stats = x;  // Mean and InvStdDev keep the leading dims, 1 elsewhere
  std::fill(stats.begin() + a.axis, stats.end(), 1);
  return {x, stats, stats};
}

std::vector<Tensor> run_layernorm(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out_shapes) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<LayerNormAttrs>();
  int64_t inner = 1;
  for (int64_t d = a.axis; d < x.rank(); ++d) inner *= x.dim(d);
  int64_t outer = inner ? x.size() / inner : 0;
  Shape norm_shape(x.shape().begin() + a.axis, x.shape().end());
  const Tensor* scale = in[1];
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  require_float(ctx, *scale, "scale");
  if (bias) require_float(ctx, *bias, "bias");
  std::vector<int64_t> ss = broadcast_strides(scale->shape(), norm_shape);
  std::vector<int64_t> bs = bias ? broadcast_strides(bias->shape(), norm_shape) : std::vector<int64_t>{};
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  Tensor means = Tensor::uninitialized(DataType::kFloat32, out_shapes[1]);
  Tensor inv_stds = Tensor::uninitialized(DataType::kFloat32, out_shapes[2]);
  for (int64_t o = 0; o < outer; ++o) {
    const float* src = x.data<float>() + o * inner;
    float* dst = y.data<float>() + o * inner;
    const RowMoments m = layer_norm_moments(src, inner, a.epsilon);
    means.data<float>()[o] = m.mean;
    inv_stds.data<float>()[o] = m.inv_std;
    std::vector<int64_t> index(norm_shape.size(), 0);
    for (int64_t i = 0; i < inner; ++i) {
      int64_t si = 0, bi = 0;
      for (size_t d = 0; d < index.size(); ++d) {
        si += index[d] * ss[d];
        if (bias) bi += index[d] * bs[d];
      }
      float v = (src[i] - m.mean) * m.inv_std * scale->data<float>()[si];
      dst[i] = bias ? v + bias->data<float>()[bi] : v;
      for (size_t d = index.size(); d-- > 0;) {
        if (++index[d] < norm_shape[d]) break;
        index[d] = 0;
      }
    }
  }
  std::vector<Tensor> out = {y, means, inv_stds};
  out.resize(ctx.node.outputs.size());
  return out;
}

void export_layernorm(OnnxWriter& w) {
  const LayerNormAttrs& a = w.node.attr<LayerNormAttrs>();
  size_t n = w.emit("LayerNormalization", w.inputs, w.outputs);
  w.attr(n, "axis", a.axis);
  w.attr(n, "epsilon", a.epsilon);
}

OpRecord layernorm() {
  OpRecord r;
  r.onnx_names = {"LayerNormalization"};
  r.import = import_layernorm;
  r.attrs = attrs_codec<LayerNormAttrs, describe_layernorm>("layer_norm");
  r.shapes = layernorm_shapes;
  r.run = run_layernorm;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  r.export_onnx = export_layernorm;
  return r;
}

// ---- InstanceNormalization: per image and channel over the spatial dims, then scale and bias [C].

void import_instancenorm(OnnxNode& n) {
  n.need_inputs(3, 3);
  n.node.attrs = BatchNormAttrs{n.get_float("epsilon", 1e-5f)};
}

std::vector<Shape> instancenorm_shapes(ShapeCall& c) {
  c.need_inputs(3);
  const Shape& x = c.in[0];
  check(x.size() >= 3, c.who + ": input must have rank >= 3 (N, C, spatial...), got " + to_string(x));
  for (size_t i = 1; i < 3; ++i)
    check(c.in[i].size() == 1 && (x[1] < 0 || c.in[i][0] == x[1]), c.who + ": scale and bias must have shape [C]");
  return {x};
}

std::vector<Tensor> run_instancenorm(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  require_float(ctx, *in[1], "scale");
  require_float(ctx, *in[2], "bias");
  float eps = ctx.node.attr<BatchNormAttrs>().epsilon;
  int64_t N = x.dim(0), C = x.dim(1), inner = x.size() / std::max<int64_t>(1, N * C);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      const float* p = x.data<float>() + (n * C + c) * inner;
      float* q = y.data<float>() + (n * C + c) * inner;
      double mean = 0, var = 0;
      for (int64_t i = 0; i < inner; ++i) mean += p[i];
      mean /= static_cast<double>(std::max<int64_t>(1, inner));
      for (int64_t i = 0; i < inner; ++i) var += (p[i] - mean) * (p[i] - mean);
      var /= static_cast<double>(std::max<int64_t>(1, inner));
      float s = static_cast<float>(in[1]->data<float>()[c] / std::sqrt(var + eps));
      float t = in[2]->data<float>()[c] - static_cast<float>(mean) * s;
      for (int64_t i = 0; i < inner; ++i) q[i] = p[i] * s + t;
    }
  return {y};
}

OpRecord instancenorm() {
  OpRecord r;
  r.onnx_names = {"InstanceNormalization"};
  r.import = import_instancenorm;
  r.attrs = attrs_codec<BatchNormAttrs, describe_batchnorm>("batchnorm");
  r.shapes = instancenorm_shapes;
  r.run = run_instancenorm;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  r.export_onnx = export_batchnorm;
  return r;
}

// ---- LRN: x / (bias + alpha / size * sum of squares over `size` neighbouring channels)^beta.

struct LrnAttrs {
  float alpha = 1e-4f, beta = 0.75f, bias = 1.0f;
  int64_t size = 1;
};

void import_lrn(OnnxNode& n) {
  n.need_inputs(1, 1);
  LrnAttrs a{n.get_float("alpha", 1e-4f), n.get_float("beta", 0.75f), n.get_float("bias", 1.0f), n.get_int("size", 0)};
  check(a.size >= 1, n.who + ": size must be >= 1");
  n.node.attrs = a;
}

constexpr auto describe_lrn = [](auto& a, auto&& field) {
  field("alpha", a.alpha);
  field("beta", a.beta);
  field("bias", a.bias);
  field("size", a.size, 1, 1 << 20);
};

std::vector<Shape> lrn_shapes(ShapeCall& c) {
  c.need_inputs(1);
  check(c.in[0].size() >= 3, c.who + ": input must have rank >= 3, got " + to_string(c.in[0]));
  return {c.in[0]};
}

std::vector<Tensor> run_lrn(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  const auto& a = ctx.node.attr<LrnAttrs>();
  int64_t N = x.dim(0), C = x.dim(1), inner = x.size() / std::max<int64_t>(1, N * C);
  int64_t before = (a.size - 1) / 2, after = a.size - 1 - before;
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < inner; ++i) {
        double sum = 0;
        for (int64_t k = std::max<int64_t>(0, c - before); k <= std::min(C - 1, c + after); ++k) {
          double v = x.data<float>()[(n * C + k) * inner + i];
          sum += v * v;
        }
        double v = x.data<float>()[(n * C + c) * inner + i];
        y.data<float>()[(n * C + c) * inner + i] =
            static_cast<float>(v / std::pow(a.bias + a.alpha / static_cast<double>(a.size) * sum, a.beta));
      }
  return {y};
}

OpRecord lrn() {
  OpRecord r;
  r.onnx_names = {"LRN"};
  r.import = import_lrn;
  r.attrs = attrs_codec<LrnAttrs, describe_lrn>("lrn");
  r.shapes = lrn_shapes;
  r.run = run_lrn;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  return r;
}

}  // namespace

TERN_REGISTER_OP(BatchNormalization, batchnorm)
TERN_REGISTER_OP(LayerNormalization, layernorm)
TERN_REGISTER_OP(InstanceNormalization, instancenorm)
TERN_REGISTER_OP(LRN, lrn)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor batchnorm_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  torch::Tensor s = c.input(1) / torch::sqrt(c.input(4) + static_cast<double>(c.node.attr<BatchNormAttrs>().epsilon));
  std::vector<int64_t> view(static_cast<size_t>(x.dim()), 1);
  view[1] = -1;
  return (x - c.input(3).view(view)) * s.view(view) + c.input(2).view(view);
}

torch::Tensor layernorm_forward(TorchCall& c) {
  check(c.node.outputs.size() == 1, c.who + ": LayerNormalization's statistics outputs are not supported for fine-tuning");
  torch::Tensor x = c.input(0);
  int64_t axis = torch_axis(c.node.attr<LayerNormAttrs>().axis, x.dim());
  std::vector<int64_t> dims;
  for (int64_t d = axis; d < x.dim(); ++d) dims.push_back(d);
  torch::Tensor mean = x.mean(dims, true);
  torch::Tensor var = (x - mean).pow(2).mean(dims, true);
  torch::Tensor y = (x - mean) / torch::sqrt(var + static_cast<double>(c.node.attr<LayerNormAttrs>().epsilon)) * c.input(1);
  torch::Tensor b = c.input(2);
  return b.defined() ? y + b : y;
}

torch::Tensor instancenorm_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  return torch::instance_norm(x, c.input(1), c.input(2), {}, {}, true, 0.0,
                              static_cast<double>(c.node.attr<BatchNormAttrs>().epsilon), false);
}

}  // namespace

TERN_REGISTER_TORCH_OP(BatchNormalization, batchnorm_forward)
TERN_REGISTER_TORCH_OP(LayerNormalization, layernorm_forward)
TERN_REGISTER_TORCH_OP(InstanceNormalization, instancenorm_forward)
TERN_REGISTER_TORCH_OP(LRN)

}  // namespace tern::train
#endif
