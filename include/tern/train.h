// Training a network from tern's graph IR on libtorch, at full or low precision, on one process or
// data-parallel over MPI (`tern train`).
//
// Numerics (docs/training.md):
//   float32                the reference.
//   fixed:IL.FL            Gupta et al. 2015: weights, activations (every node output), the
//                          gradients flowing back through them, weight gradients, momentum and the
//                          weight update are rounded to <IL,FL> fixed point, nearest or stochastic.
//                          Computed in float64, so dot products of 16-bit operands accumulate
//                          exactly and round once at the end.
//   accumulation m bits    Sakr et al. 2019: the Conv/Gemm products (forward, input gradient,
//                          weight gradient) accumulate in a float accumulator with m mantissa bits
//                          (emulated, optionally chunked); everything else float32.
//
// Data parallel: every rank runs the same graph on its slice of the global batch; gradients are
// averaged (all-reduce in buckets started from backprop's gradient hooks, or AdaComp's sparse
// exchange), so every rank applies the same update; a weight hash is compared every epoch.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tern/data.h"
#include "tern/finetune.h"
#include "tern/fixed_point.h"
#include "tern/graph.h"

namespace tern::dist {
class Communicator;
}

namespace tern::train {

enum class Init { kPretrained, kRandom };  // random: He-normal weights, zero biases (seeded)

struct NumericOptions {
  bool fixed = false;  // false: float32
  numerics::FixedFormat format{4, 12};
  numerics::Rounding rounding = numerics::Rounding::kStochastic;
  // Back-propagated gradients, weight gradients and momentum: their own binary point (a word's
  // split between range and resolution) when set, else `format`. Gradients of a batch-mean loss
  // sit far below the weights' step in deep networks (docs/training.md).
  std::optional<numerics::FixedFormat> gradient_format;
  const numerics::FixedFormat& gradient() const { return gradient_format ? *gradient_format : format; }
  // Fixed point computes in float64 (exact dot products). float32 is much faster on CPUs (torch's
  // float64 convolutions are a slow path) and holds every <IL,FL> value of up to 24 bits exactly, but
  // its sums round at 24 significant bits before the final rounding to the format.
  bool exact_compute = true;
  // Reduced-precision accumulation (float32 training otherwise): mantissa bits of the accumulator
  // for the forward, input-gradient and weight-gradient products; 0 = exact float32 (torch's).
  int accumulate_forward = 0, accumulate_backward = 0, accumulate_weight_grad = 0;
  int64_t accumulate_chunk = 0;  // 0: one running sum; else chunks of this many products
  std::string name() const;      // "float32", "fixed:4.12 stochastic", "accumulate 10/12/14 bits"
};

struct DistributedOptions {
  dist::Communicator* communicator = nullptr;  // nullptr or size 1: one process
  std::string compression = "none";            // none | adacomp
  int64_t bin_conv = 50, bin_fc = 500;         // AdaComp bin sizes for conv / fully connected tensors
  double threshold_scale = 1.0;                // AdaComp: select |H| >= scale * bin max (0: all)
  bool exact_values = false;                   // AdaComp: send values instead of sign x scale (checks)
  int64_t bucket_bytes = 256 * 1024;           // all-reduce bucket size (GradientExchange default)
};

struct TrainOptions {
  Init init = Init::kRandom;
  NumericOptions numeric;
  int epochs = 10;
  int64_t batch = 64;                // global batch (divided among the ranks)
  double lr = 0.05;
  double lr_final = 0;
  LrSchedule schedule = LrSchedule::kCosine;
  double momentum = 0.9;
  double weight_decay = 5e-4;        // on Conv/Gemm weights
  double label_smoothing = 0;
  uint64_t seed = 1;
  bool augment = true;
  int64_t train_images = 0;          // the first N training images (0: all)
  int64_t max_steps = 0;             // stop after this many steps (0: the epochs' worth)
  const Dataset* test = nullptr;     // evaluated after every epoch when set
  int64_t test_images = 0;           // 0: all
  int test_every = 1;                // evaluate after every this many epochs, and after the last
  int64_t curve_every = 0;           // loss curve point every this many steps (0: ~20 per epoch)
  std::string checkpoint_path;       // "" : no checkpoints
  int64_t checkpoint_every = 0;      // steps; 0: at the end of every epoch
  std::string resume_path;
  bool progress = true;
  DistributedOptions distributed;
  bool timeline = false;             // record when backprop produces each gradient (scaling model)
  int64_t exit_at_step = -1;         // tests only: exit abruptly at this step, as a crashed rank would
};

struct TrainEpoch {
  int epoch = 0;
  int64_t steps = 0;
  double loss = 0;            // mean training loss (global batch)
  double train_accuracy = 0;  // %, augmented training images
  double test_top1 = -1;      // %, -1 when not evaluated
  double seconds = 0;
  std::string weights_hash;   // FNV-1a of the float32 weights, equal on every rank
};

struct TrainResult {
  Graph trained;                                  // the graph with the trained weights (float32)
  std::map<std::string, Tensor> trained_values;   // every trained constant, by value name
  std::vector<TrainEpoch> epochs;
  std::vector<std::pair<int64_t, double>> curve;  // (step, mean training loss since the last point)
  int64_t steps = 0;
  double seconds = 0;
  int ranks = 1;
  std::string exchange_json;  // bytes on the wire, compression per tensor kind (data parallel)
  // With options.timeline: mean milliseconds per step of the forward pass and of backprop, and
  // for each parameter (in backprop order) its elements and when its gradient was ready (ms after
  // backprop started). The inputs of the data-parallel scaling model.
  std::string timeline_json;
  std::string provenance_json;
};

// `graph`: imported with the usual passes minus BatchNorm folding and activation fusion (as for
// finetune). Throws Error for bad options (naming them), a model without trainable layers, an empty
// data set, labels outside the model's classes, a corrupt or mismatched checkpoint, a diverging
// loss, or ranks whose weights disagree.
TrainResult train_network(const Graph& graph, const Dataset& train, const Preprocess& norm,
                          const TrainOptions& options);

}  // namespace tern::train
