// AVX-512 epilogue (requantize.h): 16 channels per vector, masked tails; the same operations in
// the same order as the reference (multiply then add, no FMA), so both round alike. The
// depthwise row kernel is the shared loop source, vectorized by the compiler.
#include <immintrin.h>

#include <vector>

#define REQUANT_SUFFIX _avx512_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// activation_math.h's functions on 16 lanes, bit for bit (no FMA; the polynomial in its order).
// Two steps take one instruction each where the scalar code takes several: n = round(x log2 e) by
// vrndscaleps (to nearest even, as the magic-number add and subtract round for |x log2 e| < 2^22),
// and p * 2^n by vscalefps (exact for the integers n in [-126, 127] that the clamp allows, as the
// multiply by 2^n built in the exponent bits is).
inline __m512 exp_approx16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// erf_approx on 16 lanes, its operations in its order: both branches, one selected per lane.
inline __m512 erf_approx16(__m512 x) {
  const __m512 a = _mm512_abs_ps(x);
  const __m512 z = _mm512_mul_ps(x, x);
  auto step = [](__m512 p, __m512 t, float c) { return _mm512_add_ps(_mm512_mul_ps(p, t), _mm512_set1_ps(c)); };
  __m512 p = _mm512_set1_ps(-6.218505441211164e-04f);
  p = step(p, z, 5.0351242534816265e-03f);
  p = step(p, z, -2.6793455705046654e-02f);
  p = step(p, z, 1.1282510310411453e-01f);
  p = step(p, z, -3.761255443096161e-01f);
  p = step(p, z, 1.1283791065216064e+00f);
  const __m512 small = _mm512_mul_ps(x, p);
  const __mmask16 is_small = _mm512_cmp_ps_mask(a, _mm512_set1_ps(0.875f), _CMP_LT_OQ);
  const __m512 one = _mm512_set1_ps(1.0f);
  const __m512 t = _mm512_div_ps(one, _mm512_mask_blend_ps(is_small, a, one));
  __m512 q = _mm512_set1_ps(-1.9284633919596672e-02f);
  q = step(q, t, 1.457294374704361e-01f);
  q = step(q, t, -4.814735949039459e-01f);
  q = step(q, t, 8.963276147842407e-01f);
  q = step(q, t, -9.820159077644348e-01f);
  q = step(q, t, 5.272132754325867e-01f);
  q = step(q, t, 1.0364840179681778e-01f);
  q = step(q, t, -3.387681841850281e-01f);
  q = step(q, t, 1.3607642613351345e-02f);
  q = step(q, t, 5.625135898590088e-01f);
  q = step(q, t, 8.595283725298941e-05f);
  const __m512 big = _mm512_sub_ps(one, _mm512_mul_ps(exp_approx16(_mm512_xor_ps(z, _mm512_set1_ps(-0.0f))), q));
  const __m512 magnitude = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, _mm512_set1_ps(4.0f), _CMP_LT_OQ), one, big);
  // x < 0 ? -magnitude : magnitude (x = -0 is not below 0); a NaN x fails every compare.
  const __mmask16 negative = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 large = _mm512_mask_xor_ps(magnitude, negative, magnitude, _mm512_set1_ps(-0.0f));
  const __m512 r = _mm512_mask_blend_ps(is_small, large, small);
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), r, x);
}

template <Activation kAct>
inline __m512 activate16(__m512 v, __m512 alpha, __m512 beta) {
  const __m512 one = _mm512_set1_ps(1.0f);
  if constexpr (kAct == Activation::kHardSigmoid || kAct == Activation::kHardSwish) {
    const __m512 h = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(alpha, v), beta), _mm512_setzero_ps()), one);
    return kAct == Activation::kHardSwish ? _mm512_mul_ps(v, h) : h;
  } else if constexpr (kAct == Activation::kSigmoid || kAct == Activation::kSilu) {
    const __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, exp_approx16(_mm512_xor_ps(v, _mm512_set1_ps(-0.0f)))));
    return kAct == Activation::kSilu ? _mm512_mul_ps(v, s) : s;
  } else if constexpr (kAct == Activation::kGelu || kAct == Activation::kGeluMul) {
    const __m512 t = kAct == Activation::kGelu ? _mm512_div_ps(v, alpha) : _mm512_mul_ps(v, alpha);
    return _mm512_mul_ps(_mm512_mul_ps(v, _mm512_add_ps(erf_approx16(t), one)), _mm512_set1_ps(0.5f));
  } else {
    return v;
  }
}

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

