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

// Two panels at a time, two accumulator sets per column (even and odd steps): four independent
// vpdpbusd chains per column hide its latency, which a single chain per column would expose.
template <int N, int P>
void stream_panels(const TernaryPanels& t, int64_t p0, const __m512i index, const uint8_t* x, int64_t x_stride,
                   int32_t* c, int64_t ldc) {
  const __m512i zero = _mm512_setzero_si512();
  const int64_t steps = t.steps(), spu = t.steps_per_unit();
  __m512i acc[P][2][N];
  for (int p = 0; p < P; ++p)
    for (int h = 0; h < 2; ++h)
      for (int n = 0; n < N; ++n) acc[p][h][n] = zero;
  __m512i u[P];
  for (int p = 0; p < P; ++p) u[p] = zero;
  auto units = [&](int64_t panel, int64_t s) {
    __m128i units16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.units_of(panel, s)));
    return _mm512_shuffle_epi8(_mm512_maskz_broadcast_i32x4(static_cast<__mmask16>(0xFFFF), units16), index);
  };
  auto step = [&](int64_t s, int h) {
    if (s % spu == 0)
      for (int p = 0; p < P; ++p) u[p] = units(p0 + p, s);
    __m512i xb[N];
    for (int n = 0; n < N; ++n) {
      int32_t xv;
      std::memcpy(&xv, x + n * x_stride + s * kQStep, sizeof xv);
      xb[n] = _mm512_set1_epi32(xv);
    }
    for (int p = 0; p < P; ++p) {
      const int64_t i = (p0 + p) * steps + s;
      __m512i w = _mm512_maskz_mov_epi8(static_cast<__mmask64>(t.positive()[i]), u[p]);
      w = _mm512_mask_sub_epi8(w, static_cast<__mmask64>(t.negative()[i]), zero, u[p]);
      for (int n = 0; n < N; ++n) acc[p][h][n] = _mm512_dpbusd_epi32(acc[p][h][n], xb[n], w);
    }
  };
  int64_t s = 0;
  for (; s + 2 <= steps; s += 2) {
    step(s, 0);
    step(s + 1, 1);
  }
  if (s < steps) step(s, 0);
  for (int p = 0; p < P; ++p) {
    int64_t valid = std::min<int64_t>(kQPanelRows, t.rows() - (p0 + p) * kQPanelRows);
    __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
    for (int n = 0; n < N; ++n)
      _mm512_mask_storeu_epi32(c + n * ldc + (p0 + p) * kQPanelRows, mask, _mm512_add_epi32(acc[p][0][n], acc[p][1][n]));
  }
}

template <int N>
void stream_range(const TernaryPanels& t, int64_t begin, int64_t end, const __m512i index, const uint8_t* x,
                  int64_t x_stride, int32_t* c, int64_t ldc) {
  int64_t p = begin;
  for (; p + 2 <= end; p += 2) stream_panels<N, 2>(t, p, index, x, x_stride, c, ldc);
  if (p < end) stream_panels<N, 1>(t, p, index, x, x_stride, c, ldc);
}

}  // namespace

void ternary_stream_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                           const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  alignas(64) int8_t spread[64];
  for (int b = 0; b < 64; ++b) spread[b] = static_cast<int8_t>(4 * (b / 16) + (b % 16) / 4);
  const __m512i index = _mm512_load_si512(spread);
  switch (cols) {
    case 1: return stream_range<1>(t, panel_begin, panel_end, index, x, x_stride, c, ldc);
    case 2: return stream_range<2>(t, panel_begin, panel_end, index, x, x_stride, c, ldc);
    case 3: return stream_range<3>(t, panel_begin, panel_end, index, x, x_stride, c, ldc);
    default: return stream_range<4>(t, panel_begin, panel_end, index, x, x_stride, c, ldc);
  }
}

}  // namespace tern::kernels
