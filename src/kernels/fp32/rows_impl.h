// The loops behind rows.h, written once and included by one source file per ISA (each with its
// own flags); ROWS_SUFFIX names that build's functions.
#include <algorithm>
#include <cmath>
#include <cstring>
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

namespace {

// The means of kRows rows (each as layer_norm_rows says: a double sum in four running parts),
// side by side: each row's sum is a chain of n / 4 dependent adds, so one row at a time runs at
// the add's latency; kRows chains fill the pipes. A row's four parts are one vector of doubles
// (written part by part, the compiler assembled each four floats from scalar loads); with AVX-512,
// two rows' parts share one vector of eight. Each row's operations and their order are those of
// one row alone.
template <int kRows>
inline void ROWS_NAME(row_means)(const float* const (&v)[kRows], int64_t n, float (&mean)[kRows]) {
  static_assert(kRows % 2 == 0);
  typedef float Floats4 __attribute__((vector_size(16)));
  typedef double Doubles4 __attribute__((vector_size(32)));
  auto load4 = [](const float* p) {
    Floats4 f;
    std::memcpy(&f, p, sizeof f);
    return f;
  };
#if defined(__AVX512F__)
  typedef float Floats8 __attribute__((vector_size(32)));
  typedef double Doubles8 __attribute__((vector_size(64)));
  constexpr int kPairs = kRows / 2;
  Doubles8 s[kPairs];
  for (int p = 0; p < kPairs; ++p) s[p] = Doubles8{0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int p = 0; p < kPairs; ++p) {
      const Floats8 f = __builtin_shufflevector(load4(v[2 * p] + j), load4(v[2 * p + 1] + j), 0, 1, 2, 3, 4, 5, 6, 7);
      s[p] += __builtin_convertvector(f, Doubles8);
    }
  for (; j < n; ++j)
    for (int p = 0; p < kPairs; ++p) {
      s[p][0] += static_cast<double>(v[2 * p][j]);
      s[p][4] += static_cast<double>(v[2 * p + 1][j]);
    }
  auto part = [&](int r, int k) { return s[r / 2][r % 2 * 4 + k]; };
#else
  Doubles4 s[kRows];
  for (int r = 0; r < kRows; ++r) s[r] = Doubles4{0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 4 <= n; j += 4)
    for (int r = 0; r < kRows; ++r) s[r] += __builtin_convertvector(load4(v[r] + j), Doubles4);
  for (; j < n; ++j)
    for (int r = 0; r < kRows; ++r) s[r][0] += static_cast<double>(v[r][j]);
  auto part = [&](int r, int k) { return s[r][k]; };
#endif
  for (int r = 0; r < kRows; ++r)
    mean[r] = static_cast<float>(((part(r, 0) + part(r, 1)) + (part(r, 2) + part(r, 3))) / static_cast<double>(n));
}

template <int kRows>
inline void ROWS_NAME(layer_norm_block)(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t n,
                                        float eps, const float* gamma, const float* beta) {
  const float* src[kRows];
  const float* sq[kRows];
  for (int r = 0; r < kRows; ++r) src[r] = x + r * x_stride, sq[r] = y + r * y_stride;
  float m[kRows], var[kRows];
  ROWS_NAME(row_means)<kRows>(src, n, m);
  for (int r = 0; r < kRows; ++r) {
    float* dst = y + r * y_stride;
    for (int64_t j = 0; j < n; ++j) {
      const float d = src[r][j] - m[r];
      dst[j] = d * d;
    }
  }
  ROWS_NAME(row_means)<kRows>(sq, n, var);
  for (int r = 0; r < kRows; ++r) {
    float* dst = y + r * y_stride;
    const float root = std::sqrt(var[r] + eps);
    for (int64_t j = 0; j < n; ++j) dst[j] = (src[r][j] - m[r]) / root;  // d again: the same bits
    if (gamma)
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] * gamma[j];
    if (beta)
      for (int64_t j = 0; j < n; ++j) dst[j] = dst[j] + beta[j];
  }
}

}  // namespace

void ROWS_NAME(layer_norm_rows)(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t rows, int64_t n,
                                float eps, const float* gamma, const float* beta) {
  constexpr int kRows = 4;
  int64_t r = 0;
  for (; r + kRows <= rows; r += kRows)
    ROWS_NAME(layer_norm_block)<kRows>(x + r * x_stride, x_stride, y + r * y_stride, y_stride, n, eps, gamma, beta);
  for (; r + 2 <= rows; r += 2)
    ROWS_NAME(layer_norm_block)<2>(x + r * x_stride, x_stride, y + r * y_stride, y_stride, n, eps, gamma, beta);
  if (r < rows)  // the last row as a pair with itself (the pair's rows are independent lanes)
    ROWS_NAME(layer_norm_block)<2>(x + r * x_stride, 0, y + r * y_stride, 0, n, eps, gamma, beta);
}

}  // namespace tern::kernels

#undef ROWS_NAME
#undef ROWS_CAT
#undef ROWS_CAT2
