// AVX2 micro-kernel (no VNNI): 16 rows x up to 4 columns. vpmaddubsw multiplies u8 by s8 but
// saturates pairs at int16, which 255 * 127 * 2 exceeds. So activations are offset to
// x' = x - 128 (s8) and the product is taken as |x'| (u8, at most 128) times sign(x') * w (s8):
// pairs stay within 2 * 128 * 127 = 32512. vpmaddwd with ones widens to int32, and
// 128 * sum_k w adds the offset back at the end.
#include <immintrin.h>

#include <cstring>

#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_internal.h"

namespace tern::kernels {

namespace {

template <int N>
void tile(const int8_t* panel, const int32_t* row_sums, int64_t rows_valid,
                                          const QgemmBlock& b) {
  __m256i acc[2][N];
  for (int h = 0; h < 2; ++h)
    for (int n = 0; n < N; ++n) acc[h][n] = _mm256_setzero_si256();
  const __m256i offset = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i ones = _mm256_set1_epi16(1);
  for (int64_t s = 0; s < b.steps; ++s) {
    const int8_t* ws = panel + s * kQPanelRows * kQStep;
    __m256i w[2] = {_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ws)),
                    _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ws + 32))};
    for (int n = 0; n < N; ++n) {
      __m256i xs = _mm256_xor_si256(_mm256_set1_epi32(load_u32(b.x + n * b.x_stride + s * kQStep)), offset);
      __m256i xa = _mm256_abs_epi8(xs);  // -128 -> 0x80, read as u8 128
      for (int h = 0; h < 2; ++h) {
        __m256i pairs = _mm256_maddubs_epi16(xa, _mm256_sign_epi8(w[h], xs));
        acc[h][n] = _mm256_add_epi32(acc[h][n], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int h = 0; h < 2; ++h) {
    __m256i correction = _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row_sums + 8 * h)), 7);
    for (int n = 0; n < N; ++n) {
      alignas(32) int32_t out[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(out), _mm256_add_epi32(acc[h][n], correction));
      for (int r = 0; r < 8 && 8 * h + r < rows_valid; ++r) b.c[n * b.ldc + 8 * h + r] = out[r];
    }
  }
}

}  // namespace

void qgemm_block_avx2(const QgemmBlock& b) {
  for (int64_t p = 0; p < b.panel_count; ++p) {
    const int8_t* panel = b.panels + p * b.steps * kQPanelRows * kQStep;
    QgemmBlock shifted = b;
    shifted.c = b.c + p * kQPanelRows;
    int64_t valid = b.rows_valid - p * kQPanelRows;
    const int32_t* sums = b.row_sums + p * kQPanelRows;
    switch (b.cols) {
      case 1: tile<1>(panel, sums, valid, shifted); break;
      case 2: tile<2>(panel, sums, valid, shifted); break;
      case 3: tile<3>(panel, sums, valid, shifted); break;
      default: tile<4>(panel, sums, valid, shifted); break;
    }
  }
}

}  // namespace tern::kernels
