// qgemm: weight packing, the reference loop, and the threaded driver over the ISA micro-kernels.
#include "kernels/int8/qgemm.h"

#include <algorithm>
#include <cstring>

#include "kernels/int8/qgemm_internal.h"
#include "tern/error.h"

namespace tern::kernels {

QPackedWeights::QPackedWeights(int64_t rows, int64_t depth) : rows_(rows), depth_(depth) {
  check(rows >= 0 && depth >= 0, "qgemm: negative weight dimensions");
  check(depth <= kQMaxDepth, "qgemm: depth " + std::to_string(depth) + " exceeds the int32-safe maximum " +
                                 std::to_string(kQMaxDepth));
  size_t bytes = static_cast<size_t>(panels() * steps() * kQPanelRows * kQStep);
  data_ = std::shared_ptr<int8_t[]>(new int8_t[std::max<size_t>(bytes, 1)]());
  row_sums_ = std::shared_ptr<int32_t[]>(new int32_t[static_cast<size_t>(std::max<int64_t>(panels() * kQPanelRows, 1))]());
}

QPackedWeights QPackedWeights::pack(const int8_t* w, int64_t rows, int64_t depth, int64_t row_stride) {
  QPackedWeights p(rows, depth);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < depth; ++k) p.at(r, k) = w[r * row_stride + k];
  p.finish();
  return p;
}

void QPackedWeights::finish() {
  for (int64_t r = 0; r < panels() * kQPanelRows; ++r) {
    int32_t sum = 0;
    for (int64_t k = 0; k < steps() * kQStep; ++k) {
      // -128 has no positive counterpart: the AVX2 kernel negates weights.
      // (The message is built only on failure: this runs once per weight.)
      if (at(r, k) == -128) throw Error("qgemm: weight -128 at row " + std::to_string(r) + " (weights are in [-127, 127])");
      sum += at(r, k);
    }
    row_sums_[static_cast<size_t>(r)] = sum;
  }
}

void qgemm_reference(const int8_t* w, int64_t rows, int64_t depth, int64_t w_stride, int64_t cols, const uint8_t* x,
                     int64_t x_stride, int32_t* c, int64_t ldc) {
  for (int64_t col = 0; col < cols; ++col)
    for (int64_t r = 0; r < rows; ++r) {
      int32_t sum = 0;
      for (int64_t k = 0; k < depth; ++k) sum += static_cast<int32_t>(w[r * w_stride + k]) * x[col * x_stride + k];
      c[col * ldc + r] = sum;
    }
}

void qgemm_block_scalar(const QgemmBlock& b) {
  for (int64_t p = 0; p < b.panel_count; ++p) {
    const int8_t* panel = b.panels + p * b.steps * kQPanelRows * kQStep;
    for (int64_t col = 0; col < b.cols; ++col) {
      int32_t acc[kQPanelRows] = {};
      const uint8_t* xc = b.x + col * b.x_stride;
      for (int64_t s = 0; s < b.steps; ++s)
        for (int64_t r = 0; r < kQPanelRows; ++r)
          for (int64_t j = 0; j < kQStep; ++j)
            acc[r] += static_cast<int32_t>(panel[(s * kQPanelRows + r) * kQStep + j]) * xc[s * kQStep + j];
      for (int64_t r = 0; r < kQPanelRows && p * kQPanelRows + r < b.rows_valid; ++r) b.c[col * b.ldc + p * kQPanelRows + r] = acc[r];
    }
  }
}

QgemmMicroKernel qgemm_micro_kernel() {
  const CpuFeatures& f = cpu_features();
  const Isa isa = active_isa();
  if (isa == Isa::kAvx512 && f.avx512vnni) return {"avx512-vnni", qgemm_block_avx512_vnni, 6, 4};
  if (isa >= Isa::kAvx2 && f.avx_vnni) return {"avx2-vnni", qgemm_block_avxvnni, 6, 2};
  if (isa >= Isa::kAvx2) return {"avx2", qgemm_block_avx2, 4, 2};
  return {"scalar", qgemm_block_scalar, 4, 2};
}

const char* qgemm_kernel_name() { return qgemm_micro_kernel().name; }

void qgemm(const QPackedWeights& w, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
           ThreadPool* pool) {
  qgemm_panels(w.data(), w.row_sums(), w.rows(), w.depth(), cols, x, x_stride, c, ldc, pool);
}

void qgemm_panels(const int8_t* panels, const int32_t* row_sums, int64_t rows, int64_t depth, int64_t cols,
                  const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, ThreadPool* pool) {
  const int64_t steps = (depth + kQStep - 1) / kQStep, panel_count = (rows + kQPanelRows - 1) / kQPanelRows;
  check(rows >= 0 && depth >= 0 && depth <= kQMaxDepth, "qgemm: bad weight dimensions");
  check(cols >= 0 && x_stride >= steps * kQStep && ldc >= rows, "qgemm: bad strides");
  if (cols == 0 || rows == 0) return;
  const QgemmMicroKernel k = qgemm_micro_kernel();
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  const int64_t groups = (panel_count + k.panels - 1) / k.panels;
  // Work items: (column block, group of panels). The larger operand goes in the outer loop, so
  // that it is read from memory once while the smaller one stays in cache: columns outermost for
  // a convolution (many patches, small weights), panels outermost for a GEMM whose weights are
  // larger than its activations (a transformer layer at batch 1..64). With few columns (a GEMV)
  // the panel groups spread over threads.
  const int64_t col_blocks = (cols + k.cols - 1) / k.cols;
  const bool panels_outer = panel_count * panel_bytes > cols * x_stride;
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      int64_t cb = panels_outer ? item % col_blocks : item / groups;
      int64_t first = (panels_outer ? item / col_blocks : item % groups) * k.panels;
      QgemmBlock b;
      b.panels = panels + first * panel_bytes;
      b.steps = steps;
      b.panel_count = std::min<int64_t>(k.panels, panel_count - first);
      b.rows_valid = std::min<int64_t>(rows - first * kQPanelRows, b.panel_count * kQPanelRows);
      b.row_sums = row_sums + first * kQPanelRows;
      b.x = x + cb * k.cols * x_stride;
      b.x_stride = x_stride;
      b.cols = std::min(k.cols, cols - cb * k.cols);
      b.c = c + cb * k.cols * ldc + first * kQPanelRows;
      b.ldc = ldc;
      k.block(b);
    }
  };
  // Items claimed as the threads go (parallel_chunks): a worker that wakes late finds less to do
  // instead of holding the caller up (at batch 1 a transformer's layer is a few tens of us, as
  // long as a wake-up on a VM).
  parallel_chunks(col_blocks * groups, pool, run);
}

}  // namespace tern::kernels
