#include "train/fixed_point_ops.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

namespace tern::train {

namespace {

// Integer steps of the word, as doubles: [-2^(W-1), 2^(W-1) - 1].
std::pair<double, double> step_range(const numerics::FixedFormat& f) {
  const double hi = std::ldexp(1.0, f.word_bits() - 1);
  return {-hi, hi - 1};
}

// Forward: the rounded value. Backward: the rounded gradient where x was inside the format's range,
// zero where it saturated (the derivative of the clamp that saturation is).
struct RoundValues : torch::autograd::Function<RoundValues> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, int64_t rounder) {
    auto* r = reinterpret_cast<FixedPointRounder*>(rounder);
    ctx->saved_data["rounder"] = rounder;
    ctx->save_for_backward({(x >= r->format().lowest()).logical_and(x <= r->format().highest())});
    return r->round(x);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad) {
    auto* rounder = reinterpret_cast<FixedPointRounder*>(ctx->saved_data["rounder"].toInt());
    torch::Tensor inside = ctx->get_saved_variables()[0];
    return {rounder->round_gradient(grad[0] * inside.to(grad[0].scalar_type())), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor round_fixed_nearest(const torch::Tensor& x, const numerics::FixedFormat& f) {
  auto [lo, hi] = step_range(f);
  const double up = std::ldexp(1.0, f.fraction_bits);  // scaling by powers of two is exact
  return torch::clamp(torch::round(x * up), lo, hi) * (1.0 / up);
}

torch::Tensor round_fixed_stochastic(const torch::Tensor& x, const numerics::FixedFormat& f, const torch::Tensor& uniform) {
  auto [lo, hi] = step_range(f);
  const double up = std::ldexp(1.0, f.fraction_bits);
  torch::Tensor scaled = x * up;
  torch::Tensor down = torch::floor(scaled);
  torch::Tensor rounded = down + (uniform < (scaled - down)).to(x.scalar_type());
  return torch::clamp(rounded, lo, hi) * (1.0 / up);
}

FixedPointRounder::FixedPointRounder(numerics::FixedFormat format, numerics::Rounding rounding, uint64_t seed,
                                     std::optional<numerics::FixedFormat> gradient_format)
    : format_(format),
      gradient_format_(gradient_format ? *gradient_format : format),
      rounding_(rounding),
      generator_(at::detail::createCPUGenerator(seed)) {}

torch::Tensor FixedPointRounder::round_to(const torch::Tensor& x, const numerics::FixedFormat& f) {
  torch::NoGradGuard no_grad;
  if (rounding_ == numerics::Rounding::kNearest) return round_fixed_nearest(x, f);
  // torch's sampling kernels lock the generator themselves.
  torch::Tensor uniform = torch::rand(x.sizes(), generator_, torch::TensorOptions().dtype(x.scalar_type()));
  return round_fixed_stochastic(x, f, uniform);
}

torch::Tensor FixedPointRounder::round(const torch::Tensor& x) { return round_to(x, format_); }

torch::Tensor FixedPointRounder::round_gradient(const torch::Tensor& x) { return round_to(x, gradient_format_); }

torch::Tensor FixedPointRounder::values(const torch::Tensor& x) {
  if (!x.requires_grad()) return round(x);
  return RoundValues::apply(x, reinterpret_cast<int64_t>(this));
}

torch::Tensor FixedPointRounder::generator_state() const { return generator_.get_state(); }

void FixedPointRounder::set_generator_state(const torch::Tensor& state) { generator_.set_state(state); }

}  // namespace tern::train
