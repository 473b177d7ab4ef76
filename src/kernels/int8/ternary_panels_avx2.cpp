// AVX2 ternary decoder: each 32-bit half of a code mask becomes 32 byte masks (shuffle each mask
// byte over 8 bytes, test one bit per byte); a shuffle spreads the row units; w = (u & +) - (u & -).
#include <immintrin.h>

#include <cstring>

#include "kernels/int8/ternary_avx2_internal.h"
#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {

namespace {

// 32 bits -> 32 bytes of 0xFF where the bit is set.
inline __m256i byte_mask(uint32_t bits) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3,
                                          3, 3, 3, 3, 3);
  const __m256i bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(bits)), spread);
  return _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
}

}  // namespace

void decode_ternary_avx2(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  // Half h covers rows 8h..8h+7; byte i of 128-bit lane L of that half belongs to row 8h + 4L + i / 4.
  __m256i index[2];
  for (int h = 0; h < 2; ++h) {
    alignas(32) int8_t spread[32];
    for (int b = 0; b < 32; ++b) spread[b] = static_cast<int8_t>(8 * h + 4 * (b / 16) + (b % 16) / 4);
    index[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(spread));
  }
  const int64_t steps = t.steps();
  for (int64_t i = panel_begin * steps; i < panel_end * steps; ++i) {
    __m128i u16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.units_of(i / steps, i % steps)));
    __m256i units = _mm256_broadcastsi128_si256(u16);
    uint64_t pos = t.positive()[i], neg = t.negative()[i];
    for (int h = 0; h < 2; ++h) {
      __m256i u = _mm256_shuffle_epi8(units, index[h]);
      __m256i p = byte_mask(static_cast<uint32_t>(pos >> (32 * h)));
      __m256i n = byte_mask(static_cast<uint32_t>(neg >> (32 * h)));
      __m256i w = _mm256_sub_epi8(_mm256_and_si256(u, p), _mm256_and_si256(u, n));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * h), w);
    }
    out += kQPanelRows * kQStep;
  }
}

void ternary_stream_avx2(const TernaryPanels& t, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                         int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  if (cpu_features().avx_vnni) ternary_stream_avxvnni(t, panel_begin, panel_end, cols, x, x_stride, c, ldc);
  else ternary_stream_avx2_maddubs(t, row_sums, panel_begin, panel_end, cols, x, x_stride, c, ldc);
}

void ternary_stream_avx2_maddubs(const TernaryPanels& t, const int32_t* row_sums, int64_t panel_begin,
                                 int64_t panel_end, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c,
                                 int64_t ldc) {
  const TernaryDecoderAvx2 d(t);
  stream_columns_avx2<false>(d, panel_begin, panel_end, t.rows(), t.steps(), row_sums, cols, x, x_stride, c, ldc);
}

}  // namespace tern::kernels
