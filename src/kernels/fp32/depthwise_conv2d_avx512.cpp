// AVX-512 depthwise row kernel: 32 outputs per step (two zmm chains), a masked tail. Compiled
// with -mavx512f/bw/vl/dq -mfma; reached only after detection. No std:: templates here.
#include <immintrin.h>

#include "kernels/fp32/depthwise_conv2d.h"

namespace tern::kernels::detail {

namespace {

// Clamp keeping NaN (operand order as in the reference). The masked forms dodge GCC 12's false
// -Wmaybe-uninitialized in _mm512_max_ps/_mm512_min_ps (GCC PR 105593).
inline __m512 clamp_ps(__m512 x, __m512 lo, __m512 hi) {
  x = _mm512_mask_max_ps(x, 0xFFFF, lo, x);
  return _mm512_mask_min_ps(x, 0xFFFF, hi, x);
}

}  // namespace

void depthwise_row__avx512(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                           float bias, float lo, float hi, float* out) {
  const __m512 vbias = _mm512_set1_ps(bias), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  int64_t i = 0;
  for (; i + 32 <= count; i += 32) {
    __m512 acc0 = vbias, acc1 = vbias;
    for (int t = 0; t < taps; ++t) {
      const __m512 wv = _mm512_set1_ps(weights[t]);
      const float* s = src + offsets[t] + i;
      acc0 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s), acc0);
      acc1 = _mm512_fmadd_ps(wv, _mm512_loadu_ps(s + 16), acc1);
    }
    _mm512_storeu_ps(out + i, clamp_ps(acc0, vlo, vhi));
    _mm512_storeu_ps(out + i + 16, clamp_ps(acc1, vlo, vhi));
  }
  for (; i < count; i += 16) {
    const int64_t left = count - i;
    const __mmask16 mask = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
    __m512 acc = vbias;
    for (int t = 0; t < taps; ++t) {
      acc = _mm512_fmadd_ps(_mm512_set1_ps(weights[t]), _mm512_maskz_loadu_ps(mask, src + offsets[t] + i), acc);
    }
    _mm512_mask_storeu_ps(out + i, mask, clamp_ps(acc, vlo, vhi));
  }
}

}  // namespace tern::kernels::detail
