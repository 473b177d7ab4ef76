// AVX-512 VNNI micro-kernel: 16 or 32 rows x up to 8 columns of int32 accumulators; each K step
// loads one zmm of weights per panel (16 rows x 4 bytes) and issues one vpdpbusd per column with
// the column's 4 activation bytes broadcast. (12 columns, 24 accumulators, ran short of registers:
// 35-46 % of VNNI's rate against 51-81 % for 8 on 256 rows.)
#include <immintrin.h>

#include <cstring>

#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels {

namespace {

template <int P, int N>
void tile(const QgemmBlock& b) {
  __m512i acc[P][N];
  for (int p = 0; p < P; ++p)
    for (int n = 0; n < N; ++n) acc[p][n] = _mm512_setzero_si512();
  const int64_t panel_bytes = b.steps * kQPanelRows * kQStep;
  const int8_t* w = b.panels;
  const uint8_t* x = b.x;
  for (int64_t s = 0; s < b.steps; ++s) {
    __m512i wv[P];
    for (int p = 0; p < P; ++p) wv[p] = _mm512_loadu_si512(w + p * panel_bytes + s * kQPanelRows * kQStep);
#pragma GCC unroll 8
    for (int n = 0; n < N; ++n) {
      __m512i xb = _mm512_set1_epi32(load_u32(x + n * b.x_stride + s * kQStep));
      for (int p = 0; p < P; ++p) acc[p][n] = _mm512_dpbusd_epi32(acc[p][n], xb, wv[p]);
    }
  }
  for (int p = 0; p < P; ++p) {
    int64_t valid = b.rows_valid - p * kQPanelRows;
    __mmask16 mask = valid >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << valid) - 1u);
    for (int n = 0; n < N; ++n) _mm512_mask_storeu_epi32(b.c + n * b.ldc + p * kQPanelRows, mask, acc[p][n]);
  }
}

template <int P>
void dispatch_cols(const QgemmBlock& b) {
  switch (b.cols) {
    case 1: return tile<P, 1>(b);
    case 2: return tile<P, 2>(b);
    case 3: return tile<P, 3>(b);
    case 4: return tile<P, 4>(b);
    case 5: return tile<P, 5>(b);
    case 6: return tile<P, 6>(b);
    case 7: return tile<P, 7>(b);
    default: return tile<P, 8>(b);
  }
}

}  // namespace

void qgemm_block_avx512_vnni(const QgemmBlock& b) {
  if (b.panel_count == 2) dispatch_cols<2>(b);
  else dispatch_cols<1>(b);
}

}  // namespace tern::kernels
