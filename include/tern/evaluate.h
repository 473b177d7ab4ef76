// Classification accuracy and model summaries: what `tern eval` and `tern inspect` print.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "tern/data.h"
#include "tern/executor.h"
#include "tern/graph.h"

namespace tern {

struct EvalOptions {
  int64_t batch = 100;
  int64_t limit = 0;  // 0: every image
  std::function<void(int64_t done, int64_t total)> progress;  // after each batch; may be empty
};

struct EvalResult {
  double top1 = 0, top5 = 0;  // percent
  int64_t images = 0;
  double seconds = 0;  // inference only (batches prepared outside the clock)
  double images_per_s = 0;
};

// Runs the model over the dataset (first input, first output = class scores [N, classes]).
EvalResult evaluate_classifier(InferenceEngine& executor, const Dataset& data, const Preprocess& norm,
                               const EvalOptions& options = {});

struct LayerSummary {
  std::string name;
  std::string op;  // "Conv+Relu" when an activation was fused
  Shape output;    // at batch 1 (a dynamic batch as 1; other dims the model leaves dynamic: kDynamicDim)
  int64_t parameters = 0;
  int64_t macs = 0;  // multiply-accumulates per image; -1: unknown (a shape the model does not declare)
};

// Counts are exact or refused: a count past 2^63 is an Error naming the node, never a wrapped number.
struct ModelSummary {
  std::vector<LayerSummary> layers;
  int64_t parameters = 0, macs = 0;  // macs: of the layers whose count is known
  int unknown_macs = 0;              // layers whose MACs are unknown
};

ModelSummary summarize(const Graph& graph);

}  // namespace tern
