// FP32 2-D convolution on NCHW tensors: im2col + packed sgemm for general convolutions (a
// direct pass-through for 1x1 stride-1 unpadded ones), a direct kernel for depthwise ones.
// conv2d_reference is the plain seven-loop oracle.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/fp32/sgemm.h"
#include "tern/thread_pool.h"

namespace tern::kernels {

struct Conv2dShape {
  int64_t batch = 1;
  int64_t in_channels = 0, in_h = 0, in_w = 0;
  int64_t out_channels = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t groups = 1;

  int64_t out_h() const { return (in_h + pad_top + pad_bottom - dilation_h * (kernel_h - 1) - 1) / stride_h + 1; }
  int64_t out_w() const { return (in_w + pad_left + pad_right - dilation_w * (kernel_w - 1) - 1) / stride_w + 1; }
  bool is_depthwise() const { return groups > 1 && groups == in_channels && groups == out_channels; }
};

// Clamp applied after bias (ReLU: [0, inf), ReLU6: [0, 6]).
struct Conv2dEpilogue {
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
};

// Weights [out_channels, in_channels / groups, kernel_h, kernel_w], packed once per layer.
class PackedConvWeights {
 public:
  PackedConvWeights() = default;
  PackedConvWeights(const Conv2dShape& shape, const float* weights);
  const Conv2dShape& shape() const { return shape_; }

 private:
  friend void conv2d(const Conv2dShape&, const float*, const PackedConvWeights&, const float*, float*,
                     const Conv2dEpilogue&, ThreadPool*);
  Conv2dShape shape_;
  std::vector<PackedMatrixA> per_group_;  // general path: one packed [Cout/g, Cin/g*kh*kw] per group
  std::vector<float> raw_;                // depthwise path: weights as given
};

void conv2d_reference(const Conv2dShape& shape, const float* input, const float* weights, const float* bias,
                      float* output, const Conv2dEpilogue& epilogue);

// shape must match weights.shape() except for batch, the spatial input size and the padding (SAME
// padding of a dynamic input size differs per size; packing does not depend on it). bias may be null.
void conv2d(const Conv2dShape& shape, const float* input, const PackedConvWeights& weights, const float* bias,
            float* output, const Conv2dEpilogue& epilogue, ThreadPool* pool);

}  // namespace tern::kernels
