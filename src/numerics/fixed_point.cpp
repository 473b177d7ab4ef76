#include "tern/fixed_point.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "tern/error.h"

namespace tern::numerics {

double FixedFormat::step() const { return std::ldexp(1.0, -fraction_bits); }
double FixedFormat::lowest() const { return -std::ldexp(1.0, integer_bits - 1); }
double FixedFormat::highest() const { return std::ldexp(1.0, integer_bits - 1) - step(); }
std::string FixedFormat::name() const {
  return "fixed:" + std::to_string(integer_bits) + "." + std::to_string(fraction_bits);
}

FixedFormat parse_fixed_format(const std::string& text) {
  std::string body = text.rfind("fixed:", 0) == 0 ? text.substr(6) : text;
  const std::string what = "numeric format '" + text + "'";
  size_t dot = body.find('.');
  check(dot != std::string::npos && dot > 0 && dot + 1 < body.size(), what + ": expected fixed:IL.FL, e.g. fixed:4.12");
  auto number = [&](const std::string& s, const char* part) {
    char* end = nullptr;
    long v = std::strtol(s.c_str(), &end, 10);
    check(end && *end == '\0' && !s.empty() && s.size() < 6, what + ": " + part + " is not an integer");
    return static_cast<int>(v);
  };
  FixedFormat f{number(body.substr(0, dot), "IL"), number(body.substr(dot + 1), "FL")};
  check(f.fraction_bits >= 0, what + ": FL must be >= 0");
  check(f.integer_bits >= 1, what + ": IL must be >= 1 (it includes the sign bit)");
  check(f.word_bits() <= 32, what + ": IL + FL must be at most 32 bits");
  return f;
}

Rounding parse_rounding(const std::string& name) {
  if (name == "nearest") return Rounding::kNearest;
  if (name == "stochastic") return Rounding::kStochastic;
  throw Error("rounding '" + name + "': expected nearest or stochastic");
}

const char* rounding_name(Rounding rounding) { return rounding == Rounding::kNearest ? "nearest" : "stochastic"; }

namespace {

// The integer count of steps, saturated to the word.
double saturate(double steps, const FixedFormat& f) {
  const double hi = std::ldexp(1.0, f.word_bits() - 1);
  return std::clamp(steps, -hi, hi - 1);
}

}  // namespace

double round_nearest(double x, const FixedFormat& f) {
  if (std::isnan(x)) return x;
  return std::ldexp(saturate(std::nearbyint(std::ldexp(x, f.fraction_bits)), f), -f.fraction_bits);
}

double round_stochastic(double x, const FixedFormat& f, double uniform) {
  if (std::isnan(x)) return x;
  const double scaled = std::ldexp(x, f.fraction_bits);
  const double down = std::floor(scaled);
  return std::ldexp(saturate(down + (uniform < scaled - down ? 1.0 : 0.0), f), -f.fraction_bits);
}

double counter_uniform(uint64_t seed, uint64_t index) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + index + 0x632BE59BD9B4E019ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;  // 53 random bits
}

void round_fixed(std::span<double> values, const FixedFormat& f, Rounding rounding, uint64_t seed) {
  if (rounding == Rounding::kNearest) {
    for (double& v : values) v = round_nearest(v, f);
    return;
  }
  for (size_t i = 0; i < values.size(); ++i) values[i] = round_stochastic(values[i], f, counter_uniform(seed, i));
}

}  // namespace tern::numerics
