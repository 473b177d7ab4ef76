// Pooling: MaxPool and AveragePool over 1-3 spatial axes, GlobalAveragePool, GlobalMaxPool.
#ifndef TERN_OPS_TORCH
#include <limits>

#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

void import_pool(OnnxNode& n) {
  n.need_inputs(1, 1);
  PoolAttrs a;
  a.auto_pad = parse_auto_pad(n);
  a.kernel = n.get_ints("kernel_shape");
  check(!a.kernel.empty(), n.who + ": kernel_shape is required");
  a.strides = n.get_ints("strides");
  a.pads = n.get_ints("pads");
  a.dilations = n.get_ints("dilations");
  a.ceil_mode = n.get_int("ceil_mode", 0) != 0;
  a.count_include_pad = n.get_int("count_include_pad", 0) != 0;
  check(n.get_int("storage_order", 0) == 0, n.who + ": storage_order=1 is not supported");
  check(n.output_count() < 2 || !n.output_used(1), n.who + ": the Indices output is not supported");
  n.max_outputs = 2;
  n.node.attrs = a;
}

constexpr auto describe_pool = [](auto& a, auto&& field) {
  field("auto_pad", a.auto_pad, 0, static_cast<int64_t>(AutoPad::kValid));
  field("kernel", a.kernel);
  field("strides", a.strides);
  field("pads", a.pads);
  field("dilations", a.dilations);
  field("ceil_mode", a.ceil_mode);
  field("count_include_pad", a.count_include_pad);
};

std::vector<Shape> pool_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const std::string& who = c.who;
  auto& a = c.node.attr<PoolAttrs>();
  const Shape& x = c.in[0];
  check(x.size() >= 3, who + ": input must have rank >= 3 (N, C, spatial...), got " + to_string(x));
  size_t spatial = x.size() - 2;
  check(a.kernel.size() == spatial, who + ": kernel_shape has " + std::to_string(a.kernel.size()) +
                                        " entries for " + std::to_string(spatial) + " spatial axes");
  fill_default(a.strides, spatial, 1);
  fill_default(a.dilations, spatial, 1);
  fill_default(a.pads, 2 * spatial, 0);
  check_window_attrs(a.kernel, a.strides, a.pads, a.dilations, spatial, who);  // before auto_pad reads them
  resolve_auto_pad(a.auto_pad, a.pads, x, a.kernel, a.strides, a.dilations, who);
  Shape out = {x[0], x[1]};
  for (size_t i = 0; i < spatial; ++i) {
    int64_t window = dim_mul(a.kernel[i], a.dilations[i], who);
    check(a.pads[i] < window && a.pads[i + spatial] < window, who + ": padding must be smaller than the window");
    int64_t o = window_output(x[2 + i], a.kernel[i], a.strides[i], a.dilations[i], a.pads[i], a.pads[i + spatial],
                              a.ceil_mode, who);
    check(o != -2 && o != 0, who + ": window larger than the padded input " + to_string(x));
    out.push_back(o);
  }
  return {out};
}

