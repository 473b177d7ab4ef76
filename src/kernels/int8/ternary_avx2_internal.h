// The AVX2 ternary step decoder (stream_avx2_internal.h's Decoder), shared by the AVX2 and the
// AVX-VNNI streaming kernels: each mask byte is shuffled over 8 bytes and one bit tested per
// byte; t = (-1 where -1) - (-1 where +1) is the code, and w = sign(u, t).
#pragma once

#include <immintrin.h>

#include "kernels/int8/stream_avx2_internal.h"
#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {
namespace {

struct TernaryDecoderAvx2 {
  const TernaryPanels& t;
  __m256i unit_index[2];
  __m256i mask_index[2];  // half h, byte i of lane L <- mask byte 4h + 2L + (i % 16) / 8
  __m256i bit;            // byte i <- 1 << (i % 8)
  explicit TernaryDecoderAvx2(const TernaryPanels& panels) : t(panels) {
    unit_spread_indexes(unit_index);
    for (int h = 0; h < 2; ++h) {
      alignas(32) int8_t spread[32];
      for (int b = 0; b < 32; ++b) spread[b] = static_cast<int8_t>(4 * h + 2 * (b / 16) + (b % 16) / 8);
      mask_index[h] = _mm256_load_si256(reinterpret_cast<const __m256i*>(spread));
    }
    bit = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  }
  struct Panel {
    const uint64_t* pos;
    const uint64_t* neg;
    const uint8_t* units;
    __m256i u[2];
  };
  Panel open(int64_t panel) const {
    return {t.positive() + panel * t.steps(), t.negative() + panel * t.steps(), t.units_of(panel, 0),
            {_mm256_setzero_si256(), _mm256_setzero_si256()}};
  }
  int64_t steps_per_unit() const { return t.steps_per_unit(); }
  void units_at(Panel& p, int64_t block, int h) const {
    p.u[h] = spread_units_avx2(p.units + block * kQPanelRows, unit_index[h]);
  }
  __m256i weights(const Panel& p, int64_t s, int h) const {
    const __m256i pos = _mm256_set1_epi64x(static_cast<long long>(p.pos[s]));
    const __m256i neg = _mm256_set1_epi64x(static_cast<long long>(p.neg[s]));
    const __m256i pm = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(pos, mask_index[h]), bit), bit);
    const __m256i nm = _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(neg, mask_index[h]), bit), bit);
    return _mm256_sign_epi8(p.u[h], _mm256_sub_epi8(nm, pm));
  }
};

}  // namespace
}  // namespace tern::kernels
