// Ternary weights kept at 2 bits per weight in the integer GEMM's panel order, and the decoders
// that turn them into int8 panels (qgemm.h's layout) right before use.
//
// A ternary layer with two-level group scales has integer weights w = u * t: t in {-1, 0, +1}
// the code, u in 0..127 its group's scale unit (weight_quantization.h). When every 4-value K step
// of a row lies inside one group (groups of N % 4 == 0 input channels with K ordered tap-major,
// or groups of 4 kernel taps), one unit per (row, step) describes the layer exactly; with groups
// of N = 4s values along K, one unit per (row, s consecutive steps) does (`steps_per_unit` = s).
// Storage per step of a 16-row panel (64 weights): a 64-bit mask of the +1 codes and one of the
// -1 codes (bit 4r + j for row r, lane j: the byte order of the int8 panel), plus the 16 rows'
// units once per s steps: 2 + 8 / (4 s) bits per weight (N = 4: 4 bits, N = 64: 2.125 bits).
// No int8 copy of the weights is kept.
//
// The decoders write the int8 panel bytes w = u * t; AVX-512 turns the masks into byte masks
// directly (kmov), AVX2 expands them with a shuffle and compare. decode_ternary_reference is the
// oracle.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kernels/int8/qgemm.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

// The lookup-table kernel's layout of a TernaryPanels' weights (ternary_lut_avx2): K in pairs,
// each row's pair (t0, t1) as the 4-bit index 3 (t0 + 1) + (t1 + 1). Per block of 32 rows and K
// step (4 values), 32 bytes: byte j holds row j's index of the step's first pair in the low
// nibble and of its second in the high one (2 bits per weight, like the masks). Per block of 32
// rows and unit block, the 32 rows' units. Rows past the last are zero.
struct TernaryLut {
  static constexpr int64_t kRows = 32;
  int64_t rows = 0, steps = 0, steps_per_unit = 1;
  std::vector<uint8_t> index;  // [row block][step][32]
  std::vector<uint8_t> units;  // [row block][unit block][32]
  int64_t row_blocks() const { return (rows + kRows - 1) / kRows; }
  int64_t unit_blocks() const { return (steps + steps_per_unit - 1) / steps_per_unit; }
  int64_t table_bytes() const { return 64 * steps; }  // one column's tables (ternary_lut_tables)
};

class TernaryPanels {
 public:
  TernaryPanels() = default;
  TernaryPanels(int64_t rows, int64_t depth, int64_t steps_per_unit = 1);  // all zero
  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  int64_t steps() const { return (depth_ + kQStep - 1) / kQStep; }
  int64_t panels() const { return (rows_ + kQPanelRows - 1) / kQPanelRows; }
  int64_t steps_per_unit() const { return steps_per_unit_; }
  int64_t unit_blocks() const { return (steps() + steps_per_unit_ - 1) / steps_per_unit_; }

  // Sets code t (-1, 0, +1) of (row, k) and the unit of (row, k's step). Throws Error for a code
  // outside {-1, 0, 1} or a unit above 127.
  void set_code(int64_t row, int64_t k, int code);
  void set_unit(int64_t row, int64_t step, int unit);
  int code(int64_t row, int64_t k) const;
  int unit(int64_t row, int64_t step) const;

  // Raw storage: per (panel, step) a positive and a negative mask (uint64 each); per (panel,
  // unit block) 16 units.
  const uint64_t* positive() const { return positive_.data(); }
  const uint64_t* negative() const { return negative_.data(); }
  const uint8_t* units() const { return units_.data(); }
  const uint8_t* units_of(int64_t panel, int64_t step) const {
    return units_.data() + static_cast<size_t>((panel * unit_blocks() + step / steps_per_unit_) * kQPanelRows);
  }
  int64_t bytes() const;  // storage: 2 bits per weight + one byte per row-step

  // The table kernel's copy of these weights, made on first use (thread-safe) and kept; a setter
  // called afterwards (or on a copy sharing it) starts a new one.
  const TernaryLut& lut() const;

 private:
  struct LutSlot {
    std::once_flag once;
    std::atomic<bool> made{false};
    TernaryLut lut;
  };
  void detach_lut() {
    if (lut_.use_count() > 1 || lut_->made.load(std::memory_order_relaxed)) lut_ = std::make_shared<LutSlot>();
  }
  size_t index(int64_t row, int64_t step) const {
    return static_cast<size_t>((row / kQPanelRows) * steps() + step);
  }
  int64_t rows_ = 0, depth_ = 0, steps_per_unit_ = 1;
  std::vector<uint64_t> positive_, negative_;
  std::vector<uint8_t> units_;  // [panel][unit block][16]
  mutable std::shared_ptr<LutSlot> lut_ = std::make_shared<LutSlot>();
};

TernaryLut make_ternary_lut(const TernaryPanels& t);

