#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "tern/error.h"
#include "tern/quantizers.h"

namespace tern::quant {

namespace {

// Indices of w sorted by decreasing magnitude (stable: ties keep index order, so results are
// deterministic).
std::vector<uint32_t> by_magnitude(std::span<const float> w) {
  std::vector<uint32_t> order(w.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return std::fabs(w[a]) > std::fabs(w[b]); });
  return order;
}

// k maximizing score(P_k, k) over k = 1..n for magnitudes sorted descending; 0 if all are zero.
// Ties go to the smallest k.
template <typename Score>
size_t best_support(std::span<const double> sorted_magnitudes, Score score) {
  double prefix = 0, best = 0;
  size_t best_k = 0;
  for (size_t k = 1; k <= sorted_magnitudes.size(); ++k) {
    prefix += sorted_magnitudes[k - 1];
    double s = score(prefix, static_cast<double>(k));
    if (s > best) {
      best = s;
      best_k = k;
    }
  }
  return best_k;
}

// Sets codes for the top-k of `order`, returns the mean magnitude of the selected weights.
float select_top(std::span<const float> w, const std::vector<uint32_t>& order, size_t k, std::span<int8_t> codes) {
  double sum = 0;
  for (size_t i = 0; i < k; ++i) {
    uint32_t j = order[i];
    codes[j] = w[j] > 0 ? 1 : -1;
    sum += std::fabs(w[j]);
  }
  return k ? static_cast<float>(sum / static_cast<double>(k)) : 0.0f;
}

float threshold_between(std::span<const float> w, const std::vector<uint32_t>& order, size_t k) {
  if (k == 0) return order.empty() ? 0.0f : std::fabs(w[order[0]]);
  float last_in = std::fabs(w[order[k - 1]]);
  float first_out = k < order.size() ? std::fabs(w[order[k]]) : 0.0f;
  return 0.5f * (last_in + first_out);
}

std::vector<double> magnitudes(std::span<const float> w, const std::vector<uint32_t>& order) {
  std::vector<double> m(order.size());
  for (size_t i = 0; i < order.size(); ++i) m[i] = std::fabs(static_cast<double>(w[order[i]]));
  return m;
}

void check_sizes(std::span<const float> w, std::span<int8_t> codes) {
  check(w.size() == codes.size(), "quantizer: weights and codes differ in length");
  check(w.size() < (size_t{1} << 31), "quantizer: group too large");
  for (float v : w) check(std::isfinite(v), "quantizer: weights contain NaN or infinity");
}

// The L2-optimal ternary code of the weights of one sign; returns (scale, k).
std::pair<float, size_t> one_sided_l2(std::span<const float> w, const std::vector<uint32_t>& order_of_sign,
                                      std::span<int8_t> codes) {
  std::vector<double> m = magnitudes(w, order_of_sign);
  size_t k = best_support(m, [](double p, double n) { return p * p / n; });
  return {select_top(w, order_of_sign, k, codes), k};
}

}  // namespace

GroupScales ternarize_l2(std::span<const float> w, std::span<int8_t> codes) {
  check_sizes(w, codes);
  std::fill(codes.begin(), codes.end(), int8_t{0});
  std::vector<uint32_t> order = by_magnitude(w);
  size_t k = best_support(magnitudes(w, order), [](double p, double n) { return p * p / n; });
  float alpha = select_top(w, order, k, codes);
  return {alpha, alpha, threshold_between(w, order, k)};
}

GroupScales ternarize_l2_asymmetric(std::span<const float> w, std::span<int8_t> codes) {
  check_sizes(w, codes);
  std::fill(codes.begin(), codes.end(), int8_t{0});
  std::vector<uint32_t> order = by_magnitude(w), positive, negative;
  for (uint32_t j : order) (w[j] > 0 ? positive : negative).push_back(j);
  auto [alpha_p, kp] = one_sided_l2(w, positive, codes);
  auto [alpha_n, kn] = one_sided_l2(w, negative, codes);
  // One threshold is not enough to describe two supports; report the smaller selected magnitude.
  float t = std::min(kp ? alpha_p : INFINITY, kn ? alpha_n : INFINITY);
  return {alpha_p, alpha_n, std::isfinite(t) ? t : 0.0f};
}

GroupScales ternarize_twn(std::span<const float> w, std::span<int8_t> codes) {
  check_sizes(w, codes);
  std::fill(codes.begin(), codes.end(), int8_t{0});
  if (w.empty()) return {};
  double mean_abs = 0;
  for (float v : w) mean_abs += std::fabs(v);
  mean_abs /= static_cast<double>(w.size());
  float delta = static_cast<float>(0.7 * mean_abs);
  double sum = 0;
  size_t k = 0;
  for (size_t i = 0; i < w.size(); ++i)
    if (std::fabs(w[i]) > delta) {
      codes[i] = w[i] > 0 ? 1 : -1;
      sum += std::fabs(w[i]);
      ++k;
    }
  float alpha = k ? static_cast<float>(sum / static_cast<double>(k)) : 0.0f;
  return {alpha, alpha, delta};
}

GroupScales ternarize_tnt(std::span<const float> w, std::span<int8_t> codes) {
  check_sizes(w, codes);
  std::fill(codes.begin(), codes.end(), int8_t{0});
  std::vector<uint32_t> order = by_magnitude(w);
  size_t k = best_support(magnitudes(w, order), [](double p, double n) { return p / std::sqrt(n); });
  double pos = 0, neg = 0;
  size_t np = 0, nn = 0;
  for (size_t i = 0; i < k; ++i) {
    uint32_t j = order[i];
    codes[j] = w[j] > 0 ? 1 : -1;
    if (w[j] > 0) pos += w[j], ++np;
    else neg -= w[j], ++nn;
  }
  return {np ? static_cast<float>(pos / static_cast<double>(np)) : 0.0f,
          nn ? static_cast<float>(neg / static_cast<double>(nn)) : 0.0f, threshold_between(w, order, k)};
}

GroupScales binarize(std::span<const float> w, std::span<int8_t> codes) {
  check_sizes(w, codes);
  double sum = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    codes[i] = w[i] < 0 ? -1 : 1;
    sum += std::fabs(w[i]);
  }
  float alpha = w.empty() ? 0.0f : static_cast<float>(sum / static_cast<double>(w.size()));
  return {alpha, alpha, 0.0f};
}

GroupScales quantize_symmetric(std::span<const float> w, int bits, std::span<int8_t> codes) {
  check_sizes(w, codes);
  check(bits >= 2 && bits <= 8, "quantizer: integer weights need 2 to 8 bits, got " + std::to_string(bits));
  int qmax = (1 << (bits - 1)) - 1;
  float max_abs = 0;
  for (float v : w) max_abs = std::max(max_abs, std::fabs(v));
  float scale = max_abs > 0 ? max_abs / static_cast<float>(qmax) : 0.0f;
  for (size_t i = 0; i < w.size(); ++i) {
    long q = scale > 0 ? std::lround(w[i] / scale) : 0;  // lround: half away from zero
    codes[i] = static_cast<int8_t>(std::clamp<long>(q, -qmax, qmax));
  }
  return {scale, scale, 0.0f};
}

double reconstruction_error(std::span<const float> w, std::span<const int8_t> codes, const ScalePair& s) {
  double e = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    double r = codes[i] > 0 ? codes[i] * static_cast<double>(s.positive)
                            : codes[i] * static_cast<double>(s.negative);
    double d = static_cast<double>(w[i]) - r;
    e += d * d;
  }
  return e;
}

}  // namespace tern::quant
