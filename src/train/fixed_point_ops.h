// Fixed-point rounding of libtorch tensors for low-precision training (tern::numerics holds the
// scalar reference these are tested against).
//
// FixedPointRounder rounds every value a training step produces: `values()` is the autograd
// function placed on each node output (forward: round the value; backward: round the gradient
// flowing back through it), `round()` the plain operation for weight gradients, momentum and the
// weight update. Tensors are float64 so that products of two <=16-bit fixed-point numbers and their
// sums (up to 2^21 terms) are exact: a dot product accumulates exactly and rounds once, at the end.
#pragma once

#include <torch/torch.h>

#include <optional>

#include "tern/fixed_point.h"

namespace tern::train {

// Nearest: ties to even. Stochastic: rounds up where uniform < fraction; `uniform` has x's shape.
torch::Tensor round_fixed_nearest(const torch::Tensor& x, const numerics::FixedFormat& format);
torch::Tensor round_fixed_stochastic(const torch::Tensor& x, const numerics::FixedFormat& format,
                                     const torch::Tensor& uniform);

class FixedPointRounder {
 public:
  // Values in `format`; gradients in `gradient_format` (by default the same).
  FixedPointRounder(numerics::FixedFormat format, numerics::Rounding rounding, uint64_t seed,
                    std::optional<numerics::FixedFormat> gradient_format = std::nullopt);

  // Rounds x to the value (or gradient) format, no autograd. Stochastic draws come from this
  // rounder's generator, in call order.
  torch::Tensor round(const torch::Tensor& x);
  torch::Tensor round_gradient(const torch::Tensor& x);
  // Rounds x in the forward pass and its gradient (in the gradient format) in the backward pass,
  // zero where x saturated.
  torch::Tensor values(const torch::Tensor& x);

  const numerics::FixedFormat& format() const { return format_; }
  const numerics::FixedFormat& gradient_format() const { return gradient_format_; }
  numerics::Rounding rounding() const { return rounding_; }
  // The generator's state, so a resumed run draws the same numbers.
  torch::Tensor generator_state() const;
  void set_generator_state(const torch::Tensor& state);

 private:
  torch::Tensor round_to(const torch::Tensor& x, const numerics::FixedFormat& f);

  numerics::FixedFormat format_, gradient_format_;
  numerics::Rounding rounding_;
  mutable at::Generator generator_;
};

}  // namespace tern::train
