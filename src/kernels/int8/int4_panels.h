// 4-bit integer weights kept at 4 bits per weight in the integer GEMM's panel order, and the
// decoders that turn them into int8 panels (qgemm.h's layout) right before use.
//
// Two forms of an int4 layer's integer weights:
//   - plain codes, w = c with c in [-8, 7] (steps_per_unit = 0): a per-filter scale (the filter's
//     step) carries the rest, as for int4 per-channel quantization;
//   - codes times 7-bit units, w = c * u with one unit per (row, steps_per_unit K steps) like
//     TernaryPanels: two-level group scales (weight_quantization.h) whose products fit int8,
//     |c * u| <= 127 (checked).
// Storage per step of a 16-row panel (64 weights, byte b = 4r + j of the int8 panel): 32 bytes,
// byte i holding weight i in its low nibble and weight i + 32 in its high nibble, as c + 8
// (offset binary: the all-zero code is 0x8); plus the 16 rows' units once per steps_per_unit
// steps. 4 + 8 / (4 s) bits per weight (4 without units).
//
// The decoders write the int8 panel bytes: one load of 32 bytes, the high nibbles shifted down
// into the upper half, and 8 subtracted; units multiply in 16-bit lanes (even and odd bytes).
// decode_int4_reference is the oracle.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/int8/qgemm.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

class Int4Panels {
 public:
  Int4Panels() = default;
  // All codes 0 (and units 0); steps_per_unit 0: plain codes, no units.
  Int4Panels(int64_t rows, int64_t depth, int64_t steps_per_unit = 0);
  int64_t rows() const { return rows_; }
  int64_t depth() const { return depth_; }
  int64_t steps() const { return (depth_ + kQStep - 1) / kQStep; }
  int64_t panels() const { return (rows_ + kQPanelRows - 1) / kQPanelRows; }
  int64_t steps_per_unit() const { return steps_per_unit_; }
  bool has_units() const { return steps_per_unit_ > 0; }
  int64_t unit_blocks() const { return has_units() ? (steps() + steps_per_unit_ - 1) / steps_per_unit_ : 0; }

  // Throw Error for a code outside [-8, 7], a unit above 127, or |code * unit| > 127 (either order).
  void set_code(int64_t row, int64_t k, int code);
  void set_unit(int64_t row, int64_t step, int unit);  // only with units
  int code(int64_t row, int64_t k) const;
  int unit(int64_t row, int64_t step) const;  // 1 without units
  int weight(int64_t row, int64_t k) const { return code(row, k) * unit(row, k / kQStep); }

  // Raw storage: per (panel, step) 32 bytes of offset nibbles; per (panel, unit block) 16 units.
  const uint8_t* codes_of(int64_t panel, int64_t step) const {
    return codes_.data() + static_cast<size_t>((panel * steps() + step) * kBytesPerStep);
  }
  const uint8_t* units_of(int64_t panel, int64_t step) const {
    return units_.data() + static_cast<size_t>((panel * unit_blocks() + step / steps_per_unit_) * kQPanelRows);
  }
  int64_t bytes() const { return static_cast<int64_t>(codes_.size() + units_.size()); }

  static constexpr int64_t kBytesPerStep = kQPanelRows * kQStep / 2;

 private:
  // The byte and shift of (row, k)'s nibble.
  size_t byte_of(int64_t row, int64_t k, int& shift) const;
  int64_t rows_ = 0, depth_ = 0, steps_per_unit_ = 0;
  std::vector<uint8_t> codes_;
  std::vector<uint8_t> units_;  // [panel][unit block][16]
};

// Writes int8 panels [panel_begin, panel_end) of w, in QPackedWeights' byte layout (steps() * 64
// bytes per panel), to `out`.
void decode_int4_reference(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out);
// The same on the active ISA (AVX-512 BW, AVX2, or the reference).
void decode_int4(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out);

// C[col][row] = sum_k w[row][k] * X[col][k] (qgemm's contract, ternary_qgemm's plan): up to
// kInt4StreamMaxCols columns stream the packed weights and decode in registers (AVX-512 VNNI, AVX2);
// more columns decode panels into `scratch` and run the qgemm micro-kernel. row_sums: the rows'
// sums of w, padded to whole panels (for the AVX2 kernels' activation offset).
constexpr int64_t kInt4StreamCols = 8;              // columns per streaming pass
constexpr int64_t kInt4StreamMaxCols = 64;          // as kTernaryStreamMaxCols
void int4_qgemm(const Int4Panels& w, const int32_t* row_sums, int64_t cols, const uint8_t* x, int64_t x_stride,
                int32_t* c, int64_t ldc, std::vector<int8_t>& scratch, ThreadPool* pool);
bool int4_streams(int64_t cols);  // whether int4_qgemm streams `cols` columns at the active ISA

// Internal: per-ISA decoders and streaming kernels (panels [panel_begin, panel_end); cols <=
// kInt4StreamCols for the AVX-512 kernel, any for the AVX2 ones).
void decode_int4_avx2(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out);
void decode_int4_avx512(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out);
// offsets: for plain codes, 8 * the sum of each column's x over steps() * 4 bytes (the kernel
// multiplies by c + 8), as int4_plain_offsets computes; null: computed here.
void int4_stream_avx512(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int64_t cols, const uint8_t* x,
                        int64_t x_stride, int32_t* c, int64_t ldc, const int32_t* offsets = nullptr);
void int4_plain_offsets(const Int4Panels& w, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* offsets);
int64_t int4_stream_panel_block(int64_t cols);
void int4_stream_avx2(const Int4Panels& w, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                      int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc);
// int4_stream_avx2's two kernels: vpmaddubsw (AVX2 alone) and vpdpbusd ymm (AVX-VNNI).
void int4_stream_avx2_maddubs(const Int4Panels& w, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                              int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc);
void int4_stream_avxvnni(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int64_t cols, const uint8_t* x,
                         int64_t x_stride, int32_t* c, int64_t ldc);

}  // namespace tern::kernels