// Sliding-window pooling over 1-3 spatial axes (generic index arithmetic; pooling is a small part
// of every CNN's time).
template <typename T>
Tensor pool(const OpContext& ctx, const Tensor& x, const Shape& out_shape) {
  const auto& a = ctx.node.attr<PoolAttrs>();
  bool is_max = ctx.node.op == OpType::kMaxPool;
  size_t spatial = static_cast<size_t>(x.rank() - 2);
  check(spatial >= 1 && spatial <= 3, ctx.who + ": only 1-D to 3-D pooling is supported");
  Shape in_sp(x.shape().begin() + 2, x.shape().end()), out_sp(out_shape.begin() + 2, out_shape.end());
  int64_t in_plane = element_count(in_sp), out_plane = element_count(out_sp);
  int64_t planes = x.dim(0) * x.dim(1);
  Tensor y = Tensor::uninitialized(x.dtype(), out_shape);
  // Pad to 3 spatial axes so one loop nest serves all ranks.
  int64_t ih[3] = {1, 1, 1}, oh[3] = {1, 1, 1}, k[3] = {1, 1, 1}, s[3] = {1, 1, 1}, d[3] = {1, 1, 1}, pb[3] = {0, 0, 0},
          pe[3] = {0, 0, 0};
  for (size_t i = 0; i < spatial; ++i) {
    size_t j = 3 - spatial + i;
    ih[j] = in_sp[i];
    oh[j] = out_sp[i];
    k[j] = a.kernel[i];
    s[j] = a.strides[i];
    d[j] = a.dilations[i];
    pb[j] = a.pads[i];
    pe[j] = a.pads[i + spatial];
  }
  auto body = [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const T* src = x.data<T>() + p * in_plane;
      T* dst = y.data<T>() + p * out_plane;
      for (int64_t o0 = 0; o0 < oh[0]; ++o0)
        for (int64_t o1 = 0; o1 < oh[1]; ++o1)
          for (int64_t o2 = 0; o2 < oh[2]; ++o2) {
            float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;  // exact for 8-bit T
            int64_t count = 0, padded_count = 1;
            int64_t start[3] = {o0 * s[0] - pb[0], o1 * s[1] - pb[1], o2 * s[2] - pb[2]};
            for (int j = 0; j < 3; ++j) {
              // Window cells inside input + padding (count_include_pad counts padding, not the
              // ceil_mode overhang beyond it).
              int64_t hi = std::min(start[j] + (k[j] - 1) * d[j], ih[j] + pe[j] - 1);
              padded_count *= (hi - start[j]) / d[j] + 1;
            }
            for (int64_t k0 = 0; k0 < k[0]; ++k0) {
              int64_t i0 = start[0] + k0 * d[0];
              if (i0 < 0 || i0 >= ih[0]) continue;
              for (int64_t k1 = 0; k1 < k[1]; ++k1) {
                int64_t i1 = start[1] + k1 * d[1];
                if (i1 < 0 || i1 >= ih[1]) continue;
                for (int64_t k2 = 0; k2 < k[2]; ++k2) {
                  int64_t i2 = start[2] + k2 * d[2];
                  if (i2 < 0 || i2 >= ih[2]) continue;
                  float v = static_cast<float>(src[(i0 * ih[1] + i1) * ih[2] + i2]);
                  acc = is_max ? std::max(acc, v) : acc + v;
                  ++count;
                }
              }
            }
            if (!is_max) acc = count ? acc / static_cast<float>(a.count_include_pad ? padded_count : count) : 0.0f;
            dst[(o0 * oh[1] + o1) * oh[2] + o2] = static_cast<T>(acc);
          }
    }
  };
  if (ctx.pool) ctx.pool->parallel_for(planes, body);
  else body(0, planes);
  return y;
}

std::vector<Tensor> run_pool(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  if (x.dtype() == DataType::kFloat32) return {pool<float>(ctx, x, out[0])};
  check(ctx.node.op == OpType::kMaxPool && (x.dtype() == DataType::kUInt8 || x.dtype() == DataType::kInt8),
        ctx.who + ": unsupported data type " + to_string(x.dtype()));
  return {x.dtype() == DataType::kUInt8 ? pool<uint8_t>(ctx, x, out[0]) : pool<int8_t>(ctx, x, out[0])};
}

void export_pool(OnnxWriter& w) {
  const PoolAttrs& a = w.node.attr<PoolAttrs>();
  const bool max = w.node.op == OpType::kMaxPool;
  size_t n = w.emit(max ? "MaxPool" : "AveragePool", w.inputs, w.outputs);
  export_window(w, n, a.auto_pad, a.kernel, a.strides, a.pads, max ? a.dilations : std::vector<int64_t>{});
  if (!max && !a.dilations.empty() && std::any_of(a.dilations.begin(), a.dilations.end(), [](int64_t d) { return d != 1; }))
    w.fail("AveragePool dilations (opset 19)");
  w.attr(n, "ceil_mode", int64_t{a.ceil_mode});
  if (!max) w.attr(n, "count_include_pad", int64_t{a.count_include_pad});
}

OpRecord pool_record(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_pool;
  r.attrs = attrs_codec<PoolAttrs, describe_pool>("pool");
  r.shapes = pool_shapes;
  r.run = run_pool;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  r.export_onnx = export_pool;
  return r;
}

