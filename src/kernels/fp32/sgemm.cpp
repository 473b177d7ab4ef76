// sgemm: reference loops, A/B packing, K blocking, threading and ISA dispatch, plus the portable
// micro-kernel. The per-ISA micro-kernels live in sgemm_avx2.cpp / sgemm_avx512.cpp.
#include "kernels/fp32/sgemm.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

#include "kernels/fp32/sgemm_internal.h"
#include "tern/error.h"

namespace tern::kernels {

namespace detail {

namespace {

constexpr int64_t kMaxKc = 256;  // B slice of kc x nr stays in L1 while it meets every A panel
constexpr int64_t kPackBudgetFloats = 128 * 1024;  // packed B per thread per pass: 512 KiB, in L2
// Below this much work (~15 us on one core) splitting is not worth a worker's wake-up. That
// assumes a pool whose hand-off costs a few microseconds; a futex-only pool on a busy VM can take
// 20-100 us, which makes splitting batch-1 layers of this size a loss.
constexpr double kMinParallelFlops = 2e6;

struct AlignedDeleter {
  void operator()(float* p) const { ::operator delete[](p, std::align_val_t(64)); }
};
using AlignedFloats = std::unique_ptr<float[], AlignedDeleter>;

AlignedFloats aligned_floats(size_t count) {
  return AlignedFloats(static_cast<float*>(::operator new[](std::max<size_t>(count, 1) * sizeof(float),
                                                            std::align_val_t(64))));
}

inline float clamp(float v, float lo, float hi) {
  v = v < lo ? lo : v;  // NaN stays NaN, as in the vector kernels
  return v > hi ? hi : v;
}

// Portable tile: the compiler vectorizes the column loop for whatever baseline it targets.
template <int R>
void generic_tile(const TileArgs& t) {
  constexpr int kMr = 4, kNr = 8;
  float acc[R][kNr] = {};
  const float* a = t.a;
  const int64_t a_row = t.a_row_stride ? t.a_row_stride : 1, a_step = t.a_row_stride ? 1 : kMr;
  const bool partial_b = t.b_masked && t.cols < kNr;
  for (int64_t k = 0; k < t.kc; ++k, a += a_step) {
    const float* b = t.b + (t.b_offsets ? t.b_offsets[k] : k * t.b_stride);
    float row[kNr] = {};
    if (partial_b) {
      for (int j = 0; j < t.cols; ++j) row[j] = b[j];
      b = row;
    }
    for (int r = 0; r < R; ++r) {
      for (int j = 0; j < kNr; ++j) acc[r][j] += a[r * a_row] * b[j];
    }
  }
  for (int r = 0; r < R; ++r) {
    float* c = t.c + r * t.ldc;
    for (int j = 0; j < t.cols; ++j) {
      float v = acc[r][j];
      if (t.load_c) v = c[j] + v;
      if (t.finalize) {
        if (t.row_bias) v += t.row_bias[r];
        if (t.col_bias) v += t.col_bias[j];
        v = clamp(v, t.lo, t.hi);
      }
      c[j] = v;
    }
  }
}

}  // namespace

void sgemm_ukernel_4x8__generic(const TileArgs& t) {
  static constexpr UkernelFn kByRows[4] = {generic_tile<1>, generic_tile<2>, generic_tile<3>, generic_tile<4>};
  kByRows[t.rows - 1](t);
}

const GemmKernels& gemm_kernels(Isa isa) {
  static const GemmKernels kGeneric{Isa::kScalar, 4, 8, sgemm_ukernel_4x8__generic};
  static const GemmKernels kAvx2{Isa::kAvx2, 6, 16, sgemm_ukernel_6x16__avx2};
  static const GemmKernels kAvx512{Isa::kAvx512, 8, 32, sgemm_ukernel_8x32__avx512};
  switch (isa) {
    case Isa::kAvx512:
      return kAvx512;
    case Isa::kAvx2:
      return kAvx2;
    case Isa::kScalar:
      break;
  }
  return kGeneric;
}

float* thread_scratch(ScratchSlot slot, size_t floats) {
  struct Buffer {
    AlignedFloats data;
    size_t size = 0;
  };
  thread_local Buffer buffers[static_cast<int>(ScratchSlot::kCount)];
  Buffer& buf = buffers[static_cast<int>(slot)];
  if (buf.size < floats) {
    buf.data = aligned_floats(floats);
    buf.size = floats;
  }
  return buf.data.get();
}

void ViewPacker::pack(int64_t n0, int64_t ncols, int nr, float* dst) const {
  const int64_t panels = (ncols + nr - 1) / nr;
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t cols = std::min<int64_t>(nr, ncols - p * nr);
    const float* src = b_.data + (n0 + p * nr) * b_.col_stride;
    float* out = dst + p * K_ * nr;
    if (b_.col_stride == 1) {
      for (int64_t k = 0; k < K_; ++k) {
        std::memcpy(out + k * nr, src + k * b_.row_stride, cols * sizeof(float));
        std::fill(out + k * nr + cols, out + (k + 1) * nr, 0.0f);
      }
    } else {
      // Transposed B: walk each column down its contiguous run, write strided into the panel.
      for (int64_t j = 0; j < cols; ++j) {
        const float* col = src + j * b_.col_stride;
        for (int64_t k = 0; k < K_; ++k) out[k * nr + j] = col[k * b_.row_stride];
      }
      if (cols < nr) {
        for (int64_t k = 0; k < K_; ++k) std::fill(out + k * nr + cols, out + (k + 1) * nr, 0.0f);
      }
    }
  }
}

namespace {

// K == 0: the product is empty, only the epilogue is left.
void epilogue_only(int64_t M, int64_t N, float* C, int64_t ldc, const GemmEpilogue& ep) {
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      float v = ep.accumulate ? C[i * ldc + j] : 0.0f;
      if (ep.bias_kind == BiasKind::kPerRow) v += ep.bias[i];
      if (ep.bias_kind == BiasKind::kPerColumn) v += ep.bias[j];
      C[i * ldc + j] = clamp(v, ep.clamp_lo, ep.clamp_hi);
    }
  }
}

}  // namespace

