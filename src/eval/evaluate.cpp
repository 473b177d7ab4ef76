#include <algorithm>
#include <chrono>
#include <cmath>

#include "tern/error.h"
#include "tern/evaluate.h"

namespace tern {

EvalResult evaluate_classifier(InferenceEngine& executor, const Dataset& data, const Preprocess& norm,
                               const EvalOptions& options) {
  const Graph& graph = executor.graph();
  check(!graph.inputs.empty() && !graph.outputs.empty(), graph.source + ": model has no inputs or outputs");
  check(options.batch >= 1, "--batch must be >= 1");
  check(options.limit >= 0, "--limit must be >= 0");
  const Shape& input_shape = graph.value(graph.inputs[0]).shape;
  int64_t total = options.limit > 0 ? std::min(options.limit, data.size()) : data.size();
  check(total > 0, data.name + ": no images to evaluate");
  check(data.labelled(), data.name + ": has no labels to score (class sub-folders, an IDX labels file, or --labels Y.npy)");
  EvalResult r;
  int64_t correct1 = 0, correct5 = 0;
  // A batch the exporter fixed in the input shape is the batch; a tail shorter than it is left out.
  const int64_t batch = graph.fixed_batch() > 0 ? graph.fixed_batch() : options.batch;
  if (graph.fixed_batch() > 1) {
    check(total >= batch, data.name + ": " + std::to_string(total) + " images, fewer than the model's fixed batch of " +
                              std::to_string(batch));
    total = total / batch * batch;
  }
  for (int64_t begin = 0; begin < total; begin += batch) {
    int64_t count = std::min(batch, total - begin);
    Tensor x = make_batch(data, begin, count, norm, input_shape);
    auto start = std::chrono::steady_clock::now();
    Tensor y = executor.run(x);
    r.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    check(y.dtype() == DataType::kFloat32 && y.rank() == 2 && y.dim(0) == count,
          graph.source + ": output " + to_string(y.shape()) + " is not a [batch, classes] score matrix");
    int64_t classes = y.dim(1);
    for (int64_t i = 0; i < count; ++i) {
      int64_t label = data.labels[static_cast<size_t>(begin + i)];
      check(label >= 0 && label < classes, data.name + ": label " + std::to_string(label) + " but the model has " +
                                 std::to_string(classes) + " classes");
      const float* row = y.data<float>() + i * classes;
      for (int64_t c = 0; c < classes; ++c)
        check(std::isfinite(row[c]), graph.source + ": the scores of image " + std::to_string(begin + i) + " of " +
                                         data.name + " hold NaN or infinity; top-1 is undefined");
      // Rank of the true class: how many scores beat it (ties broken toward the lower index, like argmax).
      int64_t rank = 0;
      for (int64_t c = 0; c < classes; ++c)
        if (row[c] > row[label] || (row[c] == row[label] && c < label)) ++rank;
      correct1 += rank < 1;
      correct5 += rank < 5;
    }
    if (options.progress) options.progress(begin + count, total);
  }
  r.images = total;
  r.top1 = 100.0 * static_cast<double>(correct1) / static_cast<double>(total);
  r.top5 = 100.0 * static_cast<double>(correct5) / static_cast<double>(total);
  r.images_per_s = r.seconds > 0 ? static_cast<double>(total) / r.seconds : 0;
  return r;
}

}  // namespace tern
