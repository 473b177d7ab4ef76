// TernaryPanels storage, the reference decoder and the ISA dispatch.
#include "kernels/int8/ternary_panels.h"

#include <algorithm>

#include "kernels/int8/qgemm_internal.h"
#include "tern/error.h"

namespace tern::kernels {

TernaryPanels::TernaryPanels(int64_t rows, int64_t depth, int64_t steps_per_unit)
    : rows_(rows), depth_(depth), steps_per_unit_(steps_per_unit) {
  check(rows >= 0 && depth >= 0 && depth <= kQMaxDepth && steps_per_unit >= 1, "ternary panels: bad dimensions");
  size_t n = static_cast<size_t>(panels() * steps());
  positive_.assign(n, 0);
  negative_.assign(n, 0);
  units_.assign(static_cast<size_t>(panels() * unit_blocks() * kQPanelRows), 0);
}

// The setters run once per weight while a model loads: messages are built only on failure.
void TernaryPanels::set_code(int64_t row, int64_t k, int code) {
  if (row < 0 || row >= rows_ || k < 0 || k >= depth_) throw Error("ternary panels: index out of range");
  if (code < -1 || code > 1) throw Error("ternary panels: code " + std::to_string(code) + " is not -1, 0 or +1");
  detach_lut();
  size_t i = index(row, k / kQStep);
  uint64_t bit = uint64_t{1} << ((row % kQPanelRows) * kQStep + k % kQStep);
  positive_[i] = code > 0 ? positive_[i] | bit : positive_[i] & ~bit;
  negative_[i] = code < 0 ? negative_[i] | bit : negative_[i] & ~bit;
}

void TernaryPanels::set_unit(int64_t row, int64_t step, int unit) {
  if (row < 0 || row >= rows_ || step < 0 || step >= steps()) throw Error("ternary panels: index out of range");
  if (unit < 0 || unit > 127) throw Error("ternary panels: unit " + std::to_string(unit) + " outside 0..127");
  detach_lut();
  units_[static_cast<size_t>(units_of(row / kQPanelRows, step) - units_.data()) + static_cast<size_t>(row % kQPanelRows)] =
      static_cast<uint8_t>(unit);
}

int TernaryPanels::code(int64_t row, int64_t k) const {
  size_t i = index(row, k / kQStep);
  uint64_t bit = uint64_t{1} << ((row % kQPanelRows) * kQStep + k % kQStep);
  return (positive_[i] & bit) ? 1 : (negative_[i] & bit) ? -1 : 0;
}

int TernaryPanels::unit(int64_t row, int64_t step) const { return units_of(row / kQPanelRows, step)[row % kQPanelRows]; }

int64_t TernaryPanels::bytes() const {
  return static_cast<int64_t>(positive_.size() * 16 + units_.size());
}

const TernaryLut& TernaryPanels::lut() const {
  LutSlot& slot = *lut_;
  std::call_once(slot.once, [&] {
    slot.lut = make_ternary_lut(*this);
    slot.made.store(true);
  });
  return slot.lut;
}

TernaryLut make_ternary_lut(const TernaryPanels& t) {
  constexpr int64_t R = TernaryLut::kRows;
  TernaryLut lut{t.rows(), t.steps(), t.steps_per_unit(), {}, {}};
  lut.index.assign(static_cast<size_t>(lut.row_blocks() * lut.steps * R), 0);
  lut.units.assign(static_cast<size_t>(lut.row_blocks() * lut.unit_blocks() * R), 0);
  auto code = [&](int64_t r, int64_t k) { return r < t.rows() && k < t.depth() ? t.code(r, k) + 1 : 1; };
  for (int64_t r = 0; r < lut.row_blocks() * R; ++r) {
    const int64_t block = r / R, j = r % R;
    for (int64_t s = 0; s < lut.steps; ++s) {
      const int64_t k = s * kQStep;
      const int first = 3 * code(r, k) + code(r, k + 1), second = 3 * code(r, k + 2) + code(r, k + 3);
      lut.index[static_cast<size_t>((block * lut.steps + s) * R + j)] = static_cast<uint8_t>(first | second << 4);
    }
    if (r < t.rows())
      for (int64_t u = 0; u < lut.unit_blocks(); ++u)
        lut.units[static_cast<size_t>((block * lut.unit_blocks() + u) * R + j)] =
            static_cast<uint8_t>(t.unit(r, u * lut.steps_per_unit));
  }
  return lut;
}

void ternary_lut_tables(const uint8_t* x, int64_t steps, uint8_t* tables) {
  for (int64_t p = 0; p < 2 * steps; ++p) {
    const int x0 = x[2 * p], x1 = x[2 * p + 1];
    uint8_t* lo = tables + 32 * p;
    uint8_t* hi = lo + 16;
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) {
        const int v = (a - 1) * x0 + (b - 1) * x1;
        lo[3 * a + b] = static_cast<uint8_t>(v & 0xFF);
        hi[3 * a + b] = static_cast<uint8_t>((v >> 8) & 0xFF);
      }
    for (int e = 9; e < 16; ++e) lo[e] = hi[e] = 0;
  }
}

