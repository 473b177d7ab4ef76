// AVX2 epilogue (requantize.h): 8 channels per vector, the reference's operations in its order (no
// FMA), several columns side by side for the long activations; a channel tail of fewer than 8
// goes through the loop source.
#include <immintrin.h>

#include <vector>

#define REQUANT_SUFFIX _avx2_loops
#include "kernels/int8/requantize_impl.h"

namespace tern::kernels {

namespace {

// As the AVX-512 epilogue (requantize_avx512.cpp): the functions take N independent vectors and
// run each step on all of them before the next, so that N columns' activation chains (a sigmoid or
// an erf is some 30 dependent operations) overlap; every lane sees the operations of
// activation_math.h in its order (no FMA). Forced inline: the N-vector arrays live in registers.
#define EACH(i, N) _Pragma("GCC unroll 8") for (int i = 0; i < (N); ++i)
#define TERN_INLINE __attribute__((always_inline)) inline

// exp_approx on 8 lanes, in place on N vectors: n by the magic-number add and subtract, 2^n built
// in the exponent bits, as the scalar code.
template <int N>
TERN_INLINE void exp_approx8(__m256 (&x)[N]) {
  const __m256 magic = _mm256_set1_ps(12582912.0f);
  __m256 n[N], r[N], p[N];
  EACH(i, N) { x[i] = _mm256_min_ps(_mm256_max_ps(x[i], _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f)); }
  EACH(i, N) { n[i] = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x[i], _mm256_set1_ps(1.44269504088896341f)), magic), magic); }
  EACH(i, N) { r[i] = _mm256_sub_ps(x[i], _mm256_mul_ps(n[i], _mm256_set1_ps(0.693359375f))); }
  EACH(i, N) { r[i] = _mm256_sub_ps(r[i], _mm256_mul_ps(n[i], _mm256_set1_ps(-2.12194440e-4f))); }
  EACH(i, N) { p[i] = _mm256_set1_ps(1.9875691500e-4f); }
  _Pragma("GCC unroll 16") for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    EACH(i, N) { p[i] = _mm256_add_ps(_mm256_mul_ps(p[i], r[i]), _mm256_set1_ps(c)); }
  EACH(i, N) {
    p[i] = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_mul_ps(p[i], r[i]), r[i]), r[i]), _mm256_set1_ps(1.0f));
  }
  EACH(i, N) {
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n[i]), _mm256_set1_epi32(127)), 23);
    x[i] = _mm256_mul_ps(p[i], _mm256_castsi256_ps(e));
  }
}

// erf_approx on 8 lanes, its operations in its order: both branches, one selected per lane. In
// place, on N vectors.
template <int N>
TERN_INLINE void erf_approx8(__m256 (&x)[N]) {
  const __m256 one = _mm256_set1_ps(1.0f), sign = _mm256_set1_ps(-0.0f);
  __m256 a[N], z[N], p[N], t[N], q[N], big[N], is_small[N];
  EACH(i, N) {
    a[i] = _mm256_andnot_ps(sign, x[i]);
    z[i] = _mm256_mul_ps(x[i], x[i]);
    p[i] = _mm256_set1_ps(-6.218505441211164e-04f);
  }
  _Pragma("GCC unroll 16") for (const float c : {5.0351242534816265e-03f, -2.6793455705046654e-02f, 1.1282510310411453e-01f,
                        -3.761255443096161e-01f, 1.1283791065216064e+00f})
    EACH(i, N) { p[i] = _mm256_add_ps(_mm256_mul_ps(p[i], z[i]), _mm256_set1_ps(c)); }
  EACH(i, N) {
    is_small[i] = _mm256_cmp_ps(a[i], _mm256_set1_ps(0.875f), _CMP_LT_OQ);
    t[i] = _mm256_div_ps(one, _mm256_blendv_ps(a[i], one, is_small[i]));
    q[i] = _mm256_set1_ps(-1.9284633919596672e-02f);
  }
  _Pragma("GCC unroll 16") for (const float c : {1.457294374704361e-01f, -4.814735949039459e-01f, 8.963276147842407e-01f, -9.820159077644348e-01f,
                        5.272132754325867e-01f, 1.0364840179681778e-01f, -3.387681841850281e-01f, 1.3607642613351345e-02f,
                        5.625135898590088e-01f, 8.595283725298941e-05f})
    EACH(i, N) { q[i] = _mm256_add_ps(_mm256_mul_ps(q[i], t[i]), _mm256_set1_ps(c)); }
  EACH(i, N) { big[i] = _mm256_xor_ps(z[i], sign); }
  exp_approx8<N>(big);
  EACH(i, N) {
    const __m256 b = _mm256_sub_ps(one, _mm256_mul_ps(big[i], q[i]));
    const __m256 magnitude = _mm256_blendv_ps(one, b, _mm256_cmp_ps(a[i], _mm256_set1_ps(4.0f), _CMP_LT_OQ));
    // x < 0 ? -magnitude : magnitude (x = -0 is not below 0); a NaN x fails every compare.
    const __m256 negative = _mm256_cmp_ps(x[i], _mm256_setzero_ps(), _CMP_LT_OQ);
    const __m256 large = _mm256_xor_ps(magnitude, _mm256_and_ps(negative, sign));
    const __m256 small = _mm256_mul_ps(x[i], p[i]);
    const __m256 r = _mm256_blendv_ps(large, small, is_small[i]);
    x[i] = _mm256_blendv_ps(r, x[i], _mm256_cmp_ps(x[i], x[i], _CMP_UNORD_Q));
  }
}

