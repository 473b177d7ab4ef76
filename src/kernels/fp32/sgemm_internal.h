// Private plumbing shared by the sgemm driver, its per-ISA micro-kernels and conv2d: the tile
// call, the per-ISA kernel table and the B-panel packing interface.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu_features.h"
#include "kernels/fp32/sgemm.h"

namespace tern::kernels::detail {

// One micro-kernel call on a tile of at most mr x nr: C (+)= A_panel * B_panel, then bias + clamp.
struct TileArgs {
  int64_t kc = 0;
  const float* a = nullptr;  // A panel slice: a[k * mr + r]
  const float* b = nullptr;  // B panel slice: b[k * nr + j], zero past cols
  float* c = nullptr;
  int64_t ldc = 0;
  int rows = 0, cols = 0;         // 1..mr, 1..nr
  bool load_c = false;            // add C's current contents (accumulate, or a later K block)
  bool finalize = false;          // last K block: add bias, clamp
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

// Produces B in the micro-kernel's panel layout. pack() writes columns [n0, n0 + ncols) (n0 a
// multiple of nr) for all K rows: element (k, n) at dst[(n - n0) / nr * K * nr + k * nr + (n - n0) % nr],
// with zeros past ncols in the last panel so kernels can load whole vectors.
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

// C[M, N] = epilogue(A * B) with A pre-packed for ks (mr-row panels over all K) and B from packer.
void gemm_driver(const GemmKernels& ks, int64_t M, int64_t N, int64_t K, const float* a_panels,
                 const PanelPacker& b, float* C, int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool);

// A 64-byte-aligned per-thread buffer of at least `floats` floats; slot picks one of a few
// independent buffers so nested users do not clobber each other. Contents are unspecified.
enum class ScratchSlot { kGemmB, kConv, kCount };
float* thread_scratch(ScratchSlot slot, size_t floats);

}  // namespace tern::kernels::detail
