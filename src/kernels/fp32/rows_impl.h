// The loops behind rows.h, written once and included by one source file per ISA (each with its
// own flags); ROWS_SUFFIX names that build's functions.
#include <algorithm>
#include <limits>

#include "kernels/activation_math.h"
#include "kernels/fp32/rows.h"

#define ROWS_CAT2(a, b) a##b
#define ROWS_CAT(a, b) ROWS_CAT2(a, b)
#define ROWS_NAME(f) ROWS_CAT(f, ROWS_SUFFIX)

namespace tern::kernels {

void ROWS_NAME(softmax_rows)(const float* x, float* y, int64_t rows, int64_t n) {
  constexpr int kParts = 8;
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * n;
    float* dst = y + r * n;
    float mp[kParts], sp[kParts];
    for (int k = 0; k < kParts; ++k) mp[k] = -std::numeric_limits<float>::infinity(), sp[k] = 0.0f;
    int64_t j = 0;
    for (; j + kParts <= n; j += kParts)
      for (int k = 0; k < kParts; ++k) mp[k] = std::max(mp[k], src[j + k]);
    for (; j < n; ++j) mp[0] = std::max(mp[0], src[j]);
    float m = mp[0];
    for (int k = 1; k < kParts; ++k) m = std::max(m, mp[k]);
    for (j = 0; j < n; ++j) dst[j] = exp_approx(src[j] - m);
    for (j = 0; j + kParts <= n; j += kParts)
      for (int k = 0; k < kParts; ++k) sp[k] += dst[j + k];
    for (; j < n; ++j) sp[0] += dst[j];
    const float sum = ((sp[0] + sp[1]) + (sp[2] + sp[3])) + ((sp[4] + sp[5]) + (sp[6] + sp[7]));
    for (j = 0; j < n; ++j) dst[j] /= sum;
  }
}

}  // namespace tern::kernels

#undef ROWS_NAME
#undef ROWS_CAT
#undef ROWS_CAT2
