// AVX2 int4 decoder and streaming kernel (int4_avx2_internal.h's step decoder).
#include <immintrin.h>

#include "kernels/int8/int4_avx2_internal.h"
#include "kernels/int8/int4_panels.h"

namespace tern::kernels {

void decode_int4_avx2(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int8_t* out) {
  const Int4DecoderAvx2 d(w);
  const int64_t steps = w.steps(), spu = w.steps_per_unit();
  for (int64_t p = panel_begin; p < panel_end; ++p) {
    auto panel = d.open(p);
    for (int64_t s = 0; s < steps; ++s) {
      if (spu && s % spu == 0)
        for (int h = 0; h < 2; ++h) d.units_at(panel, s / spu, h);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), d.weights(panel, s, 0));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32), d.weights(panel, s, 1));
      out += kQPanelRows * kQStep;
    }
  }
}

void int4_stream_avx2(const Int4Panels& w, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                      int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  if (cpu_features().avx_vnni) int4_stream_avxvnni(w, panel_begin, panel_end, cols, x, x_stride, c, ldc);
  else int4_stream_avx2_maddubs(w, row_sums, panel_begin, panel_end, cols, x, x_stride, c, ldc);
}

void int4_stream_avx2_maddubs(const Int4Panels& w, const int32_t* row_sums, int64_t panel_begin, int64_t panel_end,
                              int64_t cols, const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  const Int4DecoderAvx2 d(w);
  stream_columns_avx2<false>(d, panel_begin, panel_end, w.rows(), w.steps(), row_sums, cols, x, x_stride, c, ldc);
}

}  // namespace tern::kernels
