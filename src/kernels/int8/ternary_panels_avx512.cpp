// AVX-512 BW ternary decoder: the code masks load straight into mask registers; one in-lane
// shuffle spreads the 16 row units over the 64 weight bytes; w = u where +1, -u where -1, else 0.
#include <immintrin.h>

#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {

void decode_ternary_avx512(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  // Byte i of 128-bit lane L belongs to row 4L + i / 4.
  alignas(64) int8_t spread[64];
  for (int b = 0; b < 64; ++b) spread[b] = static_cast<int8_t>(4 * (b / 16) + (b % 16) / 4);
  const __m512i index = _mm512_load_si512(spread);
  const __m512i zero = _mm512_setzero_si512();
  const int64_t steps = t.steps();
  for (int64_t i = panel_begin * steps; i < panel_end * steps; ++i) {
    __m512i units = _mm512_maskz_broadcast_i32x4(static_cast<__mmask16>(0xFFFF), _mm_loadu_si128(reinterpret_cast<const __m128i*>(t.units() + i * kQPanelRows)));
    __m512i u = _mm512_shuffle_epi8(units, index);
    __m512i w = _mm512_maskz_mov_epi8(static_cast<__mmask64>(t.positive()[i]), u);
    w = _mm512_mask_sub_epi8(w, static_cast<__mmask64>(t.negative()[i]), zero, u);
    _mm512_storeu_si512(out, w);
    out += kQPanelRows * kQStep;
  }
}

}  // namespace tern::kernels
