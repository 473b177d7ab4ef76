// AVX2 epilogue (requantize.h): 8 channels per vector, the reference's operations in its order (no
// FMA); a channel tail of fewer than 8 goes through the loop source.
#include <immintrin.h>

#include <vector>

#define REQUANT_SUFFIX _avx2_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// activation_math.h's functions on 8 lanes, the same operations in the same order (no FMA).
inline __m256 exp_approx8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), magic), magic);
  __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(0.693359375f)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(-2.12194440e-4f)));
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p, r), r), r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline __m256 activate8(__m256 v, Activation act, __m256 alpha, __m256 beta) {
  const __m256 one = _mm256_set1_ps(1.0f);
  auto hard_sigmoid = [&](__m256 x) {
    return _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(alpha, x), beta), _mm256_setzero_ps()), one);
  };
  auto sigmoid = [&](__m256 x) {
    return _mm256_div_ps(one, _mm256_add_ps(one, exp_approx8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0f)))));
  };
  switch (act) {
    case Activation::kHardSigmoid: return hard_sigmoid(v);
    case Activation::kHardSwish: return _mm256_mul_ps(v, hard_sigmoid(v));
    case Activation::kSigmoid: return sigmoid(v);
    case Activation::kSilu: return _mm256_mul_ps(v, sigmoid(v));
    default: return v;
  }
}

template <int kTerms>
void requantize_rows8(const RequantArgs& a, int64_t r) {
  const __m256 lo = _mm256_set1_ps(a.lo), hi = _mm256_set1_ps(a.hi);
  const __m256 lo2 = _mm256_set1_ps(a.lo2), hi2 = _mm256_set1_ps(a.hi2);
  const __m256 inv = _mm256_set1_ps(a.inv_scale), qlo = _mm256_set1_ps(a.qlo), qhi = _mm256_set1_ps(a.qhi);
  const __m256 half = _mm256_set1_ps(kHalfBelow);
  const __m256 act_alpha = _mm256_set1_ps(a.act_alpha), act_beta = _mm256_set1_ps(a.act_beta);
  const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(0x80000000u)));
  const __m256i zero = _mm256_set1_epi32(a.zero);
  const int terms = kTerms > 0 ? kTerms : a.terms;
  const __m256 bias = _mm256_loadu_ps(a.bias + r);
  auto offset_of = [&](int j) {
    return a.offset ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a.offset + j * a.multiplier_term_stride + r))
                    : _mm256_setzero_si256();
  };
  __m256 mult[kTerms > 0 ? kTerms : 1];
  __m256i offset[kTerms > 0 ? kTerms : 1];
  for (int j = 0; j < (kTerms > 0 ? kTerms : 0); ++j) {
    mult[j] = _mm256_loadu_ps(a.multiplier + j * a.multiplier_term_stride + r);
    offset[j] = offset_of(j);
  }
  const int32_t* acc = a.acc + r;
  for (int64_t col = 0; col < a.cols; ++col, acc += a.acc_stride) {
    __m256 v = bias;
    for (int j = 0; j < terms; ++j) {
      __m256i oj = kTerms > 0 ? offset[kTerms > 0 ? j : 0] : offset_of(j);
      __m256 mj = kTerms > 0 ? mult[kTerms > 0 ? j : 0] : _mm256_loadu_ps(a.multiplier + j * a.multiplier_term_stride + r);
      __m256i s = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j * a.term_stride)), oj);
      v = _mm256_add_ps(v, _mm256_mul_ps(_mm256_cvtepi32_ps(s), mj));
    }
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    if (a.act != Activation::kNone) v = activate8(v, a.act, act_alpha, act_beta);
    if (a.residual) {
      __m256 res = _mm256_loadu_ps(a.residual + col * a.residual_stride + r);
      if (a.residual_scale) res = _mm256_mul_ps(res, _mm256_loadu_ps(a.residual_scale + r));
      v = _mm256_add_ps(v, res);
      v = _mm256_min_ps(_mm256_max_ps(v, lo2), hi2);
    }
    if (a.out) _mm256_storeu_ps(a.out + col * a.out_stride + r, v);
    if (a.codes) {
      __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v, inv), qlo), qhi);
      __m256 h = _mm256_or_ps(_mm256_and_ps(t, sign), half);  // copysign(0.49999997, t): half away from zero
      __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_add_ps(t, h)), zero);  // 0..255
      __m256i q16 = _mm256_packus_epi32(q, q);      // per 128-bit lane: q0..q3 q0..q3 | q4..q7 q4..q7
      __m256i q8 = _mm256_packus_epi16(q16, q16);
      uint8_t* dst = a.codes + col * a.codes_stride + r;
      const int32_t low = _mm_cvtsi128_si32(_mm256_castsi256_si128(q8));
      const int32_t high = _mm_cvtsi128_si32(_mm256_extracti128_si256(q8, 1));
      std::memcpy(dst, &low, 4);
      std::memcpy(dst + 4, &high, 4);
    }
  }
}

}  // namespace

