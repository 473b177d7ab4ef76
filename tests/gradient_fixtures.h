// Gradients for the exchange tests: one standard-normal vector per tensor, seeded.
#pragma once

#include <random>
#include <vector>

#include "tern/gradient_exchange.h"

namespace tern::testing {

inline std::vector<std::vector<float>> random_gradients(const std::vector<dist::TensorSpec>& specs, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::vector<float>> grads;
  for (const dist::TensorSpec& spec : specs) {
    std::vector<float> g(spec.elements);
    for (float& v : g) v = normal(rng);
    grads.push_back(std::move(g));
  }
  return grads;
}

}  // namespace tern::testing