void ternary_lut_gemm(const TernaryPanels& t, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc,
                      ThreadPool* pool) {
  const TernaryLut& lut = t.lut();
  thread_local std::vector<uint8_t> tables;
  tables.resize(static_cast<size_t>(cols * lut.table_bytes()));
  for (int64_t col = 0; col < cols; ++col)
    ternary_lut_tables(x + col * x_stride, lut.steps, tables.data() + col * lut.table_bytes());
  const uint8_t* tp = tables.data();
  parallel_chunks(lut.row_blocks(), pool, [&](int64_t begin, int64_t end) { ternary_lut_avx2(lut, begin, end, cols, tp, c, ldc); });
}

bool ternary_uses_lut(const TernaryPanels& t, int64_t cols) {
  return active_isa() == Isa::kAvx2 && t.steps_per_unit() >= kTernaryLutMinStepsPerUnit &&
         cols <= (cpu_features().avx_vnni ? 1 : kTernaryLutMaxCols);
}

void decode_ternary_reference(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  const int64_t steps = t.steps();
  for (int64_t p = panel_begin; p < panel_end; ++p)
    for (int64_t s = 0; s < steps; ++s) {
      size_t i = static_cast<size_t>(p * steps + s);
      const uint8_t* u = t.units_of(p, s);
      for (int64_t b = 0; b < kQPanelRows * kQStep; ++b) {
        uint64_t bit = uint64_t{1} << b;
        int unit = u[b / kQStep];
        int w = (t.positive()[i] & bit) ? unit : (t.negative()[i] & bit) ? -unit : 0;
        *out++ = static_cast<int8_t>(w);
      }
    }
}

void decode_ternary(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  switch (active_isa()) {
    case Isa::kAvx512: return decode_ternary_avx512(t, panel_begin, panel_end, out);
    case Isa::kAvx2: return decode_ternary_avx2(t, panel_begin, panel_end, out);
    case Isa::kScalar: break;
  }
  decode_ternary_reference(t, panel_begin, panel_end, out);
}

bool ternary_streams(int64_t cols) {
  switch (active_isa()) {
    case Isa::kAvx512: return cpu_features().avx512vnni && cols <= kTernaryStreamMaxCols;
    case Isa::kAvx2: return cols <= kTernaryStreamMaxCols;
    case Isa::kScalar: break;
  }
  return false;
}

void ternary_qgemm(const TernaryPanels& t, const int32_t* row_sums, int64_t cols, const uint8_t* x, int64_t x_stride,
                   int32_t* c, int64_t ldc, std::vector<int8_t>& scratch, ThreadPool* pool) {
  check(cols >= 0 && x_stride >= t.steps() * kQStep && ldc >= t.rows(), "ternary qgemm: bad strides");
  if (cols == 0 || t.rows() == 0) return;
  if (ternary_uses_lut(t, cols)) return ternary_lut_gemm(t, cols, x, x_stride, c, ldc, pool);
  if (ternary_streams(cols)) {
    if (active_isa() == Isa::kAvx512) {
      auto stream = [&](int64_t begin, int64_t end, int64_t n, const uint8_t* xn, int32_t* cn) {
        ternary_stream_avx512(t, begin, end, n, xn, x_stride, cn, ldc);
      };
      const int64_t block = ternary_stream_panel_block(std::min(cols, kTernaryStreamCols));
      streamed_qgemm(t.panels(), block, kTernaryStreamCols, stream, cols, x, x_stride, c, ldc, pool);
    } else {
      auto stream = [&](int64_t begin, int64_t end, int64_t n, const uint8_t* xn, int32_t* cn) {
        ternary_stream_avx2(t, row_sums, begin, end, n, xn, x_stride, cn, ldc);
      };
      streamed_qgemm(t.panels(), 1, kTernaryStreamCols, stream, cols, x, x_stride, c, ldc, pool);
    }
    return;
  }
  auto decode = [&t](int64_t begin, int64_t end, int8_t* out) { decode_ternary(t, begin, end, out); };
  decoded_qgemm(t.rows(), t.depth(), decode, row_sums, cols, x, x_stride, c, ldc, scratch, pool);
}

}  // namespace tern::kernels
