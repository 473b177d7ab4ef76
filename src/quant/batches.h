// Small helpers for running a graph over a batch tensor in slices.
#pragma once

#include <algorithm>
#include <cstring>

#include "tern/tensor.h"

namespace tern::quant {

// Copies images [begin, begin + count) of a batch tensor.
inline Tensor slice_images(const Tensor& images, int64_t begin, int64_t count) {
  Shape s = images.shape();
  s[0] = count;
  Tensor t = Tensor::uninitialized(DataType::kFloat32, s);
  int64_t per = images.size() / std::max<int64_t>(1, images.dim(0));
  std::memcpy(t.raw(), images.data<float>() + begin * per, static_cast<size_t>(count * per) * sizeof(float));
  return t;
}

}  // namespace tern::quant
