// AVX-512 depthwise channel kernel: 16 output columns x 4 output rows per step; padding columns
// are masked out of the loads. Compiled with -mavx512f/bw/vl/dq -mfma; reached only after
// detection. No std:: templates here (their out-of-line copies would leak AVX-512 code).
#include <immintrin.h>

#include "kernels/fp32/depthwise_conv2d.h"

namespace tern::kernels::detail {

namespace {

// Clamp keeping NaN (operand order as in the reference). The masked forms dodge GCC 12's false
// -Wmaybe-uninitialized in _mm512_max_ps/_mm512_min_ps (GCC PR 105593).
inline __m512 clamp_ps(__m512 x, __m512 lo, __m512 hi) {
  x = _mm512_mask_max_ps(x, 0xFFFF, lo, x);
  return _mm512_mask_min_ps(x, 0xFFFF, hi, x);
}

// Lanes l with lo <= l < hi.
inline __mmask16 lane_range(int64_t lo, int64_t hi) {
  lo = lo < 0 ? 0 : (lo > 16 ? 16 : lo);
  hi = hi < lo ? lo : (hi > 16 ? 16 : hi);
  return __mmask16(((1u << hi) - 1) & ~((1u << lo) - 1));
}

template <int R>
void rows_block(const DepthwiseChannel& c, int64_t oh, int64_t ow0, __mmask16 store_mask) {
  __m512 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm512_set1_ps(c.bias);
  for (int i = 0; i < c.kernel_h; ++i) {
    const int64_t y = oh * c.stride_h - c.pad_top + i * c.dilation_h;  // input row of output row oh
    for (int j = 0; j < c.kernel_w; ++j) {
      const __mmask16 mask = lane_range(c.col_lo[j] - ow0, c.col_hi[j] - ow0) & store_mask;
      const __m512 w = _mm512_set1_ps(c.weights[i * c.kernel_w + j]);
      const int64_t offset = c.col_offset[j] + ow0;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(mask, depthwise_row(c, y + r * c.stride_h) + offset), acc[r]);
      }
    }
  }
  const __m512 lo = _mm512_set1_ps(c.lo), hi = _mm512_set1_ps(c.hi);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(c.out + (oh + r) * c.out_w + ow0, store_mask, clamp_ps(acc[r], lo, hi));
  }
}

// Where one 16-column chunk of a 3x3 tap row comes from. stride_w 1: tap j is a masked load at
// offset[j]. stride_w 2: taps 0 and 1 are the even and odd lanes of 32 floats at offset[0] and
// offset[1] (= offset[0] + 16), tap 2 the even lanes of 32 floats at offset[2] and offset[3].
struct Chunk {
  __mmask16 mask[4];
  int64_t offset[4];
};

template <int SW>
inline void load_taps(const float* row, const Chunk& ch, __m512& x0, __m512& x1, __m512& x2) {
  if constexpr (SW == 1) {
    x0 = _mm512_maskz_loadu_ps(ch.mask[0], row + ch.offset[0]);
    x1 = _mm512_maskz_loadu_ps(ch.mask[1], row + ch.offset[1]);
    x2 = _mm512_maskz_loadu_ps(ch.mask[2], row + ch.offset[2]);
  } else {
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    const __m512 a = _mm512_maskz_loadu_ps(ch.mask[0], row + ch.offset[0]);
    const __m512 b = _mm512_maskz_loadu_ps(ch.mask[1], row + ch.offset[1]);
    const __m512 c = _mm512_maskz_loadu_ps(ch.mask[2], row + ch.offset[2]);
    const __m512 d = _mm512_maskz_loadu_ps(ch.mask[3], row + ch.offset[3]);
    x0 = _mm512_permutex2var_ps(a, even, b);
    x1 = _mm512_permutex2var_ps(a, odd, b);
    x2 = _mm512_permutex2var_ps(c, even, d);
  }
}

