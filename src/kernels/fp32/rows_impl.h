// The loops behind rows.h, written once and included by one source file per ISA (each with its
// own flags); ROWS_SUFFIX names that build's functions.
#include <algorithm>
#include <cmath>
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

void ROWS_NAME(layer_norm_rows)(const float* x, float* y, int64_t rows, int64_t n, float eps, const float* gamma,
                                const float* beta, float* d) {
  auto mean = [n](const float* v) {
    double s[4] = {0, 0, 0, 0};
    int64_t j = 0;
    for (; j + 4 <= n; j += 4)
      for (int k = 0; k < 4; ++k) s[k] += static_cast<double>(v[j + k]);
    for (; j < n; ++j) s[0] += static_cast<double>(v[j]);
    return static_cast<float>(((s[0] + s[1]) + (s[2] + s[3])) / static_cast<double>(n));
  };
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + r * n;
    float* dst = y + r * n;
    const float m = mean(src);
    for (int64_t j = 0; j < n; ++j) d[j] = src[j] - m;
    for (int64_t j = 0; j < n; ++j) dst[j] = d[j] * d[j];
    const float root = std::sqrt(mean(dst) + eps);
    for (int64_t j = 0; j < n; ++j) dst[j] = d[j] / root;
    if (gamma)
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] * gamma[j];
    if (beta)
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] + beta[j];
  }
}

}  // namespace tern::kernels

#undef ROWS_NAME
#undef ROWS_CAT
#undef ROWS_CAT2
