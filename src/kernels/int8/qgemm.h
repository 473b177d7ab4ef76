// Integer GEMM for quantized layers: int32 C[col][row] = sum_k W[row][k] * X[col][k], with signed
// 8-bit weights W and unsigned 8-bit activations X (the u8 x s8 product VNNI computes). A "column"
// is one output position: an im2col patch of NHWC activations for a Conv, an input row for a Gemm;
// C is stored column by column (all rows of one position together: NHWC output).
//
// qgemm_reference is the plain loop every fast path is compared against, bit for bit: integer
// arithmetic has one right answer. Accumulation is int32 and cannot overflow for depth <=
// kQMaxDepth (every product is at most 255 * 127 in magnitude).
#pragma once

#include <cstdint>
#include <memory>

#include "kernels/cpu_features.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

constexpr int64_t kQPanelRows = 16;  // weight rows per panel: one zmm of int32 accumulators
constexpr int64_t kQStep = 4;        // K values per dot-product step (vpdpbusd's width)
// The largest depth whose sums fit int32: 255 * 127 * K <= 2^31 - 1.
constexpr int64_t kQMaxDepth = 66311;

// Weights in the micro-kernels' layout: panels of 16 rows, K padded with zeros to a multiple of 4;
// W[16p + r][4s + j] at data()[((p * steps() + s) * 16 + r) * 4 + j]; padding rows are zero.
// Zero padding makes whatever X holds past `depth` irrelevant. row_sums() are the rows' sums
// (for kernels that offset activations, e.g. the AVX2 sign trick).
class QPackedWeights {
 public:
  QPackedWeights() = default;
  QPackedWeights(int64_t rows, int64_t depth);  // all zero
  // From row-major weights in [-127, 127], row r at w + r * row_stride. Throws Error past
  // kQMaxDepth or for a weight of -128.
  static QPackedWeights pack(const int8_t* w, int64_t rows, int64_t depth, int64_t row_stride);

  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  int64_t steps() const { return (depth_ + kQStep - 1) / kQStep; }
  int64_t panels() const { return (rows_ + kQPanelRows - 1) / kQPanelRows; }
  int8_t* data() { return data_.get(); }
  const int8_t* data() const { return data_.get(); }
  int8_t& at(int64_t row, int64_t k) {
    return data_[static_cast<size_t>((((row / kQPanelRows) * steps() + k / kQStep) * kQPanelRows + row % kQPanelRows) * kQStep + k % kQStep)];
  }
  // Recomputes row_sums() after writing weights through data() or at().
  void finish();
  const int32_t* row_sums() const { return row_sums_.get(); }

 private:
  int64_t rows_ = 0, depth_ = 0;
  std::shared_ptr<int8_t[]> data_;
  std::shared_ptr<int32_t[]> row_sums_;
};

// Plain loops over row-major weights: C[c * ldc + r] = sum_k W[r * w_stride + k] * X[c * x_stride + k].
void qgemm_reference(const int8_t* w, int64_t rows, int64_t depth, int64_t w_stride, int64_t cols, const uint8_t* x,
                     int64_t x_stride, int32_t* c, int64_t ldc);

// The fast path for the active ISA (AVX-512 VNNI, AVX2, scalar), split over pool's threads (null:
// one thread). X rows must be readable for steps() * 4 bytes (x_stride >= that); bytes past depth
// may hold anything.
void qgemm(const QPackedWeights& w, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
           ThreadPool* pool);

// The same on raw panels in QPackedWeights' layout (e.g. just decoded from ternary codes):
// `panels` holds ceil(rows / 16) panels of ceil(depth / 4) * 64 bytes; row_sums has a value for
// every padded row (used by kernels that offset activations).
void qgemm_panels(const int8_t* panels, const int32_t* row_sums, int64_t rows, int64_t depth, int64_t cols,
                  const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, ThreadPool* pool);

// Which kernel qgemm uses on this CPU at the active ISA ("avx512-vnni", "avx2", "scalar").
const char* qgemm_kernel_name();

}  // namespace tern::kernels