// The fused activation, in place on N vectors.
template <Activation kAct, int N>
TERN_INLINE void activate8(__m256 (&v)[N], __m256 alpha, __m256 beta) {
  const __m256 one = _mm256_set1_ps(1.0f);
  if constexpr (kAct == Activation::kHardSigmoid || kAct == Activation::kHardSwish) {
    EACH(i, N) {
      const __m256 h = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(_mm256_mul_ps(alpha, v[i]), beta), _mm256_setzero_ps()), one);
      v[i] = kAct == Activation::kHardSwish ? _mm256_mul_ps(v[i], h) : h;
    }
  } else if constexpr (kAct == Activation::kSigmoid || kAct == Activation::kSilu) {
    __m256 e[N];
    EACH(i, N) { e[i] = _mm256_xor_ps(v[i], _mm256_set1_ps(-0.0f)); }
    exp_approx8<N>(e);
    EACH(i, N) {
      const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e[i]));
      v[i] = kAct == Activation::kSilu ? _mm256_mul_ps(v[i], s) : s;
    }
  } else if constexpr (kAct == Activation::kGelu || kAct == Activation::kGeluMul) {
    __m256 t[N];
    EACH(i, N) { t[i] = kAct == Activation::kGelu ? _mm256_div_ps(v[i], alpha) : _mm256_mul_ps(v[i], alpha); }
    erf_approx8<N>(t);
    EACH(i, N) { v[i] = _mm256_mul_ps(_mm256_mul_ps(v[i], _mm256_add_ps(t[i], one)), _mm256_set1_ps(0.5f)); }
  }
}

// Columns side by side: 4 where the activation is a long chain (sigmoid, erf), 1 otherwise.
template <Activation kAct>
inline constexpr int kColumns = (kAct == Activation::kSigmoid || kAct == Activation::kSilu || kAct == Activation::kGelu ||
                                 kAct == Activation::kGeluMul) ? 4 : 1;

// The per-call constants, broadcast once.
struct Constants {
  __m256 lo, hi, lo2, hi2, inv, qlo, qhi, half, act_alpha, act_beta, sign;
  __m256i zero;
  explicit Constants(const RequantArgs& a)
      : lo(_mm256_set1_ps(a.lo)), hi(_mm256_set1_ps(a.hi)), lo2(_mm256_set1_ps(a.lo2)), hi2(_mm256_set1_ps(a.hi2)),
        inv(_mm256_set1_ps(a.inv_scale)), qlo(_mm256_set1_ps(a.qlo)), qhi(_mm256_set1_ps(a.qhi)),
        half(_mm256_set1_ps(kHalfBelow)), act_alpha(_mm256_set1_ps(a.act_alpha)), act_beta(_mm256_set1_ps(a.act_beta)),
        sign(_mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int32_t>(0x80000000u)))), zero(_mm256_set1_epi32(a.zero)) {}
};

// What one block of 8 channels reads and writes, column 0's addresses and each one's column step:
// locals, since a u8 store may alias anything and fields read through RequantArgs would be loaded
// again after each one.
struct Rows {
  __m256 bias;
  const int32_t* acc;
  int64_t acc_stride, term_stride;
  int terms;
  const float* multiplier;
  const int32_t* offsets;
  int64_t multiplier_term_stride;
  const float* residual;
  int64_t residual_stride;
  bool scaled;
  __m256 residual_scale;
  float* out;
  int64_t out_stride;
  uint8_t* codes;
  int64_t codes_stride;
};