bool worth_parallel(ThreadPool* pool, double flops) {
  return pool != nullptr && pool->size() > 1 && flops >= kMinParallelFlops;
}

void gemm_driver(const GemmKernels& ks, int64_t M, int64_t N, int64_t K, const float* a_panels, const BSource& bsrc,
                 float* C, int64_t ldc, const GemmEpilogue& ep, ThreadPool* pool, int64_t a_row_stride) {
  if (M == 0 || N == 0) return;
  if (K == 0) return epilogue_only(M, N, C, ldc, ep);
  const int mr = ks.mr, nr = ks.nr;
  const int64_t m_panels = (M + mr - 1) / mr, n_panels = (N + nr - 1) / nr;
  const int64_t k_blocks = (K + kMaxKc - 1) / kMaxKc;
  const int64_t kc_max = (K + k_blocks - 1) / k_blocks;  // even blocks: 257 -> 129 + 128, not 256 + 1
  const int64_t group_panels = bsrc.packer ? std::max<int64_t>(1, kPackBudgetFloats / (K * nr)) : n_panels;

  // Work unit = one (n panel, m panel) tile over all of K, n-major so that a thread's range is a
  // run of whole B panels (split M only where N alone cannot feed every thread).
  auto run = [&](int64_t u_begin, int64_t u_end) {
    const int64_t np_first = u_begin / m_panels, np_last = (u_end - 1) / m_panels;
    float* packed = bsrc.packer ? thread_scratch(ScratchSlot::kGemmB,
                                                 std::min(group_panels, np_last - np_first + 1) * K * nr)
                                : nullptr;
    TileArgs t;
    t.ldc = ldc;
    t.lo = ep.clamp_lo;
    t.hi = ep.clamp_hi;
    t.b_masked = !bsrc.packer && !bsrc.readable_to_panel_end;
    t.b_stride = bsrc.packer ? nr : bsrc.stride;
    t.a_row_stride = a_row_stride;
    for (int64_t g0 = np_first; g0 <= np_last; g0 += group_panels) {
      const int64_t g1 = std::min(np_last + 1, g0 + group_panels);
      if (bsrc.packer) bsrc.packer->pack(g0 * nr, std::min(N, g1 * nr) - g0 * nr, nr, packed);
      for (int64_t k0 = 0; k0 < K; k0 += kc_max) {
        t.kc = std::min(kc_max, K - k0);
        t.load_c = ep.accumulate || k0 > 0;
        t.finalize = k0 + t.kc == K;
        t.b_offsets = bsrc.offsets ? bsrc.offsets + k0 : nullptr;
        for (int64_t np = g0; np < g1; ++np) {
          const int64_t n0 = np * nr;
          const int64_t mp_begin = np == np_first ? u_begin % m_panels : 0;
          const int64_t mp_end = np == np_last ? (u_end - 1) % m_panels + 1 : m_panels;
          if (bsrc.packer) {
            t.b = packed + (np - g0) * K * nr + k0 * nr;
          } else {
            t.b = bsrc.data + n0 + (bsrc.offsets ? 0 : k0 * bsrc.stride);
          }
          t.cols = static_cast<int>(std::min<int64_t>(nr, N - n0));
          t.col_bias = ep.bias_kind == BiasKind::kPerColumn ? ep.bias + n0 : nullptr;
          for (int64_t mp = mp_begin; mp < mp_end; ++mp) {
            const int64_t m0 = mp * mr;
            t.a = a_row_stride ? a_panels + m0 * a_row_stride + k0 : a_panels + mp * K * mr + k0 * mr;
            t.c = C + m0 * ldc + n0;
            t.rows = static_cast<int>(std::min<int64_t>(mr, M - m0));
            t.row_bias = ep.bias_kind == BiasKind::kPerRow ? ep.bias + m0 : nullptr;
            ks.ukernel(t);
          }
        }
      }
    }
  };

  const int64_t units = m_panels * n_panels;
  if (units > 1 && worth_parallel(pool, 2.0 * M * N * K)) {
    pool->parallel_for(units, run);
  } else {
    run(0, units);
  }
}

}  // namespace detail

