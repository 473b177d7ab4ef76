// AVX-512 VNNI depthwise row kernel (requantize.h: depthwise_row_int8): four taps per vpdpbusd.
//
// The codes of taps 4g..4g+3 for 64 consecutive elements are four loads; two rounds of byte and
// word unpacking put each element's four taps in one dword (within each 128-bit lane, elements
// 16l + 4k + i in dword i of the k-th vector), the weights were interleaved the same way once per
// call, and one vpdpbusd per vector multiplies and adds all four taps: 64 multiply-adds per
// instruction where the vpmaddwd kernel (requantize_avx512.cpp) did 32 per vpmaddwd + vpaddd pair,
// with 8 shuffles per 4 taps against its 16. A 4 x 4 transpose of 128-bit lanes restores element
// order before the store.
//
// Elements: where consecutive output pixels' inputs are consecutive pixels (x_step == channels, a
// stride-1 row with unpadded pixels) the row is one run of out_w * channels elements, and element
// e's weights are channel e mod channels': no lanes are lost to a channel count that is not a
// multiple of 64 (16, 24, 40, 72, 144, ...). Otherwise each pixel is a run of its channels.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "kernels/int8/requantize.h"

// GCC 12 warns inside its own _mm512_shuffle_i32x4 (an undefined vector it merges into); clang
// has no such warning (and would warn about the unknown name).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tern::kernels {

namespace {

inline __mmask64 mask64(int64_t left) {
  return left >= 64 ? ~__mmask64{0} : (__mmask64{1} << left) - 1;
}

// The four vectors of 64 elements' four taps (x0..x3) with each element's taps in one dword.
inline void interleave(__m512i x0, __m512i x1, __m512i x2, __m512i x3, __m512i out[4]) {
  const __m512i lo01 = _mm512_unpacklo_epi8(x0, x1), hi01 = _mm512_unpackhi_epi8(x0, x1);
  const __m512i lo23 = _mm512_unpacklo_epi8(x2, x3), hi23 = _mm512_unpackhi_epi8(x2, x3);
  out[0] = _mm512_unpacklo_epi16(lo01, lo23);  // elements 16l + 0..3
  out[1] = _mm512_unpackhi_epi16(lo01, lo23);  // 16l + 4..7
  out[2] = _mm512_unpacklo_epi16(hi01, hi23);  // 16l + 8..11
  out[3] = _mm512_unpackhi_epi16(hi01, hi23);  // 16l + 12..15
}

struct Rows {
  const uint8_t* x_row;
  int64_t x_step;
  const int64_t* tap_offset;
  const uint8_t* table;
  int32_t* acc;
  int64_t channels, run, runs, chunks, period;
};

// The runs' chunks of 64 elements (kTaps: the tap count when fixed, else 0 and `taps`).
template <int kTaps>
void multiply_rows(const Rows& a, int64_t any_taps = 0) {
  const int64_t taps = kTaps > 0 ? kTaps : any_taps, groups = (taps + 3) / 4;
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t r = 0; r < a.runs; ++r) {
    const uint8_t* base = a.x_row + r * a.x_step;
    int32_t* out = a.acc + r * a.channels;
    for (int64_t q = 0, p = 0; q < a.chunks; ++q, p = p + 1 == a.period ? 0 : p + 1) {
      const int64_t e0 = 64 * q, left = a.run - e0;
      const __mmask64 m = mask64(left);
      const uint8_t* wt = a.table + p * groups * 4 * 64;
      __m512i a0 = zero, a1 = zero, a2 = zero, a3 = zero;
#pragma GCC unroll 7
      for (int64_t g = 0; g < groups; ++g, wt += 4 * 64) {
        __m512i xv[4];
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const int64_t t = 4 * g + k;
          xv[k] = t < taps ? _mm512_maskz_loadu_epi8(m, base + a.tap_offset[t] + e0) : zero;
        }
        __m512i xi[4];
        interleave(xv[0], xv[1], xv[2], xv[3], xi);
        a0 = _mm512_dpbusd_epi32(a0, xi[0], _mm512_loadu_si512(wt));
        a1 = _mm512_dpbusd_epi32(a1, xi[1], _mm512_loadu_si512(wt + 64));
        a2 = _mm512_dpbusd_epi32(a2, xi[2], _mm512_loadu_si512(wt + 128));
        a3 = _mm512_dpbusd_epi32(a3, xi[3], _mm512_loadu_si512(wt + 192));
      }
      // a_k's lane l holds elements 16l + 4k .. 16l + 4k + 3: transpose the 4 x 4 lanes.
      const __m512i t0 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(1, 0, 1, 0));
      const __m512i t1 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(1, 0, 1, 0));
      const __m512i t2 = _mm512_shuffle_i32x4(a0, a1, _MM_SHUFFLE(3, 2, 3, 2));
      const __m512i t3 = _mm512_shuffle_i32x4(a2, a3, _MM_SHUFFLE(3, 2, 3, 2));
      const __m512i o[4] = {_mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
                            _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0)),
                            _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1))};
      int32_t* dst = out + e0;
      if (left >= 64) {
        for (int j = 0; j < 4; ++j) _mm512_storeu_si512(dst + 16 * j, o[j]);
      } else {
        for (int j = 0; j < 4 && 16 * j < left; ++j) {
          const int64_t n = std::min<int64_t>(16, left - 16 * j);
          _mm512_mask_storeu_epi32(dst + 16 * j, static_cast<__mmask16>((1u << n) - 1u), o[j]);
        }
      }
    }
  }
}

}  // namespace

