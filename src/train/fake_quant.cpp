#include "train/fake_quant.h"

#include <cstring>

#include "tern/error.h"

namespace tern::train {

torch::Tensor to_torch(const Tensor& tensor) {
  check(tensor.dtype() == DataType::kFloat32, "fine-tuning: expected a float32 tensor, got " + to_string(tensor.dtype()));
  std::vector<int64_t> dims(tensor.shape().begin(), tensor.shape().end());
  torch::Tensor t = torch::empty(dims, torch::kFloat32);
  if (tensor.size() > 0) std::memcpy(t.data_ptr<float>(), tensor.data<float>(), tensor.bytes());
  return t;
}

Tensor to_tern(const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kFloat32).contiguous();
  Shape shape(t.sizes().begin(), t.sizes().end());
  return Tensor::from_floats(shape, {t.data_ptr<float>(), static_cast<size_t>(t.numel())});
}

std::vector<float> to_vector(const torch::Tensor& tensor) {
  torch::Tensor t = tensor.detach().to(torch::kFloat32).contiguous();
  return {t.data_ptr<float>(), t.data_ptr<float>() + t.numel()};
}

namespace {

torch::Tensor from_vector(const std::vector<float>& values, torch::IntArrayRef sizes) {
  torch::Tensor t = torch::empty(sizes, torch::kFloat32);
  std::memcpy(t.data_ptr<float>(), values.data(), values.size() * sizeof(float));
  return t;
}

// x + (q - x).detach() would add and subtract in float and could move q by an ulp; this returns q
// exactly in the forward pass and passes the gradient through unchanged.
class StraightThrough : public torch::autograd::Function<StraightThrough> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext*, const torch::Tensor&, const torch::Tensor& quantized) {
    return quantized;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext*, torch::autograd::tensor_list grads) {
    return {grads[0], torch::Tensor()};
  }
};

class ActivationFakeQuant : public torch::autograd::Function<ActivationFakeQuant> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double scale_d, int64_t qmax,
                               bool is_unsigned, int64_t zero_point) {
    const float scale = static_cast<float>(scale_d);
    torch::Tensor in = x.contiguous();
    torch::Tensor out = torch::empty_like(in);
    torch::Tensor inside = torch::empty_like(in);
    const float* src = in.data_ptr<float>();
    float* dst = out.data_ptr<float>();
    float* pass = inside.data_ptr<float>();
    const int64_t n = in.numel();
    const auto [lo, hi] = quant::code_bounds(static_cast<int32_t>(qmax), is_unsigned, static_cast<int32_t>(zero_point));
    // Chunks on torch's intra-op threads; each runs tern's loop, then marks the values it did not
    // clip (the same x / scale it compared).
    at::parallel_for(0, n, 1 << 14, [&](int64_t b, int64_t e) {
      quant::fake_quantize({src + b, static_cast<size_t>(e - b)}, {dst + b, static_cast<size_t>(e - b)}, scale,
                           static_cast<int32_t>(qmax), is_unsigned, static_cast<int32_t>(zero_point));
      for (int64_t i = b; i < e; ++i) {
        float v = src[i] / scale;
        pass[i] = v >= lo && v <= hi ? 1.0f : 0.0f;
      }
    });
    ctx->save_for_backward({inside});
    return out;
  }
  static torch::autograd::tensor_list backward(torch::autograd::AutogradContext* ctx, torch::autograd::tensor_list grads) {
    torch::Tensor inside = ctx->get_saved_variables()[0];
    return {grads[0] * inside, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor fake_quantize_weights(const torch::Tensor& weights, quant::QuantizedLayer& layer) {
  check(weights.numel() == layer.out * layer.in * layer.taps,
        "layer '" + layer.node + "': weights hold " + std::to_string(weights.numel()) + " values, expected " +
            std::to_string(layer.out * layer.in * layer.taps));
  std::vector<float> w = to_vector(weights);
  quant::QuantizedWeights q = quant::quantize_weights(w, layer.out, layer.in, layer.taps, layer.config);
  std::vector<float> dequantized = q.dequantize();
  layer.terms = {std::move(q)};
  layer.active_terms = 1;
  return StraightThrough::apply(weights, from_vector(dequantized, weights.sizes()));
}

torch::Tensor fake_quantize_bias(const torch::Tensor& bias, quant::QuantizedLayer& layer) {
  std::vector<float> b = to_vector(bias);
  std::vector<float> dequantized = quant::quantize_layer_bias(layer, b);
  if (dequantized.empty()) return bias;  // dynamic or float input: the bias stays float32
  return StraightThrough::apply(bias, from_vector(dequantized, bias.sizes()));
}

torch::Tensor fake_quantize_activation(const torch::Tensor& x, const quant::ActivationQuant& a) {
  check(!a.dynamic, "fine-tuning needs static activation scales (got a dynamic quantizer)");
  check(std::isfinite(a.scale) && a.scale > 0, "fine-tuning: activation scale must be positive and finite");
  check(x.scalar_type() == torch::kFloat32, "fine-tuning: activations must be float32");
  return ActivationFakeQuant::apply(x, static_cast<double>(a.scale), quant::activation_qmax(a.bits, a.is_unsigned),
                                    a.is_unsigned, static_cast<int64_t>(a.zero_point));
}

}  // namespace tern::train
