// Internal to the AVX-512 VNNI int8 kernels (qgemm_avx512.cpp, qgemm_indirect_avx512.cpp): their
// register tile. P panels (16 weight rows each) by N columns of int32 accumulators, at most 24 (a
// 4 x 6 or 3 x 8 tile: with the P weight vectors and a broadcast, 29 of the 32 registers); each K
// step loads one weight vector per panel and issues one vpdpbusd per accumulator with the
// column's 4 activation bytes broadcast. Column n's bytes for step s are at at(s) + n * stride
// (at: the caller's address of step s in column 0, a packed column or an implicit-GEMM offset).
//
// Every accumulator is its own named variable: GCC kept a __m512i acc[P][N] array in registers
// only by copying each accumulator to another register (and one to the stack) after every
// vpdpbusd, which held a 2 x 8 tile to about 65 % of VNNI's rate on Zen 4 (two vpdpbusd per
// cycle); named, a 4 x 6 or 3 x 8 tile reaches 93-97 %. Three pointers reach the columns: q,
// q + 3 stride and q + 6 stride, each with 0, 1 or 2 strides as a scaled index.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels::vnni_tile {

#define TERN_ACC_ROW(p) \
  __m512i a##p##0 = z, a##p##1 = z, a##p##2 = z, a##p##3 = z, a##p##4 = z, a##p##5 = z, a##p##6 = z, a##p##7 = z;
#define TERN_COLUMN(n, at)                                                  \
  if constexpr (N > n) {                                                    \
    const __m512i xb = _mm512_set1_epi32(load_u32(at));                     \
    a0##n = _mm512_dpbusd_epi32(a0##n, xb, v0);                             \
    if constexpr (P > 1) a1##n = _mm512_dpbusd_epi32(a1##n, xb, v1);        \
    if constexpr (P > 2) a2##n = _mm512_dpbusd_epi32(a2##n, xb, v2);        \
    if constexpr (P > 3) a3##n = _mm512_dpbusd_epi32(a3##n, xb, v3);        \
  }
#define TERN_STORE_ROW(p)                                                                    \
  if constexpr (P > p) {                                                                     \
    const int64_t valid = rows_valid - p * kQPanelRows;                                      \
    const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF)                     \
                                       : static_cast<__mmask16>((1u << valid) - 1u);         \
    int32_t* cp = c + p * kQPanelRows;                                                       \
    const __m512i row[8] = {a##p##0, a##p##1, a##p##2, a##p##3, a##p##4, a##p##5, a##p##6, a##p##7}; \
    for (int n = 0; n < N; ++n) _mm512_mask_storeu_epi32(cp + n * ldc, mask, row[n]);         \
  }

template <int P, int N, typename StepAddress>
inline void tile(const int8_t* w, int64_t steps, int64_t rows_valid, StepAddress at, int64_t stride, int32_t* c,
                 int64_t ldc) {
  static_assert(P >= 1 && P <= 4 && N >= 1 && N <= 8 && P * N <= 24, "a tile must fit the registers");
  const __m512i z = _mm512_setzero_si512();
  TERN_ACC_ROW(0) TERN_ACC_ROW(1) TERN_ACC_ROW(2) TERN_ACC_ROW(3)
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  for (int64_t s = 0; s < steps; ++s, w += kQPanelRows * kQStep) {
    const __m512i v0 = _mm512_loadu_si512(w);
    const __m512i v1 = P > 1 ? _mm512_loadu_si512(w + panel_bytes) : z;
    const __m512i v2 = P > 2 ? _mm512_loadu_si512(w + 2 * panel_bytes) : z;
    const __m512i v3 = P > 3 ? _mm512_loadu_si512(w + 3 * panel_bytes) : z;
    const uint8_t* q = at(s);
    const uint8_t* q3 = q + 3 * stride;
    const uint8_t* q6 = q + 6 * stride;
    TERN_COLUMN(0, q) TERN_COLUMN(1, q + stride) TERN_COLUMN(2, q + 2 * stride)
    TERN_COLUMN(3, q3) TERN_COLUMN(4, q3 + stride) TERN_COLUMN(5, q3 + 2 * stride)
    TERN_COLUMN(6, q6) TERN_COLUMN(7, q6 + stride)
  }
  TERN_STORE_ROW(0) TERN_STORE_ROW(1) TERN_STORE_ROW(2) TERN_STORE_ROW(3)
}
#undef TERN_ACC_ROW
#undef TERN_COLUMN
#undef TERN_STORE_ROW

// The tile for `cols` columns: at most 6 with 4 panels, else 8 (the callers keep to that).
template <int P, typename StepAddress>
inline void tile_cols(int64_t cols, const int8_t* w, int64_t steps, int64_t rows_valid, StepAddress at, int64_t stride,
                      int32_t* c, int64_t ldc) {
  switch (cols) {
    case 1: return tile<P, 1>(w, steps, rows_valid, at, stride, c, ldc);
    case 2: return tile<P, 2>(w, steps, rows_valid, at, stride, c, ldc);
    case 3: return tile<P, 3>(w, steps, rows_valid, at, stride, c, ldc);
    case 4: return tile<P, 4>(w, steps, rows_valid, at, stride, c, ldc);
    case 5: return tile<P, 5>(w, steps, rows_valid, at, stride, c, ldc);
    case 6: return tile<P, 6>(w, steps, rows_valid, at, stride, c, ldc);
    default:
      if constexpr (P < 4) {
        if (cols == 7) return tile<P, 7>(w, steps, rows_valid, at, stride, c, ldc);
        return tile<P, 8>(w, steps, rows_valid, at, stride, c, ldc);
      }
  }
}

// The tile for `panels` (1-4) panels and `cols` columns.
template <typename StepAddress>
inline void tile_panels(int64_t panels, int64_t cols, const int8_t* w, int64_t steps, int64_t rows_valid,
                        StepAddress at, int64_t stride, int32_t* c, int64_t ldc) {
  switch (panels) {
    case 4: return tile_cols<4>(cols, w, steps, rows_valid, at, stride, c, ldc);
    case 3: return tile_cols<3>(cols, w, steps, rows_valid, at, stride, c, ldc);
    case 2: return tile_cols<2>(cols, w, steps, rows_valid, at, stride, c, ldc);
    default: return tile_cols<1>(cols, w, steps, rows_valid, at, stride, c, ldc);
  }
}

}  // namespace tern::kernels::vnni_tile
