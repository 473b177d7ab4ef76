// AVX-VNNI depthwise row kernel (requantize.h: depthwise_row_int8; compiled with -mavxvnni,
// entered only where cpu_features().avx_vnni): depthwise_avx512_vnni.cpp's method on 256-bit
// vectors. The codes of taps 4g..4g+3 for 32 consecutive elements are four loads; byte and word
// unpacking puts each element's four taps in one dword (within each 128-bit lane, elements
// 16l + 4k + i in dword i of the k-th vector), the weights were interleaved the same way once per
// call, and one vpdpbusd per vector multiplies and adds all four taps. Two lane permutes restore
// element order. Where consecutive output pixels' inputs are consecutive pixels (x_step ==
// channels) the row is one run of out_w * channels elements; otherwise each pixel is a run of its
// channels. A run's last partial chunk is copied into a zero-padded buffer first (AVX2 has no
// masked byte loads), so no load reads past the run.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "kernels/int8/requantize.h"

namespace tern::kernels {

namespace {

inline void interleave(__m256i x0, __m256i x1, __m256i x2, __m256i x3, __m256i out[4]) {
  const __m256i lo01 = _mm256_unpacklo_epi8(x0, x1), hi01 = _mm256_unpackhi_epi8(x0, x1);
  const __m256i lo23 = _mm256_unpacklo_epi8(x2, x3), hi23 = _mm256_unpackhi_epi8(x2, x3);
  out[0] = _mm256_unpacklo_epi16(lo01, lo23);  // elements 16l + 0..3
  out[1] = _mm256_unpackhi_epi16(lo01, lo23);  // 16l + 4..7
  out[2] = _mm256_unpacklo_epi16(hi01, hi23);  // 16l + 8..11
  out[3] = _mm256_unpackhi_epi16(hi01, hi23);  // 16l + 12..15
}

inline __m256i load32(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

}  // namespace

void depthwise_row_int8_avxvnni(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                                const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  if (channels <= 0 || out_w <= 0) return;
  const bool flat = x_step == channels;
  const int64_t run = flat ? out_w * channels : channels;  // elements per run
  const int64_t runs = flat ? 1 : out_w;
  const int64_t chunks = (run + 31) / 32, groups = (taps + 3) / 4;
  // Chunk q starts at element 32 q, channel (32 q) mod channels: the weight patterns repeat every
  // channels / gcd(channels, 32) chunks.
  const int64_t period = flat ? channels / std::gcd(channels, int64_t{32}) : chunks;
  const int64_t patterns = std::min(period, chunks);

  thread_local std::vector<int8_t> extended;
  thread_local std::vector<uint8_t> table;  // per pattern and group, 4 interleaved vectors of 32 bytes
  const int64_t width = channels + 32;
  extended.resize(static_cast<size_t>(taps * width));
  for (int64_t t = 0; t < taps; ++t) {
    int8_t* dst = extended.data() + t * width;
    for (int64_t filled = 0; filled < width; filled += channels)
      std::memcpy(dst + filled, w + t * channels, static_cast<size_t>(std::min(channels, width - filled)));
  }
  table.resize(static_cast<size_t>(patterns * groups * 4 * 32));
  for (int64_t p = 0; p < patterns; ++p) {
    const int64_t offset = 32 * p % channels;
    for (int64_t g = 0; g < groups; ++g) {
      __m256i wv[4];
      for (int k = 0; k < 4; ++k) {
        const int64_t t = 4 * g + k;
        wv[k] = t < taps ? load32(reinterpret_cast<const uint8_t*>(extended.data() + t * width + offset))
                         : _mm256_setzero_si256();
      }
      __m256i wi[4];
      interleave(wv[0], wv[1], wv[2], wv[3], wi);
      for (int k = 0; k < 4; ++k)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(table.data() + ((p * groups + g) * 4 + k) * 32), wi[k]);
    }
  }

  alignas(32) uint8_t tail[32];
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t r = 0; r < runs; ++r) {
    const uint8_t* base = x_row + r * x_step;
    int32_t* out = acc + r * channels;
    for (int64_t q = 0, p = 0; q < chunks; ++q, p = p + 1 == period ? 0 : p + 1) {
      const int64_t e0 = 32 * q, left = run - e0;
      const uint8_t* wt = table.data() + p * groups * 4 * 32;
      __m256i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
      for (int64_t g = 0; g < groups; ++g, wt += 4 * 32) {
        __m256i xv[4];
        for (int k = 0; k < 4; ++k) {
          const int64_t t = 4 * g + k;
          if (t >= taps) {
            xv[k] = zero;
          } else if (left >= 32) {
            xv[k] = load32(base + tap_offset[t] + e0);
          } else {
            std::memset(tail, 0, sizeof tail);
            std::memcpy(tail, base + tap_offset[t] + e0, static_cast<size_t>(left));
            xv[k] = load32(tail);
          }
        }
        __m256i xi[4];
        interleave(xv[0], xv[1], xv[2], xv[3], xi);
        a0 = _mm256_dpbusd_avx_epi32(a0, xi[0], load32(wt));
        a1 = _mm256_dpbusd_avx_epi32(a1, xi[1], load32(wt + 32));
        a2 = _mm256_dpbusd_avx_epi32(a2, xi[2], load32(wt + 64));
        a3 = _mm256_dpbusd_avx_epi32(a3, xi[3], load32(wt + 96));
      }
      // a_k's lane l holds elements 16l + 4k .. 16l + 4k + 3.
      const __m256i o[4] = {_mm256_permute2x128_si256(a0, a1, 0x20), _mm256_permute2x128_si256(a2, a3, 0x20),
                            _mm256_permute2x128_si256(a0, a1, 0x31), _mm256_permute2x128_si256(a2, a3, 0x31)};
      int32_t* dst = out + e0;
      if (left >= 32) {
        for (int j = 0; j < 4; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8 * j), o[j]);
      } else {
        alignas(32) int32_t sums[32];
        for (int j = 0; j < 4; ++j) _mm256_store_si256(reinterpret_cast<__m256i*>(sums + 8 * j), o[j]);
        std::memcpy(dst, sums, static_cast<size_t>(left) * sizeof(int32_t));
      }
    }
  }
}

}  // namespace tern::kernels
