// The AVX2 streaming GEMV/small-batch loop shared by the compressed weight formats (ternary,
// int4): each half (8 rows) of a 16-row panel step is decoded in registers into one ymm of int8
// weights and multiplied with up to 8 columns at once. With AVX-VNNI the product is vpdpbusd ymm;
// without it, the qgemm AVX2 kernel's trick (qgemm_avx2.cpp): activations offset to x - 128,
// |x - 128| (u8) times sign(x - 128) * w (s8) by vpmaddubsw, widened by vpmaddwd, and
// 128 * row_sum added back at the end. Include only from files compiled with AVX2 (and AVX-VNNI
// for Vnni = true); internal linkage keeps differently-flagged copies apart.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/int8/qgemm.h"

namespace tern::kernels {
namespace {

// Half h holds rows 8h..8h+7; byte i of 128-bit lane L of that half belongs to row 8h + 4L + i / 4.
inline void unit_spread_indexes(__m256i index[2]) {
  for (int h = 0; h < 2; ++h) {
    alignas(32) int8_t spread[32];
    for (int b = 0; b < 32; ++b) spread[b] = static_cast<int8_t>(8 * h + 4 * (b / 16) + (b % 16) / 4);
    index[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(spread));
  }
}

// 16 row units -> half h's bytes (rows 8h..8h+7).
inline __m256i spread_units_avx2(const uint8_t* units16, __m256i index) {
  const __m128i units = _mm_loadu_si128(reinterpret_cast<const __m128i*>(units16));
  return _mm256_shuffle_epi8(_mm256_broadcastsi128_si256(units), index);
}

// One half panel (rows 8h..8h+7) x N <= 8 columns: a half's weights are one ymm, so eight
// columns' accumulators fit the 16 ymm registers and each step is decoded once for all of them.
// H accumulator sets per column take alternate steps (vpdpbusd's latency; a GEMV has one column).
// A Decoder has:
//   Panel open(int64_t panel) const;  int64_t steps_per_unit() const (0: no units);
//   void units_at(Panel&, int64_t block, int h) const;  __m256i weights(const Panel&, int64_t s, int h) const;
// As in stream_avx512_internal.h, no branch inside the step loop touches the accumulators: units
// load between blocks, or every step (kUnitPerStep).
template <int N, int H, bool Vnni, bool kUnitPerStep, typename Decoder>
void stream_half_avx2(const Decoder& d, int64_t panel, int h, int64_t rows, int64_t steps, const int32_t* row_sums,
                      const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  typename Decoder::Panel pn = d.open(panel);
  __m256i acc[H][N];
  for (int a = 0; a < H; ++a)
    for (int n = 0; n < N; ++n) acc[a][n] = _mm256_setzero_si256();
  auto step = [&]<int a>(int64_t s) __attribute__((always_inline)) {
    if constexpr (kUnitPerStep) d.units_at(pn, s, h);
    const __m256i w = d.weights(pn, s, h);
    for (int n = 0; n < N; ++n) {
      int32_t xv;
      std::memcpy(&xv, x + n * x_stride + s * kQStep, sizeof xv);
      const __m256i xb = _mm256_set1_epi32(xv);
      if constexpr (Vnni) {
#ifdef __AVXVNNI__
        acc[a][n] = _mm256_dpbusd_avx_epi32(acc[a][n], xb, w);
#endif
      } else {
        const __m256i xs = _mm256_xor_si256(xb, _mm256_set1_epi8(static_cast<char>(0x80)));
        const __m256i xa = _mm256_abs_epi8(xs);  // -128 -> 0x80, read as u8 128
        const __m256i pairs = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w, xs));
        acc[a][n] = _mm256_add_epi32(acc[a][n], _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
      }
    }
  };
  auto group = [&]<int... as>(int64_t s, std::integer_sequence<int, as...>) __attribute__((always_inline)) {
    (step.template operator()<as>(s + as), ...);
  };
  auto partial_group = [&]<int... as>(int64_t s, int64_t end, std::integer_sequence<int, as...>)
                           __attribute__((always_inline)) {
    ((s + as < end ? step.template operator()<as>(s + as) : void()), ...);
  };
  const int64_t spu = d.steps_per_unit(), block = kUnitPerStep || spu == 0 ? steps : spu;
  for (int64_t b = 0; b < steps; b += block) {
    if (!kUnitPerStep && spu > 0) d.units_at(pn, b / spu, h);
    const int64_t end = std::min(steps, b + block);
    int64_t s = b;
    for (; s + H <= end; s += H) group(s, std::make_integer_sequence<int, H>());
    if (s < end) partial_group(s, end, std::make_integer_sequence<int, H>());
  }
  const int64_t first_row = panel * kQPanelRows + 8 * h, valid = std::min<int64_t>(8, rows - first_row);
  __m256i correction = _mm256_setzero_si256();
  if constexpr (!Vnni)
    correction = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_sums + first_row)), 7);
  for (int n = 0; n < N; ++n) {
    __m256i sum = acc[0][n];
    for (int a = 1; a < H; ++a) sum = _mm256_add_epi32(sum, acc[a][n]);
    alignas(32) int32_t out[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_add_epi32(sum, correction));
    for (int r = 0; r < valid; ++r) c[n * ldc + first_row + r] = out[r];
  }
}

template <int N, bool Vnni, typename Decoder>
void stream_half_avx2(const Decoder& d, int64_t panel, int h, int64_t rows, int64_t steps, const int32_t* row_sums,
                      const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  constexpr int H = N == 1 ? 4 : N == 2 ? 3 : N <= 4 ? 2 : 1;  // about 4 chains
  if (d.steps_per_unit() == 1)
    stream_half_avx2<N, H, Vnni, true>(d, panel, h, rows, steps, row_sums, x, x_stride, c, ldc);
  else
    stream_half_avx2<N, H, Vnni, false>(d, panel, h, rows, steps, row_sums, x, x_stride, c, ldc);
}

// Panels [begin, end), columns in groups of 8 (a panel's packed weights stay in L1 between groups).
template <bool Vnni, typename Decoder>
void stream_columns_avx2(const Decoder& d, int64_t begin, int64_t end, int64_t rows, int64_t steps,
                         const int32_t* row_sums, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c,
                         int64_t ldc) {
  for (int64_t p = begin; p < end; ++p)
    for (int h = 0; h < 2 && p * kQPanelRows + 8 * h < rows; ++h)
      for (int64_t col = 0; col < cols; col += 8) {
        const uint8_t* xc = x + col * x_stride;
        int32_t* cc = c + col * ldc;
        switch (std::min<int64_t>(8, cols - col)) {
          case 1: stream_half_avx2<1, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 2: stream_half_avx2<2, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 3: stream_half_avx2<3, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 4: stream_half_avx2<4, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 5: stream_half_avx2<5, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 6: stream_half_avx2<6, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          case 7: stream_half_avx2<7, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
          default: stream_half_avx2<8, Vnni>(d, p, h, rows, steps, row_sums, xc, x_stride, cc, ldc); break;
        }
      }
}

}  // namespace
}  // namespace tern::kernels
