// AVX-512 BW ternary decoder: the code masks load straight into mask registers; one in-lane
// shuffle spreads the 16 row units over the 64 weight bytes; w = u where +1, -u where -1, else 0.
#include <immintrin.h>

#include <algorithm>

#include <cstring>

#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {

void decode_ternary_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  // Byte i of 128-bit lane L belongs to row 4L + i / 4.
  alignas(64) int8_t spread[64];
  for (int b = 0; b < 64; ++b) spread[b] = static_cast<int8_t>(4 * (b / 16) + (b % 16) / 4);
  const __m512i index = _mm512_load_si512(spread);
  const __m512i zero = _mm512_setzero_si512();
  const int64_t steps = t.steps();
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    __m512i u = zero;
    for (int64_t s = 0; s < steps; ++s) {
      if (s % t.steps_per_unit() == 0) {
        __m128i units16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.units_of(p, s)));
        u = _mm512_shuffle_epi8(_mm512_maskz_broadcast_i32x4(static_cast<__mmask16>(0xFFFF), units16), index);
      }
      const int64_t i = p * steps + s;
      __m512i w = _mm512_maskz_mov_epi8(static_cast<__mmask64>(t.positive()[i]), u);
      w = _mm512_mask_sub_epi8(w, static_cast<__mmask64>(t.negative()[i]), zero, u);
      _mm512_storeu_si512(out, w);
      out += kQPanelRows * kQStep;
    }
  }
}

namespace {

template <int N>
void stream_panel(const TernaryPanels& t, int64_t p, const __m512i index, const uint8_t* x, int64_t x_stride,
                  int32_t* c, int64_t ldc) {
  const __m512i zero = _mm512_setzero_si512();
  const int64_t steps = t.steps();
  __m512i acc[N];
  for (int n = 0; n < N; ++n) acc[n] = zero;
  __m512i u = zero;
  const uint64_t* pos = t.positive() + p * steps;
  const uint64_t* neg = t.negative() + p * steps;
  for (int64_t s = 0; s < steps; ++s) {
    if (s % t.steps_per_unit() == 0) {
      __m128i units16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.units_of(p, s)));
      u = _mm512_shuffle_epi8(_mm512_maskz_broadcast_i32x4(static_cast<__mmask16>(0xFFFF), units16), index);
    }
    __m512i w = _mm512_maskz_mov_epi8(static_cast<__mmask64>(pos[s]), u);
    w = _mm512_mask_sub_epi8(w, static_cast<__mmask64>(neg[s]), zero, u);
    for (int n = 0; n < N; ++n) {
      int32_t xv;
      std::memcpy(&xv, x + n * x_stride + s * kQStep, sizeof xv);
      acc[n] = _mm512_dpbusd_epi32(acc[n], _mm512_set1_epi32(xv), w);
    }
  }
  int64_t valid = std::min<int64_t>(kQPanelRows, t.rows() - p * kQPanelRows);
  __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
  for (int n = 0; n < N; ++n) _mm512_mask_storeu_epi32(c + n * ldc + p * kQPanelRows, mask, acc[n]);
}

}  // namespace

void ternary_stream_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                           const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  alignas(64) int8_t spread[64];
  for (int b = 0; b < 64; ++b) spread[b] = static_cast<int8_t>(4 * (b / 16) + (b % 16) / 4);
  const __m512i index = _mm512_load_si512(spread);
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    switch (cols) {
      case 1: stream_panel<1>(t, p, index, x, x_stride, c, ldc); break;
      case 2: stream_panel<2>(t, p, index, x, x_stride, c, ldc); break;
      case 3: stream_panel<3>(t, p, index, x, x_stride, c, ldc); break;
      default: stream_panel<4>(t, p, index, x, x_stride, c, ldc); break;
    }
  }
}

}  // namespace tern::kernels
