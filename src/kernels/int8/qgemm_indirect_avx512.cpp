// AVX-512 VNNI implicit-GEMM kernel: evenly spaced columns (consecutive output pixels of one row:
// the usual case) run the register tile of qgemm_tile_avx512.h (up to 4 panels x 6 columns, or
// 3 x 8), step s of column n at base[0] + step_offset[s] + n * stride; other columns a tile of up
// to 2 panels x 8 that reads each column at its own base pointer plus the step's offset.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/int8/qgemm_indirect.h"
#include "kernels/int8/qgemm_internal.h"
#include "kernels/int8/qgemm_tile_avx512.h"

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
        if (even) {  // the shared tile (qgemm_tile_avx512.h), column n at base[0] + n * stride
          const uint8_t* x0 = base[0];
          vnni_tile::tile_panels(group, count, w, steps, rows_valid, [x0, step_offset](int64_t s) { return x0 + step_offset[s]; },
                                 stride, cp, ldc);
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
