// The baseline build of rows_impl.h (the reference) and the per-ISA dispatch.
#define ROWS_SUFFIX _reference
#include "kernels/fp32/rows_impl.h"

#include "kernels/cpu_features.h"

namespace tern::kernels {

void softmax_rows(const float* x, float* y, int64_t rows, int64_t n) {
  switch (active_isa()) {
    case Isa::kAvx512: return softmax_rows_avx512(x, y, rows, n);
    case Isa::kAvx2: return softmax_rows_avx2(x, y, rows, n);
    default: return softmax_rows_reference(x, y, rows, n);
  }
}

void layer_norm_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t rows, int64_t n, float eps,
                     const float* gamma, const float* beta) {
  switch (active_isa()) {
    case Isa::kAvx512: return layer_norm_rows_avx512(x, x_stride, y, y_stride, rows, n, eps, gamma, beta);
    case Isa::kAvx2: return layer_norm_rows_avx2(x, x_stride, y, y_stride, rows, n, eps, gamma, beta);
    default: return layer_norm_rows_reference(x, x_stride, y, y_stride, rows, n, eps, gamma, beta);
  }
}

}  // namespace tern::kernels
