// Kernels behind tern/accumulation.h: the portable versions live in accumulation.cpp, the AVX-512
// ones in accumulation_avx512.cpp (its own compile flags; entered only after run-time detection).
// Every version produces the same bits as accumulate() / add_rounded().
#pragma once

#include <cstdint>

namespace tern::accum::detail {

// Lanes of one pass of accumulate_lanes: one accumulator width per lane.
inline constexpr int kMaxLanes = 32;

// out[l] = accumulate(terms[0, n), mantissa_bits[l], chunk) for l < lanes (lanes <= kMaxLanes).
void accumulate_lanes_generic(const double* terms, int64_t n, int64_t chunk, const int* mantissa_bits, int lanes,
                              double* out);
void accumulate_lanes_avx512(const double* terms, int64_t n, int64_t chunk, const int* mantissa_bits, int lanes,
                             double* out);

// Rows [row_begin, row_end) of gemm_reduced_accumulation (arguments already validated).
void gemm_rows_generic(const float* a, const float* b, float* c, int64_t row_begin, int64_t row_end, int64_t N,
                       int64_t K, int mantissa_bits, int64_t chunk);
// Rows [row_begin, row_end) x columns [col_begin, col_end).
void gemm_tile_avx512(const float* a, const float* b, float* c, int64_t row_begin, int64_t row_end, int64_t col_begin,
                      int64_t col_end, int64_t N, int64_t K, int mantissa_bits, int64_t chunk);

}  // namespace tern::accum::detail
