#include "tern/accumulation.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <map>
#include <tuple>
#include <utility>

#include "kernels/cpu_features.h"
#include "numerics/accumulation_kernels.h"
#include "tern/error.h"
#include "tern/thread_pool.h"

namespace tern::accum {
namespace {

void check_mantissa(int m, int max, const char* what) {
  check(m >= 1 && m <= max, std::string(what) + ": mantissa bits must be in 1.." + std::to_string(max) + ", got " +
                                std::to_string(m));
}

// s rounded to 52 - shift mantissa bits, where err is the (exact) amount by which s missed the
// value to round: only its sign matters, and only when s is exactly halfway between two m-bit
// values (then s itself was rounded and the exact value lies on err's side of the tie).
inline double round_bits(double s, double err, int shift) {
  if (shift == 0 || std::isnan(s)) return s;
  uint64_t u = std::bit_cast<uint64_t>(s);
  const uint64_t drop = (uint64_t{1} << shift) - 1, half = uint64_t{1} << (shift - 1);
  if ((u & drop) == half && err != 0) u += std::signbit(err) == std::signbit(s) ? 1 : ~uint64_t{0};
  u += half - 1 + ((u >> shift) & 1);  // ties to even; a carry moves into the exponent
  return std::bit_cast<double>(u & ~drop);
}

inline double add_rounded_unchecked(double a, double b, int shift) {
  const double s = a + b;
  const double bb = s - a;
  const double err = (a - (s - bb)) + (b - bb);  // TwoSum: a + b = s + err exactly
  return round_bits(s, err, shift);
}

double accumulate_unchecked(const double* terms, int64_t n, int m, int64_t chunk) {
  const int shift = kDoubleMantissaBits - m;
  const bool chunked = chunk > 0 && chunk < n;
  const int64_t step = chunked ? chunk : n;
  double total = 0;
  for (int64_t begin = 0; begin < n; begin += step) {
    const int64_t end = std::min(n, begin + step);
    double part = 0;
    for (int64_t i = begin; i < end; ++i) part = add_rounded_unchecked(part, terms[i], shift);
    total = chunked ? add_rounded_unchecked(total, part, shift) : part;
  }
  return total;
}

bool use_avx512() { return kernels::active_isa() == kernels::Isa::kAvx512; }

// ---- Monte-Carlo ensemble ----

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// xoshiro256**, one stream per (seed, trial).
class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) {
    uint64_t x = seed ^ splitmix64(stream);
    for (uint64_t& s : s_) s = splitmix64(x);
  }
  uint64_t next() {
    const uint64_t result = std::rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = std::rotl(s_[3], 45);
    return result;
  }
  double symmetric() { return static_cast<double>(next() >> 11) * 0x1.0p-52 - 1.0; }  // [-1, 1)

 private:
  uint64_t s_[4];
};

// N(0, 1) pairs (Marsaglia's polar method).
void fill_normal(Rng& rng, double* out, int64_t n) {
  for (int64_t i = 0; i < n; i += 2) {
    double u, v, s;
    do {
      u = rng.symmetric();
      v = rng.symmetric();
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double f = std::sqrt(-2.0 * std::log(s) / s);
    out[i] = u * f;
    if (i + 1 < n) out[i + 1] = v * f;
  }
}

void fill_terms(double* out, int64_t n, TermDistribution dist, uint64_t seed, uint64_t trial, std::vector<double>& scratch) {
  Rng rng(seed, trial);
  fill_normal(rng, out, n);
  if (dist == TermDistribution::kProduct) {
    scratch.resize(static_cast<size_t>(n));
    fill_normal(rng, scratch.data(), n);
    for (int64_t i = 0; i < n; ++i) out[i] *= scratch[static_cast<size_t>(i)];
  }
}

// The exact sum to double precision: Neumaier's compensated summation.
double compensated_sum(const double* x, int64_t n) {
  double s = 0, c = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double t = s + x[i];
    c += std::abs(s) >= std::abs(x[i]) ? (s - t) + x[i] : (x[i] - t) + s;
    s = t;
  }
  return s + c;
}

constexpr int64_t kMaxTerms = int64_t{1} << 26;  // per thread, n doubles are held at once

