// Conv: N-D convolution (the FP32 kernel runs 1-D and 2-D), grouped and depthwise, with the
// activation clamp that passes fuse into it.
#ifndef TERN_OPS_TORCH
#include "exec/fp32_ops.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

// Conv: X, W, B. ConvInteger: X, W, x_zero_point, w_zero_point.
void import_conv(OnnxNode& n) {
  n.need_inputs(2, n.op_type == "ConvInteger" ? 4 : 3);
  ConvAttrs a;
  a.auto_pad = parse_auto_pad(n);
  a.kernel = n.get_ints("kernel_shape");
  a.strides = n.get_ints("strides");
  a.pads = n.get_ints("pads");
  a.dilations = n.get_ints("dilations");
  a.group = n.get_int("group", 1);
  n.node.attrs = a;
}

constexpr auto describe_conv = [](auto& a, auto&& field) {
  field("auto_pad", a.auto_pad, 0, static_cast<int64_t>(AutoPad::kValid));
  field("kernel", a.kernel);
  field("strides", a.strides);
  field("pads", a.pads);
  field("dilations", a.dilations);
  field("group", a.group);
  field("clamp_lo", a.clamp_lo);
  field("clamp_hi", a.clamp_hi);
};

std::vector<Shape> conv_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const std::string& who = c.who;
  auto& a = c.node.attr<ConvAttrs>();
  const Shape& x = c.in[0];
  const Shape& w = c.in[1];
  check(x.size() >= 3, who + ": input must have rank >= 3 (N, C, spatial...), got " + to_string(x));
  check(w.size() == x.size() && is_static(w), who + ": weight shape " + to_string(w) + " does not fit input " +
                                                   to_string(x));
  size_t spatial = x.size() - 2;
  if (a.kernel.empty()) a.kernel.assign(w.begin() + 2, w.end());
  fill_default(a.strides, spatial, 1);
  fill_default(a.dilations, spatial, 1);
  fill_default(a.pads, 2 * spatial, 0);
  check(a.group >= 1, who + ": group must be >= 1");
  check(a.kernel.size() == spatial && std::equal(a.kernel.begin(), a.kernel.end(), w.begin() + 2),
        who + ": kernel_shape does not match the weights");
  check_window_attrs(a.kernel, a.strides, a.pads, a.dilations, spatial, who);  // before auto_pad reads them
  resolve_auto_pad(a.auto_pad, a.pads, x, a.kernel, a.strides, a.dilations, who);
  check(w[0] % a.group == 0, who + ": " + std::to_string(w[0]) + " output channels not divisible by group " +
                                 std::to_string(a.group));
  check(x[1] < 0 || x[1] == w[1] * a.group, who + ": input has " + std::to_string(x[1]) + " channels, weights expect " +
                                                std::to_string(w[1] * a.group));
  if (c.in.size() > 2 && !c.in[2].empty())
    check(c.in[2].size() == 1 && (c.in[2][0] < 0 || c.in[2][0] == w[0]), who + ": bias shape " + to_string(c.in[2]) +
                                                                            " does not match " + std::to_string(w[0]) +
                                                                            " output channels");
  check(w[0] != 0 && w[1] != 0, who + ": weights " + to_string(w) + " have no channels");
  check(a.clamp_lo <= a.clamp_hi,
        who + ": fused clamp [" + std::to_string(a.clamp_lo) + ", " + std::to_string(a.clamp_hi) + "] is empty or NaN");
  Shape out = {x[0], w[0]};
  for (size_t i = 0; i < spatial; ++i) {
    int64_t o = window_output(x[2 + i], a.kernel[i], a.strides[i], a.dilations[i], a.pads[i], a.pads[i + spatial],
                              false, who);
    check(o != -2, who + ": kernel larger than the padded input " + to_string(x));
    if (o == 1 && x[2 + i] >= 0) {
      // One output along this axis: any stride past the padded extent gives the same result, and
      // the kernels index with it, so a stride of 2^62 must not reach them.
      int64_t extent = x[2 + i] + a.pads[i] + a.pads[i + spatial];
      a.strides[i] = std::min(a.strides[i], std::max<int64_t>(1, extent));
    }
    out.push_back(o);
  }
  return {out};
}

