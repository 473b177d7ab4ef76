// Private plumbing shared by the sgemm driver, its per-ISA micro-kernels and conv2d: the tile
// call, the per-ISA kernel table and the ways B reaches the micro-kernel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/fp32/sgemm.h"

namespace tern::kernels::detail {

// One micro-kernel call on a tile of at most mr x nr: C (+)= A_panel * B_rows, then bias + clamp.
struct TileArgs {
  int64_t kc = 0;
  // A packed (a_row_stride 0): the panel slice a[k * mr + r]; else A in place: row r at
  // a + r * a_row_stride, its k contiguous. Either way the same multiply-adds in the same order.
  const float* a = nullptr;
  int64_t a_row_stride = 0;
  // Row k of B starts at b + b_offsets[k] when b_offsets is set, else at b + k * b_stride.
  const float* b = nullptr;
  const int64_t* b_offsets = nullptr;
  int64_t b_stride = 0;
  bool b_masked = false;  // B must not be read past cols (else whole vectors up to nr are readable)
  float* c = nullptr;
  int64_t ldc = 0;
  int rows = 0, cols = 0;           // 1..mr, 1..nr
  bool load_c = false;              // add C's current contents (accumulate, or a later K block)
  bool finalize = false;            // last K block: add bias, clamp
  const float* row_bias = nullptr;  // bias of this tile's row 0, or null
  const float* col_bias = nullptr;  // bias of this tile's column 0, or null
  float lo = 0, hi = 0;
};
using UkernelFn = void (*)(const TileArgs&);

struct GemmKernels {
  Isa isa;
  int mr, nr;
  UkernelFn ukernel;
};

void sgemm_ukernel_4x8__generic(const TileArgs& t);
void sgemm_ukernel_6x16__avx2(const TileArgs& t);
void sgemm_ukernel_8x32__avx512(const TileArgs& t);

const GemmKernels& gemm_kernels(Isa isa);

// Packs B into the micro-kernel's panel layout. pack() writes columns [n0, n0 + ncols) (n0 a
// multiple of nr) for all K rows: element (k, n) at dst[(n - n0) / nr * K * nr + k * nr + (n - n0) % nr],
// with zeros past ncols in the last panel.
class PanelPacker {
 public:
  virtual ~PanelPacker() = default;
  virtual void pack(int64_t n0, int64_t ncols, int nr, float* dst) const = 0;
};

// B given as a strided matrix view with K rows.
class ViewPacker final : public PanelPacker {
 public:
  ViewPacker(int64_t K, MatrixView b) : K_(K), b_(b) {}
  void pack(int64_t n0, int64_t ncols, int nr, float* dst) const override;

 private:
  int64_t K_;
  MatrixView b_;
};

// Where the driver gets B: packed per thread by `packer`, or read in place (unit column stride)
// with row k at data + offsets[k] (or data + k * stride). In place skips a copy of B, which pays
// whenever B is small enough to stay in cache across the A panels.
struct BSource {
  const PanelPacker* packer = nullptr;
  const float* data = nullptr;
  const int64_t* offsets = nullptr;
  int64_t stride = 0;
  bool readable_to_panel_end = false;  // in place: columns up to the next multiple of nr may be read
};

// C[M, N] = epilogue(A * B) with A pre-packed for ks (mr-row panels over all K), or, where
// a_row_stride is not 0, A read in place (row m at a + m * a_row_stride, its k contiguous).
void gemm_driver(const GemmKernels& ks, int64_t M, int64_t N, int64_t K, const float* a, const BSource& b,
                 float* C, int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool, int64_t a_row_stride = 0);

// Whether to split work of this many flops over pool: below the threshold a worker's wake-up
// costs more than it saves.
bool worth_parallel(ThreadPool* pool, double flops);

// A 64-byte-aligned per-thread buffer of at least `floats` floats, one per slot so that callers
// nested in each other do not clobber each other. Contents are unspecified.
enum class ScratchSlot { kGemmB, kConvInput, kConvOutput, kCount };
float* thread_scratch(ScratchSlot slot, size_t floats);

}  // namespace tern::kernels::detail
