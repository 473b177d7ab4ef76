// Micro-kernels behind qgemm (one per ISA), on the packed panel layout of qgemm.h.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kernels/int8/qgemm.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

// One column's 4 activation bytes of a K step, as the int32 the kernels broadcast.
inline int32_t load_u32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// C for `cols` columns (at most the ISA's block width) and the rows of `panel_count` consecutive
// panels starting at `panels` (each steps * 64 bytes), of which the first rows_valid are stored.
// row_sums: the panels' row sums (for kernels that offset the activations).
struct QgemmBlock {
  const int8_t* panels;
  int64_t steps;
  int64_t panel_count;  // 1 to the micro-kernel's `panels`
  int64_t rows_valid;
  const int32_t* row_sums;
  const uint8_t* x;
  int64_t x_stride;
  int64_t cols;
  int32_t* c;
  int64_t ldc;
};

void qgemm_block_scalar(const QgemmBlock& b);
void qgemm_block_avx2(const QgemmBlock& b);         // needs AVX2; cols <= 4
void qgemm_block_avx512_vnni(const QgemmBlock& b);  // needs AVX-512 BW + VNNI; cols <= 6 (4 panels) or 8
void qgemm_block_avxvnni(const QgemmBlock& b);      // needs AVX-VNNI (qgemm_avxvnni.cpp); cols <= 6

// Calls run(begin, end) on chunks covering [0, count), claimed by pool's threads as they go (a
// shared counter, `grain` items per claim): on a shared machine one thread can be slowed by
// another process, and a fixed even split would leave the whole call waiting for it.
template <typename Run>
void parallel_chunks(int64_t count, ThreadPool* pool, const Run& run) {
  const int threads = pool ? pool->size() : 1;
  if (threads <= 1 || count <= 1) return run(int64_t{0}, count);
  const int64_t grain = std::max<int64_t>(1, count / (8 * threads));
  std::atomic<int64_t> next{0};
  pool->parallel_for(threads, [&](int64_t, int64_t) {
    for (int64_t begin; (begin = next.fetch_add(grain)) < count;) run(begin, std::min(count, begin + grain));
  });
}

// The active ISA's micro-kernel (what qgemm_panels runs): blocks of up to `panels` panels by
// `cols` columns.
struct QgemmMicroKernel {
  const char* name;
  void (*block)(const QgemmBlock&);
  int64_t cols;
  int64_t panels;
};
QgemmMicroKernel qgemm_micro_kernel();

// C = W X for weights that are kept compressed and decoded to int8 panels right before use
// (ternary, int4). Small weights are decoded once and run through qgemm_panels; weights larger
// than the activations are decoded a panel pair at a time into a cache-resident slot of
// `scratch` and multiplied with every column at once, so the decoded bytes never leave L2.
// decode(panel_begin, panel_end, out) writes panels in QPackedWeights' layout.
template <typename Decode>
void decoded_qgemm(int64_t rows, int64_t depth, const Decode& decode, const int32_t* row_sums, int64_t cols,
                   const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, std::vector<int8_t>& scratch,
                   ThreadPool* pool);

// Runs a streaming kernel, stream(panel_begin, panel_end, cols <= max_cols, x, c), over every
// panel and column: blocks of `block` panels (the kernel's own block, so no thread gets a ragged
// one) split over threads; with more than max_cols columns each block is streamed once per group
// of max_cols columns while its packed weights stay in L1/L2.
template <typename Stream>
void streamed_qgemm(int64_t panel_count, int64_t block, int64_t max_cols, const Stream& stream, int64_t cols,
                    const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, ThreadPool* pool) {
  const int64_t blocks = (panel_count + block - 1) / block;
  auto run = [&](int64_t begin, int64_t end) {
    if (cols <= max_cols) return stream(begin * block, std::min(panel_count, end * block), cols, x, c);
    for (int64_t b = begin; b < end; ++b)
      for (int64_t col = 0; col < cols; col += max_cols)
        stream(b * block, std::min(panel_count, (b + 1) * block), std::min(max_cols, cols - col), x + col * x_stride,
               c + col * ldc);
  };
  parallel_chunks(blocks, pool, run);
}

template <typename Decode>
void decoded_qgemm(int64_t rows, int64_t depth, const Decode& decode, const int32_t* row_sums, int64_t cols,
                   const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc, std::vector<int8_t>& scratch,
                   ThreadPool* pool) {
  const int64_t steps = (depth + kQStep - 1) / kQStep, panel_count = (rows + kQPanelRows - 1) / kQPanelRows;
  const int64_t panel_bytes = steps * kQPanelRows * kQStep;
  // Weights no larger than the activations (a convolution's im2col) or small enough for L2:
  // decode once, and qgemm_panels keeps the columns outermost.
  constexpr int64_t kWholeDecodeBytes = 512 << 10;
  if (panel_count * panel_bytes <= std::max(kWholeDecodeBytes, cols * x_stride)) {
    scratch.resize(static_cast<size_t>(panel_count * panel_bytes));
    decode(0, panel_count, scratch.data());
    qgemm_panels(scratch.data(), row_sums, rows, depth, cols, x, x_stride, c, ldc, pool);
    return;
  }
  const QgemmMicroKernel k = qgemm_micro_kernel();
  const int threads = pool ? pool->size() : 1;
  const int64_t pairs = (panel_count + 1) / 2, slot_bytes = 2 * panel_bytes;
  const size_t scratch_bytes = static_cast<size_t>(threads * slot_bytes);
  if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
  auto run_pairs = [&](int64_t begin, int64_t end, int8_t* slot) {
    for (int64_t pp = begin; pp < end; ++pp) {
      const int64_t first = 2 * pp, count = std::min<int64_t>(2, panel_count - first);
      decode(first, first + count, slot);
      for (int64_t col = 0; col < cols; col += k.cols) {
        QgemmBlock b;
        b.panels = slot;
        b.steps = steps;
        b.panel_count = count;
        b.rows_valid = std::min<int64_t>(rows - first * kQPanelRows, count * kQPanelRows);
        b.row_sums = row_sums + first * kQPanelRows;
        b.x = x + col * x_stride;
        b.x_stride = x_stride;
        b.cols = std::min(k.cols, cols - col);
        b.c = c + col * ldc + first * kQPanelRows;
        b.ldc = ldc;
        k.block(b);
      }
    }
  };
  if (threads <= 1 || pairs <= 1) return run_pairs(0, pairs, scratch.data());
  // Pairs claimed as the threads go (as parallel_chunks); each thread decodes into its own slot.
  const int64_t grain = std::max<int64_t>(1, pairs / (8 * threads));
  std::atomic<int64_t> next{0};
  std::atomic<int> next_slot{0};
  pool->parallel_for(threads, [&](int64_t, int64_t) {
    int8_t* slot = scratch.data() + next_slot.fetch_add(1) * slot_bytes;
    for (int64_t begin; (begin = next.fetch_add(grain)) < pairs;) run_pairs(begin, std::min(pairs, begin + grain), slot);
  });
}

}  // namespace tern::kernels