void check_vrr_args(int64_t n, int64_t chunk, const VrrOptions& o) {
  check(n >= 1 && n <= kMaxTerms, "accumulation length n must be in 1.." + std::to_string(kMaxTerms) + ", got " +
                                      std::to_string(n));
  check(chunk >= 0, "chunk size must be >= 0 (0: unchunked), got " + std::to_string(chunk));
  check(o.trials >= 2 && o.trials <= (int64_t{1} << 30), "trials must be in 2..2^30, got " + std::to_string(o.trials));
}

// Ratio estimate sum x / sum y over the trials with its delta-method standard error.
std::pair<double, double> ratio_estimate(const std::vector<double>& x, const std::vector<double>& y) {
  const double trials = static_cast<double>(x.size());
  double sx = 0, sy = 0;
  for (size_t t = 0; t < x.size(); ++t) {
    sx += x[t];
    sy += y[t];
  }
  const double r = sx / sy;
  double var = 0;
  for (size_t t = 0; t < x.size(); ++t) var += (x[t] - r * y[t]) * (x[t] - r * y[t]);
  var /= trials - 1;
  return {r, std::sqrt(var / trials) / (sy / trials)};
}

VrrEstimate estimate(const std::vector<double>& exact, const double* rounded, int64_t stride, int m) {
  const size_t trials = exact.size();
  std::vector<double> exact2(trials), diff(trials), error2(trials);
  for (size_t t = 0; t < trials; ++t) {
    const double s = exact[t], a = rounded[static_cast<int64_t>(t) * stride];
    exact2[t] = s * s;
    diff[t] = (a - s) * (a + s);  // a^2 - s^2 without cancellation when a ~ s
    error2[t] = (a - s) * (a - s);
  }
  VrrEstimate e;
  e.mantissa_bits = m;
  e.trials = static_cast<int64_t>(trials);
  auto [lost, lost_se] = ratio_estimate(diff, exact2);
  e.vrr = 1.0 + lost;
  e.std_error = lost_se;
  std::tie(e.error_ratio, e.error_std_error) = ratio_estimate(error2, exact2);
  return e;
}

// VRR curves over m in [m_lo, m_hi] for several chunk sizes, all from the same draws.
std::vector<std::vector<VrrEstimate>> vrr_curves(int64_t n, int m_lo, int m_hi, const std::vector<int64_t>& chunks,
                                                 const VrrOptions& o) {
  const int lanes = m_hi - m_lo + 1;
  const int64_t trials = o.trials;
  const size_t per_trial = chunks.size() * static_cast<size_t>(lanes);
  std::vector<double> exact(static_cast<size_t>(trials)), rounded(static_cast<size_t>(trials) * per_trial);
  std::vector<int> ms(static_cast<size_t>(lanes));
  for (int l = 0; l < lanes; ++l) ms[static_cast<size_t>(l)] = m_lo + l;
  const bool avx512 = use_avx512();
  ThreadPool::global().parallel_for(trials, [&](int64_t begin, int64_t end) {
    std::vector<double> terms(static_cast<size_t>(n)), scratch;
    for (int64_t t = begin; t < end; ++t) {
      fill_terms(terms.data(), n, o.terms, o.seed, static_cast<uint64_t>(t), scratch);
      exact[static_cast<size_t>(t)] = compensated_sum(terms.data(), n);
      for (size_t c = 0; c < chunks.size(); ++c)
        for (int l = 0; l < lanes; l += detail::kMaxLanes) {
          const int count = std::min(detail::kMaxLanes, lanes - l);
          double* out = rounded.data() + static_cast<size_t>(t) * per_trial + c * static_cast<size_t>(lanes) +
                        static_cast<size_t>(l);
          if (avx512) detail::accumulate_lanes_avx512(terms.data(), n, chunks[c], ms.data() + l, count, out);
          else detail::accumulate_lanes_generic(terms.data(), n, chunks[c], ms.data() + l, count, out);
        }
    }
  });
  std::vector<std::vector<VrrEstimate>> curves(chunks.size());
  for (size_t c = 0; c < chunks.size(); ++c)
    for (int l = 0; l < lanes; ++l)
      curves[c].push_back(estimate(exact, rounded.data() + c * static_cast<size_t>(lanes) + static_cast<size_t>(l),
                                   static_cast<int64_t>(per_trial), m_lo + l));
  return curves;
}

