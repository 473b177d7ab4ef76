// AVX2 depthwise row kernel: 16 outputs per step (two ymm chains), a maskload tail. Compiled with
// -mavx2 -mfma; reached only after detection. No std:: templates here.
#include <immintrin.h>

#include "kernels/fp32/depthwise_conv2d.h"

namespace tern::kernels::detail {

void depthwise_row__avx2(const float* src, const int64_t* offsets, const float* weights, int taps, int64_t count,
                         float bias, float lo, float hi, float* out) {
  const __m256 vbias = _mm256_set1_ps(bias), vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi);
  int64_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256 acc0 = vbias, acc1 = vbias;
    for (int t = 0; t < taps; ++t) {
      const __m256 wv = _mm256_set1_ps(weights[t]);
      const float* s = src + offsets[t] + i;
      acc0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s), acc0);
      acc1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(s + 8), acc1);
    }
    _mm256_storeu_ps(out + i, _mm256_min_ps(vhi, _mm256_max_ps(vlo, acc0)));
    _mm256_storeu_ps(out + i + 8, _mm256_min_ps(vhi, _mm256_max_ps(vlo, acc1)));
  }
  for (; i < count; i += 8) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(count - i)),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 acc = vbias;
    for (int t = 0; t < taps; ++t) {
      acc = _mm256_fmadd_ps(_mm256_set1_ps(weights[t]), _mm256_maskload_ps(src + offsets[t] + i, mask), acc);
    }
    _mm256_maskstore_ps(out + i, mask, _mm256_min_ps(vhi, _mm256_max_ps(vlo, acc)));
  }
}

}  // namespace tern::kernels::detail
