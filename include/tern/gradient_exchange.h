// Gradient exchange for synchronous data-parallel SGD: every rank hands in its gradients as
// backprop produces them (last layer first); finish() leaves the average over ranks in each.
//
//   GradientExchange exchange(comm, tensors, options);
//   for each step:
//     exchange.begin_step();
//     ... backprop; for each tensor, when its gradient is final: exchange.gradient_ready(i, grad);
//     exchange.finish();   // every grad now holds the average over ranks
//
// Uncompressed: the tensors are laid out, in the order given, in buckets of bucket_bytes; a bucket
// starts its non-blocking all-reduce as soon as all of its tensors arrived, so communication
// overlaps the rest of backprop. A tensor larger than a bucket spans several buckets.
//
// AdaComp (adacomp.h, docs/adacomp-format.md): conv and fc tensors are encoded when they arrive
// (bins of bin_conv / bin_fc elements, per-tensor residual) and exchanged as an allgatherv of every
// rank's message; every rank decodes every message (in rank order) into the sum. Tensors of kind
// `other` (biases, BatchNorm scales and shifts: small, and sensitive) are not compressed: they
// travel in the dense buckets, exactly as in the uncompressed mode, and have no residual.
//
// Order: the exchanges (buckets and AdaComp tensors, in the order of the tensor list) are started
// in that fixed order on every rank, whatever order gradient_ready is called in; calling it in the
// list's order gives the most overlap. Every tensor must be handed in every step (a parameter
// without a gradient: hand in zeros), on every rank.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tern/communicator.h"

namespace tern::dist {

enum class TensorKind { conv, fc, other };
enum class Compression { none, adacomp };

struct TensorSpec {
  std::string name;
  std::size_t elements = 0;
  TensorKind kind = TensorKind::other;
};

struct ExchangeOptions {
  // 256 KiB = 64 Ki floats per bucket: a CPU model such as ResNet-20 (0.27 M parameters) makes about
  // four buckets, so the first ones travel while backprop still runs, and one all-reduce of this
  // size costs far more than its fixed latency on shared memory or Ethernet.
  std::size_t bucket_bytes = 256 * 1024;
  Compression compression = Compression::none;
  std::size_t bin_conv = 50;     // AdaComp bin size T for conv tensors
  std::size_t bin_fc = 500;      // ... and for fc tensors
  float threshold_scale = 1.0f;  // select |H| >= threshold_scale * bin max; 0 selects every non-zero
  bool exact_values = false;     // AdaComp: send the float values instead of sign * scale (verification)
};

// What this rank put on the wire.
struct Traffic {
  std::uint64_t elements = 0;  // gradient elements exchanged
  std::uint64_t selected = 0;  // elements sent (all of them when dense)
  // Dense: 4 bytes per element (the all-reduce payload). AdaComp: the message plus the 8-byte size
  // word of the allgather of sizes.
  std::uint64_t bytes = 0;

  std::uint64_t dense_bytes() const { return 4 * elements; }
  // 32-bit dense bytes / bytes sent (1 when dense, 0 when nothing was exchanged).
  double compression_ratio() const { return bytes == 0 ? 0.0 : static_cast<double>(dense_bytes()) / bytes; }
  Traffic& operator+=(const Traffic& other);
};

struct ExchangeStats {
  std::uint64_t steps = 0;
  std::vector<Traffic> tensors;  // indexed like the tensor list
  Traffic conv, fc, other, total;

  const Traffic& kind(TensorKind kind) const;
};

class GradientExchange {
 public:
  // Throws Error on invalid options, or a compressed tensor over adacomp::kMaxElements.
  GradientExchange(Communicator& comm, std::vector<TensorSpec> tensors, ExchangeOptions options = {});
  ~GradientExchange();
  GradientExchange(const GradientExchange&) = delete;
  GradientExchange& operator=(const GradientExchange&) = delete;

  void begin_step();
  // `gradient` (tensors()[index].elements floats) must stay valid until finish(), which overwrites
  // it with the average. Progresses the pending exchanges.
  void gradient_ready(std::size_t index, std::span<float> gradient);
  // Starts what is left, waits for everything (Error after the communicator's timeout) and writes
  // the averages (sum / size()) into the gradients.
  void finish();

  const std::vector<TensorSpec>& tensors() const;
  const ExchangeOptions& options() const;
  std::size_t bucket_count() const;         // dense buckets per step
  const ExchangeStats& step_stats() const;  // this step so far; complete after finish()
  const ExchangeStats& total_stats() const;  // every finished step

  // AdaComp residuals, for exact checkpoints: present (tensors()[index].elements floats) for
  // compressed tensors, empty for the others.
  bool has_residual(std::size_t index) const;
  std::span<const float> residual(std::size_t index) const;
  void set_residual(std::size_t index, std::span<const float> values);  // Error on a size mismatch

 private:
  struct State;
  std::unique_ptr<State> state_;
};

const char* tensor_kind_name(TensorKind kind);

}  // namespace tern::dist
