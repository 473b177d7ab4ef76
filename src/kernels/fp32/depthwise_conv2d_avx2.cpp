// AVX2 depthwise channel kernel: 8 output columns x 4 output rows per step; padding columns are
// masked out of the loads. Compiled with -mavx2 -mfma; reached only after detection. No std::
// templates here (their out-of-line copies would leak AVX2 code).
#include <immintrin.h>

#include "kernels/fp32/depthwise_conv2d.h"

namespace tern::kernels::detail {

namespace {

// Lanes l with lo <= l < hi.
inline __m256i lane_range(int64_t lo, int64_t hi) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  lo = lo < -1 ? -1 : (lo > 8 ? 8 : lo);
  hi = hi < 0 ? 0 : (hi > 8 ? 8 : hi);
  return _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(hi)), lane),
                          _mm256_cmpgt_epi32(lane, _mm256_set1_epi32(static_cast<int>(lo) - 1)));
}

template <int R>
void rows_block(const DepthwiseChannel& c, int64_t oh, int64_t ow0, __m256i store_mask) {
  __m256 acc[R];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r] = _mm256_set1_ps(c.bias);
  for (int i = 0; i < c.kernel_h; ++i) {
    const int64_t y = oh * c.stride_h - c.pad_top + i * c.dilation_h;  // input row of output row oh
    for (int j = 0; j < c.kernel_w; ++j) {
      const __m256i mask = _mm256_and_si256(lane_range(c.col_lo[j] - ow0, c.col_hi[j] - ow0), store_mask);
      const __m256 w = _mm256_set1_ps(c.weights[i * c.kernel_w + j]);
      const int64_t offset = c.col_offset[j] + ow0;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        acc[r] = _mm256_fmadd_ps(w, _mm256_maskload_ps(depthwise_row(c, y + r * c.stride_h) + offset, mask), acc[r]);
      }
    }
  }
  const __m256 lo = _mm256_set1_ps(c.lo), hi = _mm256_set1_ps(c.hi);
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    const __m256 x = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[r]));  // operand order keeps NaN
    _mm256_maskstore_ps(c.out + (oh + r) * c.out_w + ow0, store_mask, x);
  }
}

// Where one 8-column chunk of a 3x3 tap row comes from. stride_w 1: tap j is a masked load at
// offset[j]. stride_w 2: taps 0 and 1 are the even and odd lanes of 16 floats at offset[0] and
// offset[1] (= offset[0] + 8), tap 2 the even lanes of 16 floats at offset[2] and offset[3].
struct Chunk {
  __m256i mask[4];
  int64_t offset[4];
};

// Even (or odd) lanes of a:b, in order.
inline __m256 deinterleave(__m256 a, __m256 b, bool odd) {
  const __m256 mixed = odd ? _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1)) : _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(mixed), _MM_SHUFFLE(3, 1, 2, 0)));
}

template <int SW>
inline void load_taps(const float* row, const Chunk& ch, __m256& x0, __m256& x1, __m256& x2) {
  if constexpr (SW == 1) {
    x0 = _mm256_maskload_ps(row + ch.offset[0], ch.mask[0]);
    x1 = _mm256_maskload_ps(row + ch.offset[1], ch.mask[1]);
    x2 = _mm256_maskload_ps(row + ch.offset[2], ch.mask[2]);
  } else {
    const __m256 a = _mm256_maskload_ps(row + ch.offset[0], ch.mask[0]);
    const __m256 b = _mm256_maskload_ps(row + ch.offset[1], ch.mask[1]);
    const __m256 c = _mm256_maskload_ps(row + ch.offset[2], ch.mask[2]);
    const __m256 d = _mm256_maskload_ps(row + ch.offset[3], ch.mask[3]);
    x0 = deinterleave(a, b, false);
    x1 = deinterleave(a, b, true);
    x2 = deinterleave(c, d, false);
  }
}

// 3x3 with stride_h 1 or 2 and no row dilation, the common case: weights, masks and offsets stay
// hot, and each input row is loaded once (three taps) for every output row it feeds.
template <int R, int SH, int SW>
void rows_block_3x3(const DepthwiseChannel& c, int64_t oh, int64_t ow0, const __m256* w, const Chunk& ch,
                    __m256i store_mask) {
  __m256 acc[R];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) acc[r] = _mm256_set1_ps(c.bias);
  const int64_t y0 = oh * SH - c.pad_top;
#pragma GCC unroll 24
  for (int t = 0; t < (R - 1) * SH + 3; ++t) {
    __m256 x0, x1, x2;
    load_taps<SW>(depthwise_row(c, y0 + t), ch, x0, x1, x2);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const int i = t - r * SH;  // kernel row that input row t is for output row r
      if (i < 0 || i > 2) continue;
      acc[r] = _mm256_fmadd_ps(w[i * 3], x0, acc[r]);
      acc[r] = _mm256_fmadd_ps(w[i * 3 + 1], x1, acc[r]);
      acc[r] = _mm256_fmadd_ps(w[i * 3 + 2], x2, acc[r]);
    }
  }
  const __m256 lo = _mm256_set1_ps(c.lo), hi = _mm256_set1_ps(c.hi);
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
    const __m256 x = _mm256_min_ps(hi, _mm256_max_ps(lo, acc[r]));  // operand order keeps NaN
    _mm256_maskstore_ps(c.out + (oh + r) * c.out_w + ow0, store_mask, x);
  }
}

template <int SH, int SW>
void channel_3x3(const DepthwiseChannel& c) {
  using Block = void (*)(const DepthwiseChannel&, int64_t, int64_t, const __m256*, const Chunk&, __m256i);
  static constexpr Block kTail[8] = {nullptr,
                                     rows_block_3x3<1, SH, SW>,
                                     rows_block_3x3<2, SH, SW>,
                                     rows_block_3x3<3, SH, SW>,
                                     rows_block_3x3<4, SH, SW>,
                                     rows_block_3x3<5, SH, SW>,
                                     rows_block_3x3<6, SH, SW>,
                                     rows_block_3x3<7, SH, SW>};
  __m256 w[9];
#pragma GCC unroll 9
  for (int t = 0; t < 9; ++t) w[t] = _mm256_set1_ps(c.weights[t]);
  for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += 8) {
    const __m256i store_mask = lane_range(0, c.out_w - ow0);
    Chunk ch;
    if constexpr (SW == 1) {
      for (int j = 0; j < 3; ++j) {
        ch.mask[j] = _mm256_and_si256(lane_range(c.col_lo[j] - ow0, c.col_hi[j] - ow0), store_mask);
        ch.offset[j] = c.col_offset[j] + ow0;
      }
    } else {
      const int64_t start[4] = {0, 8, 2, 10};  // input columns relative to tap 0 of lane 0
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

void depthwise_channel__avx2(const DepthwiseChannel& c) {
  if (c.kernel_h == 3 && c.kernel_w == 3 && c.dilation_h == 1 && (c.stride_h == 1 || c.stride_h == 2)) {
    if (c.stride_w == 2) return c.stride_h == 1 ? channel_3x3<1, 2>(c) : channel_3x3<2, 2>(c);
    return c.stride_h == 1 ? channel_3x3<1, 1>(c) : channel_3x3<2, 1>(c);
  }
  for (int64_t ow0 = 0; ow0 < c.out_w; ow0 += 8) {
    const __m256i store_mask = lane_range(0, c.out_w - ow0);
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
