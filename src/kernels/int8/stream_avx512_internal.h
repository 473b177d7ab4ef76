// The AVX-512 VNNI streaming GEMV/small-batch loop shared by the compressed weight formats
// (ternary, int4): each 16-row panel step is decoded in registers into 64 int8 weights and
// multiplied with up to 8 columns at once, so the weights are read once, at their packed size.
// Include only from files compiled with AVX-512 BW + VNNI (internal linkage: no ODR clash
// between files with different flags).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/int8/qgemm.h"

namespace tern::kernels {
namespace {

// Byte i of 128-bit lane L of a panel step belongs to row 4L + i / 4.
inline __m512i row_spread_index() {
  alignas(64) int8_t spread[64];
  for (int b = 0; b < 64; ++b) spread[b] = static_cast<int8_t>(4 * (b / 16) + (b % 16) / 4);
  return _mm512_load_si512(spread);
}

// A block of panels reads 2-3 streams per panel (codes, or + and - masks, and units): 8-12 at
// once, more than the hardware prefetchers follow well, so the decoders prefetch each stream this
// far ahead (once per 64-byte line). Ternary N=4 at one thread went from 19.9 to 24.6 GB/s of its
// packed bytes on 8192-wide layers beyond the L3 (docs/results/streaming.md at 5efa636 and 41908df);
// 256, 512 and 1024 bytes ahead did alike.
inline void prefetch_ahead(const void* at) { _mm_prefetch(static_cast<const char*>(at) + 512, _MM_HINT_T0); }

// 16 row units -> each row's unit in its 4 bytes. (The zero-masked broadcast with a full mask is
// the plain one; GCC 12 warns about the plain intrinsic's undefined pass-through.)
inline __m512i spread_units(const uint8_t* units16, __m512i index) {
  const __m128i units = _mm_loadu_si128(reinterpret_cast<const __m128i*>(units16));
  return _mm512_shuffle_epi8(_mm512_maskz_broadcast_i32x4(static_cast<__mmask16>(0xFFFF), units), index);
}

// P panels x N columns. A Decoder has:
//   Panel open(int64_t panel) const;              per-panel stream pointers and current units
//   int64_t steps_per_unit() const;               0: no units
//   void units_at(Panel&, int64_t block) const;   load unit block `block`'s units
//   __m512i weights(const Panel&, int64_t s) const;
//   __m512i adjust(__m512i sums, int n) const;    column n's finished sums (e.g. an offset removed)
// H accumulator sets per (panel, column) take alternate steps: vpdpbusd has a latency of ~5
// cycles and issues 2 per cycle, so a GEMV needs about 8 independent chains to keep it busy.
// The inner loops have no branches that touch the accumulators (units load between blocks, or
// every step with kUnitPerStep): GCC otherwise shuffles register copies at each join.
template <int N, int P, int H, bool kUnitPerStep, typename Decoder>
void stream_panels(const Decoder& d, int64_t p0, int64_t rows, int64_t steps, const uint8_t* x, int64_t x_stride,
                   int32_t* c, int64_t ldc) {
  typename Decoder::Panel panel[P];
  for (int p = 0; p < P; ++p) panel[p] = d.open(p0 + p);
  __m512i acc[P][H][N];
  for (int p = 0; p < P; ++p)
    for (int h = 0; h < H; ++h)
      for (int n = 0; n < N; ++n) acc[p][h][n] = _mm512_setzero_si512();
  // h is a template argument so that every accumulator index is a constant.
  auto step = [&]<int h>(int64_t s) __attribute__((always_inline)) {
    __m512i xb[N];
    for (int n = 0; n < N; ++n) {
      int32_t xv;
      std::memcpy(&xv, x + n * x_stride + s * kQStep, sizeof xv);
      xb[n] = _mm512_set1_epi32(xv);
    }
    for (int p = 0; p < P; ++p) {
      if constexpr (kUnitPerStep) d.units_at(panel[p], s);
      const __m512i w = d.weights(panel[p], s);
      for (int n = 0; n < N; ++n) acc[p][h][n] = _mm512_dpbusd_epi32(acc[p][h][n], xb[n], w);
    }
  };
  auto group = [&]<int... hs>(int64_t s, std::integer_sequence<int, hs...>) __attribute__((always_inline)) {
    (step.template operator()<hs>(s + hs), ...);
  };
  auto partial_group = [&]<int... hs>(int64_t s, int64_t end, std::integer_sequence<int, hs...>)
                           __attribute__((always_inline)) {
    ((s + hs < end ? step.template operator()<hs>(s + hs) : void()), ...);
  };
  const int64_t spu = d.steps_per_unit();
  const int64_t block = kUnitPerStep || spu == 0 ? steps : spu;
  for (int64_t b = 0; b < steps; b += block) {
    if (!kUnitPerStep && spu > 0)
      for (int p = 0; p < P; ++p) d.units_at(panel[p], b / spu);
    const int64_t end = std::min(steps, b + block);
    int64_t s = b;
    for (; s + H <= end; s += H) group(s, std::make_integer_sequence<int, H>());
    if (s < end) partial_group(s, end, std::make_integer_sequence<int, H>());
  }
  for (int p = 0; p < P; ++p) {
    const int64_t valid = std::min<int64_t>(kQPanelRows, rows - (p0 + p) * kQPanelRows);
    if (valid <= 0) break;
    const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
    for (int n = 0; n < N; ++n) {
      __m512i sum = acc[p][0][n];
      for (int h = 1; h < H; ++h) sum = _mm512_add_epi32(sum, acc[p][h][n]);
      _mm512_mask_storeu_epi32(c + n * ldc + (p0 + p) * kQPanelRows, mask, d.adjust(sum, n));
    }
  }
}

template <int N, int P, int H, bool kUnitPerStep, typename Decoder>
void stream_range_units(const Decoder& d, int64_t begin, int64_t end, int64_t rows, int64_t steps, const uint8_t* x,
                        int64_t x_stride, int32_t* c, int64_t ldc) {
  int64_t p = begin;
  for (; p + P <= end; p += P) stream_panels<N, P, H, kUnitPerStep>(d, p, rows, steps, x, x_stride, c, ldc);
  for (; p + 2 <= end; p += 2) stream_panels<N, 2, H, kUnitPerStep>(d, p, rows, steps, x, x_stride, c, ldc);
  if (p < end) stream_panels<N, 1, 2 * H, kUnitPerStep>(d, p, rows, steps, x, x_stride, c, ldc);
}

// Panels [begin, end) in blocks of P (then pairs, then one).
template <int N, int P, int H, typename Decoder>
void stream_range(const Decoder& d, int64_t begin, int64_t end, int64_t rows, int64_t steps, const uint8_t* x,
                  int64_t x_stride, int32_t* c, int64_t ldc) {
  if (d.steps_per_unit() == 1) return stream_range_units<N, P, H, true>(d, begin, end, rows, steps, x, x_stride, c, ldc);
  stream_range_units<N, P, H, false>(d, begin, end, rows, steps, x, x_stride, c, ldc);
}

// Panels taken at once for `cols` columns (see stream_columns): thread splits use multiples.
constexpr int64_t stream_panel_block(int64_t cols) { return cols <= 2 ? 4 : 2; }

// (panels, accumulator sets) per column count: about 8 chains, at most ~24 accumulators.
template <typename Decoder>
void stream_columns(const Decoder& d, int64_t begin, int64_t end, int64_t rows, int64_t steps, int64_t cols,
                    const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  switch (cols) {
    case 1: return stream_range<1, 4, 2>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 2: return stream_range<2, 4, 1>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 3: return stream_range<3, 2, 2>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 4: return stream_range<4, 2, 2>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 5: return stream_range<5, 2, 1>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 6: return stream_range<6, 2, 1>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    case 7: return stream_range<7, 2, 1>(d, begin, end, rows, steps, x, x_stride, c, ldc);
    default: return stream_range<8, 2, 1>(d, begin, end, rows, steps, x, x_stride, c, ldc);
  }
}

}  // namespace
}  // namespace tern::kernels
