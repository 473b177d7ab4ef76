// Reduced-precision accumulation (Sakr et al., ICLR 2019, "Accumulation bit-width scaling for
// ultra-low precision training of deep networks").
//
// An accumulator with m explicit mantissa bits (m = 52: double, m = 23: float) loses addends that
// are small next to the running sum ("swamping"). Over an ensemble of sums of n i.i.d. zero-mean
// terms this shows as a lower variance of the computed sum; the variance retention ratio
//
//   VRR(n, m) = Var(sum accumulated at m bits) / Var(exact sum)
//
// measures it. Chunked accumulation (sum chunks of C terms, then sum the chunk results, all at m
// bits) keeps the running sums shorter and retains more variance for the same m.
//
// Arithmetic model ("m bits"): every value the accumulator holds has a sign, the exponent range of
// IEEE double (subnormals included, at the quantum 2^(-1022-m)) and m explicit mantissa bits.
// Each addition acc + t is computed exactly and rounded once to m bits, to nearest, ties to even
// (the first term of a sum is rounded too: the accumulator starts at 0). Infinities and NaNs pass
// through unchanged. The functions below and docs/accumulation.md define and test this model.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tern/graph.h"

namespace tern::accum {

inline constexpr int kDoubleMantissaBits = 52;
inline constexpr int kFloatMantissaBits = 23;

// x rounded to nearest (ties to even) with `mantissa_bits` explicit mantissa bits, 1..52, in
// double's exponent range; m = 52 returns x. Throws Error for m outside 1..52.
double round_to_mantissa(double x, int mantissa_bits);
// The same inside float's exponent range (subnormals at the quantum 2^(-126-m)); m in 1..23.
float round_to_mantissa(float x, int mantissa_bits);

// round_to_mantissa(a + b) with a + b exact: a single rounding of the exact sum (no double
// rounding through the double result). The accumulator step of every function below.
double add_rounded(double a, double b, int mantissa_bits);

// Sequential sum of `terms` at m bits: acc = add_rounded(acc, t) from acc = 0. chunk > 0: each
// run of `chunk` consecutive terms is summed from 0 at m bits, and the chunk sums are added in
// order at m bits; chunk = 0 (or >= terms.size()) is the unchunked sum. Throws Error for m
// outside 1..52 or chunk < 0.
double accumulate(std::span<const double> terms, int mantissa_bits, int64_t chunk = 0);

// The terms of the Monte-Carlo ensemble: i.i.d., zero mean.
enum class TermDistribution {
  kNormal,   // N(0, 1)
  kProduct,  // w * x with w, x independent N(0, 1): a product of a weight and an activation
};
TermDistribution parse_term_distribution(const std::string& name);  // normal | product
const char* term_distribution_name(TermDistribution d);

struct VrrEstimate {
  int mantissa_bits = 0;
  double vrr = 1.0;        // sum over trials of s_m^2 / sum of s^2 (the variance of zero-mean sums)
  double std_error = 0.0;  // of vrr (delta method over the trials)
  // The variance of the accumulation error relative to the exact sum's: sum (s_m - s)^2 / sum s^2.
  // Where swamping only drops terms, this is 1 - VRR; rounding noise raises the computed variance
  // and can hide the loss from VRR (VRR ~ 1 with a large error), never from this ratio.
  double error_ratio = 0.0;
  double error_std_error = 0.0;
  int64_t trials = 0;
};

struct VrrOptions {
  int64_t trials = 256;  // sums in the ensemble, >= 2
  uint64_t seed = 1;     // trial t draws from its own stream of (seed, t): independent of threads
  TermDistribution terms = TermDistribution::kNormal;
};

// Monte-Carlo VRR of n-term sums at m bits (chunk as in accumulate): `trials` independent sums,
// each accumulated at m bits (s_m) and exactly (s: compensated double summation), over the same
// draws; VRR = sum s_m^2 / sum s^2. Deterministic for a seed; uses ThreadPool::global(). Throws
// Error for n < 1, m outside 1..52, chunk < 0 or trials < 2.
VrrEstimate variance_retention_ratio(int64_t n, int mantissa_bits, int64_t chunk, const VrrOptions& options = {});

// The same for every m in [m_lo, m_hi] at once, over the same draws (common random numbers, so
// the estimates are comparable across m); element i is m = m_lo + i.
std::vector<VrrEstimate> vrr_curve(int64_t n, int m_lo, int m_hi, int64_t chunk, const VrrOptions& options = {});

// The analytic model (docs/accumulation.md "Analytic model"): following the paper's approach, the
// probability that each addend is swamped by the running sum (taken as normal, of the variance of
// the terms so far) and the variance lost to full swamping (the whole addend) and to partial
// swamping (the bits below the accumulator's quantum), summed over the n additions; chunks of
// `chunk` terms, then their sums as normal terms. Derived under this file's arithmetic model: the
// paper's own equations are not in the seed texts (only its abstract), so this is a derivation in
// its spirit, not a transcription, cross-checked against the Monte-Carlo estimate in the tests.
// Deterministic; cost about n / 512 + 1024 evaluations of a few dozen erf values.
struct AnalyticVrr {
  int mantissa_bits = 0;
  double vrr = 1.0;          // variance retained: 1 - variance lost / the exact sum's variance
  double error_ratio = 0.0;  // the variance lost (the accumulation error's) / the sum's (= 1 - vrr):
                             // what the Monte-Carlo error ratio estimates
  double swamped = 0.0;      // the share of addends lost whole (full swamping)
};
// Throws Error for n < 1, m outside 1..52 or chunk < 0.
AnalyticVrr analytic_vrr(int64_t n, int mantissa_bits, int64_t chunk = 0,
                         TermDistribution terms = TermDistribution::kNormal);

// When is a mantissa width enough for n-term sums. With the sum's variance n (unit-variance
// terms), n (1 - VRR) and n * error_ratio are variances in units of one term's.
struct MantissaCriterion {
  enum class Kind {
    kErrorVariance,  // exp(n * error_ratio) < cutoff: the accumulation error's variance is below
                     // ln(cutoff) terms' (cutoff 50: 3.9 terms). The project's own: the criterion
                     // below with the lost variance measured as the error's variance, which
                     // rounding noise cannot offset in a Monte-Carlo estimate
    kVarianceLost,   // The paper's "normalized exponential variance lost" exp(n (1 - VRR)) < cutoff,
                     // cutoff 50 (as recalled: the seed text is the abstract only). The default.
                     // With the analytic estimate 1 - VRR is the variance lost, so the two agree;
                     // with Monte-Carlo VRR rounding noise offsets the loss (docs/accumulation.md)
    kRetention,      // VRR >= 1 - epsilon
  };
  Kind kind = Kind::kVarianceLost;
  double cutoff = 50.0;
  double epsilon = 0.01;