// One vector of 16 channels of one column: v from the terms' sums, then the clamp, the activation,
// the residual and the stores (requantize.h's order).
template <int kTerms, Activation kAct>
inline void finish16(const Constants& k, __mmask16 m, __m512 v, const int32_t* acc, int64_t term_stride, int terms,
                     const __m512* mult, const __m512i* offset, const float* multiplier, const int32_t* offsets,
                     int64_t multiplier_term_stride, const float* residual, bool scaled, __m512 residual_scale,
                     float* out, uint8_t* codes) {
  for (int j = 0; j < terms; ++j) {
    const __m512i oj = kTerms > 0 ? offset[kTerms > 0 ? j : 0]
                                  : (offsets ? _mm512_maskz_loadu_epi32(m, offsets + j * multiplier_term_stride)
                                             : _mm512_setzero_si512());
    const __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + j * term_stride), oj));
    const __m512 mj = kTerms > 0 ? mult[kTerms > 0 ? j : 0] : _mm512_maskz_loadu_ps(m, multiplier + j * multiplier_term_stride);
    v = _mm512_add_ps(v, _mm512_mul_ps(s, mj));
  }
  v = _mm512_min_ps(_mm512_max_ps(v, k.lo), k.hi);
  v = activate16<kAct>(v, k.act_alpha, k.act_beta);
  if (residual) {
    __m512 res = _mm512_maskz_loadu_ps(m, residual);
    if (scaled) res = _mm512_mul_ps(res, residual_scale);
    v = _mm512_add_ps(v, res);
    v = _mm512_min_ps(_mm512_max_ps(v, k.lo2), k.hi2);
  }
  // Whole vectors store unmasked: Zen 4 runs a masked vpmovdb to memory far slower than vpmovdb
  // to a register and a plain 16-byte store.
  const bool whole = m == 0xFFFF;
  if (out) {
    if (whole) _mm512_storeu_ps(out, v);
    else _mm512_mask_storeu_ps(out, m, v);
  }
  if (codes) {
    const __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, k.inv), k.qlo), k.qhi);
    // Half away from zero: truncate t + copysign(0.49999997, t) (requantize.h: kHalfBelow).
    const __m512 h = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t), k.sign), _mm512_castps_si512(k.half)));
    const __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(_mm512_add_ps(t, h)), k.zero);
    if (whole) _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtepi32_epi8(q));
    else _mm_mask_storeu_epi8(codes, m, _mm512_cvtepi32_epi8(q));
  }
}

inline __mmask16 tail_mask(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// One block of 16 channels over every column: the channel constants stay in registers (up to 3
// terms; more go through memory), the columns stream. The term count and the activation are
// template arguments, and every field the loop reads is a local: a u8 store may alias anything,
// so fields read through `a` would be loaded again after each one.
template <int kTerms, Activation kAct>
void requantize_rows(const RequantArgs& a, int64_t r, __mmask16 m) {
  const Constants k(a);
  const int terms = kTerms > 0 ? kTerms : a.terms;
  const __m512 bias = _mm512_maskz_loadu_ps(m, a.bias + r);
  const float* multiplier = a.multiplier + r;
  const int32_t* offsets = a.offset ? a.offset + r : nullptr;
  const int64_t multiplier_term_stride = a.multiplier_term_stride;
  __m512 mult[kTerms > 0 ? kTerms : 1];
  __m512i offset[kTerms > 0 ? kTerms : 1];
  for (int j = 0; j < (kTerms > 0 ? kTerms : 0); ++j) {
    mult[j] = _mm512_maskz_loadu_ps(m, multiplier + j * multiplier_term_stride);
    offset[j] = offsets ? _mm512_maskz_loadu_epi32(m, offsets + j * multiplier_term_stride) : _mm512_setzero_si512();
  }
  const int64_t cols = a.cols, acc_stride = a.acc_stride, term_stride = a.term_stride;
  const float* residual = a.residual ? a.residual + r : nullptr;
  const int64_t residual_stride = a.residual_stride;
  const bool scaled = a.residual_scale != nullptr;
  const __m512 residual_scale = scaled ? _mm512_maskz_loadu_ps(m, a.residual_scale + r) : _mm512_set1_ps(1.0f);
  float* out = a.out ? a.out + r : nullptr;
  const int64_t out_stride = a.out_stride;
  uint8_t* codes = a.codes ? a.codes + r : nullptr;
  const int64_t codes_stride = a.codes_stride;
  const int32_t* acc = a.acc + r;
  for (int64_t col = 0; col < cols; ++col, acc += acc_stride)
    finish16<kTerms, kAct>(k, m, bias, acc, term_stride, terms, mult, offset, multiplier, offsets, multiplier_term_stride,
                           residual ? residual + col * residual_stride : nullptr, scaled, residual_scale,
                           out ? out + col * out_stride : nullptr, codes ? codes + col * codes_stride : nullptr);
}

template <Activation kAct>
void requantize_all_rows(const RequantArgs& a) {
  for (int64_t r = 0; r < a.rows; r += 16) {
    const __mmask16 m = tail_mask(a.rows - r);
    switch (a.terms) {
      case 1: requantize_rows<1, kAct>(a, r, m); break;
      case 2: requantize_rows<2, kAct>(a, r, m); break;
      case 3: requantize_rows<3, kAct>(a, r, m); break;
      default: requantize_rows<0, kAct>(a, r, m);
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
