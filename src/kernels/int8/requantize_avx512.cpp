// AVX-512 epilogue (requantize.h): 16 channels per vector, masked tails; the same operations in
// the same order as the reference (multiply then add, no FMA), so both round alike. The
// depthwise row kernel is the shared loop source, vectorized by the compiler.
#include <immintrin.h>

#include <vector>

#define REQUANT_SUFFIX _avx512_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// The functions below take N independent vectors and run each step on all of them (EACH: a loop
// over the N, unrolled) before the next step. A sigmoid or an erf is a chain of some 30 dependent
// operations (about 100 cycles); one vector at a time, the out-of-order window holds about two
// columns' chains, so the epilogue ran at its latency, not at the two vector operations a cycle
// Zen 4 can issue. N chains side by side fill the pipes; every lane still sees the same operations
// in the same order. Everything is forced inline so that the N-vector arrays live in registers.
#define EACH(i, N) _Pragma("GCC unroll 8") for (int i = 0; i < (N); ++i)
#define TERN_INLINE __attribute__((always_inline)) inline

// activation_math.h's functions on 16 lanes, bit for bit (no FMA; the polynomial in its order).
// Two steps take one instruction each where the scalar code takes several: n = round(x log2 e) by
// vrndscaleps (to nearest even, as the magic-number add and subtract round for |x log2 e| < 2^22),
// and p * 2^n by vscalefps (exact for the integers n in [-126, 127] that the clamp allows, as the
// multiply by 2^n built in the exponent bits is). In place, on N vectors.
template <int N>
TERN_INLINE void exp_approx16(__m512 (&x)[N]) {
  __m512 n[N], r[N], p[N];
  EACH(i, N) { x[i] = _mm512_min_ps(_mm512_max_ps(x[i], _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f)); }
  EACH(i, N) {
    n[i] = _mm512_roundscale_ps(_mm512_mul_ps(x[i], _mm512_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  EACH(i, N) { r[i] = _mm512_sub_ps(x[i], _mm512_mul_ps(n[i], _mm512_set1_ps(0.693359375f))); }
  EACH(i, N) { r[i] = _mm512_sub_ps(r[i], _mm512_mul_ps(n[i], _mm512_set1_ps(-2.12194440e-4f))); }
  EACH(i, N) { p[i] = _mm512_set1_ps(1.9875691500e-4f); }
  _Pragma("GCC unroll 16") for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    EACH(i, N) { p[i] = _mm512_add_ps(_mm512_mul_ps(p[i], r[i]), _mm512_set1_ps(c)); }
  EACH(i, N) {
    p[i] = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p[i], r[i]), r[i]), r[i]), _mm512_set1_ps(1.0f));
  }
  EACH(i, N) { x[i] = _mm512_scalef_ps(p[i], n[i]); }
}

// erf_approx on 16 lanes, its operations in its order: both branches, one selected per lane. In
// place, on N vectors.
template <int N>
TERN_INLINE void erf_approx16(__m512 (&x)[N]) {
  const __m512 one = _mm512_set1_ps(1.0f);
  __m512 a[N], z[N], p[N], t[N], q[N], big[N];
  __mmask16 is_small[N];
  EACH(i, N) {
    a[i] = _mm512_abs_ps(x[i]);
    z[i] = _mm512_mul_ps(x[i], x[i]);
    p[i] = _mm512_set1_ps(-6.218505441211164e-04f);
  }
  _Pragma("GCC unroll 16") for (const float c : {5.0351242534816265e-03f, -2.6793455705046654e-02f, 1.1282510310411453e-01f,
                        -3.761255443096161e-01f, 1.1283791065216064e+00f})
    EACH(i, N) { p[i] = _mm512_add_ps(_mm512_mul_ps(p[i], z[i]), _mm512_set1_ps(c)); }
  EACH(i, N) {
    is_small[i] = _mm512_cmp_ps_mask(a[i], _mm512_set1_ps(0.875f), _CMP_LT_OQ);
    t[i] = _mm512_div_ps(one, _mm512_mask_blend_ps(is_small[i], a[i], one));
    q[i] = _mm512_set1_ps(-1.9284633919596672e-02f);
  }
  _Pragma("GCC unroll 16") for (const float c : {1.457294374704361e-01f, -4.814735949039459e-01f, 8.963276147842407e-01f, -9.820159077644348e-01f,
                        5.272132754325867e-01f, 1.0364840179681778e-01f, -3.387681841850281e-01f, 1.3607642613351345e-02f,
                        5.625135898590088e-01f, 8.595283725298941e-05f})
    EACH(i, N) { q[i] = _mm512_add_ps(_mm512_mul_ps(q[i], t[i]), _mm512_set1_ps(c)); }
  EACH(i, N) { big[i] = _mm512_xor_ps(z[i], _mm512_set1_ps(-0.0f)); }
  exp_approx16<N>(big);
  EACH(i, N) {
    const __m512 b = _mm512_sub_ps(one, _mm512_mul_ps(big[i], q[i]));
    const __m512 magnitude = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a[i], _mm512_set1_ps(4.0f), _CMP_LT_OQ), one, b);
    // x < 0 ? -magnitude : magnitude (x = -0 is not below 0); a NaN x fails every compare.
    const __mmask16 negative = _mm512_cmp_ps_mask(x[i], _mm512_setzero_ps(), _CMP_LT_OQ);
    const __m512 large = _mm512_mask_xor_ps(magnitude, negative, magnitude, _mm512_set1_ps(-0.0f));
    const __m512 small = _mm512_mul_ps(x[i], p[i]);
    const __m512 r = _mm512_mask_blend_ps(is_small[i], large, small);
    x[i] = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x[i], x[i], _CMP_UNORD_Q), r, x[i]);
  }
}