// Minimal widths for several chunk sizes from one set of draws.
std::vector<int> min_bits(int64_t n, const std::vector<int64_t>& chunks, const MantissaSearch& search) {
  if (search.estimator == Estimator::kAnalytic) {
    std::vector<int> result;
    for (int64_t chunk : chunks) {
      // The analytic error falls by about 4x per bit; widths whose error is 10^-6 of the cutoff's
      // pass, and so does every wider one.
      int highest_failure = 0;
      for (int m = 1; m <= kDoubleMantissaBits; ++m) {
        const AnalyticVrr a = analytic_vrr(n, m, chunk, search.vrr.terms);
        VrrEstimate e;
        e.mantissa_bits = m;
        e.vrr = a.vrr;
        e.error_ratio = a.error_ratio;
        if (!search.criterion.accepts(e, n)) highest_failure = m;
        else if (static_cast<double>(n) * a.error_ratio < 1e-6 * std::log(search.criterion.cutoff)) break;
      }
      check(highest_failure < kDoubleMantissaBits,
            "no accumulator up to 52 mantissa bits meets " + search.criterion.name() + " for n = " + std::to_string(n));
      result.push_back(highest_failure + 1);
    }
    return result;
  }
  const int top = std::min(kDoubleMantissaBits, static_cast<int>(std::bit_width(static_cast<uint64_t>(n))) + 12);
  auto low = vrr_curves(n, 1, top, chunks, search.vrr);
  std::vector<int> result;
  for (size_t c = 0; c < chunks.size(); ++c) {
    std::vector<VrrEstimate> curve = low[c];
    if (!search.criterion.accepts(curve.back(), n) && top < kDoubleMantissaBits) {
      auto high = vrr_curves(n, top + 1, kDoubleMantissaBits, {chunks[c]}, search.vrr);
      curve.insert(curve.end(), high[0].begin(), high[0].end());
    }
    int highest_failure = 0;
    for (const VrrEstimate& e : curve)
      if (!search.criterion.accepts(e, n)) highest_failure = e.mantissa_bits;
    check(highest_failure < kDoubleMantissaBits,
          "no accumulator up to 52 mantissa bits meets " + search.criterion.name() + " for n = " + std::to_string(n));
    result.push_back(highest_failure + 1);
  }
  return result;
}

// ---- layers ----

int64_t product(const Shape& s, size_t from, size_t to) {
  int64_t p = 1;
  for (size_t i = from; i < to; ++i) p *= s[i];
  return p;
}

// The most kernel taps (of k, spaced by dilation d) that one input position meets when the
// kernel moves by stride s: the length of the input-gradient sum along one axis.
int64_t taps_per_input(int64_t k, int64_t s, int64_t d) {
  int64_t best = 0;
  for (int64_t r = 0; r < s; ++r) {
    int64_t count = 0;
    for (int64_t t = 0; t < k; ++t) count += (t * d) % s == r;
    best = std::max(best, count);
  }
  return best;
}

bool is_graph_input(const Graph& g, ValueId id) { return std::find(g.inputs.begin(), g.inputs.end(), id) != g.inputs.end(); }

}  // namespace

// ---- rounding ----

double round_to_mantissa(double x, int mantissa_bits) {
  check_mantissa(mantissa_bits, kDoubleMantissaBits, "round_to_mantissa");
  return round_bits(x, 0.0, kDoubleMantissaBits - mantissa_bits);
}

float round_to_mantissa(float x, int mantissa_bits) {
  check_mantissa(mantissa_bits, kFloatMantissaBits, "round_to_mantissa (float)");
  const int shift = kFloatMantissaBits - mantissa_bits;
  if (shift == 0 || std::isnan(x)) return x;
  uint32_t u = std::bit_cast<uint32_t>(x);
  const uint32_t drop = (uint32_t{1} << shift) - 1, half = uint32_t{1} << (shift - 1);
  u += half - 1 + ((u >> shift) & 1);
  return std::bit_cast<float>(u & ~drop);
}

double add_rounded(double a, double b, int mantissa_bits) {
  check_mantissa(mantissa_bits, kDoubleMantissaBits, "add_rounded");
  return add_rounded_unchecked(a, b, kDoubleMantissaBits - mantissa_bits);
}

double accumulate(std::span<const double> terms, int mantissa_bits, int64_t chunk) {
  check_mantissa(mantissa_bits, kDoubleMantissaBits, "accumulate");
  check(chunk >= 0, "accumulate: chunk size must be >= 0 (0: unchunked), got " + std::to_string(chunk));
  return accumulate_unchecked(terms.data(), static_cast<int64_t>(terms.size()), mantissa_bits, chunk);
}

