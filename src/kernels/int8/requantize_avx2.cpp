// AVX2 build of requantize_impl.h.
#define REQUANT_SUFFIX _avx2
#include "kernels/int8/requantize_impl.h"