// The fused activation, in place on N vectors.
template <Activation kAct, int N>
TERN_INLINE void activate16(__m512 (&v)[N], __m512 alpha, __m512 beta) {
  const __m512 one = _mm512_set1_ps(1.0f);
  if constexpr (kAct == Activation::kHardSigmoid || kAct == Activation::kHardSwish) {
    EACH(i, N) {
      const __m512 h = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(alpha, v[i]), beta), _mm512_setzero_ps()), one);
      v[i] = kAct == Activation::kHardSwish ? _mm512_mul_ps(v[i], h) : h;
    }
  } else if constexpr (kAct == Activation::kSigmoid || kAct == Activation::kSilu) {
    __m512 e[N];
    EACH(i, N) { e[i] = _mm512_xor_ps(v[i], _mm512_set1_ps(-0.0f)); }
    exp_approx16<N>(e);
    EACH(i, N) {
      const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e[i]));
      v[i] = kAct == Activation::kSilu ? _mm512_mul_ps(v[i], s) : s;
    }
  } else if constexpr (kAct == Activation::kGelu || kAct == Activation::kGeluMul) {
    __m512 t[N];
    EACH(i, N) { t[i] = kAct == Activation::kGelu ? _mm512_div_ps(v[i], alpha) : _mm512_mul_ps(v[i], alpha); }
    erf_approx16<N>(t);
    EACH(i, N) { v[i] = _mm512_mul_ps(_mm512_mul_ps(v[i], _mm512_add_ps(t[i], one)), _mm512_set1_ps(0.5f)); }
  }
}

// Columns side by side: 4 where the activation is a long chain (sigmoid, erf), 1 otherwise.
template <Activation kAct>
inline constexpr int kColumns = (kAct == Activation::kSigmoid || kAct == Activation::kSilu || kAct == Activation::kGelu ||
                                 kAct == Activation::kGeluMul) ? 4 : 1;

// The per-call constants, broadcast once.
struct Constants {
  __m512 lo, hi, lo2, hi2, inv, qlo, qhi, half, act_alpha, act_beta;
  __m512i zero, sign;
  explicit Constants(const RequantArgs& a)
      : lo(_mm512_set1_ps(a.lo)), hi(_mm512_set1_ps(a.hi)), lo2(_mm512_set1_ps(a.lo2)), hi2(_mm512_set1_ps(a.hi2)),
        inv(_mm512_set1_ps(a.inv_scale)), qlo(_mm512_set1_ps(a.qlo)), qhi(_mm512_set1_ps(a.qhi)),
        half(_mm512_set1_ps(kHalfBelow)), act_alpha(_mm512_set1_ps(a.act_alpha)), act_beta(_mm512_set1_ps(a.act_beta)),
        zero(_mm512_set1_epi32(a.zero)), sign(_mm512_set1_epi32(static_cast<int32_t>(0x80000000u))) {}
};

// What one block of 16 channels reads and writes, column 0's addresses and each one's column step.
struct Rows {
  __mmask16 m;
  __m512 bias;
  const int32_t* acc;
  int64_t acc_stride, term_stride;
  int terms;
  const float* multiplier;
  const int32_t* offsets;
  int64_t multiplier_term_stride;
  const float* residual;
  int64_t residual_stride;
  bool scaled;
  __m512 residual_scale;
  float* out;
  int64_t out_stride;
  uint8_t* codes;
  int64_t codes_stride;
};