namespace detail {

void accumulate_lanes_generic(const double* terms, int64_t n, int64_t chunk, const int* mantissa_bits, int lanes,
                              double* out) {
  for (int l = 0; l < lanes; ++l) out[l] = accumulate_unchecked(terms, n, mantissa_bits[l], chunk);
}

// Row by row, a chunk of k at a time across the whole row: the same additions in the same order
// per element as the reference, with B read row-wise.
void gemm_rows_generic(const float* a, const float* b, float* c, int64_t row_begin, int64_t row_end, int64_t N,
                       int64_t K, int mantissa_bits, int64_t chunk) {
  const int shift = kDoubleMantissaBits - mantissa_bits;
  const bool chunked = chunk > 0 && chunk < K;
  const int64_t step = chunked ? chunk : K;
  std::vector<double> total(static_cast<size_t>(N)), part(static_cast<size_t>(N));
  for (int64_t i = row_begin; i < row_end; ++i) {
    std::fill(total.begin(), total.end(), 0.0);
    for (int64_t begin = 0; begin < K; begin += step) {
      const int64_t end = std::min(K, begin + step);
      std::fill(part.begin(), part.end(), 0.0);
      for (int64_t k = begin; k < end; ++k) {
        const double av = a[i * K + k];
        const float* brow = b + k * N;
        for (int64_t j = 0; j < N; ++j)
          part[static_cast<size_t>(j)] = add_rounded_unchecked(part[static_cast<size_t>(j)], av * brow[j], shift);
      }
      for (int64_t j = 0; j < N; ++j)
        total[static_cast<size_t>(j)] =
            chunked ? add_rounded_unchecked(total[static_cast<size_t>(j)], part[static_cast<size_t>(j)], shift)
                    : part[static_cast<size_t>(j)];
    }
    for (int64_t j = 0; j < N; ++j) c[i * N + j] = static_cast<float>(total[static_cast<size_t>(j)]);
  }
}

}  // namespace detail

// ---- Monte-Carlo VRR ----

TermDistribution parse_term_distribution(const std::string& name) {
  if (name == "normal") return TermDistribution::kNormal;
  if (name == "product") return TermDistribution::kProduct;
  throw Error("term distribution '" + name + "': expected normal or product");
}

const char* term_distribution_name(TermDistribution d) { return d == TermDistribution::kNormal ? "normal" : "product"; }

Estimator parse_estimator(const std::string& name) {
  if (name == "analytic") return Estimator::kAnalytic;
  if (name == "monte-carlo") return Estimator::kMonteCarlo;
  throw Error("VRR estimator '" + name + "': expected analytic or monte-carlo");
}

const char* estimator_name(Estimator e) { return e == Estimator::kAnalytic ? "analytic" : "monte-carlo"; }

VrrEstimate variance_retention_ratio(int64_t n, int mantissa_bits, int64_t chunk, const VrrOptions& options) {
  return vrr_curve(n, mantissa_bits, mantissa_bits, chunk, options)[0];
}

std::vector<VrrEstimate> vrr_curve(int64_t n, int m_lo, int m_hi, int64_t chunk, const VrrOptions& options) {
  check_mantissa(m_lo, kDoubleMantissaBits, "vrr_curve");
  check_mantissa(m_hi, kDoubleMantissaBits, "vrr_curve");
  check(m_lo <= m_hi, "vrr_curve: empty mantissa range " + std::to_string(m_lo) + ".." + std::to_string(m_hi));
  check_vrr_args(n, chunk, options);
  return vrr_curves(n, m_lo, m_hi, {chunk}, options)[0];
}

bool MantissaCriterion::accepts(const VrrEstimate& e, int64_t n) const {
  switch (kind) {
    case Kind::kErrorVariance: return static_cast<double>(n) * e.error_ratio < std::log(cutoff);
    case Kind::kVarianceLost: return static_cast<double>(n) * (1.0 - e.vrr) < std::log(cutoff);
    case Kind::kRetention: return e.vrr >= 1.0 - epsilon;
  }
  return false;
}

std::string MantissaCriterion::name() const {
  char buf[64];
  switch (kind) {
    case Kind::kErrorVariance: std::snprintf(buf, sizeof buf, "error-variance:%g", cutoff); break;
    case Kind::kVarianceLost: std::snprintf(buf, sizeof buf, "variance-lost:%g", cutoff); break;
    case Kind::kRetention: std::snprintf(buf, sizeof buf, "retention:%g", epsilon); break;
  }
  return buf;
}

