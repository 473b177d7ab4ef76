// FP32 matrix multiply for the reference engine: C[M,N] = A[M,K] * B[K,N] (+ C) + bias, clamped.
// Operands are strided views, so transposed inputs cost nothing extra (packing absorbs them).
// sgemm_reference is the plain triple loop the fast paths are tested against.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>

#include "kernels/cpu_features.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

// Element (i, j) lives at data[i * row_stride + j * col_stride].
struct MatrixView {
  const float* data = nullptr;
  int64_t row_stride = 0;
  int64_t col_stride = 1;
};

enum class BiasKind { kNone, kPerRow, kPerColumn };

// Applied after the product, in this order: C = clamp((accumulate ? C : 0) + A*B + bias, lo, hi).
struct GemmEpilogue {
  const float* bias = nullptr;
  BiasKind bias_kind = BiasKind::kNone;
  bool accumulate = false;
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
};

// A operand (usually constant weights) packed once into the micro-kernel's panel layout. The
// layout belongs to the ISA active when it was packed; sgemm_packed keeps using that ISA's kernel.
class PackedMatrixA {
 public:
  PackedMatrixA() = default;
  PackedMatrixA(int64_t rows, int64_t depth, MatrixView a);
  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  const float* panels() const { return panels_.get(); }
  Isa isa() const { return isa_; }

 private:
  int64_t rows_ = 0, depth_ = 0;
  Isa isa_ = Isa::kScalar;
  std::shared_ptr<float> panels_;
};

// Plain loops; the oracle for every fast path. C has leading dimension ldc (row-major).
void sgemm_reference(int64_t M, int64_t N, int64_t K, MatrixView A, MatrixView B, float* C, int64_t ldc,
                     const GemmEpilogue& epilogue);

// Fast path: packs A and B, runs the best micro-kernel for this CPU (see cpu_features.h), splits
// the work over pool's threads (pool may be null: single thread).
void sgemm(int64_t M, int64_t N, int64_t K, MatrixView A, MatrixView B, float* C, int64_t ldc,
           const GemmEpilogue& epilogue, ThreadPool* pool);

// Same with A pre-packed (M = packed.rows(), K = packed.depth()).
void sgemm_packed(const PackedMatrixA& A, int64_t N, MatrixView B, float* C, int64_t ldc, const GemmEpilogue& epilogue,
                  ThreadPool* pool);

}  // namespace tern::kernels
