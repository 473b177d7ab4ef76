// What `tern finetune` and `tern train` share: the training set as one float tensor with
// augmentation, the data order, the progress bar, the run fingerprint and atomic checkpoints.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "tern/data.h"
#include "tern/graph.h"

namespace tern::train {

// FNV-1a, 64-bit: tells one run's checkpoint from another's (not a security hash).
struct Fingerprint {
  uint64_t h = 1469598103934665603ull;
  void add(const void* data, size_t n);
  void add(const std::string& s) { add(s.data(), s.size()); }
  void add(const torch::Tensor& t);  // contiguous CPU tensor bytes
  std::string hex() const;
};

// Progress on stderr: one redrawn line on a terminal, a line per tenth of an epoch otherwise.
// Throughput and ETA come from the steps this process has run since the bar was made.
class ProgressBar {
 public:
  explicit ProgressBar(bool enabled);
  // After a step: `pos` of `steps` in epoch `epoch` of `epochs`, `left` steps to go in the run.
  void step(int epoch, int epochs, int64_t pos, int64_t steps, double loss, double accuracy, int64_t batch,
            int64_t left);

 private:
  bool enabled_, tty_;
  std::chrono::steady_clock::time_point start_, last_{};
  int64_t steps_run_ = 0;
};

// Float NCHW images of a data set, normalized once.
struct TrainingData {
  torch::Tensor images;  // [N, ...] float32
  std::vector<int64_t> labels;
  std::vector<float> pad_value;  // per channel: a black pixel, normalized (augmentation's border)
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
};
// The first `count` images of `data` shaped as the graph input `input_shape`.
TrainingData load_training_data(const Dataset& data, int64_t count, const Preprocess& norm, const Shape& input_shape);

// One batch: images `indices`, randomly cropped from a 2-pixel border and flipped when augmenting.
torch::Tensor make_training_batch(const TrainingData& d, const std::vector<int64_t>& indices, bool augment,
                                  std::mt19937_64& rng);
torch::Tensor batch_labels(const TrainingData& d, const std::vector<int64_t>& indices);

// The image order of `epoch`: a permutation of 0..n-1 that depends on (seed, epoch) only, so a run
// resumed mid-epoch sees the same order.
std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t n);
// The augmentation draws of step `step` (0-based), likewise.
std::mt19937_64 augmentation_rng(uint64_t seed, int64_t step);

// Checkpoints are .tern containers: a JSON section (kind, version, fingerprint, the loop's own
// state) and a tensor section. Written to a temporary file and renamed (atomic). Tensors keep their
// dtype (float32, float64 or uint8).
struct CheckpointTensor {
  std::string name, role;
  torch::Tensor tensor;  // saved from; on load, copied into (same size and dtype)
};
void save_checkpoint(const std::string& path, const std::string& kind, int version, const std::string& fingerprint,
                     nlohmann::json state, const std::vector<CheckpointTensor>& tensors);
// Checks kind, version and fingerprint, fills `tensors` (matched in order by name and role) and
// returns the saved state. Throws Error naming the file for anything corrupt or foreign.
nlohmann::json load_checkpoint(const std::string& path, const std::string& kind, int version,
                               const std::string& fingerprint, std::vector<CheckpointTensor>& tensors);

}  // namespace tern::train