MantissaCriterion parse_criterion(const std::string& text) {
  const size_t colon = text.find(':');
  const std::string kind = text.substr(0, colon);
  MantissaCriterion c;
  double value = 0;
  const bool has_value = colon != std::string::npos;
  if (has_value) {
    const std::string v = text.substr(colon + 1);
    char* end = nullptr;
    value = std::strtod(v.c_str(), &end);
    check(!v.empty() && end && *end == '\0' && std::isfinite(value), "criterion '" + text + "': '" + v + "' is not a number");
  }
  if (kind == "error-variance" || kind == "variance-lost") {
    c.kind = kind == "error-variance" ? MantissaCriterion::Kind::kErrorVariance : MantissaCriterion::Kind::kVarianceLost;
    if (has_value) {
      check(value > 1, "criterion '" + text + "': the cutoff must be > 1");
      c.cutoff = value;
    }
  } else if (kind == "retention") {
    c.kind = MantissaCriterion::Kind::kRetention;
    if (has_value) {
      check(value > 0 && value < 1, "criterion '" + text + "': epsilon must be in (0, 1)");
      c.epsilon = value;
    }
  } else {
    throw Error("criterion '" + text + "': expected error-variance[:CUTOFF], variance-lost[:CUTOFF] or retention[:EPS]");
  }
  return c;
}

int min_mantissa_bits(int64_t n, int64_t chunk, const MantissaSearch& search) {
  check_vrr_args(n, chunk, search.vrr);
  return min_bits(n, {chunk}, search)[0];
}

// ---- layers ----

std::vector<LayerAccumulation> layer_accumulation(const Graph& graph, int64_t batch, int64_t chunk,
                                                  const MantissaSearch& search) {
  check(batch >= 1, "batch must be >= 1, got " + std::to_string(batch));
  check(chunk >= 0, "chunk size must be >= 0 (0: unchunked), got " + std::to_string(chunk));
  std::vector<LayerAccumulation> layers;
  for (const Node& node : graph.nodes) {
    if (node.op != OpType::kConv && node.op != OpType::kGemm && node.op != OpType::kMatMul) continue;
    if (node.inputs.size() < 2 || !graph.is_constant(node.inputs[1])) continue;
    const std::string who = graph.source + ": node '" + node.name + "'";
    const Shape& x = graph.value(node.inputs[0]).shape;
    const Shape& w = graph.value(node.inputs[1]).shape;
    const Shape& y = graph.value(node.outputs[0]).shape;
    LayerAccumulation l;
    l.node = node.name;
    l.op = to_string(node.op);
    l.input_gradient = !is_graph_input(graph, node.inputs[0]);
    if (node.op == OpType::kConv) {
      const auto& a = node.attr<ConvAttrs>();
      check(w.size() >= 3 && y.size() == w.size(), who + ": unexpected Conv weight/output ranks");
      const size_t spatial = w.size() - 2;
      const int64_t groups = std::max<int64_t>(1, a.group);
      l.forward_n = product(w, 1, w.size());
      l.backward_n = w[0] / groups;
      for (size_t d = 0; d < spatial; ++d) {
        const int64_t s = d < a.strides.size() ? a.strides[d] : 1, dil = d < a.dilations.size() ? a.dilations[d] : 1;
        l.backward_n *= taps_per_input(w[2 + d], std::max<int64_t>(1, s), std::max<int64_t>(1, dil));
      }
      l.weight_grad_n = batch;
      for (size_t d = 0; d < spatial; ++d) {
        check(y[2 + d] > 0, who + ": output spatial size unknown");
        l.weight_grad_n *= y[2 + d];
      }
    } else if (node.op == OpType::kGemm) {
      const auto& a = node.attr<GemmAttrs>();
      check(x.size() == 2 && y.size() == 2, who + ": Gemm input and output must be 2-D");
      l.forward_n = a.trans_a ? x[0] : x[1];
      l.backward_n = y[1];
      l.weight_grad_n = batch;
    } else {
      check(x.size() >= 2 && w.size() >= 2, who + ": MatMul with a constant weight needs 2-D or higher operands");
      l.forward_n = w[w.size() - 2];
      l.backward_n = w[w.size() - 1];
      l.weight_grad_n = batch;  // the leading dimension is the batch; rows per image multiply in
      for (size_t d = 1; d + 1 < x.size(); ++d) {
        check(x[d] > 0, who + ": input dimension " + std::to_string(d) + " unknown");
        l.weight_grad_n *= x[d];
      }
    }
    check(l.forward_n > 0 && l.backward_n > 0, who + ": accumulation length unknown");
    layers.push_back(std::move(l));
  }
  // One search per distinct length (unchunked and chunked from the same draws).
  std::map<int64_t, std::pair<int, int>> widths;
  for (const LayerAccumulation& l : layers)
    for (int64_t n : {l.forward_n, l.backward_n, l.weight_grad_n}) widths[n] = {0, 0};
  for (auto& [n, mm] : widths) {
    std::vector<int64_t> chunks = {0};
    if (chunk > 0 && chunk < n) chunks.push_back(chunk);
    std::vector<int> r = min_bits(n, chunks, search);
    mm = {r[0], r.size() > 1 ? r[1] : r[0]};
  }
  for (LayerAccumulation& l : layers) {
    std::tie(l.forward_m, l.forward_m_chunked) = widths.at(l.forward_n);
    std::tie(l.backward_m, l.backward_m_chunked) = widths.at(l.backward_n);
    std::tie(l.weight_grad_m, l.weight_grad_m_chunked) = widths.at(l.weight_grad_n);
  }
  return layers;
}