// Writes int8 panels [panel_begin, panel_end) of w = u * t, in QPackedWeights' byte layout
// (steps() * 64 bytes per panel), to `out`.
void decode_ternary_reference(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out);
// The same on the active ISA (AVX-512 BW, AVX2, or the reference).
void decode_ternary(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out);

// C[col][row] = sum_k (u * t)[row][k] * X[col][k] (qgemm's contract) straight from ternary panels.
// Up to kTernaryStreamMaxCols columns (GEMV, small batches) on AVX-512 VNNI or AVX2, each step is
// decoded in registers and multiplied at once: the weights stream from memory at their packed
// size, which is what bounds a GEMV. More columns (or scalar): panels are decoded into `scratch`
// (resized as needed) and run through the qgemm micro-kernel, the decode amortized over every
// column (a panel pair at a time for large weights, so the int8 copy stays in L2). row_sums: the
// rows' sums of u * t, padded to whole panels (for the AVX2 kernels' activation offset).
constexpr int64_t kTernaryStreamCols = 8;  // columns per streaming pass
// Up to this many columns stream (in passes of kTernaryStreamCols over each panel block, its
// weights hot in L1/L2): decoding in registers again per pass beat a decode to memory + the qgemm
// micro-kernel at 4096 x 4096 x 64 (per core, AVX-512: 190-255 vs 150 GMAC/s; AVX2 with AVX-VNNI:
// 84-138 vs 52-56). Past it, the activations are large and qgemm's column-outer order
// (convolutions) pays.
constexpr int64_t kTernaryStreamMaxCols = 64;
// The lookup-table kernel (docs/results/ternary_lut.md): per pair of K values and column, a
// 9-entry table of t0 x0 + t1 x1 in a low- and a high-byte half, fetched for 32 rows at once by
// their indexes (vpshufb), summed as int16 over up to 32 steps of one unit, then times the unit.
// Exact. Measured on one Zen 4 core with units per 64 values of K: 1.7-2.9x the vpmaddubsw
// streaming kernel at 1-8 columns, 1.9-2.0x the AVX-VNNI one at 1 column (behind it from 4), and
// behind AVX-512 VNNI. So ternary_qgemm takes it at ISA avx2 for units spanning at least
// kTernaryLutMinStepsPerUnit steps, up to kTernaryLutMaxCols columns (1 with AVX-VNNI).
constexpr int64_t kTernaryLutMinStepsPerUnit = 16;
constexpr int64_t kTernaryLutMaxCols = 8;
bool ternary_uses_lut(const TernaryPanels& t, int64_t cols);
// Column x's tables: 64 bytes per K step (two pairs, each a 16-byte low and high half).
void ternary_lut_tables(const uint8_t* x, int64_t steps, uint8_t* tables);
// ternary_qgemm's contract on the table kernel (AVX2): the columns' tables, then the row blocks
// split over the pool.
void ternary_lut_gemm(const TernaryPanels& t, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
                      ThreadPool* pool);
// C[col][row] for the rows of blocks [block_begin, block_end) of `lut`, from each column's tables
// (column i's at tables + i * lut.table_bytes()); AVX2.
void ternary_lut_avx2(const TernaryLut& lut, int64_t block_begin, int64_t block_end, int64_t cols, const uint8_t* tables,
                      int32_t* c, int64_t ldc);
void ternary_qgemm(const TernaryPanels& t, const int32_t* row_sums, int64_t cols, const uint8_t* x, int64_t x_stride,
                   int32_t* c, int64_t ldc, std::vector<int8_t>& scratch, ThreadPool* pool);
// Whether ternary_qgemm streams `cols` columns at the active ISA.
bool ternary_streams(int64_t cols);
// The streaming kernel alone (AVX-512 BW + VNNI; cols <= kTernaryStreamCols), over panels
// [panel_begin, panel_end). The AVX2 ones below take any number of columns.
void ternary_stream_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                           const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc);
// Panels the AVX-512 kernel takes at once for `cols` columns (thread splits should be multiples).
int64_t ternary_stream_panel_block(int64_t cols);
// The AVX2 streaming kernel (vpdpbusd ymm where the CPU has AVX-VNNI, else vpmaddubsw with the
// activation offset, which needs row_sums); same contract.
void ternary_stream_avx2(const TernaryPanels& t, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                         int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc);

// Internal: per-ISA decoders (same contract).
void decode_ternary_avx2(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out);
void decode_ternary_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out);
// ternary_stream_avx2's two kernels: vpdpbusd ymm (needs AVX-VNNI; no row sums needed), and
// vpmaddubsw (AVX2 alone; what ternary_stream_avx2 runs where the CPU lacks AVX-VNNI).
void ternary_stream_avx2_maddubs(const TernaryPanels& t, const int32_t* row_sums, int64_t panel_begin,
                                 int64_t panel_end, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c,
                                 int64_t ldc);
void ternary_stream_avxvnni(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                            const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc);

}  // namespace tern::kernels
