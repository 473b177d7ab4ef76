// AVX-512 VNNI implicit-GEMM kernel: a register tile of up to 4 panels x 6 columns (or 3 x 8) of
// int32 accumulators, with each column's 4 activation bytes per step read at its own base
// pointer plus the step's offset (one extra load per step, shared by every column).
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8/qgemm_indirect.h"
#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels {

namespace {

template <int P, int N>
void tile(const int8_t* w, int64_t steps, int64_t rows_valid, const uint8_t* const* base, const int64_t* offset,
          int32_t* c, int64_t ldc) {
  __m512i acc[P][N];
  for (int p = 0; p < P; ++p)
    for (int n = 0; n < N; ++n) acc[p][n] = _mm512_setzero_si512();
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  const uint8_t* b[N];
  for (int n = 0; n < N; ++n) b[n] = base[n];
  for (int64_t s = 0; s < steps; ++s) {
    const int64_t off = offset[s];
    __m512i wv[P];
    for (int p = 0; p < P; ++p) wv[p] = _mm512_loadu_si512(w + p * panel_bytes + s * kQPanelRows * kQStep);
#pragma GCC unroll 8
    for (int n = 0; n < N; ++n) {
      __m512i xb = _mm512_set1_epi32(load_u32(b[n] + off));
      for (int p = 0; p < P; ++p) acc[p][n] = _mm512_dpbusd_epi32(acc[p][n], xb, wv[p]);
    }
  }
  for (int p = 0; p < P; ++p) {
    int64_t valid = rows_valid - p * kQPanelRows;
    __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
    for (int n = 0; n < N; ++n) _mm512_mask_storeu_epi32(c + n * ldc + p * kQPanelRows, mask, acc[p][n]);
  }
}

// The same tile for columns evenly spaced in memory (consecutive output pixels of one row: the
// usual case), x0 + n * stride, for up to 4 panels x 8 columns (at most 24 accumulators: with the
// P weight vectors and a broadcast, 29 of the 32 registers). Every accumulator is its own named
// variable: GCC kept a __m512i acc[P][N] array in registers only by copying each accumulator to
// another register (and one to the stack) after every vpdpbusd, which held a 2 x 8 tile to about
// 65 % of VNNI's rate on Zen 4 (two vpdpbusd per cycle); named, a 4 x 6 or 3 x 8 tile reaches
// 93-97 %. Three pointers reach the columns: q, q + 3 stride and q + 6 stride, each with 0, 1 or
// 2 strides as a scaled index.
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
template <int P, int N>
void tile_strided(const int8_t* w, int64_t steps, int64_t rows_valid, const uint8_t* x0, int64_t stride,
                  const int64_t* offset, int32_t* c, int64_t ldc) {
  static_assert(P >= 1 && P <= 4 && N >= 1 && N <= 8 && P * N <= 24, "a tile must fit the registers");
  const __m512i z = _mm512_setzero_si512();
  TERN_ACC_ROW(0) TERN_ACC_ROW(1) TERN_ACC_ROW(2) TERN_ACC_ROW(3)
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  for (int64_t s = 0; s < steps; ++s, w += kQPanelRows * kQStep) {
    const __m512i v0 = _mm512_loadu_si512(w);
    const __m512i v1 = P > 1 ? _mm512_loadu_si512(w + panel_bytes) : z;
    const __m512i v2 = P > 2 ? _mm512_loadu_si512(w + 2 * panel_bytes) : z;
    const __m512i v3 = P > 3 ? _mm512_loadu_si512(w + 3 * panel_bytes) : z;
    const uint8_t* q = x0 + offset[s];
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

template <int P>
void tile_strided_cols(int64_t cols, const int8_t* w, int64_t steps, int64_t rows_valid, const uint8_t* x0,
                       int64_t stride, const int64_t* offset, int32_t* c, int64_t ldc) {
  // The caller keeps cols within the tile's limit (6 columns for 4 panels, else 8).
  switch (cols) {
    case 1: return tile_strided<P, 1>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    case 2: return tile_strided<P, 2>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    case 3: return tile_strided<P, 3>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    case 4: return tile_strided<P, 4>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    case 5: return tile_strided<P, 5>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    case 6: return tile_strided<P, 6>(w, steps, rows_valid, x0, stride, offset, c, ldc);
    default:
      if constexpr (P < 4) {
        if (cols == 7) return tile_strided<P, 7>(w, steps, rows_valid, x0, stride, offset, c, ldc);
        return tile_strided<P, 8>(w, steps, rows_valid, x0, stride, offset, c, ldc);
      }
  }
}

template <int P>
void tile_cols(int64_t cols, const int8_t* w, int64_t steps, int64_t rows_valid, const uint8_t* const* base,
               const int64_t* offset, int32_t* c, int64_t ldc) {
  switch (cols) {
    case 1: return tile<P, 1>(w, steps, rows_valid, base, offset, c, ldc);
    case 2: return tile<P, 2>(w, steps, rows_valid, base, offset, c, ldc);
    case 3: return tile<P, 3>(w, steps, rows_valid, base, offset, c, ldc);
    case 4: return tile<P, 4>(w, steps, rows_valid, base, offset, c, ldc);
    case 5: return tile<P, 5>(w, steps, rows_valid, base, offset, c, ldc);
    case 6: return tile<P, 6>(w, steps, rows_valid, base, offset, c, ldc);
    case 7: return tile<P, 7>(w, steps, rows_valid, base, offset, c, ldc);
    default: return tile<P, 8>(w, steps, rows_valid, base, offset, c, ldc);
  }
}

}  // namespace

void qgemm_indirect_avx512_vnni(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                                const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc) {
  // Panels go in groups of 4 (tiles of up to 6 columns), the last 1-3 together (up to 8 columns),
  // over chunks of 24 columns: a chunk's activations stay in cache while every group's weights
  // pass. Within a chunk the columns are split evenly (14 = 7 + 7, not 8 + 6), so no tile is a
  // narrow remainder.
  constexpr int64_t kChunk = 24;
  const int64_t panel_count = (rows + kQPanelRows - 1) / kQPanelRows;
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
    const int64_t chunk = std::min(kChunk, cols - c0);
    for (int64_t p = 0; p < panel_count;) {
      // 7 or 8 columns would make 4-panel tiles of 4 + 3 or 4 + 4 columns: 3 panels x 8 instead.
      const int64_t group = std::min<int64_t>(chunk == 7 || chunk == 8 ? 3 : 4, panel_count - p);
      const int64_t max_cols = group == 4 ? 6 : 8;
      const int64_t rows_valid = std::min(rows - p * kQPanelRows, group * kQPanelRows);
      const int8_t* w = panels + p * panel_bytes;
      const int64_t tiles = (chunk + max_cols - 1) / max_cols;
      for (int64_t t = 0, n0 = c0; t < tiles; ++t) {
        const int64_t left = c0 + chunk - n0;
        const int64_t count = left / (tiles - t) + (left % (tiles - t) != 0);
        const uint8_t* const* base = col_base + n0;
        const int64_t stride = count > 1 ? base[1] - base[0] : 0;
        bool even = true;
        for (int64_t i = 2; i < count; ++i) even = even && base[i] - base[i - 1] == stride;
        int32_t* cp = c + n0 * ldc + p * kQPanelRows;
        if (even) {
          switch (group) {
            case 4: tile_strided_cols<4>(count, w, steps, rows_valid, base[0], stride, step_offset, cp, ldc); break;
            case 3: tile_strided_cols<3>(count, w, steps, rows_valid, base[0], stride, step_offset, cp, ldc); break;
            case 2: tile_strided_cols<2>(count, w, steps, rows_valid, base[0], stride, step_offset, cp, ldc); break;
            default: tile_strided_cols<1>(count, w, steps, rows_valid, base[0], stride, step_offset, cp, ldc);
          }
        } else {  // columns unevenly spaced (a tile across output rows): pairs of panels, then one
          for (int64_t q = 0; q < group; q += 2) {
            const int64_t valid = std::min(rows_valid - q * kQPanelRows, 2 * kQPanelRows);
            if (q + 1 < group)
              tile_cols<2>(count, w + q * panel_bytes, steps, valid, base, step_offset, cp + q * kQPanelRows, ldc);
            else
              tile_cols<1>(count, w + q * panel_bytes, steps, valid, base, step_offset, cp + q * kQPanelRows, ldc);
          }
        }
        n0 += count;
      }
      p += group;
    }
  }
}

}  // namespace tern::kernels
