// AVX-512 epilogue (requantize.h): 16 channels per vector, masked tails; the same operations in
// the same order as the reference (multiply then add, no FMA), so both round alike. The
// depthwise row kernel is the shared loop source, vectorized by the compiler.
#include <immintrin.h>

#define REQUANT_SUFFIX _avx512_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// One block of 16 channels over every column: the channel constants stay in registers (up to
// kMaxTerms terms; more go through memory), the columns stream.
template <int kTerms>
void requantize_rows(const RequantArgs& a, int64_t r, __mmask16 m) {
  const __m512 lo = _mm512_set1_ps(a.lo), hi = _mm512_set1_ps(a.hi);
  const __m512 lo2 = _mm512_set1_ps(a.lo2), hi2 = _mm512_set1_ps(a.hi2);
  const __m512 inv = _mm512_set1_ps(a.inv_scale), qlo = _mm512_set1_ps(a.qlo), qhi = _mm512_set1_ps(a.qhi);
  const __m512 half = _mm512_set1_ps(0.5f);
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
  // A fused activation: the shared loops, vectorized by the compiler for this ISA (exp included).
  if (a.act != Activation::kNone) return requantize_block_avx512_loops(a);
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

void depthwise_row_int8_avx512(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                               const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  depthwise_row_int8_avx512_loops(x_row, x_step, tap_offset, taps, w, channels, out_w, acc);
}

}  // namespace tern::kernels
