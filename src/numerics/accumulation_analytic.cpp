// The analytic variance retention ratio (accumulation.h, docs/accumulation.md "Analytic model").
//
// Step i of an n-term sum adds term t_i (unit variance) to the computed running sum S, taken as
// N(0, V_(i-1)) with V the variance the computed sum has kept so far (so a sum that stagnates
// stops growing in the model too). With |S| in the binade [2^e, 2^(e+1)), S lies on the grid of
// the accumulator's quantum u = 2^(e - m), and so does S + t after rounding: the computed
// increment is t rounded to a multiple of u, Q_u(t). That holds both swamping regimes of the
// paper: full (|t| < u / 2: Q = 0, the whole term is lost) and partial (the bits of t below u are
// lost). Per step, over the binades of S,
//   V_i     = V_(i-1) + E[Q_u(t)^2]          (variance kept: the computed sum's)
//   lost_i  = E[(Q_u(t) - t)^2]              (the error's variance, information lost)
//   q_i     = P(|t| < u / 2)                 (full swamping)
// (the first term, added to 0, is rounded to m bits of its own). The error terms of different
// steps are uncorrelated to first order (each is a function of its own t given the grid).
// Chunks of C: each chunk sum as above; the ceil(n / C) chunk sums are then added the same way as
// normal terms of the chunks' computed variance.
#include <cmath>
#include <map>
#include <numbers>
#include <utility>

#include "tern/accumulation.h"
#include "tern/error.h"

namespace tern::accum {

namespace {

// P(|Z| < x) for Z ~ N(0, 1).
double normal_within(double x) { return std::erf(x / std::numbers::sqrt2); }

// Moments of a unit-variance term rounded to the grid u Z: (E[Q_u(t)^2], E[(Q_u(t) - t)^2],
// P(|t| < u / 2)). On bins [(k - 1/2) u, (k + 1/2) u): with P_k their probability and M_k the
// first moment E[t; bin k], E[Q^2] = sum (k u)^2 P_k and E[Q t] = sum k u M_k, so
// E[(Q - t)^2] = E[Q^2] - 2 E[Q t] + 1. A grid finer than 1/32 of the spread takes Sheppard's
// approximation (error u^2 / 12, uniform within the bin).
class TermGrid {
 public:
  struct Moments {
    double kept = 1.0, lost = 0.0, swamped = 0.0;
  };
  explicit TermGrid(TermDistribution d) : d_(d) {}

  const Moments& at(int k) {  // u = 2^k
    auto it = cache_.find(k);
    if (it != cache_.end()) return it->second;
    return cache_[k] = compute(std::ldexp(1.0, k));
  }

 private:
  // P(0 <= t < x) and E[t; 0 <= t < x] for x >= 0; `previous` = (x0, its probability) with
  // x0 <= x lets the product's probability integral run from x0 only.
  std::pair<double, double> half(double x, std::pair<double, double> previous = {0.0, 0.0}) const {
    if (d_ == TermDistribution::kNormal)
      return {0.5 * normal_within(x), (1.0 - std::exp(-0.5 * x * x)) / std::sqrt(2.0 * std::numbers::pi)};
    // A product of two independent N(0, 1): density K0(|z|) / pi, so the first moment is
    // (1 - x K1(x)) / pi (d/dz (-z K1(z)) = z K0(z)) and the probability an integral of K0.
    if (x > 60.0) return {0.5, 1.0 / std::numbers::pi};
    const double first = x > 0.0 ? (1.0 - x * std::cyl_bessel_k(1.0, x)) / std::numbers::pi : 0.0;
    const auto [x0, p0] = previous;
    const double p = x0 > 0.0 ? p0 + k0_between(x0, x) / std::numbers::pi : k0_integral(x) / std::numbers::pi;
    return {p, first};
  }

  // int_lo^hi K0 for 0 < lo <= hi, on panels at most 1 wide (K0 is smooth away from 0).
  static double k0_between(double lo, double hi) {
    double sum = 0.0;
    for (double a = lo; a < hi;) {
      const double b = std::min(hi, a + 1.0);
      sum += gauss_legendre_k0(a, b);
      a = b;
    }
    return sum;
  }

  static double gauss_legendre_k0(double lo, double hi) {
    static constexpr double kX[8] = {0.0950125098376374, 0.2816035507792589, 0.4580167776572274, 0.6178762444026438,
                                     0.7554044083550030, 0.8656312023878318, 0.9445750230732326, 0.9894009349916499};
    static constexpr double kW[8] = {0.1894506104550685, 0.1826034150449236, 0.1691565193950025, 0.1495959888165767,
                                     0.1246289712555339, 0.0951585116824928, 0.0622535239386479, 0.0271524594117541};
    const double mid = 0.5 * (lo + hi), h = 0.5 * (hi - lo);
    double sum = 0.0;
    for (int k = 0; k < 8; ++k) sum += kW[k] * h * (std::cyl_bessel_k(0.0, mid - h * kX[k]) + std::cyl_bessel_k(0.0, mid + h * kX[k]));
    return sum;
  }

  // int_0^x K0: panels at most 1 wide down to 1, then halving towards 0 (K0 has a log singularity
  // there); below the last panel K0(z) ~ -ln(z / 2) - gamma.
  static double k0_integral(double x) {
    double sum = 0.0, hi = x;
    if (hi > 1.0) {
      sum += k0_between(1.0, hi);
      hi = 1.0;
    }
    const double floor = hi * 1e-12;
    for (; hi > floor; hi *= 0.5) sum += gauss_legendre_k0(0.5 * hi, hi);
    return sum + hi * (1.0 - std::numbers::egamma - std::log(0.5 * hi));
  }

