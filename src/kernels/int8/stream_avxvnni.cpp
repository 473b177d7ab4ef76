// The AVX2 streaming kernels' AVX-VNNI versions (vpdpbusd ymm): compiled with -mavxvnni, entered
// only where cpu_features().avx_vnni.
#include "kernels/int8/int4_avx2_internal.h"
#include "kernels/int8/int4_panels.h"
#include "kernels/int8/ternary_avx2_internal.h"
#include "kernels/int8/ternary_panels.h"

namespace tern::kernels {

void ternary_stream_avxvnni(const TernaryPanels& t, int64_t panel_begin, int64_t panel_end, int64_t cols,
                            const uint8_t* x, int64_t x_stride, int32_t* c, int64_t ldc) {
  const TernaryDecoderAvx2 d(t);
  stream_columns_avx2<true>(d, panel_begin, panel_end, t.rows(), t.steps(), nullptr, cols, x, x_stride, c, ldc);
}

void int4_stream_avxvnni(const Int4Panels& w, int64_t panel_begin, int64_t panel_end, int64_t cols, const uint8_t* x,
                         int64_t x_stride, int32_t* c, int64_t ldc) {
  const Int4DecoderAvx2 d(w);
  stream_columns_avx2<true>(d, panel_begin, panel_end, w.rows(), w.steps(), nullptr, cols, x, x_stride, c, ldc);
}

}  // namespace tern::kernels