void requantize_block_avx2(const RequantArgs& a) {
  if (a.act == Activation::kGelu || a.act == Activation::kGeluMul) return requantize_block_avx2_loops(a);  // as AVX-512
  int64_t r = 0;
  for (; r + 8 <= a.rows; r += 8) {
    switch (a.terms) {
      case 1: requantize_rows8<1>(a, r); break;
      case 2: requantize_rows8<2>(a, r); break;
      case 3: requantize_rows8<3>(a, r); break;
      default: requantize_rows8<0>(a, r);
    }
  }
  if (r == a.rows) return;
  RequantArgs tail = a;  // the last rows % 8 channels: every per-channel pointer moves by r
  tail.rows = a.rows - r;
  tail.acc += r;
  tail.multiplier += r;
  if (tail.offset) tail.offset += r;
  tail.bias += r;
  if (tail.residual) tail.residual += r;
  if (tail.residual_scale) tail.residual_scale += r;
  if (tail.out) tail.out += r;
  if (tail.codes) tail.codes += r;
  requantize_block_avx2_loops(tail);
}

// Depthwise: as the AVX-512 kernel (requantize_avx512.cpp), 16 channels per block: tap pairs
// widened to int16 and interleaved, vpmaddwd, the sums in registers over every tap. Channels past
// the last whole block of 16 take a block of 8, then a plain loop.
void depthwise_row_int8_avx2(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                             const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  const int64_t pairs = (taps + 1) / 2, blocks = channels / 16, done = blocks * 16;
  thread_local std::vector<__m256i> wp;
  wp.resize(static_cast<size_t>(pairs * blocks * 2));
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t b = 0; b < blocks; ++b) {
      auto widen = [&](int64_t t) {
        return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + t * channels + b * 16)));
      };
      const __m256i wa = widen(2 * p), wb = 2 * p + 1 < taps ? widen(2 * p + 1) : _mm256_setzero_si256();
      wp[static_cast<size_t>((p * blocks + b) * 2)] = _mm256_unpacklo_epi16(wa, wb);
      wp[static_cast<size_t>((p * blocks + b) * 2 + 1)] = _mm256_unpackhi_epi16(wa, wb);
    }
  for (int64_t ow = 0; ow < out_w; ++ow) {
    const uint8_t* pixel = x_row + ow * x_step;
    int32_t* out = acc + ow * channels;
    for (int64_t b = 0; b < blocks; ++b) {
      const uint8_t* base = pixel + b * 16;
      __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
      const __m256i* wb = wp.data() + b * 2;
      for (int64_t p = 0; p < pairs; ++p, wb += blocks * 2) {
        auto widen = [&](int64_t t) {
          return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(base + tap_offset[t])));
        };
        const __m256i xa = widen(2 * p), xb = 2 * p + 1 < taps ? widen(2 * p + 1) : _mm256_setzero_si256();
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(xa, xb), wb[0]));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(xa, xb), wb[1]));
      }
      // lo holds channels 0-3 and 8-11, hi 4-7 and 12-15.
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 16), _mm256_permute2x128_si256(lo, hi, 0x20));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + b * 16 + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
    }
    int64_t c0 = done;
    if (channels - done >= 8) {  // a half block of 8: one 128-bit pair per tap pair, already in order
      __m128i lo = _mm_setzero_si128(), hi = _mm_setzero_si128();
      auto widen_x = [&](int64_t t) { return _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pixel + tap_offset[t] + done))); };
      auto widen_w = [&](int64_t t) { return _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w + t * channels + done))); };
      for (int64_t p = 0; p < pairs; ++p) {
        const bool two = 2 * p + 1 < taps;
        const __m128i xa = widen_x(2 * p), xb = two ? widen_x(2 * p + 1) : _mm_setzero_si128();
        const __m128i wa = widen_w(2 * p), wb = two ? widen_w(2 * p + 1) : _mm_setzero_si128();
        lo = _mm_add_epi32(lo, _mm_madd_epi16(_mm_unpacklo_epi16(xa, xb), _mm_unpacklo_epi16(wa, wb)));
        hi = _mm_add_epi32(hi, _mm_madd_epi16(_mm_unpackhi_epi16(xa, xb), _mm_unpackhi_epi16(wa, wb)));
      }
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + done), lo);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + done + 4), hi);
      c0 = done + 8;
    }
    for (int64_t c = c0; c < channels; ++c) {
      int32_t sum = 0;
      for (int64_t t = 0; t < taps; ++t)
        sum += static_cast<int32_t>(pixel[tap_offset[t] + c]) * static_cast<int32_t>(w[t * channels + c]);
      out[c] = sum;
    }
  }
}

}  // namespace tern::kernels
