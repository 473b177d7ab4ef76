// FakeQuantize, tern's own operator: quantize to integer codes and back (graph.h, FakeQuantAttrs).
// The simulation graph of a quantized model inserts one before each quantized layer.
#ifndef TERN_OPS_TORCH
#include "ops/attrs_codec.h"
#include "ops/support.h"
#include "tern/calibration.h"

namespace tern::ops {
namespace {

void validate_fake_quant(const FakeQuantAttrs& a) {
  check(a.bits >= 2 && a.bits <= 8, "fake_quant bits must be in [2, 8]");
  check(a.dynamic || (std::isfinite(a.scale) && a.scale > 0), "fake_quant scale must be positive and finite");
  check(!a.per_row || a.dynamic, "fake_quant per-row scales are dynamic");
  check(a.zero_point == 0 || (a.is_unsigned && !a.dynamic && a.zero_point > 0 &&
                              a.zero_point <= quant::activation_qmax(a.bits, true)),
        "fake_quant zero point must be within the unsigned codes of a static quantizer");
}

constexpr auto describe_fake_quant = [](auto& a, auto&& field) {
  field("bits", a.bits);
  field("is_unsigned", a.is_unsigned);
  field("dynamic", a.dynamic);
  field("power_of_two", a.power_of_two);
  field("scale", a.scale);
  field.optional("zero_point", a.zero_point, 0, 255);
  field.optional("per_row", a.per_row);
};

// The same codes as quant::quantize_activation (x / scale in float, clamp, round half away from
// zero), less the zero point, times the scale. NaN stays NaN. The loop is quant::fake_quantize, which fine-tuning shares.
std::vector<Tensor> run_fake_quantize(const OpContext& ctx, std::span<const Tensor* const> in, std::span<const Shape>) {
  const Tensor& x = *in[0];
  const auto& a = ctx.node.attr<FakeQuantAttrs>();
  require_float(ctx, x, "input");
  const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
  const float hi = static_cast<float>(qmax);
  Tensor y = Tensor::uninitialized(DataType::kFloat32, x.shape());
  // Slices with a scale of their own: images, or with per_row each row along the last axis.
  const int64_t last = x.rank() > 0 ? x.dim(x.rank() - 1) : 1;
  const int64_t images = a.per_row ? (last > 0 ? x.size() / last : 0) : x.rank() > 0 ? x.dim(0) : 1;
  const int64_t per_image = images > 0 ? x.size() / images : 0;
  for (int64_t n = 0; n < images; ++n) {
    const float* src = x.data<float>() + n * per_image;
    float* out = y.data<float>() + n * per_image;
    float scale = a.scale;
    if (a.dynamic) {
      float t = 0.0f;
      for (int64_t i = 0; i < per_image; ++i) t = std::max(t, a.is_unsigned ? src[i] : std::fabs(src[i]));
      if (!std::isfinite(t))  // (the message is built only on failure: this runs per row)
        throw Error(ctx.who + (a.per_row ? ": row " : ": image ") + std::to_string(n) + " holds an infinite value");
      if (t == 0.0f) {  // nothing above zero: every code is 0
        for (int64_t i = 0; i < per_image; ++i) out[i] = std::isnan(src[i]) ? src[i] : 0.0f;
        continue;
      }
      scale = a.power_of_two ? quant::power_of_two_scale(t, qmax) : t / hi;
    }
    auto body = [&](int64_t b, int64_t e) {
      quant::fake_quantize({src + b, static_cast<size_t>(e - b)}, {out + b, static_cast<size_t>(e - b)}, scale, qmax,
                           a.is_unsigned, a.zero_point);
    };
    if (ctx.pool) ctx.pool->parallel_for(per_image, body, 1 << 14);
    else body(0, per_image);
  }
  return {y};
}

// QuantizeLinear -> DequantizeLinear at the same scale and zero point (u8 or s8). ONNX rounds
// x / scale half to even where tern rounds half away from zero, and saturates s8 at -128 where
// tern's symmetric codes stop at -127: the two differ by one step at exact ties and below -127.
// Fewer than 8 bits clip first to the codes' range. A dynamic scale has no QDQ form: the value
// stays float (noted).
void export_fake_quantize(OnnxWriter& w) {
  const FakeQuantAttrs& a = w.node.attr<FakeQuantAttrs>();
  if (a.dynamic) {
    w.note("dynamic activation scales (chosen per " + std::string(a.per_row ? "row" : "image") +
           " at run time) have no QDQ form: '" + w.inputs[0] + "' stays float32");
    w.emit("Identity", w.inputs, w.outputs);
    return;
  }
  const int32_t qmax = quant::activation_qmax(a.bits, a.is_unsigned);
  std::string x = w.inputs[0];
  if (a.bits < 8) {  // clip to the codes' range first: u8/s8 would keep more
    const float lo = a.is_unsigned ? -static_cast<float>(a.zero_point) * a.scale : -static_cast<float>(qmax) * a.scale;
    const float hi = static_cast<float>(qmax - a.zero_point) * a.scale;
    std::string clipped = w.temp(w.outputs[0] + "/clipped");
    w.emit("Clip", {x, w.constant(w.outputs[0] + "/min", Tensor::from_floats({}, std::vector<float>{lo})),
                    w.constant(w.outputs[0] + "/max", Tensor::from_floats({}, std::vector<float>{hi}))},
           {clipped});
    x = clipped;
  }
  Tensor zero = a.is_unsigned ? Tensor(DataType::kUInt8, {}) : Tensor(DataType::kInt8, {});
  if (a.is_unsigned) zero.data<uint8_t>()[0] = static_cast<uint8_t>(a.zero_point);
  const std::string scale = w.constant(w.outputs[0] + "/scale", Tensor::from_floats({}, std::vector<float>{a.scale}));
  const std::string zp = w.constant(w.outputs[0] + "/zero_point", zero);
  const std::string codes = w.temp(w.outputs[0] + "/codes");
  w.emit("QuantizeLinear", {x, scale, zp}, {codes});
  w.emit("DequantizeLinear", {codes, scale, zp}, w.outputs);
}

OpRecord fake_quantize() {
  OpRecord r;  // no ONNX name: tern's own
  r.attrs = attrs_codec<FakeQuantAttrs, describe_fake_quant, validate_fake_quant>("fake_quant");
  r.shapes = same_shape;
  r.run = run_fake_quantize;
  r.keeps_batch = keeps_batch_always;
  r.non_negative = like_input0;
  r.export_onnx = export_fake_quantize;
  return r;
}

}  // namespace

TERN_REGISTER_OP(FakeQuantize, fake_quantize)

}  // namespace tern::ops

#else  // TERN_OPS_TORCH
#include "train/torch_op.h"

namespace tern::train {
TERN_REGISTER_TORCH_OP(FakeQuantize)  // fine-tuning inserts its own quantizers (fake_quant.h)
}  // namespace tern::train
#endif
