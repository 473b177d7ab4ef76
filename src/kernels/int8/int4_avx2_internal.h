// The AVX2 int4 step decoder (stream_avx2_internal.h's Decoder), shared by the AVX2 and the
// AVX-VNNI streaming kernels and the AVX2 decoder: the 32 code bytes give rows 0-7 from their
// low nibbles and rows 8-15 from their high nibbles; units multiply in 16-bit lanes.
#pragma once

#include <immintrin.h>

#include "kernels/int8/int4_panels.h"
#include "kernels/int8/stream_avx2_internal.h"

namespace tern::kernels {
namespace {

// c * u per byte, |c * u| <= 127; u_odd = u >> 8 in each 16-bit lane.
inline __m256i times_units_avx2(__m256i c, __m256i u, __m256i u_odd) {
  const __m256i odd = _mm256_set1_epi16(static_cast<short>(0xFF00));
  const __m256i even_products = _mm256_mullo_epi16(c, u);
  const __m256i odd_products = _mm256_mullo_epi16(_mm256_and_si256(c, odd), u_odd);
  return _mm256_blendv_epi8(even_products, odd_products, odd);
}

struct Int4DecoderAvx2 {
  const Int4Panels& w;
  __m256i unit_index[2];
  explicit Int4DecoderAvx2(const Int4Panels& panels) : w(panels) { unit_spread_indexes(unit_index); }
  struct Panel {
    const uint8_t* codes;
    const uint8_t* units;
    __m256i u[2], u_odd[2];
  };
  Panel open(int64_t panel) const {
    Panel p{w.codes_of(panel, 0), w.has_units() ? w.units_of(panel, 0) : nullptr, {}, {}};
    for (int h = 0; h < 2; ++h) p.u[h] = p.u_odd[h] = _mm256_setzero_si256();
    return p;
  }
  int64_t steps_per_unit() const { return w.steps_per_unit(); }
  void units_at(Panel& p, int64_t block, int h) const {
    p.u[h] = spread_units_avx2(p.units + block * kQPanelRows, unit_index[h]);
    p.u_odd[h] = _mm256_srli_epi16(p.u[h], 8);
  }
  // Half 0 (rows 0-7) is the low nibbles of the step's 32 bytes, half 1 the high nibbles.
  __m256i weights(const Panel& p, int64_t s, int h) const {
    __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p.codes + s * Int4Panels::kBytesPerStep));
    if (h) v = _mm256_srli_epi16(v, 4);
    const __m256i c = _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
    return w.has_units() ? times_units_avx2(c, p.u[h], p.u_odd[h]) : c;
  }
};

}  // namespace
}  // namespace tern::kernels
