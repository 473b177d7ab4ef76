// Int4Panels storage, the reference decoder and the ISA dispatch.
#include "kernels/int8/int4_panels.h"

#include <algorithm>
#include <cstdlib>

#include "kernels/int8/qgemm_internal.h"
#include "tern/error.h"

namespace tern::kernels {

Int4Panels::Int4Panels(int64_t rows, int64_t depth, int64_t steps_per_unit)
    : rows_(rows), depth_(depth), steps_per_unit_(steps_per_unit) {
  check(rows >= 0 && depth >= 0 && depth <= kQMaxDepth && steps_per_unit >= 0, "int4 panels: bad dimensions");
  codes_.assign(static_cast<size_t>(panels() * steps() * kBytesPerStep), 0x88);  // code 0 in both nibbles
  units_.assign(static_cast<size_t>(panels() * unit_blocks() * kQPanelRows), 0);
}

size_t Int4Panels::byte_of(int64_t row, int64_t k, int& shift) const {
  const int64_t b = (row % kQPanelRows) * kQStep + k % kQStep;  // byte of the int8 panel step
  shift = b < kBytesPerStep ? 0 : 4;
  return static_cast<size_t>(((row / kQPanelRows) * steps() + k / kQStep) * kBytesPerStep + b % kBytesPerStep);
}

// The setters run once per weight while a model loads: messages are built only on failure.
void Int4Panels::set_code(int64_t row, int64_t k, int code) {
  if (row < 0 || row >= rows_ || k < 0 || k >= depth_) throw Error("int4 panels: index out of range");
  if (code < -8 || code > 7) throw Error("int4 panels: code " + std::to_string(code) + " outside [-8, 7]");
  if (has_units() && std::abs(code * unit(row, k / kQStep)) > 127)
    throw Error("int4 panels: code times unit outside [-127, 127]");
  int shift = 0;
  uint8_t& byte = codes_[byte_of(row, k, shift)];
  byte = static_cast<uint8_t>((byte & ~(0xF << shift)) | ((code + 8) << shift));
}

void Int4Panels::set_unit(int64_t row, int64_t step, int unit) {
  if (!has_units()) throw Error("int4 panels: plain codes have no units");
  if (row < 0 || row >= rows_ || step < 0 || step >= steps()) throw Error("int4 panels: index out of range");
  if (unit < 0 || unit > 127) throw Error("int4 panels: unit " + std::to_string(unit) + " outside 0..127");
  const int64_t block = step / steps_per_unit_;
  for (int64_t k = block * steps_per_unit_ * kQStep; k < std::min(depth_, (block + 1) * steps_per_unit_ * kQStep); ++k)
    if (std::abs(code(row, k) * unit) > 127) throw Error("int4 panels: code times unit outside [-127, 127]");
  units_[static_cast<size_t>(units_of(row / kQPanelRows, step) - units_.data() + row % kQPanelRows)] =
      static_cast<uint8_t>(unit);
}

int Int4Panels::code(int64_t row, int64_t k) const {
  int shift = 0;
  const size_t at = byte_of(row, k, shift);  // sets shift: read it only after (a sanitizer build did not)
  return ((codes_[at] >> shift) & 0xF) - 8;
}

int Int4Panels::unit(int64_t row, int64_t step) const {
  return has_units() ? units_of(row / kQPanelRows, step)[row % kQPanelRows] : 1;
}

void decode_int4_reference(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  const int64_t steps = w.steps();
  for (int64_t p = panel_begin; p < panel_end; ++p)
    for (int64_t s = 0; s < steps; ++s) {
      const uint8_t* codes = w.codes_of(p, s);
      for (int64_t b = 0; b < kQPanelRows * kQStep; ++b) {
        const int nibble = b < Int4Panels::kBytesPerStep ? codes[b] & 0xF : codes[b - Int4Panels::kBytesPerStep] >> 4;
        const int unit = w.has_units() ? w.units_of(p, s)[b / kQStep] : 1;
        *out++ = static_cast<int8_t>((nibble - 8) * unit);
      }
    }
}

void decode_int4(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  switch (active_isa()) {
    case Isa::kAvx512: return decode_int4_avx512(w, panel_begin, panel_end, out);
    case Isa::kAvx2: return decode_int4_avx2(w, panel_begin, panel_end, out);
    case Isa::kScalar: break;
  }
  decode_int4_reference(w, panel_begin, panel_end, out);
}

bool int4_streams(int64_t cols) {
  switch (active_isa()) {
    case Isa::kAvx512: return cpu_features().avx512vnni && cols <= kInt4StreamMaxCols;
    case Isa::kAvx2: return cols <= kInt4StreamMaxCols;
    case Isa::kScalar: break;
  }
  return false;
}

void int4_qgemm(const Int4Panels& w, const int32_t* row_sums, int64_t cols, const uint8_t* x, int64_t x_stride,
                int32_t* c, int64_t ldc, std::vector<int8_t>& scratch, ThreadPool* pool) {
  check(cols >= 0 && x_stride >= w.steps() * kQStep && ldc >= w.rows(), "int4 qgemm: bad strides");
  if (cols == 0 || w.rows() == 0) return;
  if (int4_streams(cols)) {
    if (active_isa() == Isa::kAvx512) {
      // Plain codes' column offsets once per call, not per panel block.
      std::vector<int32_t> offsets(w.has_units() ? 0 : static_cast<size_t>(cols));
      if (!w.has_units()) int4_plain_offsets(w, cols, x, x_stride, offsets.data());
      auto stream = [&](int64_t begin, int64_t end, int64_t n, const uint8_t* xn, int32_t* cn) {
        const int32_t* o = w.has_units() ? nullptr : offsets.data() + (xn - x) / x_stride;
        int4_stream_avx512(w, begin, end, n, xn, x_stride, cn, ldc, o);
      };
      const int64_t block = int4_stream_panel_block(std::min(cols, kInt4StreamCols));
      streamed_qgemm(w.panels(), block, kInt4StreamCols, stream, cols, x, x_stride, c, ldc, pool);
    } else {
      auto stream = [&](int64_t begin, int64_t end, int64_t n, const uint8_t* xn, int32_t* cn) {
        int4_stream_avx2(w, row_sums, begin, end, n, xn, x_stride, cn, ldc);
      };
      streamed_qgemm(w.panels(), 1, kInt4StreamCols, stream, cols, x, x_stride, c, ldc, pool);
    }
    return;
  }
  auto decode = [&w](int64_t begin, int64_t end, int8_t* out) { decode_int4(w, begin, end, out); };
  decoded_qgemm(w.rows(), w.depth(), decode, row_sums, cols, x, x_stride, c, ldc, scratch, pool);
}

}  // namespace tern::kernels
