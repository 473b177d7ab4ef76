// qgemm_indirect: the reference loop and the per-ISA dispatch.
#include "kernels/int8/qgemm_indirect.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace tern::kernels {

void qgemm_indirect_reference(const int8_t* panels, int64_t rows, int64_t steps, int64_t cols,
                              const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc) {
  for (int64_t n = 0; n < cols; ++n)
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* panel = panels + (r / kQPanelRows) * steps * kQPanelRows * kQStep;
      int32_t sum = 0;
      for (int64_t s = 0; s < steps; ++s)
        for (int64_t j = 0; j < kQStep; ++j)
          sum += static_cast<int32_t>(panel[(s * kQPanelRows + r % kQPanelRows) * kQStep + j]) *
                 col_base[n][step_offset[s] + j];
      c[n * ldc + r] = sum;
    }
}

const char* qgemm_indirect_kernel_name() {
  if (active_isa() == Isa::kAvx512 && cpu_features().avx512vnni) return "avx512-vnni implicit";
  if (active_isa() >= Isa::kAvx2 && cpu_features().avx_vnni) return "avx2-vnni implicit";
  return qgemm_kernel_name();
}

void qgemm_indirect(const int8_t* panels, const int32_t* row_sums, int64_t rows, int64_t steps, int64_t cols,
                    const uint8_t* const* col_base, const int64_t* step_offset, int32_t* c, int64_t ldc) {
  if (active_isa() == Isa::kAvx512 && cpu_features().avx512vnni)
    return qgemm_indirect_avx512_vnni(panels, rows, steps, cols, col_base, step_offset, c, ldc);
  if (active_isa() >= Isa::kAvx2 && cpu_features().avx_vnni)
    return qgemm_indirect_avxvnni(panels, rows, steps, cols, col_base, step_offset, c, ldc);
  // Gather a few columns at a time into a buffer that stays in L1, then the packed kernel.
  constexpr int64_t kBlock = 16;
  const int64_t stride = steps * kQStep;
  thread_local std::vector<uint8_t> patches;
  patches.resize(static_cast<size_t>(kBlock * stride));
  for (int64_t n0 = 0; n0 < cols; n0 += kBlock) {
    const int64_t count = std::min(kBlock, cols - n0);
    for (int64_t n = 0; n < count; ++n)
      for (int64_t s = 0; s < steps; ++s)
        std::memcpy(&patches[static_cast<size_t>(n * stride + s * kQStep)], col_base[n0 + n] + step_offset[s], kQStep);
    qgemm_panels(panels, row_sums, rows, stride, count, patches.data(), stride, c + n0 * ldc, ldc, nullptr);
  }
}

}  // namespace tern::kernels
