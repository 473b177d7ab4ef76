// AVX-512 BW ternary decoder and streaming kernel. The code masks load straight into mask
// registers; one in-lane shuffle spreads the 16 row units over the 64 weight bytes; w = u where
// +1, -u where -1, else 0 (two masked moves per 64 weights).
#include <immintrin.h>

#include <algorithm>

#include "kernels/int8/stream_avx512_internal.h"
#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {

namespace {

inline __m512i decode_step(uint64_t positive, uint64_t negative, __m512i u) {
  __m512i w = _mm512_maskz_mov_epi8(static_cast<__mmask64>(positive), u);
  return _mm512_mask_sub_epi8(w, static_cast<__mmask64>(negative), _mm512_setzero_si512(), u);
}

// stream_panels' decoder: three sequential streams per panel (+ masks, - masks, units).
struct TernaryDecoder {
  const TernaryPanels& t;
  __m512i index;
  struct Panel {
    const uint64_t* pos;
    const uint64_t* neg;
    const uint8_t* units;
    __m512i u;
  };
  Panel open(int64_t panel) const {
    return {t.positive() + panel * t.steps(), t.negative() + panel * t.steps(), t.units_of(panel, 0),
            _mm512_setzero_si512()};
  }
  int64_t steps_per_unit() const { return t.steps_per_unit(); }
  void units_at(Panel& p, int64_t block) const {
    if ((block & 3) == 0) prefetch_ahead(p.units + block * kQPanelRows);  // 4 blocks of units to a line
    p.u = spread_units(p.units + block * kQPanelRows, index);
  }
  __m512i weights(const Panel& p, int64_t s) const {
    if ((s & 7) == 0) {  // 8 steps of masks to a line
      prefetch_ahead(p.pos + s);
      prefetch_ahead(p.neg + s);
    }
    return decode_step(p.pos[s], p.neg[s], p.u);
  }
  __m512i adjust(__m512i sums, int) const { return sums; }
};

}  // namespace

void decode_ternary_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  const __m512i index = row_spread_index();
  const int64_t steps = t.steps(), spu = t.steps_per_unit();
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    const uint64_t* pos = t.positive() + p * steps;
    const uint64_t* neg = t.negative() + p * steps;
    const uint8_t* units = t.units_of(p, 0);
    for (int64_t block = 0; block < steps; block += spu, units += kQPanelRows) {
      const __m512i u = spread_units(units, index);
      for (int64_t s = block; s < std::min(steps, block + spu); ++s) {
        _mm512_storeu_si512(out, decode_step(pos[s], neg[s], u));
        out += kQPanelRows * kQStep;
      }
    }
  }
}

void ternary_stream_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                           const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  const TernaryDecoder d{t, row_spread_index()};
  stream_columns(d, panel_begin, panel_end, t.rows(), t.steps(), cols, x, x_stride, c, ldc);
}

int64_t ternary_stream_panel_block(int64_t cols) { return stream_panel_block(cols); }

}  // namespace tern::kernels
