// Small helpers for running a graph over a batch tensor in slices and comparing its outputs.
#pragma once

#include <algorithm>
#include <cstring>
#include <vector>

#include "tern/executor.h"
#include "tern/quantized_model.h"
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

// Runs `graph` over `images` in batches and hands the values `ids` of each batch to `visit`.
template <typename Visit>
void for_each_batch(const Graph& graph, const std::vector<ValueId>& ids, const Tensor& images, int64_t batch,
                    ThreadPool* pool, Visit visit, const QuantizeOptions* progress_to = nullptr) {
  Graph g = graph;
  g.outputs = ids;
  ExecutorOptions options;
  options.pool = pool;
  Executor exec(std::move(g), options);
  for (int64_t b = 0; b < images.dim(0); b += batch) {
    Tensor x = slice_images(images, b, std::min(batch, images.dim(0) - b));
    std::vector<Tensor> out = exec.run(std::span<const Tensor>(&x, 1));
    visit(out);
    if (progress_to && progress_to->progress)
      progress_to->progress("calibrating", std::min(b + batch, images.dim(0)), images.dim(0));
  }
}

// Sum of squared differences between two equally shaped lists of float tensors (a model's
// outputs batch by batch, against a reference's).
inline double squared_distance(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  double d = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    const float* p = a[k].data<float>();
    const float* r = b[k].data<float>();
    for (int64_t i = 0; i < a[k].size(); ++i) d += (static_cast<double>(p[i]) - r[i]) * (static_cast<double>(p[i]) - r[i]);
  }
  return d;
}

}  // namespace tern::quant
