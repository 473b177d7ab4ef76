// AVX-512 VNNI micro-kernel: 1-4 panels (16-64 rows) x up to 8 columns of int32 accumulators (at
// most 24: 4 x 6 or 3 x 8); each K step loads one zmm of weights per panel (16 rows x 4 bytes)
// and issues one vpdpbusd per panel and column with the column's 4 activation bytes broadcast.
// Every accumulator is a named variable (as in qgemm_indirect_avx512.cpp): an acc[P][N] array
// cost a register copy per vpdpbusd under GCC.
#include <immintrin.h>

#include <cstring>

#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels {

namespace {

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
    const int64_t valid = b.rows_valid - p * kQPanelRows;                                    \
    const __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF)                     \
                                       : static_cast<__mmask16>((1u << valid) - 1u);         \
    int32_t* cp = b.c + p * kQPanelRows;                                                     \
    const __m512i row[8] = {a##p##0, a##p##1, a##p##2, a##p##3, a##p##4, a##p##5, a##p##6, a##p##7}; \
    for (int n = 0; n < N; ++n) _mm512_mask_storeu_epi32(cp + n * b.ldc, mask, row[n]);       \
  }
template <int P, int N>
void tile(const QgemmBlock& b) {
  static_assert(P >= 1 && P <= 4 && N >= 1 && N <= 8 && P * N <= 24, "a tile must fit the registers");
  const __m512i z = _mm512_setzero_si512();
  TERN_ACC_ROW(0) TERN_ACC_ROW(1) TERN_ACC_ROW(2) TERN_ACC_ROW(3)
  const int64_t panel_bytes = b.steps * kQPanelRows * kQStep, stride = b.x_stride;
  const int8_t* w = b.panels;
  const uint8_t* q = b.x;
  for (int64_t s = 0; s < b.steps; ++s, w += kQPanelRows * kQStep, q += kQStep) {
    const __m512i v0 = _mm512_loadu_si512(w);
    const __m512i v1 = P > 1 ? _mm512_loadu_si512(w + panel_bytes) : z;
    const __m512i v2 = P > 2 ? _mm512_loadu_si512(w + 2 * panel_bytes) : z;
    const __m512i v3 = P > 3 ? _mm512_loadu_si512(w + 3 * panel_bytes) : z;
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

// cols <= 6 with 4 panels, <= 8 otherwise (qgemm_micro_kernel's contract).
template <int P>
void dispatch_cols(const QgemmBlock& b) {
  switch (b.cols) {
    case 1: return tile<P, 1>(b);
    case 2: return tile<P, 2>(b);
    case 3: return tile<P, 3>(b);
    case 4: return tile<P, 4>(b);
    case 5: return tile<P, 5>(b);
    case 6: return tile<P, 6>(b);
    default:
      if constexpr (P < 4) {
        if (b.cols == 7) return tile<P, 7>(b);
        return tile<P, 8>(b);
      }
  }
}

}  // namespace

void qgemm_block_avx512_vnni(const QgemmBlock& b) {
  switch (b.panel_count) {
    case 4: return dispatch_cols<4>(b);
    case 3: return dispatch_cols<3>(b);
    case 2: return dispatch_cols<2>(b);
    default: return dispatch_cols<1>(b);
  }
}

}  // namespace tern::kernels
