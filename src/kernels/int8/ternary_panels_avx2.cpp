// AVX2 ternary decoder: each 32-bit half of a code mask becomes 32 byte masks (shuffle each mask
// byte over 8 bytes, test one bit per byte); a shuffle spreads the row units; w = (u & +) - (u & -).
#include <immintrin.h>

#include <algorithm>
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

namespace {

// C columns of one 32-row block into out[col][32]. Partial sums stay int16 over up to 32 steps of
// one unit (64 pairs x 510 < 2^15), then go to int32 times the rows' units.
template <int C>
void lut_block(const TernaryLut& lut, int64_t block, const uint8_t* tables, int64_t table_bytes, int32_t* out) {
  constexpr int64_t R = TernaryLut::kRows;
  const int64_t steps = lut.steps, spu = lut.steps_per_unit;
  const uint8_t* index = lut.index.data() + block * steps * R;
  const uint8_t* units = lut.units.data() + block * lut.unit_blocks() * R;
  const __m256i nibble = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
  auto half = [](const uint8_t* p) { return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); };
  __m256i acc32[C][4];
  for (int col = 0; col < C; ++col)
    for (__m256i& a : acc32[col]) a = zero;
  for (int64_t s0 = 0; s0 < steps;) {
    const int64_t unit_block = s0 / spu, s1 = std::min({steps, (unit_block + 1) * spu, s0 + 32});
    __m256i acc16[C][2];
    for (int col = 0; col < C; ++col) acc16[col][0] = acc16[col][1] = zero;
    for (int64_t s = s0; s < s1; ++s) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(index + s * R));
      const __m256i i0 = _mm256_and_si256(v, nibble), i1 = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
      for (int col = 0; col < C; ++col) {
        const uint8_t* t = tables + col * table_bytes + 64 * s;
        const __m256i l0 = _mm256_shuffle_epi8(half(t), i0), h0 = _mm256_shuffle_epi8(half(t + 16), i0);
        const __m256i l1 = _mm256_shuffle_epi8(half(t + 32), i1), h1 = _mm256_shuffle_epi8(half(t + 48), i1);
        // unpacklo: rows 0-7 | 16-23 as int16 (low byte, high byte); unpackhi: rows 8-15 | 24-31.
        acc16[col][0] = _mm256_add_epi16(acc16[col][0],
                                         _mm256_add_epi16(_mm256_unpacklo_epi8(l0, h0), _mm256_unpacklo_epi8(l1, h1)));
        acc16[col][1] = _mm256_add_epi16(acc16[col][1],
                                         _mm256_add_epi16(_mm256_unpackhi_epi8(l0, h0), _mm256_unpackhi_epi8(l1, h1)));
      }
    }
    const __m256i u = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(units + unit_block * R));
    const __m256i u16[2] = {_mm256_unpacklo_epi8(u, zero), _mm256_unpackhi_epi8(u, zero)};
    for (int col = 0; col < C; ++col)
      for (int h = 0; h < 2; ++h) {
        const __m256i lo = _mm256_mullo_epi16(acc16[col][h], u16[h]), hi = _mm256_mulhi_epi16(acc16[col][h], u16[h]);
        acc32[col][2 * h] = _mm256_add_epi32(acc32[col][2 * h], _mm256_unpacklo_epi16(lo, hi));
        acc32[col][2 * h + 1] = _mm256_add_epi32(acc32[col][2 * h + 1], _mm256_unpackhi_epi16(lo, hi));
      }
    s0 = s1;
  }
  // acc32[0]: rows 0-3 | 16-19, [1]: 4-7 | 20-23, [2]: 8-11 | 24-27, [3]: 12-15 | 28-31.
  for (int col = 0; col < C; ++col) {
    const __m256i* a = acc32[col];
    int32_t* o = out + col * R;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o), _mm256_permute2x128_si256(a[0], a[1], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 8), _mm256_permute2x128_si256(a[2], a[3], 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16), _mm256_permute2x128_si256(a[0], a[1], 0x31));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 24), _mm256_permute2x128_si256(a[2], a[3], 0x31));
  }
}

}  // namespace

void ternary_lut_avx2(const TernaryLut& lut, int64_t block_begin, int64_t block_end, int64_t cols, const uint8_t* tables,
                      int32_t* c, int64_t ldc) {
  constexpr int64_t R = TernaryLut::kRows;
  const int64_t table_bytes = lut.table_bytes();
  alignas(32) int32_t out[4 * R];
  for (int64_t block = block_begin; block < block_end; ++block) {
    const int64_t rows = std::min(R, lut.rows - block * R);
    for (int64_t col0 = 0; col0 < cols; col0 += 4) {
      const int64_t n = std::min<int64_t>(4, cols - col0);
      const uint8_t* t = tables + col0 * table_bytes;
      switch (n) {
        case 1: lut_block<1>(lut, block, t, table_bytes, out); break;
        case 2: lut_block<2>(lut, block, t, table_bytes, out); break;
        case 3: lut_block<3>(lut, block, t, table_bytes, out); break;
        default: lut_block<4>(lut, block, t, table_bytes, out); break;
      }
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(c + (col0 + i) * ldc + block * R, out + i * R, static_cast<size_t>(rows) * sizeof(int32_t));
    }
  }
}

}  // namespace tern::kernels