namespace {

// Row-major B up to this size is read in place rather than packed: it stays in L2 while the A
// panels sweep over it, and rows far apart in memory would cost TLB misses beyond that.
constexpr int64_t kInPlaceMaxFloats = 256 * 1024;

void check_view(const char* name, MatrixView v, int64_t rows, int64_t cols) {
  if (rows > 0 && cols > 0) check(v.data != nullptr, std::string("sgemm: ") + name + " is null");
}

void check_epilogue(const GemmEpilogue& ep) {
  check(ep.bias_kind == BiasKind::kNone || ep.bias != nullptr, "sgemm: bias_kind is set but bias is null");
  check(!(ep.clamp_lo > ep.clamp_hi), "sgemm: clamp_lo is greater than clamp_hi");
}

}  // namespace

PackedMatrixA::PackedMatrixA(int64_t rows, int64_t depth, MatrixView a) : rows_(rows), depth_(depth) {
  check(rows >= 0 && depth >= 0, "PackedMatrixA: negative size");
  check_view("A", a, rows, depth);
  isa_ = active_isa();
  const int mr = detail::gemm_kernels(isa_).mr;
  const int64_t panels = (rows + mr - 1) / mr;
  const size_t count = static_cast<size_t>(panels * depth * mr);
  auto buffer = detail::aligned_floats(count);
  float* out = buffer.get();
  for (int64_t p = 0; p < panels; ++p) {
    const int rows_here = static_cast<int>(std::min<int64_t>(mr, rows - p * mr));
    float* panel = out + p * depth * mr;
    for (int r = 0; r < rows_here; ++r) {  // walk each row of A along its (usually contiguous) depth
      const float* src = a.data + (p * mr + r) * a.row_stride;
      for (int64_t k = 0; k < depth; ++k) panel[k * mr + r] = src[k * a.col_stride];
    }
    for (int r = rows_here; r < mr; ++r) {
      for (int64_t k = 0; k < depth; ++k) panel[k * mr + r] = 0.0f;
    }
  }
  panels_ = std::shared_ptr<float>(buffer.release(), detail::AlignedDeleter());
}

