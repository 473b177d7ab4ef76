// AVX-VNNI micro-kernels (vpdpbusd ymm; compiled with -mavxvnni, entered only where
// cpu_features().avx_vnni): the int8 GEMM and the implicit GEMM of the AVX2 level on CPUs that
// have 256-bit VNNI but not AVX-512 (Intel's client cores since Alder Lake), where the vpmaddubsw
// kernel (qgemm_avx2.cpp) needs about eleven instructions per 64 multiply-adds of a column and this
// one needs two vpdpbusd.
//
// Register tile: one panel (16 rows: two ymm of 8 rows x 4 bytes) by up to 6 columns, 12 named
// int32 accumulators, the two weight vectors and a broadcast: 15 of the 16 ymm registers. Each K
// step loads the panel's 64 weight bytes once and issues two vpdpbusd per column (named
// accumulators: see qgemm_tile_avx512.h on GCC and accumulator arrays).
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_indirect.h"
#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels {

namespace {

#define TERN_COLUMN(n, at)                                 \
  if constexpr (N > n) {                                   \
    const __m256i xb = _mm256_set1_epi32(load_u32(at));    \
    lo##n = _mm256_dpbusd_avx_epi32(lo##n, xb, w0);        \
    hi##n = _mm256_dpbusd_avx_epi32(hi##n, xb, w1);        \
  }

// One panel x N columns; column n's bytes for step s at at(s) + n * stride.
template <int N, typename StepAddress>
inline void tile(const int8_t* w, int64_t steps, int64_t rows_valid, StepAddress at, int64_t stride, int32_t* c,
                 int64_t ldc) {
  static_assert(N >= 1 && N <= 6, "a tile must fit the 16 ymm registers");
  const __m256i z = _mm256_setzero_si256();
  __m256i lo0 = z, lo1 = z, lo2 = z, lo3 = z, lo4 = z, lo5 = z;
  __m256i hi0 = z, hi1 = z, hi2 = z, hi3 = z, hi4 = z, hi5 = z;
  for (int64_t s = 0; s < steps; ++s, w += kQPanelRows * kQStep) {
    const __m256i w0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32));
    const uint8_t* q = at(s);
    const uint8_t* q3 = q + 3 * stride;
    TERN_COLUMN(0, q) TERN_COLUMN(1, q + stride) TERN_COLUMN(2, q + 2 * stride)
    TERN_COLUMN(3, q3) TERN_COLUMN(4, q3 + stride) TERN_COLUMN(5, q3 + 2 * stride)
  }
  const __m256i lo[6] = {lo0, lo1, lo2, lo3, lo4, lo5}, hi[6] = {hi0, hi1, hi2, hi3, hi4, hi5};
  if (rows_valid >= kQPanelRows) {
    for (int n = 0; n < N; ++n) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + n * ldc), lo[n]);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + n * ldc + 8), hi[n]);
    }
    return;
  }
  for (int n = 0; n < N; ++n) {  // a last partial panel: only its valid rows
    alignas(32) int32_t out[kQPanelRows];
    _mm256_store_si256(reinterpret_cast<__m256i*>(out), lo[n]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), hi[n]);
    for (int64_t r = 0; r < rows_valid; ++r) c[n * ldc + r] = out[r];
  }
}
#undef TERN_COLUMN

template <typename StepAddress>
inline void tile_cols(int64_t cols, const int8_t* w, int64_t steps, int64_t rows_valid, StepAddress at, int64_t stride,
                      int32_t* c, int64_t ldc) {
  switch (cols) {
    case 1: return tile<1>(w, steps, rows_valid, at, stride, c, ldc);
    case 2: return tile<2>(w, steps, rows_valid, at, stride, c, ldc);
    case 3: return tile<3>(w, steps, rows_valid, at, stride, c, ldc);
    case 4: return tile<4>(w, steps, rows_valid, at, stride, c, ldc);
    case 5: return tile<5>(w, steps, rows_valid, at, stride, c, ldc);
    default: return tile<6>(w, steps, rows_valid, at, stride, c, ldc);
  }
}

}  // namespace

void qgemm_block_avxvnni(const QgemmBlock& b) {
  const int64_t panel_bytes = b.steps * kQPanelRows * kQStep;
  const uint8_t* x = b.x;
  for (int64_t p = 0; p < b.panel_count; ++p)
    tile_cols(b.cols, b.panels + p * panel_bytes, b.steps, b.rows_valid - p * kQPanelRows,
              [x](int64_t s) { return x + s * kQStep; }, b.x_stride, b.c + p * kQPanelRows, b.ldc);
}

void qgemm_indirect_avxvnni(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                            const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc) {
  // Chunks of 24 columns, every panel over a chunk while its activations stay in cache; within a
  // chunk tiles of up to 6 columns, split evenly (as qgemm_indirect_avx512.cpp). Evenly spaced
  // columns (consecutive output pixels of a row) read base + n * stride; others one at a time.
  constexpr int64_t kChunk = 24, kMaxCols = 6;
  const int64_t panel_count = (rows + kQPanelRows - 1) / kQPanelRows;
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  for (int64_t c0 = 0; c0 < cols; c0 += kChunk) {
    const int64_t chunk = std::min(kChunk, cols - c0);
    const int64_t tiles = (chunk + kMaxCols - 1) / kMaxCols;
    for (int64_t p = 0; p < panel_count; ++p) {
      const int64_t rows_valid = std::min(rows - p * kQPanelRows, kQPanelRows);
      const int8_t* w = panels + p * panel_bytes;
      for (int64_t t = 0, n0 = c0; t < tiles; ++t) {
        const int64_t left = c0 + chunk - n0;
        const int64_t count = left / (tiles - t) + (left % (tiles - t) != 0);
        const uint8_t* const* base = col_base + n0;
        const int64_t stride = count > 1 ? base[1] - base[0] : 0;
        bool even = true;
        for (int64_t i = 2; i < count; ++i) even = even && base[i] - base[i - 1] == stride;
        int32_t* cp = c + n0 * ldc + p * kQPanelRows;
        if (even) {
          const uint8_t* x0 = base[0];
          tile_cols(count, w, steps, rows_valid, [x0, step_offset](int64_t s) { return x0 + step_offset[s]; }, stride,
                    cp, ldc);
        } else {
          for (int64_t n = 0; n < count; ++n) {
            const uint8_t* xn = base[n];
            tile<1>(w, steps, rows_valid, [xn, step_offset](int64_t s) { return xn + step_offset[s]; }, 0, cp + n * ldc,
                    ldc);
          }
        }
        n0 += count;
      }
    }
  }
}

}  // namespace tern::kernels