  Moments compute(double u) const {
    Moments m;
    if (u < 1.0 / 32.0) {
      m.kept = 1.0 + u * u / 12.0;
      m.lost = u * u / 12.0;
      m.swamped = 2.0 * half(0.5 * u).first;
      return m;
    }
    const double tail = d_ == TermDistribution::kNormal ? 12.0 : 60.0;  // beyond: no probability left
    double q2 = 0.0, qt = 0.0;
    auto [p_lo, m_lo] = half(0.5 * u);
    m.swamped = 2.0 * p_lo;
    for (int64_t k = 1; (static_cast<double>(k) - 0.5) * u < tail; ++k) {
      const auto [p_hi, m_hi] = half((static_cast<double>(k) + 0.5) * u, {(static_cast<double>(k) - 0.5) * u, p_lo});
      const double ku = static_cast<double>(k) * u;
      q2 += 2.0 * ku * ku * (p_hi - p_lo);  // both signs
      qt += 2.0 * ku * (m_hi - m_lo);
      p_lo = p_hi;
      m_lo = m_hi;
    }
    m.kept = q2;
    m.lost = std::max(0.0, q2 - 2.0 * qt + 1.0);
    return m;
  }

  TermDistribution d_;
  std::map<int, Moments> cache_;
};

struct Totals {
  double kept = 0.0;     // the computed sum's variance
  double lost = 0.0;     // the error's variance
  double swamped = 0.0;  // expected number of terms lost whole
};

// Binades e of |X| for X ~ N(0, v) that carry probability: floor(log2 sqrt v) - 40 .. + 8.
template <typename F>
void over_binades(double v, F&& f) {
  const double sd = std::sqrt(v);
  const int centre = static_cast<int>(std::floor(std::log2(sd)));
  double below = normal_within(std::ldexp(1.0, centre - 40) / sd);
  for (int e = centre - 40; e <= centre + 8; ++e) {
    const double upto = normal_within(std::ldexp(1.0, e + 1) / sd);
    f(e, upto - below);
    below = upto;
  }
}

// The n steps of one sum of unit-variance terms at m bits. Past step 1024, runs over which the
// step count grows by at most 1/512 take the first step's moments.
Totals sum_steps(int64_t n, int m, TermGrid& grid) {
  Totals t;
  // Step 1: the first term rounded to m bits of its own (a normal term's binades).
  over_binades(1.0, [&](int e, double p) { t.lost += p * std::ldexp(1.0, 2 * (e - m)) / 12.0; });
  t.kept = 1.0 + t.lost;
  for (int64_t i = 2; i <= n;) {
    const int64_t run = i <= 1024 ? 1 : std::min(n - i + 1, std::max<int64_t>(1, i / 512));
    TermGrid::Moments step{0.0, 0.0, 0.0};
    over_binades(t.kept, [&](int e, double p) {
      const TermGrid::Moments& g = grid.at(e - m);
      step.kept += p * g.kept;
      step.lost += p * g.lost;
      step.swamped += p * g.swamped;
    });
    const double r = static_cast<double>(run);
    t.kept += r * step.kept;
    t.lost += r * step.lost;
    t.swamped += r * step.swamped;
    i += run;
  }
  return t;
}

}  // namespace

AnalyticVrr analytic_vrr(int64_t n, int mantissa_bits, int64_t chunk, TermDistribution terms) {
  check(n >= 1, "analytic_vrr: n must be >= 1, got " + std::to_string(n));
  check(mantissa_bits >= 1 && mantissa_bits <= kDoubleMantissaBits,
        "analytic_vrr: mantissa bits must be in 1..52, got " + std::to_string(mantissa_bits));
  check(chunk >= 0, "analytic_vrr: chunk size must be >= 0 (0: unchunked), got " + std::to_string(chunk));
  TermGrid grid(terms);
  AnalyticVrr r;
  r.mantissa_bits = mantissa_bits;
  const double nd = static_cast<double>(n);
  if (chunk == 0 || chunk >= n) {
    const Totals t = sum_steps(n, mantissa_bits, grid);
    r.error_ratio = t.lost / nd;
    r.swamped = t.swamped / nd;
  } else {
    const int64_t full = n / chunk, rest = n % chunk, sums = full + (rest > 0);
    const Totals in = sum_steps(chunk, mantissa_bits, grid);
    const Totals last = rest > 0 ? sum_steps(rest, mantissa_bits, grid) : Totals{};
    const double lost_in = static_cast<double>(full) * in.lost + last.lost;
    const double kept_in = static_cast<double>(full) * in.kept + last.kept;
    // The chunk sums are near normal whatever the terms: the outer sum as one of normal terms,
    // each of the chunks' mean computed variance w (the model is scale-free in w).
    TermGrid normal(TermDistribution::kNormal);
    const Totals out = sum_steps(sums, mantissa_bits, normal);
    const double w = kept_in / static_cast<double>(sums);
    r.error_ratio = (lost_in + w * out.lost) / nd;
    r.swamped = (static_cast<double>(full) * in.swamped + last.swamped) / nd;
  }
  r.vrr = 1.0 - r.error_ratio;
  return r;
}

}  // namespace tern::accum