// ---- GEMM ----

namespace {

void check_gemm(const float* a, const float* b, const float* c, int64_t M, int64_t N, int64_t K, int m, int64_t chunk) {
  check_mantissa(m, kFloatMantissaBits, "gemm_reduced_accumulation");
  check(M >= 0 && N >= 0 && K >= 0, "gemm_reduced_accumulation: negative size");
  check(chunk >= 0, "gemm_reduced_accumulation: chunk size must be >= 0 (0: unchunked)");
  check((M == 0 || N == 0 || c) && (M == 0 || K == 0 || a) && (N == 0 || K == 0 || b),
        "gemm_reduced_accumulation: null matrix");
}

}  // namespace

void gemm_reduced_accumulation_reference(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                                         int mantissa_bits, int64_t chunk) {
  check_gemm(a, b, c, M, N, K, mantissa_bits, chunk);
  std::vector<double> products(static_cast<size_t>(K));
  for (int64_t i = 0; i < M; ++i)
    for (int64_t j = 0; j < N; ++j) {
      for (int64_t k = 0; k < K; ++k)
        products[static_cast<size_t>(k)] = static_cast<double>(a[i * K + k]) * static_cast<double>(b[k * N + j]);
      c[i * N + j] = static_cast<float>(accumulate_unchecked(products.data(), K, mantissa_bits, chunk));
    }
}

void gemm_reduced_accumulation(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                               int mantissa_bits, int64_t chunk) {
  check_gemm(a, b, c, M, N, K, mantissa_bits, chunk);
  if (M == 0 || N == 0) return;
  // At least ~256k multiply-adds per task, so small products stay on the calling thread.
  const int64_t work_per_row = std::max<int64_t>(1, N * std::max<int64_t>(K, 1));
  if (!use_avx512()) {
    ThreadPool::global().parallel_for(
        M, [&](int64_t r0, int64_t r1) { detail::gemm_rows_generic(a, b, c, r0, r1, N, K, mantissa_bits, chunk); },
        std::max<int64_t>(1, (int64_t{1} << 18) / work_per_row));
    return;
  }
  // Tasks of up to 16 rows x 64 columns (each streams its B panel once per block of K); narrower
  // ones when that leaves the pool's threads without work.
  const int64_t threads = ThreadPool::global().size();
  int64_t rows = 16, cols = 64;
  auto tasks = [&] { return ((M + rows - 1) / rows) * ((N + cols - 1) / cols); };
  if (tasks() < 2 * threads) cols = 16;
  if (tasks() < 2 * threads) rows = 4;
  const int64_t row_tasks = (M + rows - 1) / rows, col_tasks = (N + cols - 1) / cols;
  const int64_t work_per_task = rows * std::min(N, cols) * std::max<int64_t>(K, 1);
  ThreadPool::global().parallel_for(
      row_tasks * col_tasks,
      [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t r = t / col_tasks, q = t % col_tasks;
          detail::gemm_tile_avx512(a, b, c, r * rows, std::min(M, (r + 1) * rows), q * cols, std::min(N, (q + 1) * cols),
                                   N, K, mantissa_bits, chunk);
        }
      },
      std::max<int64_t>(1, (int64_t{1} << 18) / work_per_task));
}

}  // namespace tern::accum
