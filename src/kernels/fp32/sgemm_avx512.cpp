// AVX-512 sgemm micro-kernel: 8 rows x 32 columns (16 zmm accumulators), tails by row count
// templates and column masks. Compiled with -mavx512f/bw/vl/dq -mfma; reached only through
// gemm_kernels(Isa::kAvx512). Keep std:: templates out of this file: their out-of-line copies
// would carry AVX-512 code into callers on other CPUs.
#include <immintrin.h>

#include "kernels/fp32/sgemm_internal.h"

namespace tern::kernels::detail {

namespace {

constexpr int kMr = 8;  // x 32 columns: two zmm per row

// Clamp keeping NaN (operand order as in the reference). The masked forms dodge GCC 12's false
// -Wmaybe-uninitialized in _mm512_max_ps/_mm512_min_ps (GCC PR 105593).
inline __m512 clamp_ps(__m512 x, __m512 lo, __m512 hi) {
  x = _mm512_mask_max_ps(x, 0xFFFF, lo, x);
  return _mm512_mask_min_ps(x, 0xFFFF, hi, x);
}

// B row k at b + offsets[k] (kTable) or b + k * stride; kMaskTail loads only the tile's columns.
enum BMode { kStrided, kStridedMaskTail, kTable, kTableMaskTail };

template <int R, int V, int kMode, bool kInPlace>
void tile(const TileArgs& t) {
  constexpr bool kMaskTail = kMode == kStridedMaskTail || kMode == kTableMaskTail;
  constexpr bool kUseTable = kMode == kTable || kMode == kTableMaskTail;
  __mmask16 mask[V];
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) {
    const int left = t.cols - 16 * v;
    mask[v] = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1);
  }
  __m512 acc[R][V];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  const float* a = t.a;
  const float* b = t.b;
  const int64_t* offsets = t.b_offsets;
  const int64_t stride = t.b_stride;
  const int64_t a_row = t.a_row_stride;
#pragma GCC unroll 2
  for (int64_t k = 0; k < t.kc; ++k, a += kInPlace ? 1 : kMr) {
    const float* bk = kUseTable ? b + offsets[k] : b + k * stride;
    __m512 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      bv[v] = kMaskTail && v == V - 1 ? _mm512_maskz_loadu_ps(mask[v], bk + 16 * v) : _mm512_loadu_ps(bk + 16 * v);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 ar = _mm512_set1_ps(kInPlace ? a[r * a_row] : a[r]);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }

  __m512 col_bias[V];
  const bool finalize = t.finalize;
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) {
    col_bias[v] = finalize && t.col_bias ? _mm512_maskz_loadu_ps(mask[v], t.col_bias + 16 * v) : _mm512_setzero_ps();
  }
  const __m512 lo = _mm512_set1_ps(t.lo), hi = _mm512_set1_ps(t.hi);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    float* c = t.c + r * t.ldc;
    const __m512 row_bias = finalize && t.row_bias ? _mm512_set1_ps(t.row_bias[r]) : _mm512_setzero_ps();
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m512 x = acc[r][v];
      if (t.load_c) x = _mm512_add_ps(_mm512_maskz_loadu_ps(mask[v], c + 16 * v), x);
      if (finalize) x = clamp_ps(_mm512_add_ps(_mm512_add_ps(x, row_bias), col_bias[v]), lo, hi);
      _mm512_mask_storeu_ps(c + 16 * v, mask[v], x);
    }
  }
}

// [rows - 1][vectors - 1][A in place * 4 + mode]
template <int R, int V>
constexpr UkernelFn kByMode[8] = {tile<R, V, kStrided, false>, tile<R, V, kStridedMaskTail, false>,
                                  tile<R, V, kTable, false>,   tile<R, V, kTableMaskTail, false>,
                                  tile<R, V, kStrided, true>,  tile<R, V, kStridedMaskTail, true>,
                                  tile<R, V, kTable, true>,    tile<R, V, kTableMaskTail, true>};
template <int R>
constexpr const UkernelFn* kByCols[2] = {kByMode<R, 1>, kByMode<R, 2>};
constexpr const UkernelFn* const* kByRows[kMr] = {kByCols<1>, kByCols<2>, kByCols<3>, kByCols<4>,
                                                  kByCols<5>, kByCols<6>, kByCols<7>, kByCols<8>};

}  // namespace

void sgemm_ukernel_8x32__avx512(const TileArgs& t) {
  const int vectors = t.cols > 16 ? 2 : 1;
  const int mode = (t.a_row_stride ? 4 : 0) + (t.b_offsets ? kTable : kStrided) + (t.b_masked && t.cols < 16 * vectors ? 1 : 0);
  kByRows[t.rows - 1][vectors - 1][mode](t);
}

}  // namespace tern::kernels::detail