// 3x3 with stride_h 1 or 2 and no row dilation, the common case: weights, masks and offsets stay
// in registers, and each input row is loaded once (three taps) for every output row it feeds.
template <int R, int SH, int SW>
void rows_block_3x3(const DepthwiseChannel& c, int64_t oh, int64_t ow0, const __m512* w, const Chunk& ch,
                    __mmask16 store_mask) {
  __m512 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm512_set1_ps(c.bias);
  const int64_t y0 = oh * SH - c.pad_top;
#pragma GCC unroll 24
  for (int t = 0; t < (R - 1) * SH + 3; ++t) {
    __m512 x0, x1, x2;
    load_taps<SW>(depthwise_row(c, y0 + t), ch, x0, x1, x2);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int i = t - r * SH;  // kernel row that input row t is for output row r
      if (i < 0 || i > 2) continue;
      acc[r] = _mm512_fmadd_ps(w[i * 3], x0, acc[r]);
      acc[r] = _mm512_fmadd_ps(w[i * 3 + 1], x1, acc[r]);
      acc[r] = _mm512_fmadd_ps(w[i * 3 + 2], x2, acc[r]);
    }
  }
  const __m512 lo = _mm512_set1_ps(c.lo), hi = _mm512_set1_ps(c.hi);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    _mm512_mask_storeu_ps(c.out + (oh + r) * c.out_w + ow0, store_mask, clamp_ps(acc[r], lo, hi));
  }
}

template <int SH, int SW>
void channel_3x3(const DepthwiseChannel& c) {
  using Block = void (*)(const DepthwiseChannel&, int64_t, int64_t, const __m512*, const Chunk&, __mmask16);
  static constexpr Block kTail[8] = {nullptr,
                                     rows_block_3x3<1, SH, SW>,
                                     rows_block_3x3<2, SH, SW>,
                                     rows_block_3x3<3, SH, SW>,
                                     rows_block_3x3<4, SH, SW>,
                                     rows_block_3x3<5, SH, SW>,
                                     rows_block_3x3<6, SH, SW>,
                                     rows_block_3x3<7, SH, SW>};
  __m512 w[9];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) w[t] = _mm512_set1_ps(c.weights[t]);
  for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += 16) {
    const __mmask16 store_mask = lane_range(0, c.out_w - ow0);
    Chunk ch;
    if constexpr (SW == 1) {
      for (int j = 0; j < 3; ++j) {
        ch.mask[j] = lane_range(c.col_lo[j] - ow0, c.col_hi[j] - ow0) & store_mask;
        ch.offset[j] = c.col_offset[j] + ow0;
      }
    } else {
      const int64_t start[4] = {0, 16, 2, 18};  // input columns relative to tap 0 of lane 0
      for (int q = 0; q < 4; ++q) {
        ch.offset[q] = 2 * ow0 + c.col_offset[0] + start[q];
        ch.mask[q] = lane_range(-ch.offset[q], c.in_w - ch.offset[q]);  // inside the input row
      }
    }
    int64_t oh = 0;
    for (; oh + 8 <= c.out_h; oh += 8) rows_block_3x3<8, SH, SW>(c, oh, ow0, w, ch, store_mask);
    if (oh < c.out_h) kTail[c.out_h - oh](c, oh, ow0, w, ch, store_mask);
  }
}

}  // namespace

void depthwise_channel__avx512(const DepthwiseChannel& c) {
  if (c.kernel_h == 3 && c.kernel_w == 3 && c.dilation_h == 1 && (c.stride_h == 1 || c.stride_h == 2)) {
    if (c.stride_w == 2) return c.stride_h == 1 ? channel_3x3<1, 2>(c) : channel_3x3<2, 2>(c);
    return c.stride_h == 1 ? channel_3x3<1, 1>(c) : channel_3x3<2, 1>(c);
  }
  for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += 16) {
    const __mmask16 store_mask = lane_range(0, c.out_w - ow0);
    int64_t oh = 0;
    for (; oh + 4 <= c.out_h; oh += 4) rows_block<4>(c, oh, ow0, store_mask);
    switch (c.out_h - oh) {
      case 3:
        rows_block<3>(c, oh, ow0, store_mask);
        break;
      case 2:
        rows_block<2>(c, oh, ow0, store_mask);
        break;
      case 1:
        rows_block<1>(c, oh, ow0, store_mask);
        break;
      default:
        break;
    }
  }
}

}  // namespace tern::kernels::detail
