// ConvTranspose (1-D and 2-D, groups, dilations, output_padding, output_shape, auto_pad): the
// gradient of Conv with respect to its input, as detector and segmenter heads upsample with it.
// The FP32 kernel is one GEMM per image and group (W^T X into columns) and a col2im scatter.
#ifndef TERN_OPS_TORCH
#include "kernels/fp32/sgemm.h"
#include "ops/attrs_codec.h"
#include "ops/support.h"

namespace tern::ops {
namespace {

struct ConvTransposeAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel, strides, pads, dilations, output_padding, output_shape;
  int64_t group = 1;
};

void import_conv_transpose(OnnxNode& n) {
  n.need_inputs(2, 3);
  ConvTransposeAttrs a;
  a.auto_pad = parse_auto_pad(n);
  a.kernel = n.get_ints("kernel_shape");
  a.strides = n.get_ints("strides");
  a.pads = n.get_ints("pads");
  a.dilations = n.get_ints("dilations");
  a.output_padding = n.get_ints("output_padding");
  a.output_shape = n.get_ints("output_shape");
  a.group = n.get_int("group", 1);
  n.node.attrs = a;
}

constexpr auto describe_conv_transpose = [](auto& a, auto&& field) {
  field("auto_pad", a.auto_pad, 0, static_cast<int64_t>(AutoPad::kValid));
  field("kernel", a.kernel);
  field("strides", a.strides);
  field("pads", a.pads);
  field("dilations", a.dilations);
  field("output_padding", a.output_padding);
  field("output_shape", a.output_shape);
  field("group", a.group, 1, int64_t{1} << 40);
};

std::vector<Shape> conv_transpose_shapes(ShapeCall& c) {
  c.need_inputs(2);
  const std::string& who = c.who;
  auto& a = c.node.attr<ConvTransposeAttrs>();
  const Shape& x = c.in[0];
  const Shape& w = c.in[1];
  check(x.size() == 3 || x.size() == 4, who + ": only 1-D and 2-D transposed convolutions are supported, input " + to_string(x));
  check(w.size() == x.size() && is_static(w), who + ": weight shape " + to_string(w) + " does not fit input " + to_string(x));
  size_t spatial = x.size() - 2;
  if (a.kernel.empty()) a.kernel.assign(w.begin() + 2, w.end());
  fill_default(a.strides, spatial, 1);
  fill_default(a.dilations, spatial, 1);
  fill_default(a.output_padding, spatial, 0);
  check(a.group >= 1, who + ": group must be >= 1");
  check(a.kernel.size() == spatial && std::equal(a.kernel.begin(), a.kernel.end(), w.begin() + 2),
        who + ": kernel_shape does not match the weights");
  check(a.output_padding.size() == spatial, who + ": output_padding has the wrong length");
  check(x[1] < 0 || x[1] == w[0], who + ": input has " + std::to_string(x[1]) + " channels, weights expect " + std::to_string(w[0]));
  check(w[0] % a.group == 0 && w[1] >= 1, who + ": weights " + to_string(w) + " do not fit group " + std::to_string(a.group));
  int64_t out_channels = dim_mul(w[1], a.group, who);
  if (c.in.size() > 2 && !c.in[2].empty())
    check(c.in[2].size() == 1 && c.in[2][0] == out_channels, who + ": bias shape " + to_string(c.in[2]) + " does not match " +
                                                                 std::to_string(out_channels) + " output channels");
  for (size_t i = 0; i < spatial; ++i) {
    check(a.strides[i] >= 1 && a.dilations[i] >= 1 && a.kernel[i] >= 1, who + ": kernel, strides and dilations must be >= 1");
    check(a.output_padding[i] >= 0 && a.output_padding[i] < std::max(a.strides[i], a.dilations[i]),
          who + ": output_padding must be smaller than the stride or dilation");
  }
  // Padding from output_shape or auto_pad (then fixed, like Conv's), else the pads attribute.
  bool from_output_shape = !a.output_shape.empty() || (a.auto_pad == AutoPad::kSameUpper || a.auto_pad == AutoPad::kSameLower);
  if (from_output_shape) {
    std::vector<int64_t> target = a.output_shape;
    if (target.size() == spatial + 2) target.erase(target.begin(), target.begin() + 2);
    bool known = true;
    for (size_t i = 0; i < spatial; ++i) known &= x[2 + i] >= 0;
    if (!known) {
      Shape out = {x[0], out_channels};
      for (size_t i = 0; i < spatial; ++i) out.push_back(target.empty() ? kDynamicDim : target[i]);
      return {out};
    }
    if (target.empty())
      for (size_t i = 0; i < spatial; ++i) target.push_back(dim_mul(x[2 + i], a.strides[i], who));
    check(target.size() == spatial, who + ": output_shape has the wrong length");
    a.pads.assign(2 * spatial, 0);
    for (size_t i = 0; i < spatial; ++i) {
      int64_t full = dim_add(dim_add(dim_mul(a.strides[i], x[2 + i] - 1, who), a.output_padding[i], who),
                             dim_mul(a.dilations[i], a.kernel[i] - 1, who) + 1, who);
      // Negative when output_shape asks for more than the full output: the extra is zeros at the
      // end, as output_padding would give (the ONNX reference's floor division).
      int64_t total = full - target[i];
      int64_t half = total >= 0 ? total / 2 : -((-total + 1) / 2);
      bool upper = a.auto_pad == AutoPad::kSameUpper;
      a.pads[i] = upper ? half : total - half;
      a.pads[i + spatial] = total - a.pads[i];
    }
  } else if (a.auto_pad == AutoPad::kValid) {
    a.pads.assign(2 * spatial, 0);
  }
  // output_shape and auto_pad stay: the padding is derived again for every input size.
  fill_default(a.pads, 2 * spatial, 0);
  check(a.pads.size() == 2 * spatial, who + ": pads has the wrong length");
  Shape out = {x[0], out_channels};
  for (size_t i = 0; i < spatial; ++i) {
    check(from_output_shape || (a.pads[i] >= 0 && a.pads[i + spatial] >= 0), who + ": negative pads are not supported");
    if (x[2 + i] < 0) {
      out.push_back(kDynamicDim);
      continue;
    }
    int64_t o = dim_add(dim_add(dim_mul(a.strides[i], x[2 + i] - 1, who), a.output_padding[i], who),
                        dim_mul(a.dilations[i], a.kernel[i] - 1, who) + 1, who) - a.pads[i] - a.pads[i + spatial];
    check(o >= 1, who + ": padding leaves no output");
    out.push_back(o);
  }
  return {out};
}

std::vector<Tensor> run_conv_transpose(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape> outs) {
  const Tensor& x = *in[0];
  const Tensor& w = *in[1];
  require_float(ctx, x, "input");
  require_float(ctx, w, "weights");
  const Tensor* bias = in.size() > 2 ? in[2] : nullptr;
  if (bias) require_float(ctx, *bias, "bias");
  const auto& a = ctx.node.attr<ConvTransposeAttrs>();
  const Shape& out = outs[0];
  bool one_d = x.rank() == 3;
  int64_t N = x.dim(0), Cin = x.dim(1), H = one_d ? 1 : x.dim(2), W = x.dim(one_d ? 2 : 3);
  int64_t OH = one_d ? 1 : out[2], OW = out[one_d ? 2 : 3];
  int64_t G = a.group, Cin_g = Cin / G, Cout_g = w.dim(1), Cout = Cout_g * G;
  int64_t KH = one_d ? 1 : a.kernel[0], KW = a.kernel[one_d ? 0 : 1];
  int64_t SH = one_d ? 1 : a.strides[0], SW = a.strides[one_d ? 0 : 1];
  int64_t DH = one_d ? 1 : a.dilations[0], DW = a.dilations[one_d ? 0 : 1];
  size_t sp = one_d ? 1 : 2;
  int64_t PT = one_d ? 0 : a.pads[0], PL = a.pads[one_d ? 0 : 1];
  (void)sp;
  int64_t KK = KH * KW, HW = H * W, M = Cout_g * KK;
  Tensor y(DataType::kFloat32, out);
  std::vector<float> cols(static_cast<size_t>(M * HW));
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      kernels::MatrixView A{w.data<float>() + g * Cin_g * M, 1, M};                  // [M, Cin_g] = W^T
      kernels::MatrixView B{x.data<float>() + (n * Cin + g * Cin_g) * HW, HW, 1};    // [Cin_g, HW]
      kernels::sgemm(M, HW, Cin_g, A, B, cols.data(), HW, {}, ctx.pool);
      float* dst = y.data<float>() + (n * Cout + g * Cout_g) * OH * OW;
      for (int64_t oc = 0; oc < Cout_g; ++oc)
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const float* col = cols.data() + ((oc * KH + kh) * KW + kw) * HW;
            float* plane = dst + oc * OH * OW;
            for (int64_t ih = 0; ih < H; ++ih) {
              int64_t oh = ih * SH - PT + kh * DH;
              if (oh < 0 || oh >= OH) continue;
              for (int64_t iw = 0; iw < W; ++iw) {
                int64_t ow = iw * SW - PL + kw * DW;
                if (ow >= 0 && ow < OW) plane[oh * OW + ow] += col[ih * W + iw];
              }
            }
          }
    }
  if (bias)
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < Cout; ++c) {
        float b = bias->data<float>()[c];
        float* p = y.data<float>() + (n * Cout + c) * OH * OW;
        for (int64_t i = 0; i < OH * OW; ++i) p[i] += b;
      }
  return {y};
}

// Every input element is multiplied by the weights of its channel: C_out/group x kernel.
int64_t conv_transpose_macs(const CostCall& c) {
  std::optional<Shape> x = c.input(0), w = c.input(1);
  if (!x || !w || w->size() < 2) return -1;
  return mac_product({mac_elements(*x, 0, c.who), mac_elements(*w, 1, c.who)}, c.who);
}

OpRecord conv_transpose() {
  OpRecord r;
  r.onnx_names = {"ConvTranspose"};
  r.import = import_conv_transpose;
  r.attrs = attrs_codec<ConvTransposeAttrs, describe_conv_transpose>("conv_transpose");
  r.shapes = conv_transpose_shapes;
  r.run = run_conv_transpose;
  r.keeps_batch = keeps_batch_always;
  r.counts_parameters = true;
  r.macs = conv_transpose_macs;
  return r;
}

}  // namespace

TERN_REGISTER_OP(ConvTranspose, conv_transpose)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(ConvTranspose)  // its attributes live in src/ops; fine-tuning through it: not yet
}  // namespace tern::train
#endif