// N columns of one block of 16 channels, from column `col`: v from the terms' sums, then the clamp,
// the activation, the residual and the stores (requantize.h's order).
template <int kTerms, Activation kAct, int N>
TERN_INLINE void finish16(const Constants& k, const Rows& b, const __m512* mult, const __m512i* offset, int64_t col) {
  const __mmask16 m = b.m;
  __m512 v[N];
  EACH(i, N) {
    v[i] = b.bias;
    const int32_t* acc = b.acc + (col + i) * b.acc_stride;
    for (int j = 0; j < b.terms; ++j) {
      const __m512i oj = kTerms > 0 ? offset[kTerms > 0 ? j : 0]
                                    : (b.offsets ? _mm512_maskz_loadu_epi32(m, b.offsets + j * b.multiplier_term_stride)
                                                 : _mm512_setzero_si512());
      const __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + j * b.term_stride), oj));
      const __m512 mj = kTerms > 0 ? mult[kTerms > 0 ? j : 0] : _mm512_maskz_loadu_ps(m, b.multiplier + j * b.multiplier_term_stride);
      v[i] = _mm512_add_ps(v[i], _mm512_mul_ps(s, mj));
    }
    v[i] = _mm512_min_ps(_mm512_max_ps(v[i], k.lo), k.hi);
  }
  activate16<kAct, N>(v, k.act_alpha, k.act_beta);
  // Whole vectors store unmasked: Zen 4 runs a masked vpmovdb to memory far slower than vpmovdb
  // to a register and a plain 16-byte store.
  const bool whole = m == 0xFFFF;
  EACH(i, N) {
    if (b.residual) {
      __m512 res = _mm512_maskz_loadu_ps(m, b.residual + (col + i) * b.residual_stride);
      if (b.scaled) res = _mm512_mul_ps(res, b.residual_scale);
      v[i] = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v[i], res), k.lo2), k.hi2);
    }
    if (b.out) {
      float* out = b.out + (col + i) * b.out_stride;
      if (whole) _mm512_storeu_ps(out, v[i]);
      else _mm512_mask_storeu_ps(out, m, v[i]);
    }
    if (b.codes) {
      uint8_t* codes = b.codes + (col + i) * b.codes_stride;
      const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v[i], k.inv), k.qlo), k.qhi);
      // Half away from zero: truncate t + copysign(0.49999997, t) (requantize.h: kHalfBelow).
      const __m512 h = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t), k.sign), _mm512_castps_si512(k.half)));
      const __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(_mm512_add_ps(t, h)), k.zero);
      if (whole) _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(q));
      else _mm_mask_storeu_epi8(codes, m, _mm512_cvtepi32_epi8(q));
    }
  }
}

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// One block of 16 channels over every column: the channel constants stay in registers (up to 3
// terms; more go through memory), the columns stream, kColumns at a time. The term count and the
// activation are template arguments, and every field the loop reads is a local (Rows): a u8 store
// may alias anything, so fields read through `a` would be loaded again after each one.
template <int kTerms, Activation kAct>
void requantize_rows(const RequantArgs& a, const Constants& k, int64_t r, __mmask16 m) {
  Rows b;
  b.m = m;
  b.terms = kTerms > 0 ? kTerms : a.terms;
  b.bias = _mm512_maskz_loadu_ps(m, a.bias + r);
  b.multiplier = a.multiplier + r;
  b.offsets = a.offset ? a.offset + r : nullptr;
  b.multiplier_term_stride = a.multiplier_term_stride;
  __m512 mult[kTerms > 0 ? kTerms : 1];
  __m512i offset[kTerms > 0 ? kTerms : 1];
  for (int j = 0; j < (kTerms > 0 ? kTerms : 0); ++j) {
    mult[j] = _mm512_maskz_loadu_ps(m, b.multiplier + j * b.multiplier_term_stride);
    offset[j] = b.offsets ? _mm512_maskz_loadu_epi32(m, b.offsets + j * b.multiplier_term_stride) : _mm512_setzero_si512();
  }
  b.acc = a.acc + r;
  b.acc_stride = a.acc_stride;
  b.term_stride = a.term_stride;
  b.residual = a.residual ? a.residual + r : nullptr;
  b.residual_stride = a.residual_stride;
  b.scaled = a.residual_scale != nullptr;
  b.residual_scale = b.scaled ? _mm512_maskz_loadu_ps(m, a.residual_scale + r) : _mm512_set1_ps(1.0f);
  b.out = a.out ? a.out + r : nullptr;
  b.out_stride = a.out_stride;
  b.codes = a.codes ? a.codes + r : nullptr;
  b.codes_stride = a.codes_stride;
  constexpr int kN = kColumns<kAct>;
  int64_t col = 0;
  for (; col + kN <= a.cols; col += kN) finish16<kTerms, kAct, kN>(k, b, mult, offset, col);
  for (; col < a.cols; ++col) finish16<kTerms, kAct, 1>(k, b, mult, offset, col);
}

