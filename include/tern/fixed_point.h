// Fixed-point numbers <IL,FL> for low-precision training (Gupta et al. 2015, arXiv 1502.02551).
//
// A value is an integer count of steps eps = 2^-FL held in IL + FL bits, two's complement: IL
// integer bits including the sign, so the range is [-2^(IL-1), 2^(IL-1) - eps]. Values outside
// saturate to the nearest end.
//
//   nearest:    round(x / eps) * eps, ties to even (the IEEE default, as torch::round).
//   stochastic: floor(x / eps) * eps + eps with probability (x - floor) / eps, else the floor:
//               unbiased, E[SR(x)] = x inside the range.
//
// These scalar functions are the reference; the training code's tensor versions
// (src/train/fixed_point_ops.h) are tested against them.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace tern::numerics {

struct FixedFormat {
  int integer_bits = 0;     // IL, sign included: >= 1
  int fraction_bits = 0;    // FL: >= 0
  int word_bits() const { return integer_bits + fraction_bits; }
  double step() const;      // eps = 2^-FL
  double lowest() const;    // -2^(IL-1)
  double highest() const;   // 2^(IL-1) - eps
  std::string name() const;  // "fixed:IL.FL"
};

// "fixed:IL.FL" (or "IL.FL"). Throws Error naming the text for a malformed format, FL < 0, IL < 1
// or IL + FL > 32.
FixedFormat parse_fixed_format(const std::string& text);

enum class Rounding { kNearest, kStochastic };
Rounding parse_rounding(const std::string& name);  // nearest | stochastic
const char* rounding_name(Rounding rounding);

double round_nearest(double x, const FixedFormat& format);
// `uniform` in [0, 1): the draw that decides between the two neighbours (rounds up when
// uniform < (x - floor) / eps).
double round_stochastic(double x, const FixedFormat& format, double uniform);

// A reproducible uniform draw in [0, 1) for (seed, index): counter-based (SplitMix64), so any
// element can be rounded independently of the others and of the thread that rounds it.
double counter_uniform(uint64_t seed, uint64_t index);

// Rounds `values` in place; stochastic rounding draws counter_uniform(seed, i) for element i.
void round_fixed(std::span<double> values, const FixedFormat& format, Rounding rounding, uint64_t seed);

}  // namespace tern::numerics