void sgemm_reference(int64_t M, int64_t N, int64_t K, MatrixView A, MatrixView B, float* C, int64_t ldc,
                     const GemmEpilogue& epilogue) {
  check(M >= 0 && N >= 0 && K >= 0, "sgemm_reference: negative size");
  check(ldc >= N, "sgemm_reference: ldc is smaller than N");
  check_epilogue(epilogue);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      float sum = 0.0f;
      for (int64_t k = 0; k < K; ++k) {
        sum += A.data[i * A.row_stride + k * A.col_stride] * B.data[k * B.row_stride + j * B.col_stride];
      }
      float v = epilogue.accumulate ? C[i * ldc + j] + sum : sum;
      if (epilogue.bias_kind == BiasKind::kPerRow) v += epilogue.bias[i];
      if (epilogue.bias_kind == BiasKind::kPerColumn) v += epilogue.bias[j];
      C[i * ldc + j] = detail::clamp(v, epilogue.clamp_lo, epilogue.clamp_hi);
    }
  }
}

namespace {

// A with rows of contiguous k up to this size is read in place rather than packed: it stays in
// L2 while the B panels sweep over it, and a small product (attention's, one head at a time) spent
// as long packing A as multiplying.
constexpr int64_t kInPlaceAMaxFloats = 64 * 1024;

void sgemm_with(const float* a, int64_t a_row_stride, Isa isa, int64_t M, int64_t N, int64_t K, MatrixView B, float* C,
                int64_t ldc, const GemmEpilogue& epilogue, ThreadPool* pool) {
  check(N >= 0, "sgemm: negative N");
  check(ldc >= N, "sgemm: ldc is smaller than N");
  check_view("B", B, K, N);
  check(M == 0 || N == 0 || C != nullptr, "sgemm: C is null");
  check_epilogue(epilogue);
  const detail::ViewPacker packer(K, B);
  detail::BSource bsrc;
  if (B.col_stride == 1 && K * N <= kInPlaceMaxFloats) {
    bsrc.data = B.data;
    bsrc.stride = B.row_stride;
  } else {
    bsrc.packer = &packer;
  }
  detail::gemm_driver(detail::gemm_kernels(isa), M, N, K, a, bsrc, C, ldc, epilogue, pool, a_row_stride);
}

}  // namespace

void sgemm(int64_t M, int64_t N, int64_t K, MatrixView A, MatrixView B, float* C, int64_t ldc,
           const GemmEpilogue& epilogue, ThreadPool* pool) {
  check(M >= 0 && N >= 0 && K >= 0, "sgemm: negative size");
  if (A.col_stride == 1 && A.row_stride >= K && A.row_stride > 0 && M * K <= kInPlaceAMaxFloats) {
    check_view("A", A, M, K);
    return sgemm_with(A.data, A.row_stride, active_isa(), M, N, K, B, C, ldc, epilogue, pool);
  }
  sgemm_packed(PackedMatrixA(M, K, A), N, B, C, ldc, epilogue, pool);
}

void sgemm_packed(const PackedMatrixA& A, int64_t N, MatrixView B, float* C, int64_t ldc,
                  const GemmEpilogue& epilogue, ThreadPool* pool) {
  sgemm_with(A.panels(), 0, A.isa(), A.rows(), N, A.depth(), B, C, ldc, epilogue, pool);
}

}  // namespace tern::kernels
