// Micro-kernels behind qgemm (one per ISA), on the packed panel layout of qgemm.h.
#pragma once

#include <cstdint>

namespace tern::kernels {

// C for `cols` columns (at most the ISA's block width) and the rows of `panel_count` consecutive
// panels starting at `panels` (each steps * 64 bytes), of which the first rows_valid are stored.
// row_sums: the panels' row sums (for kernels that offset the activations).
struct QgemmBlock {
  const int8_t* panels;
  int64_t steps;
  int64_t panel_count;  // 1 or 2
  int64_t rows_valid;
  const int32_t* row_sums;
  const uint8_t* x;
  int64_t x_stride;
  int64_t cols;
  int32_t* c;
  int64_t ldc;
};

void qgemm_block_scalar(const QgemmBlock& b);
void qgemm_block_avx2(const QgemmBlock& b);         // needs AVX2; cols <= 4
void qgemm_block_avx512_vnni(const QgemmBlock& b);  // needs AVX-512 BW + VNNI; cols <= 12

}  // namespace tern::kernels