OpRecord max_pool() {
  OpRecord r = pool_record("MaxPool");
  r.integer = IntegerUse::kOnCodes;
  return r;
}
OpRecord average_pool() { return pool_record("AveragePool"); }

// ---- global pooling

std::vector<Shape> global_pool_shapes(ShapeCall& c) {
  c.need_inputs(1);
  const Shape& x = c.in[0];
  check(x.size() >= 3, c.who + ": input must have rank >= 3, got " + to_string(x));
  Shape out = x;
  std::fill(out.begin() + 2, out.end(), 1);
  return {out};
}

std::vector<Tensor> run_global_pool(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  const Tensor& x = *in[0];
  require_float(ctx, x, "input");
  bool is_max = ctx.node.op == OpType::kGlobalMaxPool;
  int64_t planes = x.dim(0) * x.dim(1), inner = x.size() / std::max<int64_t>(1, planes);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, out[0]);
  for (int64_t p = 0; p < planes; ++p) {
    const float* src = x.data<float>() + p * inner;
    float acc = is_max ? -std::numeric_limits<float>::infinity() : 0.0f;
    for (int64_t i = 0; i < inner; ++i) acc = is_max ? std::max(acc, src[i]) : acc + src[i];
    y.data<float>()[p] = is_max ? acc : acc / static_cast<float>(inner);
  }
  return {y};
}

OpRecord global_pool(std::string_view name) {
  OpRecord r;
  r.onnx_names = {name};
  r.import = import_plain<1>;
  r.shapes = global_pool_shapes;
  r.run = run_global_pool;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  return r;
}

OpRecord global_average_pool() {
  OpRecord r = global_pool("GlobalAveragePool");
  r.integer = IntegerUse::kFloat;
  return r;
}
OpRecord global_max_pool() { return global_pool("GlobalMaxPool"); }

}  // namespace

TERN_REGISTER_OP(MaxPool, max_pool)
TERN_REGISTER_OP(AveragePool, average_pool)
TERN_REGISTER_OP(GlobalAveragePool, global_average_pool)
TERN_REGISTER_OP(GlobalMaxPool, global_max_pool)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include <limits>

#include "train/torch_op.h"

namespace tern::train {
namespace {

torch::Tensor pool_forward(TorchCall& c) {
  const auto& a = c.node.attr<PoolAttrs>();
  torch::Tensor x = c.input(0);
  size_t axes = a.kernel.size();
  check(axes == 2 && x.dim() == 4, c.who + ": only 2-D pooling is supported for fine-tuning");
  bool max = c.node.op == OpType::kMaxPool;
  auto pads = symmetric_pads(a.pads, axes);
  if (!pads) {
    check(max, c.who + ": asymmetric average-pool padding is not supported for fine-tuning");
    x = pad_trailing(x, a.pads, axes, -std::numeric_limits<double>::infinity());
    pads = std::vector<int64_t>(axes, 0);
  }
  std::vector<int64_t> strides = or_ones(a.strides, axes);
  if (max) return torch::max_pool2d(x, a.kernel, strides, *pads, or_ones(a.dilations, axes), a.ceil_mode);
  check(a.dilations.empty() || a.dilations == std::vector<int64_t>(axes, 1),
        c.who + ": dilated average pooling is not supported for fine-tuning");
  return torch::avg_pool2d(x, a.kernel, strides, *pads, a.ceil_mode, a.count_include_pad);
}

torch::Tensor global_pool_forward(TorchCall& c) {
  torch::Tensor x = c.input(0);
  std::vector<int64_t> dims;
  for (int64_t d = 2; d < x.dim(); ++d) dims.push_back(d);
  return c.node.op == OpType::kGlobalAveragePool ? x.mean(dims, true) : x.amax(dims, true);
}

}  // namespace

TERN_REGISTER_TORCH_OP(MaxPool, pool_forward)
TERN_REGISTER_TORCH_OP(AveragePool, pool_forward)
TERN_REGISTER_TORCH_OP(GlobalAveragePool, global_pool_forward)
TERN_REGISTER_TORCH_OP(GlobalMaxPool, global_pool_forward)

}  // namespace tern::train
#endif
