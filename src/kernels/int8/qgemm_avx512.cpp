// AVX-512 VNNI micro-kernel: 1-4 panels (16-64 rows) x up to 8 columns of int32 accumulators, the
// register tile of qgemm_tile_avx512.h on packed columns (column n's step s at x + n * x_stride +
// 4 s).
#include "kernels/int8/qgemm.h"
#include "kernels/int8/qgemm_internal.h"
#include "kernels/int8/qgemm_tile_avx512.h"

namespace tern::kernels {

void qgemm_block_avx512_vnni(const QgemmBlock& b) {
  const uint8_t* x = b.x;
  vnni_tile::tile_panels(b.panel_count, b.cols, b.panels, b.steps, b.rows_valid,
                         [x](int64_t s) { return x + s * kQStep; }, b.x_stride, b.c, b.ldc);
}

}  // namespace tern::kernels