// N columns of one block of 8 channels, from column `col` (requantize.h's order).
template <int kTerms, Activation kAct, int N>
TERN_INLINE void finish8(const Constants& k, const Rows& b, const __m256* mult, const __m256i* offset, int64_t col) {
  __m256 v[N];
  EACH(i, N) {
    v[i] = b.bias;
    const int32_t* acc = b.acc + (col + i) * b.acc_stride;
    for (int j = 0; j < b.terms; ++j) {
      const __m256i oj = kTerms > 0 ? offset[kTerms > 0 ? j : 0]
                                    : (b.offsets ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.offsets + j * b.multiplier_term_stride))
                                                 : _mm256_setzero_si256());
      const __m256i sj = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j * b.term_stride)), oj);
      const __m256 mj = kTerms > 0 ? mult[kTerms > 0 ? j : 0] : _mm256_loadu_ps(b.multiplier + j * b.multiplier_term_stride);
      v[i] = _mm256_add_ps(v[i], _mm256_mul_ps(_mm256_cvtepi32_ps(sj), mj));
    }
    v[i] = _mm256_min_ps(_mm256_max_ps(v[i], k.lo), k.hi);
  }
  activate8<kAct, N>(v, k.act_alpha, k.act_beta);
  EACH(i, N) {
    if (b.residual) {
      __m256 res = _mm256_loadu_ps(b.residual + (col + i) * b.residual_stride);
      if (b.scaled) res = _mm256_mul_ps(res, b.residual_scale);
      v[i] = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v[i], res), k.lo2), k.hi2);
    }
    if (b.out) _mm256_storeu_ps(b.out + (col + i) * b.out_stride, v[i]);
    if (b.codes) {
      const __m256 t = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(v[i], k.inv), k.qlo), k.qhi);
      const __m256 h = _mm256_or_ps(_mm256_and_ps(t, k.sign), k.half);  // copysign(0.49999997, t): half away from zero
      const __m256i q = _mm256_add_epi32(_mm256_cvttps_epi32(_mm256_add_ps(t, h)), k.zero);  // 0..255
      const __m256i q16 = _mm256_packus_epi32(q, q);  // per 128-bit lane: q0..q3 q0..q3 | q4..q7 q4..q7
      const __m256i q8 = _mm256_packus_epi16(q16, q16);
      const int32_t low = _mm_cvtsi128_si32(_mm256_castsi256_si128(q8));
      const int32_t high = _mm_cvtsi128_si32(_mm256_extracti128_si256(q8, 1));
      uint8_t* dst = b.codes + (col + i) * b.codes_stride;
      std::memcpy(dst, &low, 4);
      std::memcpy(dst + 4, &high, 4);
    }
  }
}

// One block of 8 channels over every column, kColumns at a time; the channel constants stay in
// registers (up to 3 terms).
template <int kTerms, Activation kAct>
void requantize_rows8(const RequantArgs& a, const Constants& k, int64_t r) {
  Rows b;
  b.terms = kTerms > 0 ? kTerms : a.terms;
  b.bias = _mm256_loadu_ps(a.bias + r);
  b.multiplier = a.multiplier + r;
  b.offsets = a.offset ? a.offset + r : nullptr;
  b.multiplier_term_stride = a.multiplier_term_stride;
  __m256 mult[kTerms > 0 ? kTerms : 1];
  __m256i offset[kTerms > 0 ? kTerms : 1];
  for (int j = 0; j < (kTerms > 0 ? kTerms : 0); ++j) {
    mult[j] = _mm256_loadu_ps(b.multiplier + j * b.multiplier_term_stride);
    offset[j] = b.offsets ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.offsets + j * b.multiplier_term_stride))
                          : _mm256_setzero_si256();
  }
  b.acc = a.acc + r;
  b.acc_stride = a.acc_stride;
  b.term_stride = a.term_stride;
  b.residual = a.residual ? a.residual + r : nullptr;
  b.residual_stride = a.residual_stride;
  b.scaled = a.residual_scale != nullptr;
  b.residual_scale = b.scaled ? _mm256_loadu_ps(a.residual_scale + r) : _mm256_set1_ps(1.0f);
  b.out = a.out ? a.out + r : nullptr;
  b.out_stride = a.out_stride;
  b.codes = a.codes ? a.codes + r : nullptr;
  b.codes_stride = a.codes_stride;
  constexpr int kN = kColumns<kAct>;
  const int64_t cols = a.cols;
  int64_t col = 0;
  for (; col + kN <= cols; col += kN) finish8<kTerms, kAct, kN>(k, b, mult, offset, col);
  for (; col < cols; ++col) finish8<kTerms, kAct, 1>(k, b, mult, offset, col);
}

// Every whole block of 8 channels; returns the channels done.
template <Activation kAct>
int64_t requantize_all_rows8(const RequantArgs& a) {
  const Constants k(a);
  int64_t r = 0;
  for (; r + 8 <= a.rows; r += 8) {
    switch (a.terms) {
      case 1: requantize_rows8<1, kAct>(a, k, r); break;
      case 2: requantize_rows8<2, kAct>(a, k, r); break;
      case 3: requantize_rows8<3, kAct>(a, k, r); break;
      default: requantize_rows8<0, kAct>(a, k, r);
    }
  }
  return r;
}

}  // namespace

void requantize_block_avx2(const RequantArgs& a) {
  int64_t r = 0;
  switch (a.act) {
    case Activation::kGelu: r = requantize_all_rows8<Activation::kGelu>(a); break;
    case Activation::kGeluMul: r = requantize_all_rows8<Activation::kGeluMul>(a); break;
    case Activation::kHardSigmoid: r = requantize_all_rows8<Activation::kHardSigmoid>(a); break;
    case Activation::kHardSwish: r = requantize_all_rows8<Activation::kHardSwish>(a); break;
    case Activation::kSigmoid: r = requantize_all_rows8<Activation::kSigmoid>(a); break;
    case Activation::kSilu: r = requantize_all_rows8<Activation::kSilu>(a); break;
    default: r = requantize_all_rows8<Activation::kNone>(a);
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