  bool accepts(const VrrEstimate& e, int64_t n) const;
  std::string name() const;  // "error-variance:50" | "variance-lost:50" | "retention:0.01"
};
// "error-variance[:CUTOFF]", "variance-lost[:CUTOFF]" (CUTOFF > 1) or "retention[:EPS]"
// (0 < EPS < 1). Throws Error naming the text otherwise.
MantissaCriterion parse_criterion(const std::string& text);

enum class Estimator {
  kAnalytic,    // analytic_vrr (the default: deterministic, no trials)
  kMonteCarlo,  // vrr_curve with `vrr` options
};
Estimator parse_estimator(const std::string& name);  // analytic | monte-carlo
const char* estimator_name(Estimator e);

struct MantissaSearch {
  Estimator estimator = Estimator::kAnalytic;
  VrrOptions vrr;  // Monte-Carlo trials and seed; the term distribution for both estimators
  MantissaCriterion criterion;
};

// The smallest m in 1..52 such that the estimated VRR(n, m') meets the criterion for m and for
// every m' > m (analytic: from analytic_vrr; Monte-Carlo: as follows) (VRR estimates are noisy where rounding noise and swamping compete; requiring all
// wider accumulators to pass makes the answer monotone in m). Widths above bit_width(n) + 12 are
// taken to pass without simulation when every width up to there passes (there the error's
// variance is below n^2 2^-2m < 2^-24 terms'). Throws Error when no width passes, or for bad
// arguments as variance_retention_ratio.
int min_mantissa_bits(int64_t n, int64_t chunk, const MantissaSearch& search = {});

// Accumulation lengths of one layer's three training GEMMs, and the minimal mantissa for each.
struct LayerAccumulation {
  std::string node, op;  // node name, "Conv" | "Gemm" | "MatMul"
  // Conv: forward  n = Cin/group * kh * kw
  //       backward n = Cout/group * taps_h * taps_w, taps = the most kernel taps one input position
  //                    meets along an axis (k for stride 1; ceil(k / s) for dilation 1)
  //       weight   n = batch * Hout * Wout
  // Gemm / MatMul [.., K] x [K, N]: forward K, backward N, weight gradient batch * (rows of x per image).
  int64_t forward_n = 0, backward_n = 0, weight_grad_n = 0;
  bool input_gradient = true;  // false when the layer reads a graph input (no backward GEMM in training)
  int forward_m = 0, backward_m = 0, weight_grad_m = 0;                  // unchunked
  int forward_m_chunked = 0, backward_m_chunked = 0, weight_grad_m_chunked = 0;  // chunk (= unchunked if 0)
};

// Every Conv, Gemm and MatMul node with a constant weight, in graph order. Dynamic dimensions
// count as `batch`. Minimal widths are computed once per distinct (n, chunk). Throws Error for
// batch < 1 or chunk < 0.
std::vector<LayerAccumulation> layer_accumulation(const Graph& graph, int64_t batch, int64_t chunk,
                                                  const MantissaSearch& search = {});

// Emulated reduced-precision GEMM for training: C[M][N] = sum_k A[M][K] * B[K][N] (row-major,
// contiguous). Each product is exact (in double); the running sum is held at m bits and rounded
// after every addition, in k order (chunk > 0: per chunk of K from 0, then the chunk sums in
// order), all as in accumulate(). The result is converted to float (exact unless outside float's
// range). m in 1..23. K = 0 gives zeros. Throws Error for m outside 1..23, negative sizes or
// chunk, or null pointers with non-empty sizes.
//
// gemm_reduced_accumulation_reference: plain loops (the oracle). gemm_reduced_accumulation: the
// same bits, vectorized across N (AVX-512 where the CPU has it, TERN_ISA respected) and split
// over rows on ThreadPool::global().
void gemm_reduced_accumulation_reference(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                                         int mantissa_bits, int64_t chunk);
void gemm_reduced_accumulation(const float* a, const float* b, float* c, int64_t M, int64_t N, int64_t K,
                               int mantissa_bits, int64_t chunk);

}  // namespace tern::accum
