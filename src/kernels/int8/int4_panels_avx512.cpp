// AVX-512 BW int4 decoder and streaming kernel: a panel step's 32 code bytes are broadcast to
// both halves of a zmm, the upper half shifted right by 4 (high nibbles), masked to 4 bits and
// offset back by 8. Units multiply in 16-bit lanes: even bytes by vpmullw directly (the low byte
// of the product is right mod 256), odd bytes with the even ones cleared, then blended.
#include <immintrin.h>

#include <algorithm>

#include "kernels/int8/int4_panels.h"
#include "kernels/int8/stream_avx512_internal.h"

namespace tern::kernels {

namespace {

// The 64 offset nibbles c + 8 of a panel step, one per byte.
inline __m512i nibbles_step(const uint8_t* codes32) {
  const __m256i codes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes32));
  __m512i v = _mm512_maskz_broadcast_i64x4(static_cast<__mmask8>(0xFF), codes);  // both halves
  v = _mm512_mask_srli_epi16(v, static_cast<__mmask32>(0xFFFF0000u), v, 4);
  return _mm512_and_si512(v, _mm512_set1_epi8(0x0F));
}

inline __m512i codes_step(const uint8_t* codes32) { return _mm512_sub_epi8(nibbles_step(codes32), _mm512_set1_epi8(8)); }

// c * u per byte, |c * u| <= 127; u_odd = u >> 8 in each 16-bit lane.
inline __m512i times_units(__m512i c, __m512i u, __m512i u_odd) {
  const __mmask64 odd = static_cast<__mmask64>(0xAAAAAAAAAAAAAAAAULL);
  const __m512i even_products = _mm512_mullo_epi16(c, u);
  const __m512i odd_products = _mm512_mullo_epi16(_mm512_maskz_mov_epi8(odd, c), u_odd);
  return _mm512_mask_blend_epi8(odd, even_products, odd_products);
}

// stream_panels' decoder: one code stream (and one unit stream) per panel. Plain codes multiply
// as the stored c + 8 (one instruction fewer per step) and each column's sums drop 8 * sum(x)
// at the end; padding nibbles hold c + 8 = 8 too, so x past depth cancels.
template <bool Units>
struct Int4Decoder {
  const Int4Panels& w;
  __m512i index;
  const int32_t* offsets = nullptr;  // plain codes: 8 * sum of column n's x over every step
  struct Panel {
    const uint8_t* codes;
    const uint8_t* units;
    __m512i u, u_odd;
  };
  Panel open(int64_t panel) const {
    return {w.codes_of(panel, 0), Units ? w.units_of(panel, 0) : nullptr, _mm512_setzero_si512(),
            _mm512_setzero_si512()};
  }
  int64_t steps_per_unit() const { return Units ? w.steps_per_unit() : 0; }
  void units_at(Panel& p, int64_t block) const {
    if ((block & 3) == 0) prefetch_ahead(p.units + block * kQPanelRows);  // 4 blocks of units to a line
    p.u = spread_units(p.units + block * kQPanelRows, index);
    p.u_odd = _mm512_srli_epi16(p.u, 8);
  }
  __m512i weights(const Panel& p, int64_t s) const {
    if ((s & 1) == 0)  // a 64-byte line holds two steps
      prefetch_ahead(p.codes + s * Int4Panels::kBytesPerStep);
    if constexpr (Units) return times_units(codes_step(p.codes + s * Int4Panels::kBytesPerStep), p.u, p.u_odd);
    else return nibbles_step(p.codes + s * Int4Panels::kBytesPerStep);
  }
  __m512i adjust(__m512i sums, int n) const {
    if constexpr (Units) return sums;
    else return _mm512_sub_epi32(sums, _mm512_set1_epi32(offsets[n]));
  }
};

template <bool Units>
void decode_panels(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  const Int4Decoder<Units> d{w, row_spread_index()};
  const int64_t steps = w.steps(), spu = d.steps_per_unit();
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    auto panel = d.open(p);
    for (int64_t s = 0; s < steps; ++s) {
      if (spu && s % spu == 0) d.units_at(panel, s / spu);
      const __m512i c = codes_step(panel.codes + s * Int4Panels::kBytesPerStep);
      _mm512_storeu_si512(out, Units ? times_units(c, panel.u, panel.u_odd) : c);
      out += kQPanelRows * kQStep;
    }
  }
}

}  // namespace

void decode_int4_avx512(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  if (w.has_units()) decode_panels<true>(w, panel_begin, panel_end, out);
  else decode_panels<false>(w, panel_begin, panel_end, out);
}

void int4_plain_offsets(const Int4Panels& w, int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* offsets) {
  const int64_t bytes = w.steps() * kQStep;
  for (int64_t n = 0; n < cols; ++n) {
    // Sum of bytes as 64-bit lane sums of absolute differences against zero.
    const uint8_t* xn = x + n * x_stride;
    __m512i sum = _mm512_setzero_si512();
    int64_t k = 0;
    for (; k + 64 <= bytes; k += 64)
      sum = _mm512_add_epi64(sum, _mm512_sad_epu8(_mm512_loadu_si512(xn + k), _mm512_setzero_si512()));
    alignas(64) int64_t lanes[8];  // (_mm512_reduce_add_epi64 trips GCC 12's -Wmaybe-uninitialized)
    _mm512_store_si512(lanes, sum);
    int64_t total = 0;
    for (int64_t lane : lanes) total += lane;
    for (; k < bytes; ++k) total += xn[k];
    offsets[n] = static_cast<int32_t>(8 * total);
  }
}

void int4_stream_avx512(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int64_t cols, const uint8_t* x,
                        int64_t x_stride, int32_t* c, int64_t ldc, const int32_t* offsets) {
  if (w.has_units())
    return stream_columns(Int4Decoder<true>{w, row_spread_index()}, panel_begin, panel_end, w.rows(), w.steps(), cols,
                          x, x_stride, c, ldc);
  int32_t own[kInt4StreamCols];
  if (!offsets) {
    int4_plain_offsets(w, cols, x, x_stride, own);
    offsets = own;
  }
  stream_columns(Int4Decoder<false>{w, row_spread_index(), offsets}, panel_begin, panel_end, w.rows(), w.steps(), cols,
                 x, x_stride, c, ldc);
}

int64_t int4_stream_panel_block(int64_t cols) { return stream_panel_block(cols); }

}  // namespace tern::kernels
