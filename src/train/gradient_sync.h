// The trainer's side of data-parallel SGD: hands each parameter's gradient to the gradient
// exchange from backprop's hooks, averages the step's loss and accuracy over the ranks, compares
// weight hashes, and carries the exchange's state (AdaComp residuals) through checkpoints. With
// one process every call is trivial.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tern/gradient_exchange.h"
#include "tern/train.h"
#include "train/trainable_graph.h"
#include "train/training_loop.h"

namespace tern::train {

class GradientSync {
 public:
  explicit GradientSync(const DistributedOptions& options);
  int rank() const { return rank_; }
  int size() const { return size_; }
  std::string describe() const;  // the exchange's configuration (part of the run's fingerprint)

  // Builds the exchange: tensors in backprop order (the parameters reversed), conv = 4-D weights,
  // fc = 2-D weights, other = biases and BatchNorm parameters.
  void set_parameters(const std::vector<Parameter>& params);
  void begin_step();
  // From parameter i's gradient hook: starts its exchange; the result appears in finish().
  void gradient_ready(size_t i, const torch::Tensor& gradient);
  // Waits for the exchange; grads[i] = the average over the ranks, in the parameter's dtype.
  void finish(std::vector<torch::Tensor>& grads, const std::vector<Parameter>& params);
  // Sums of (loss * images, correct) over the ranks.
  std::pair<double, int64_t> sum_metrics(double loss_sum, int64_t correct);
  // Throws Error when the ranks' weight hashes differ.
  void check_same_weights(const std::string& hash, int epoch);

  // Checkpoint tensors for every rank's AdaComp residuals ("rank R/<param>", role "residual").
  std::vector<CheckpointTensor> state_tensors();
  // Fills `tensors` (from state_tensors) with every rank's residuals: call on every rank.
  void gather_state(std::vector<CheckpointTensor>& tensors);
  // Sets this rank's residuals from loaded checkpoint tensors.
  void restore_state(const std::vector<CheckpointTensor>& tensors);
  std::string stats_json() const;  // traffic and compression by tensor kind and tensor

 private:
  DistributedOptions options_;
  dist::Communicator* comm_ = nullptr;
  std::unique_ptr<dist::Communicator> single_;
  int rank_ = 0, size_ = 1;
  std::vector<std::string> names_;
  std::vector<size_t> slot_of_param_;  // parameter index -> exchange tensor index
  std::vector<std::vector<float>> buffers_;  // by parameter index
  std::vector<bool> handed_;
  std::unique_ptr<dist::GradientExchange> exchange_;
};

}  // namespace tern::train
