// AVX2 sgemm micro-kernel: 6 rows x 16 columns (12 ymm accumulators), tails by row count
// templates and maskload/maskstore. Compiled with -mavx2 -mfma; reached only through
// gemm_kernels(Isa::kAvx2). Keep std:: templates out of this file (see sgemm_avx512.cpp).
#include <immintrin.h>

#include "kernels/fp32/sgemm_internal.h"

namespace tern::kernels::detail {

namespace {

constexpr int kMr = 6;  // x 16 columns: two ymm per row

inline __m256i column_mask(int left) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// B row k at b + offsets[k] (kTable) or b + k * stride; kMaskTail loads only the tile's columns.
enum BMode { kStrided, kStridedMaskTail, kTable, kTableMaskTail };

template <int R, int V, int kMode, bool kInPlace>
void tile(const TileArgs& t) {
  constexpr bool kMaskTail = kMode == kStridedMaskTail || kMode == kTableMaskTail;
  constexpr bool kUseTable = kMode == kTable || kMode == kTableMaskTail;
  __m256i mask[V];
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) mask[v] = column_mask(t.cols - 8 * v);
  __m256 acc[R][V];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  const float* a = t.a;
  const float* b = t.b;
  const int64_t* offsets = t.b_offsets;
  const int64_t stride = t.b_stride;
  const int64_t a_row = t.a_row_stride;
#pragma GCC unroll 2
  for (int64_t k = 0; k < t.kc; ++k, a += kInPlace ? 1 : kMr) {
    const float* bk = kUseTable ? b + offsets[k] : b + k * stride;
    __m256 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      bv[v] = kMaskTail && v == V - 1 ? _mm256_maskload_ps(bk + 8 * v, mask[v]) : _mm256_loadu_ps(bk + 8 * v);
    }
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 ar = _mm256_broadcast_ss(kInPlace ? a + r * a_row : a + r);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
    }
  }

  const bool finalize = t.finalize;
  __m256 col_bias[V];
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) {
    col_bias[v] = finalize && t.col_bias ? _mm256_maskload_ps(t.col_bias + 8 * v, mask[v]) : _mm256_setzero_ps();
  }
  const __m256 lo = _mm256_set1_ps(t.lo), hi = _mm256_set1_ps(t.hi);
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    float* c = t.c + r * t.ldc;
    const __m256 row_bias = finalize && t.row_bias ? _mm256_set1_ps(t.row_bias[r]) : _mm256_setzero_ps();
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m256 x = acc[r][v];
      if (t.load_c) x = _mm256_add_ps(_mm256_maskload_ps(c + 8 * v, mask[v]), x);
      if (finalize) {
        x = _mm256_add_ps(_mm256_add_ps(x, row_bias), col_bias[v]);
        x = _mm256_min_ps(hi, _mm256_max_ps(lo, x));  // operand order keeps NaN, like the reference
      }
      _mm256_maskstore_ps(c + 8 * v, mask[v], x);
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
constexpr const UkernelFn* const* kByRows[kMr] = {kByCols<1>, kByCols<2>, kByCols<3>,
                                                  kByCols<4>, kByCols<5>, kByCols<6>};

}  // namespace

void sgemm_ukernel_6x16__avx2(const TileArgs& t) {
  const int vectors = t.cols > 8 ? 2 : 1;
  const int mode = (t.a_row_stride ? 4 : 0) + (t.b_offsets ? kTable : kStrided) + (t.b_masked && t.cols < 8 * vectors ? 1 : 0);
  kByRows[t.rows - 1][vectors - 1][mode](t);
}

}  // namespace tern::kernels::detail
