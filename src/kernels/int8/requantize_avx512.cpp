// AVX-512 epilogue (requantize.h): 16 channels per vector, masked tails; the same operations in
// the same order as the reference (multiply then add, no FMA), so both round alike. The
// depthwise row kernel is the shared loop source, vectorized by the compiler.
#include <immintrin.h>

#include <vector>

#define REQUANT_SUFFIX _avx512_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// activation_math.h's functions on 16 lanes, the same operations in the same order (no FMA), so
// every lane rounds as the scalar code does.
inline __m512 exp_approx16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 magic = _mm512_set1_ps(12582912.0f);
  const __m512 n = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), magic), magic);
  __m512 r = _mm512_sub_ps(x, _mm512_mul_ps(n, _mm512_set1_ps(0.693359375f)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(-2.12194440e-4f)));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_mul_ps(p, r), r), r), _mm512_set1_ps(1.0f));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvttps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(e));
}

inline __m512 activate16(__m512 v, Activation act, __m512 alpha, __m512 beta) {
  const __m512 one = _mm512_set1_ps(1.0f);
  auto hard_sigmoid = [&](__m512 x) {
    return _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(_mm512_mul_ps(alpha, x), beta), _mm512_setzero_ps()), one);
  };
  auto sigmoid = [&](__m512 x) {
    return _mm512_div_ps(one, _mm512_add_ps(one, exp_approx16(_mm512_xor_ps(x, _mm512_set1_ps(-0.0f)))));
  };
  switch (act) {
    case Activation::kHardSigmoid: return hard_sigmoid(v);
    case Activation::kHardSwish: return _mm512_mul_ps(v, hard_sigmoid(v));
    case Activation::kSigmoid: return sigmoid(v);
    case Activation::kSilu: return _mm512_mul_ps(v, sigmoid(v));
    default: return v;
  }
}

// One block of 16 channels over every column: the channel constants stay in registers (up to
// kMaxTerms terms; more go through memory), the columns stream.
template <int kTerms>
void requantize_rows(const RequantArgs& a, int64_t r, __mmask16 m) {
  const __m512 lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
  const __m512 lo2 = _mm512_set1_ps(a.lo2), hi2 = _mm512_set1_ps(a.hi2);
  const __m512 inv = _mm512_set1_ps(a.inv_scale), qlo = _mm512_set1_ps(a.qlo), qhi = _mm512_set1_ps(a.qhi);
  const __m512 half = _mm512_set1_ps(0.5f);
  const __m512 act_alpha = _mm512_set1_ps(a.act_alpha), act_beta = _mm512_set1_ps(a.act_beta);
  const __m512i zero = _mm512_set1_epi32(a.zero);
  const __m512i sign = _mm512_set1_epi32(static_cast<int32_t>(0x80000000u));
  const int terms = kTerms > 0 ? kTerms : a.terms;
  const __m512 bias = _mm512_maskz_loadu_ps(m, a.bias + r);
  __m512 mult[kTerms > 0 ? kTerms : 1];
  __m512i offset[kTerms > 0 ? kTerms : 1];
  for (int j = 0; j < (kTerms > 0 ? kTerms : 0); ++j) {
    mult[j] = _mm512_maskz_loadu_ps(m, a.multiplier + j * a.multiplier_term_stride + r);
    offset[j] = a.offset ? _mm512_maskz_loadu_epi32(m, a.offset + j * a.multiplier_term_stride + r) : _mm512_setzero_si512();
  }
  const int32_t* acc = a.acc + r;
  for (int64_t col = 0; col < a.cols; ++col, acc += a.acc_stride) {
    __m512 v = bias;
    for (int j = 0; j < terms; ++j) {
      __m512i oj = kTerms > 0 ? offset[kTerms > 0 ? j : 0]
                              : (a.offset ? _mm512_maskz_loadu_epi32(m, a.offset + j * a.multiplier_term_stride + r)
                                          : _mm512_setzero_si512());
      __m512 s = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + j * a.term_stride), oj));
      __m512 mj = kTerms > 0 ? mult[kTerms > 0 ? j : 0] : _mm512_maskz_loadu_ps(m, a.multiplier + j * a.multiplier_term_stride + r);
      v = _mm512_add_ps(v, _mm512_mul_ps(s, mj));
    }
    v = _mm512_min_ps(_mm512_max_ps(v, lo), hi);
    if (a.act != Activation::kNone) v = activate16(v, a.act, act_alpha, act_beta);
    if (a.residual) {
      v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, a.residual + col * a.residual_stride + r));
      v = _mm512_min_ps(_mm512_max_ps(v, lo2), hi2);
    }
    if (a.out) _mm512_mask_storeu_ps(a.out + col * a.out_stride + r, m, v);
    if (a.codes) {
      __m512 t = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), qlo), qhi);
      // Half away from zero: truncate t + copysign(0.5, t).
      __m512 h = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(_mm512_castps_si512(t), sign), _mm512_castps_si512(half)));
      __m512i q = _mm512_add_epi32(_mm512_cvttps_epi32(_mm512_add_ps(t, h)), zero);
      _mm_mask_storeu_epi8(a.codes + col * a.codes_stride + r, m, _mm512_cvtepi32_epi8(q));
    }
  }
}

}  // namespace

void requantize_block_avx512(const RequantArgs& a) {
  for (int64_t r = 0; r < a.rows; r += 16) {
    const int64_t left = a.rows - r;
    const __mmask16 m = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
    switch (a.terms) {
      case 1: requantize_rows<1>(a, r, m); break;
      case 2: requantize_rows<2>(a, r, m); break;
      case 3: requantize_rows<3>(a, r, m); break;
      default: requantize_rows<0>(a, r, m);
    }
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