void depthwise_row_int8_avx512_vnni(const uint8_t* x_row, int64_t x_step, const int64_t* tap_offset, int64_t taps,
                                    const int8_t* w, int64_t channels, int64_t out_w, int32_t* acc) {
  if (channels <= 0 || out_w <= 0) return;
  const bool flat = x_step == channels;
  const int64_t run = flat ? out_w * channels : channels;  // elements per run
  const int64_t runs = flat ? 1 : out_w;
  const int64_t chunks = (run + 63) / 64, groups = (taps + 3) / 4;
  // Chunk q starts at element 64 q, channel (64 q) mod channels: the weight patterns repeat every
  // channels / gcd(channels, 64) chunks.
  const int64_t period = flat ? channels / std::gcd(channels, int64_t{64}) : chunks;
  const int64_t patterns = std::min(period, chunks);

  // Each tap's weights repeated to channels + 64 bytes, so that a pattern is one 64-byte load.
  thread_local std::vector<int8_t> extended;
  thread_local std::vector<uint8_t> table;  // per pattern and group, 4 interleaved vectors of 64 bytes
  const int64_t width = channels + 64;
  extended.resize(static_cast<size_t>(taps * width));
  for (int64_t t = 0; t < taps; ++t) {
    int8_t* dst = extended.data() + t * width;
    for (int64_t filled = 0; filled < width; filled += channels)
      std::memcpy(dst + filled, w + t * channels, static_cast<size_t>(std::min(channels, width - filled)));
  }
  table.resize(static_cast<size_t>(patterns * groups * 4 * 64));
  for (int64_t p = 0; p < patterns; ++p) {
    const int64_t offset = 64 * p % channels;
    for (int64_t g = 0; g < groups; ++g) {
      __m512i wv[4];
      for (int k = 0; k < 4; ++k) {
        const int64_t t = 4 * g + k;
        wv[k] = t < taps ? _mm512_loadu_si512(extended.data() + t * width + offset) : _mm512_setzero_si512();
      }
      __m512i wi[4];
      interleave(wv[0], wv[1], wv[2], wv[3], wi);
      for (int k = 0; k < 4; ++k) _mm512_storeu_si512(table.data() + ((p * groups + g) * 4 + k) * 64, wi[k]);
    }
  }

  const Rows rows{x_row, x_step, tap_offset, table.data(), acc, channels, run, runs, chunks, period};
  switch (taps) {  // the common kernels' tap counts unrolled, their zero taps known
    case 9: return multiply_rows<9>(rows);
    case 25: return multiply_rows<25>(rows);
    default: return multiply_rows<0>(rows, taps);
  }
}

}  // namespace tern::kernels
