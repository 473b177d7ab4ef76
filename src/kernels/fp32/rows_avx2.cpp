// AVX2 build of rows_impl.h (rows.h).
#define ROWS_SUFFIX _avx2
#include "kernels/fp32/rows_impl.h"
