// AVX-512 versions of the reduced-precision accumulation kernels (accumulation_kernels.h): eight
// double accumulators per register, each addition rounded to m mantissa bits with integer
// operations on the IEEE bit pattern. Same bits as add_rounded() in accumulation.cpp.
#include <immintrin.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "numerics/accumulation_kernels.h"

namespace tern::accum::detail {
namespace {

// Per-lane constants of rounding to m bits (shift = 52 - m dropped bits). A lane with shift 0
// (m = 52) keeps the double sum: its tie value can never match and it adds nothing.
struct RoundConsts {
  __m512i shift, drop_mask, keep_mask, tie, bias, lsb_mask;
};

RoundConsts round_consts(const int* mantissa_bits) {
  alignas(64) long long shift[8], drop[8], keep[8], tie[8], bias[8], lsb[8];
  for (int l = 0; l < 8; ++l) {
    const int s = 52 - mantissa_bits[l];
    const unsigned long long d = s ? (1ull << s) - 1 : 0;
    shift[l] = s;
    drop[l] = static_cast<long long>(d);
    keep[l] = static_cast<long long>(~d);
    tie[l] = s ? static_cast<long long>(1ull << (s - 1)) : -1;
    bias[l] = s ? static_cast<long long>((1ull << (s - 1)) - 1) : 0;
    lsb[l] = s ? 1 : 0;
  }
  return {_mm512_load_si512(shift), _mm512_load_si512(drop), _mm512_load_si512(keep),
          _mm512_load_si512(tie),   _mm512_load_si512(bias), _mm512_load_si512(lsb)};
}

// round_m(acc + t), the exact sum rounded once. The double sum s is the exact sum rounded to 53
// bits; rounding s again to m bits differs from rounding the exact sum only when s sits exactly
// halfway between two m-bit values and was itself inexact. Then (rare, so behind a branch) the
// exact error of s (TwoSum) nudges s one double ulp toward the exact sum before rounding.
inline __m512d add_rounded(__m512d acc, __m512d t, const RoundConsts& k) {
  const __m512d s = _mm512_add_pd(acc, t);
  __m512i u = _mm512_castpd_si512(s);
  const __mmask8 tie = _mm512_cmpeq_epi64_mask(_mm512_and_si512(u, k.drop_mask), k.tie);
  if (tie) [[unlikely]] {
    const __m512d bb = _mm512_sub_pd(s, acc);
    const __m512d err = _mm512_add_pd(_mm512_sub_pd(acc, _mm512_sub_pd(s, bb)), _mm512_sub_pd(t, bb));
    const __mmask8 inexact = _mm512_mask_cmp_pd_mask(tie, err, _mm512_setzero_pd(), _CMP_NEQ_OQ);
    // +1 when err has the sign of s (the exact sum is larger in magnitude), else -1.
    const __m512i toward = _mm512_or_si512(_mm512_srai_epi64(_mm512_xor_si512(_mm512_castpd_si512(err), u), 63),
                                           _mm512_set1_epi64(1));
    u = _mm512_mask_add_epi64(u, inexact, u, toward);
  }
  const __m512i lsb = _mm512_and_si512(_mm512_srlv_epi64(u, k.shift), k.lsb_mask);
  const __m512i rounded = _mm512_add_epi64(_mm512_add_epi64(u, k.bias), lsb);
  // NaN lanes keep s (rounding could carry a payload into the sign); infinities round to themselves.
  const __mmask8 ordered = _mm512_cmp_pd_mask(s, s, _CMP_ORD_Q);
  return _mm512_castsi512_pd(_mm512_mask_and_epi64(_mm512_castpd_si512(s), ordered, rounded, k.keep_mask));
}

template <int V>
void lanes_kernel(const double* terms, int64_t n, int64_t chunk, const RoundConsts* k, double* out) {
  __m512d total[V], part[V];
  for (int v = 0; v < V; ++v) total[v] = _mm512_setzero_pd();
  const bool chunked = chunk > 0 && chunk < n;
  const int64_t step = chunked ? chunk : n;
  for (int64_t begin = 0; begin < n; begin += step) {
    const int64_t end = std::min(n, begin + step);
    for (int v = 0; v < V; ++v) part[v] = _mm512_setzero_pd();
    for (int64_t i = begin; i < end; ++i) {
      const __m512d t = _mm512_set1_pd(terms[i]);
      for (int v = 0; v < V; ++v) part[v] = add_rounded(part[v], t, k[v]);
    }
    for (int v = 0; v < V; ++v) total[v] = chunked ? add_rounded(total[v], part[v], k[v]) : part[v];
  }
  for (int v = 0; v < V; ++v) _mm512_storeu_pd(out + 8 * v, total[v]);
}

// The running state of R rows x V vectors of 8 columns between blocks of K: the sum of the current
// chunk and the sum of the finished chunks.
struct TileState {
  double* part;   // [R][V * 8]
  double* total;  // [R][V * 8]
};

// k in [k_begin, k_end) for R rows x V vectors: a holds the rows' k_begin.. elements (a[r * lda]),
// bp the packed block (row kk - k_begin of width ldb doubles, this tile's columns first).
// Chunk boundaries are multiples of chunk (chunked) and K.
template <int R, int V>
void gemm_micro(const double* a, int64_t lda, const double* bp, int64_t ldb, int64_t k_begin, int64_t k_end, int64_t K,
                int64_t chunk, TileState st, const RoundConsts& k) {
  __m512d part[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) part[r][v] = _mm512_loadu_pd(st.part + (r * V + v) * 8);
  const bool chunked = chunk > 0 && chunk < K;
  int64_t kk = k_begin;
  while (kk < k_end) {
    const int64_t seg_end = chunked ? std::min(k_end, (kk / chunk + 1) * chunk) : k_end;
    for (; kk < seg_end; ++kk) {
      const double* brow = bp + (kk - k_begin) * ldb;
      __m512d bv[V];
      for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_pd(brow + 8 * v);
      for (int r = 0; r < R; ++r) {
        const __m512d av = _mm512_set1_pd(a[r * lda + (kk - k_begin)]);
        for (int v = 0; v < V; ++v) part[r][v] = add_rounded(part[r][v], _mm512_mul_pd(av, bv[v]), k);
      }
    }
    if (chunked && (kk % chunk == 0 || kk == K)) {  // a chunk is complete: add it to the total
      for (int r = 0; r < R; ++r)
        for (int v = 0; v < V; ++v) {
          double* t = st.total + (r * V + v) * 8;
          _mm512_storeu_pd(t, add_rounded(_mm512_loadu_pd(t), part[r][v], k));
          part[r][v] = _mm512_setzero_pd();
        }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_pd(st.part + (r * V + v) * 8, part[r][v]);
}

template <int R>
void gemm_rows_block(const double* a, int64_t lda, const double* bp, int64_t ldb, int64_t cols, int64_t k_begin,
                     int64_t k_end, int64_t K, int64_t chunk, double* part, double* total, const RoundConsts& k) {
  // Column groups of 16 (V = 2), then a last group of 8 (zero-padded in bp).
  int64_t j = 0;
  for (; j + 16 <= cols; j += 16)
    gemm_micro<R, 2>(a, lda, bp + j, ldb, k_begin, k_end, K, chunk, {part + R * j, total + R * j}, k);
  for (; j < cols; j += 8)
    gemm_micro<R, 1>(a, lda, bp + j, ldb, k_begin, k_end, K, chunk, {part + R * j, total + R * j}, k);
}

}  // namespace

void gemm_tile_avx512(const float* a, const float* b, float* c, int64_t row_begin, int64_t row_end, int64_t col_begin,
                      int64_t col_end, int64_t N, int64_t K, int mantissa_bits, int64_t chunk) {
  int mm[8];
  std::fill(mm, mm + 8, mantissa_bits);
  const RoundConsts k = round_consts(mm);
  const int64_t rows = row_end - row_begin, cols = col_end - col_begin;
  const int64_t ldb = (cols + 7) / 8 * 8;
  // Blocks of K: the packed B block (kKBlock x ldb doubles) stays in L2 while every row of the
  // tile passes over it; the state of each row group between blocks lives in part/total.
  constexpr int64_t kKBlock = 256;
  thread_local std::vector<double> bp, ap, state;
  bp.resize(static_cast<size_t>(std::min(K, kKBlock) * ldb));  // packing writes every element, padding included
  ap.resize(static_cast<size_t>(rows * kKBlock));
  state.assign(static_cast<size_t>(2 * rows * ldb), 0.0);
  double* part = state.data();
  double* total = state.data() + rows * ldb;
  for (int64_t k_begin = 0; k_begin < K; k_begin += kKBlock) {
    const int64_t k_end = std::min(K, k_begin + kKBlock), kb = k_end - k_begin;
    for (int64_t kk = 0; kk < kb; ++kk) {
      const float* src = b + (k_begin + kk) * N + col_begin;
      double* dst = bp.data() + kk * ldb;
      int64_t j = 0;
      for (; j + 8 <= cols; j += 8) _mm512_storeu_pd(dst + j, _mm512_cvtps_pd(_mm256_loadu_ps(src + j)));
      if (j < cols) {
        const __mmask8 mask = static_cast<__mmask8>((1u << (cols - j)) - 1);
        _mm512_storeu_pd(dst + j, _mm512_cvtps_pd(_mm256_maskz_loadu_ps(mask, src + j)));
      }
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t kk = 0; kk < kb; ++kk)
        ap[static_cast<size_t>(r * kKBlock + kk)] = a[(row_begin + r) * K + k_begin + kk];
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4)
      gemm_rows_block<4>(ap.data() + r * kKBlock, kKBlock, bp.data(), ldb, cols, k_begin, k_end, K, chunk,
                         part + r * ldb, total + r * ldb, k);
    auto tail = [&](auto rows_left) {
      gemm_rows_block<decltype(rows_left)::value>(ap.data() + r * kKBlock, kKBlock, bp.data(), ldb, cols, k_begin,
                                                  k_end, K, chunk, part + r * ldb, total + r * ldb, k);
    };
    switch (rows - r) {
      case 3: tail(std::integral_constant<int, 3>{}); break;
      case 2: tail(std::integral_constant<int, 2>{}); break;
      case 1: tail(std::integral_constant<int, 1>{}); break;
      default: break;
    }
  }
  // Row group r0 (R rows) keeps column group j (width 16 or 8) as [R][width] at r0 * ldb + R * j.
  const bool chunked = chunk > 0 && chunk < K;
  const double* result = chunked ? total : part;
  for (int64_t r0 = 0; r0 < rows; r0 += 4) {
    const int64_t R = std::min<int64_t>(4, rows - r0);
    for (int64_t j = 0; j < cols;) {
      const int64_t width = j + 16 <= cols ? 16 : 8;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t q = 0; q < width && j + q < cols; ++q)
          c[(row_begin + r0 + r) * N + col_begin + j + q] =
              static_cast<float>(result[r0 * ldb + R * j + r * width + q]);
      j += width;
    }
  }
}

void accumulate_lanes_avx512(const double* terms, int64_t n, int64_t chunk, const int* mantissa_bits, int lanes,
                             double* out) {
  int padded[kMaxLanes];
  for (int l = 0; l < kMaxLanes; ++l) padded[l] = l < lanes ? mantissa_bits[l] : 52;
  RoundConsts k[kMaxLanes / 8];
  const int vectors = (lanes + 7) / 8;
  for (int v = 0; v < vectors; ++v) k[v] = round_consts(padded + 8 * v);
  alignas(64) double result[kMaxLanes];
  switch (vectors) {
    case 1: lanes_kernel<1>(terms, n, chunk, k, result); break;
    case 2: lanes_kernel<2>(terms, n, chunk, k, result); break;
    case 3: lanes_kernel<3>(terms, n, chunk, k, result); break;
    default: lanes_kernel<4>(terms, n, chunk, k, result); break;
  }
  std::copy(result, result + lanes, out);
}

}  // namespace tern::accum::detail