std::vector<Tensor> run_conv(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> out) {
  check(in[0]->rank() == 3 || in[0]->rank() == 4, ctx.who + ": only 1-D and 2-D convolutions are supported");
  require_float(ctx, *in[1], "weights");
  kernels::PackedConvWeights packed(conv_shape(ctx.node.attr<ConvAttrs>(), in[0]->shape(), in[1]->shape()),
                                    in[1]->data<float>());
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  return {conv_packed(ctx, *in[0], packed, bias, out[0])};
}

bool conv_non_negative(const SignCall& c) { return c.node.attr<ConvAttrs>().clamp_lo >= 0.0f; }

std::pair<float, float> conv_clamp(const Node& n) { return {n.attr<ConvAttrs>().clamp_lo, n.attr<ConvAttrs>().clamp_hi}; }

void export_conv(OnnxWriter& w) {
  const ConvAttrs& a = w.node.attr<ConvAttrs>();
  std::string out = w.clamped_output(a.clamp_lo, a.clamp_hi);
  size_t n = w.emit("Conv", w.inputs, {out});
  export_window(w, n, a.auto_pad, a.kernel, a.strides, a.pads, a.dilations);
  w.attr(n, "group", a.group);
}

OpRecord conv() {
  OpRecord r;
  r.onnx_names = {"Conv"};
  r.import = import_conv;
  r.attrs = attrs_codec<ConvAttrs, describe_conv>("conv");
  r.shapes = conv_shapes;
  r.run = run_conv;
  r.non_negative = conv_non_negative;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  r.macs = macs_per_output_times_weight;
  r.fused_clamp = conv_clamp;
  r.export_onnx = export_conv;
  return r;
}

// ---- ConvInteger: a convolution of (x - x_zero_point) and (w - w_zero_point) in int32 (ONNX
// Runtime's dynamic quantization); w's zero point per output channel or tensor. Conv's import,
// attributes and shape rule.

std::vector<Shape> conv_integer_shapes(ShapeCall& c) {
  c.need_inputs(2);
  ShapeCall weights_only{c.node, c.in.subspan(0, 2), c.values.subspan(0, std::min<size_t>(2, c.values.size())), c.context, c.who};
  return conv_shapes(weights_only);
}

