// Implicit-GEMM convolution: qgemm (qgemm.h) whose activation columns are not copied into an im2col
// matrix but read in place. Column n's K values come in 4-byte steps from col_base[n] +
// step_offset[s]: for an NHWC convolution over a padded input, col_base[n] is output pixel n's
// top-left input pixel and step_offset[s] the byte offset of step s's tap and channels (tap-major
// K, channels per group a multiple of 4, so no step straddles two taps). The saving is the im2col
// matrix itself: for a 3x3 convolution it is 9x the input and was written and read once per layer,
// which cost about as much as the multiplications.
//
// Single-threaded by design: the integer engine splits a layer's output pixels over threads and
// runs its epilogue on each block while the sums are still in cache.
#pragma once

#include <cstdint>

#include "kernels/int8/qgemm.h"

namespace tern::kernels {

// C[n * ldc + r] = sum_s sum_j W[r][4s + j] * col_base[n][step_offset[s] + j], for rows [0, rows)
// of panels in QPackedWeights' layout (ceil(rows / 16) panels of steps * 64 bytes); row_sums as
// qgemm_panels. The plain loop (the oracle) and the fast path for the active ISA (AVX-512 VNNI and
// AVX-VNNI read in place; other ISAs gather each block of columns into a small buffer and run
// qgemm_panels).
void qgemm_indirect_reference(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                              const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc);
void qgemm_indirect(const int8_t* panels, const int32_t* row_sums, int64_t rows, int64_t steps, int64_t cols,
                    const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc);
const char* qgemm_indirect_kernel_name();

// Internal: the AVX-512 VNNI and AVX-VNNI kernels (same contract).
void qgemm_indirect_avx512_vnni(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                                const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc);
void qgemm_indirect_avxvnni(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                            const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc);

}  // namespace tern::kernels
