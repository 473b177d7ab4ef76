// Row kernels of the FP32 operators that a transformer runs between its integer layers, built
// per ISA from one loop source (rows_impl.h) without FMA contraction and with every reduction in
// a fixed order, so each ISA computes the same bits.
#pragma once

#include <cstdint>

namespace tern::kernels {

// Softmax of each of `rows` contiguous rows of n values, x to y (may alias): the maximum and the
// sum of e^(x - max) in eight running parts (value j into part j % 8, the parts added pairwise),
// e^x by activation_math.h's exp_approx, then each value divided by the sum.
void softmax_rows(const float* x, float* y, int64_t rows, int64_t n);

// LayerNorm of each of `rows` rows of n values (row r at x + r * x_stride, to y + r * y_stride; not
// aliasing), as exporters write it node by node and the FP32 operators round it: mean = (float)(sum
// / n) with the sum in double in four running parts (value j into part j % 4, then (p0 + p1) + (p2
// + p3)); d = x - mean; var the same mean of d * d; y = d / sqrt(var + eps), then * gamma and + beta
// where given (null: absent). Four rows at a time, their sums side by side.
void layer_norm_rows(const float* x, int64_t x_stride, float* y, int64_t y_stride, int64_t rows, int64_t n, float eps,
                     const float* gamma, const float* beta);

// Internal: per-ISA builds of rows_impl.h.
void softmax_rows_reference(const float* x, float* y, int64_t rows, int64_t n);
void softmax_rows_avx2(const float* x, float* y, int64_t rows, int64_t n);
void softmax_rows_avx512(const float* x, float* y, int64_t rows, int64_t n);
void layer_norm_rows_reference(const float*, int64_t, float*, int64_t, int64_t, int64_t, float, const float*, const float*);
void layer_norm_rows_avx2(const float*, int64_t, float*, int64_t, int64_t, int64_t, float, const float*, const float*);
void layer_norm_rows_avx512(const float*, int64_t, float*, int64_t, int64_t, int64_t, float, const float*, const float*);

}  // namespace tern::kernels