std::vector<Tensor> run_conv_integer(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& X = *in[0];
  const Tensor& W = *in[1];
  const Tensor* xz = in.size() > 2 ? in[2] : nullptr;
  const Tensor* wz = in.size() > 3 ? in[3] : nullptr;
  check(X.rank() == 3 || X.rank() == 4, ctx.who + ": only 1-D and 2-D convolutions are supported");
  kernels::Conv2dShape s = conv_shape(ctx.node.attr<ConvAttrs>(), X.shape(), W.shape());
  int64_t OH = s.out_h(), OW = s.out_w(), cin_g = s.in_channels / s.groups, cout_g = s.out_channels / s.groups;
  Tensor Y = Tensor::uninitialized(DataType::kInt32, outs[0]);
  // Centered once (x - x_zero_point, w - w_zero_point fit 16 bits), then int64 sums.
  int64_t x0 = xz ? integer_at(*xz, 0) : 0;
  std::vector<int16_t> xc(static_cast<size_t>(X.size())), wc(static_cast<size_t>(W.size()));
  for (int64_t i = 0; i < X.size(); ++i) xc[static_cast<size_t>(i)] = static_cast<int16_t>(integer_at(X, i) - x0);
  int64_t per_filter = W.size() / std::max<int64_t>(1, s.out_channels);
  for (int64_t i = 0; i < W.size(); ++i)
    wc[static_cast<size_t>(i)] = static_cast<int16_t>(integer_at(W, i) - (wz ? integer_at(*wz, wz->size() == 1 ? 0 : i / per_filter) : 0));
  auto body = [&](int64_t begin, int64_t end) {
    std::vector<int64_t> acc(static_cast<size_t>(OW));
    for (int64_t p = begin; p < end; ++p) {  // one (image, output channel) plane
      int64_t b = p / s.out_channels, oc = p % s.out_channels, g = oc / cout_g;
      for (int64_t oh = 0; oh < OH; ++oh) {
        std::fill(acc.begin(), acc.end(), 0);
        for (int64_t ic = 0; ic < cin_g; ++ic)
          for (int64_t kh = 0; kh < s.kernel_h; ++kh) {
            int64_t ih = oh * s.stride_h - s.pad_top + kh * s.dilation_h;
            if (ih < 0 || ih >= s.in_h) continue;
            const int16_t* row = &xc[static_cast<size_t>(((b * s.in_channels + g * cin_g + ic) * s.in_h + ih) * s.in_w)];
            for (int64_t kw = 0; kw < s.kernel_w; ++kw) {
              int32_t wv = wc[static_cast<size_t>(((oc * cin_g + ic) * s.kernel_h + kh) * s.kernel_w + kw)];
              for (int64_t ow = 0; ow < OW; ++ow) {
                int64_t iw = ow * s.stride_w - s.pad_left + kw * s.dilation_w;
                if (iw >= 0 && iw < s.in_w) acc[static_cast<size_t>(ow)] += static_cast<int32_t>(row[iw]) * wv;
              }
            }
          }
        for (int64_t ow = 0; ow < OW; ++ow) {
          int64_t v = acc[static_cast<size_t>(ow)];
          check(v >= INT32_MIN && v <= INT32_MAX, ctx.who + ": the int32 result overflows");
          Y.data<int32_t>()[((b * s.out_channels + oc) * OH + oh) * OW + ow] = static_cast<int32_t>(v);
        }
      }
    }
  };
  if (ctx.pool) ctx.pool->parallel_for(s.batch * s.out_channels, body);
  else body(0, s.batch * s.out_channels);
  return {Y};
}

OpRecord conv_integer() {
  OpRecord r;
  r.onnx_names = {"ConvInteger"};
  r.import = import_conv;
  r.attrs = attrs_codec<ConvAttrs, describe_conv>("conv");
  r.shapes = conv_integer_shapes;
  r.type = int32_type;
  r.run = run_conv_integer;
  r.keeps_batch = keeps_batch_always;
  r.macs = macs_per_output_times_weight;
  return r;
}

}  // namespace

TERN_REGISTER_OP(Conv, conv)
TERN_REGISTER_OP(ConvInteger, conv_integer)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
namespace {

// A convolution with any weights (TrainableGraph runs constant-weight layers itself, with their
// quantizers and folded BatchNorm).
torch::Tensor conv_forward(TorchCall& c) {
  const auto& a = c.node.attr<ConvAttrs>();
  torch::Tensor x = c.input(0), w = c.input(1), b = c.input(2);
  size_t axes = static_cast<size_t>(x.dim() - 2);
  check(axes == 1 || axes == 2, c.who + ": only 1-D and 2-D convolutions are supported for fine-tuning");
  auto pads = symmetric_pads(a.pads, axes);
  if (!pads) {
    x = pad_trailing(x, a.pads, axes, 0.0);
    pads = std::vector<int64_t>(axes, 0);
  }
  std::vector<int64_t> strides = or_ones(a.strides, axes), dilations = or_ones(a.dilations, axes);
  torch::Tensor y = axes == 2 ? torch::conv2d(x, w, b, strides, *pads, dilations, a.group)
                              : torch::conv1d(x, w, b, strides, *pads, dilations, a.group);
  return clamp_if(y, a.clamp_lo, a.clamp_hi);
}

}  // namespace

TERN_REGISTER_TORCH_OP(Conv, conv_forward)
TERN_REGISTER_TORCH_OP(ConvInteger)

}  // namespace tern::train
#endif