template <Activation kAct>
void requantize_all_rows(const RequantArgs& a) {
  const Constants k(a);
  for (int64_t r = 0; r < a.rows; r += 16) {
    const __mmask16 m = tail_mask(a.rows - r);
    switch (a.terms) {
      case 1: requantize_rows<1, kAct>(a, k, r, m); break;
      case 2: requantize_rows<2, kAct>(a, k, r, m); break;
      case 3: requantize_rows<3, kAct>(a, k, r, m); break;
      default: requantize_rows<0, kAct>(a, k, r, m);
    }
  }
}

}  // namespace

void requantize_block_avx512(const RequantArgs& a) {
  switch (a.act) {
    case Activation::kGelu: return requantize_all_rows<Activation::kGelu>(a);
    case Activation::kGeluMul: return requantize_all_rows<Activation::kGeluMul>(a);
    case Activation::kHardSigmoid: return requantize_all_rows<Activation::kHardSigmoid>(a);
    case Activation::kHardSwish: return requantize_all_rows<Activation::kHardSwish>(a);
    case Activation::kSigmoid: return requantize_all_rows<Activation::kSigmoid>(a);
    case Activation::kSilu: return requantize_all_rows<Activation::kSilu>(a);
    default: return requantize_all_rows<Activation::kNone>(a);
  }
}

// Depthwise: taps in pairs. For 32 channels, the u8 codes of taps t and t+1 widen to int16 and
// interleave (vpunpck{l,h}wd: channels 8k..8k+3 of each 128-bit lane in the low half, 8k+4..8k+7 in
// the high), and vpmaddwd multiplies each pair by the weights interleaved the same way and adds
// the two taps: 32 multiply-adds per instruction, the sums in registers over every tap. A last odd
// tap pairs with zero. The weights are interleaved once per call (one output row).
void depthwise_row_int8_avx512(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                               const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  const int64_t pairs = (taps + 1) / 2, blocks = (channels + 31) / 32;
  thread_local std::vector<__m512i> wp;
  wp.resize(static_cast<size_t>(pairs * blocks * 2));
  auto mask32 = [&](int64_t b) {
    const int64_t left = channels - b * 32;
    return left >= 32 ? static_cast<__mmask32>(0xFFFFFFFFu) : static_cast<__mmask32>((1u << left) - 1u);
  };
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t b = 0; b < blocks; ++b) {
      const __mmask32 m = mask32(b);
      const __m512i wa = _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, w + 2 * p * channels + b * 32));
      const __m512i wb = 2 * p + 1 < taps ? _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, w + (2 * p + 1) * channels + b * 32))
                                          : _mm512_setzero_si512();
      wp[static_cast<size_t>((p * blocks + b) * 2)] = _mm512_unpacklo_epi16(wa, wb);
      wp[static_cast<size_t>((p * blocks + b) * 2 + 1)] = _mm512_unpackhi_epi16(wa, wb);
    }
  // From the (low, high) sums back to channel order: channels 0-15, then 16-31.
  const __m512i first = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
  const __m512i second = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
  for (int64_t ow = 0; ow < out_w; ++ow) {
    const uint8_t* pixel = x_row + ow * x_step;
    int32_t* out = acc + ow * channels;
    for (int64_t b = 0; b < blocks; ++b) {
      const __mmask32 m = mask32(b);
      const uint8_t* base = pixel + b * 32;
      __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
      const __m512i* wb = wp.data() + b * 2;
      for (int64_t p = 0; p < pairs; ++p, wb += blocks * 2) {
        const __m512i xa = _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, base + tap_offset[2 * p]));
        const __m512i xb = 2 * p + 1 < taps ? _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, base + tap_offset[2 * p + 1]))
                                            : _mm512_setzero_si512();
        lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(xa, xb), wb[0]));
        hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(xa, xb), wb[1]));
      }
      const int64_t left = channels - b * 32;
      const __mmask16 m0 = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      _mm512_mask_storeu_epi32(out + b * 32, m0, _mm512_permutex2var_epi32(lo, first, hi));
      if (left > 16) {
        const __mmask16 m1 = left >= 32 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << (left - 16)) - 1u);
        _mm512_mask_storeu_epi32(out + b * 32 + 16, m1, _mm512_permutex2var_epi32(lo, second, hi));
      }
    }
  }
}

}  // namespace tern::kernels
