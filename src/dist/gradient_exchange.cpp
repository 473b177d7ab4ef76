// Gradient exchange: fixed bucket layout, exchanges started in a fixed order, AdaComp per tensor.
#include "tern/gradient_exchange.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "tern/adacomp.h"
#include "tern/error.h"

namespace tern::dist {

Traffic& Traffic::operator+=(const Traffic& other) {
  elements += other.elements;
  selected += other.selected;
  bytes += other.bytes;
  return *this;
}

const Traffic& ExchangeStats::kind(TensorKind kind) const {
  switch (kind) {
    case TensorKind::conv: return conv;
    case TensorKind::fc: return fc;
    case TensorKind::other: return other;
  }
  return other;
}

const char* tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::conv: return "conv";
    case TensorKind::fc: return "fc";
    case TensorKind::other: return "other";
  }
  return "?";
}

namespace {

// A contiguous run of one tensor inside one dense bucket.
struct Piece {
  std::size_t tensor = 0;
  std::size_t tensor_offset = 0;
  std::size_t bucket_offset = 0;
  std::size_t length = 0;
};

// One exchange of a step: a dense bucket or one AdaComp tensor. Started in slot order.
struct Slot {
  bool dense = true;
  std::vector<Piece> pieces;       // dense
  std::vector<float> buffer;       // dense
  std::size_t pieces_ready = 0;    // dense
  std::size_t tensor = 0;          // AdaComp
  std::vector<std::uint8_t> message;  // AdaComp: encoded, waiting to start
  bool ready = false;
  bool started = false;
  Request request;
};

struct TensorState {
  bool compressed = false;
  std::vector<std::size_t> slots;  // dense: the buckets holding its pieces; AdaComp: its one slot
  std::vector<float> residual;     // AdaComp only
  std::span<float> gradient;       // this step's
  bool arrived = false;
};

ExchangeStats empty_stats(std::size_t tensors) {
  ExchangeStats stats;
  stats.tensors.resize(tensors);
  return stats;
}

}  // namespace

struct GradientExchange::State {
  Communicator& comm;
  std::vector<TensorSpec> specs;
  ExchangeOptions options;
  std::vector<TensorState> tensors;
  std::vector<Slot> slots;
  std::size_t dense_buckets = 0;
  std::size_t next_to_start = 0;
  bool in_step = false;
  ExchangeStats step;
  ExchangeStats total;
  std::vector<float> sum;  // AdaComp decode scratch

  State(Communicator& c, std::vector<TensorSpec> s, ExchangeOptions o)
      : comm(c), specs(std::move(s)), options(o) {}

  void start_ready_slots() {
    while (next_to_start < slots.size() && slots[next_to_start].ready) {
      Slot& slot = slots[next_to_start];
      if (slot.dense) {
        slot.request = comm.start_allreduce_sum(slot.buffer);
      } else {
        slot.request = comm.start_allgatherv(std::move(slot.message));
        slot.message.clear();
      }
      slot.started = true;
      ++next_to_start;
    }
  }

  void add_traffic(std::size_t tensor, const Traffic& traffic) {
    step.tensors[tensor] += traffic;
    switch (specs[tensor].kind) {
      case TensorKind::conv: step.conv += traffic; break;
      case TensorKind::fc: step.fc += traffic; break;
      case TensorKind::other: step.other += traffic; break;
    }
    step.total += traffic;
  }
};

GradientExchange::GradientExchange(Communicator& comm, std::vector<TensorSpec> tensors, ExchangeOptions options)
    : state_(std::make_unique<State>(comm, std::move(tensors), options)) {
  State& s = *state_;
  const bool adacomp = options.compression == Compression::adacomp;
  check(options.bucket_bytes >= sizeof(float), "gradient exchange: bucket_bytes must be at least 4");
  if (adacomp) {
    check(options.bin_conv >= 1 && options.bin_fc >= 1 && options.bin_conv <= adacomp::kMaxBin &&
              options.bin_fc <= adacomp::kMaxBin,
          "gradient exchange: AdaComp bin sizes must be in 1.." + std::to_string(adacomp::kMaxBin));
    check(std::isfinite(options.threshold_scale) && options.threshold_scale >= 0.0f,
          "gradient exchange: threshold_scale must be finite and >= 0");
  }
  const std::size_t bucket_elements = options.bucket_bytes / sizeof(float);

  // The layout: walk the tensors in order; compressed ones get a slot of their own, dense ones fill
  // the open bucket, which becomes a slot when it is full (or after the last tensor).
  s.tensors.resize(s.specs.size());
  Slot open;
  std::size_t open_used = 0;
  auto close_open = [&] {
    if (open_used == 0) return;
    open.buffer.assign(open_used, 0.0f);
    for (const Piece& piece : open.pieces) {
      std::vector<std::size_t>& owner = s.tensors[piece.tensor].slots;
      if (owner.empty() || owner.back() != s.slots.size()) owner.push_back(s.slots.size());
    }
    s.slots.push_back(std::move(open));
    ++s.dense_buckets;
    open = Slot{};
    open_used = 0;
  };
  for (std::size_t t = 0; t < s.specs.size(); ++t) {
    const TensorSpec& spec = s.specs[t];
    TensorState& tensor = s.tensors[t];
    tensor.compressed = adacomp && spec.kind != TensorKind::other;
    if (tensor.compressed) {
      check(spec.elements <= adacomp::kMaxElements,
            "gradient exchange: tensor '" + spec.name + "' has " + std::to_string(spec.elements) +
                " elements, AdaComp's limit is 2^31");
      tensor.residual.assign(spec.elements, 0.0f);
      Slot slot;
      slot.dense = false;
      slot.tensor = t;
      tensor.slots.push_back(s.slots.size());
      s.slots.push_back(std::move(slot));
      continue;
    }
    std::size_t offset = 0;
    while (offset < spec.elements) {
      const std::size_t length = std::min(spec.elements - offset, bucket_elements - open_used);
      open.pieces.push_back(Piece{t, offset, open_used, length});
      open_used += length;
      offset += length;
      if (open_used == bucket_elements) close_open();
    }
  }
  close_open();
  s.step = empty_stats(s.specs.size());
  s.total = empty_stats(s.specs.size());
}

GradientExchange::~GradientExchange() = default;

void GradientExchange::begin_step() {
  State& s = *state_;
  check(!s.in_step, "gradient exchange: begin_step() before finish() of the previous step");
  for (TensorState& tensor : s.tensors) {
    tensor.arrived = false;
    tensor.gradient = {};
  }
  for (Slot& slot : s.slots) {
    slot.pieces_ready = 0;
    slot.ready = slot.dense && slot.pieces.empty();
    slot.started = false;
  }
  s.next_to_start = 0;
  s.step = empty_stats(s.specs.size());
  s.in_step = true;
}

void GradientExchange::gradient_ready(std::size_t index, std::span<float> gradient) {
  State& s = *state_;
  check(s.in_step, "gradient exchange: gradient_ready() outside a step (call begin_step() first)");
  check(index < s.specs.size(), "gradient exchange: tensor index " + std::to_string(index) + " out of range (" +
                                    std::to_string(s.specs.size()) + " tensors)");
  const TensorSpec& spec = s.specs[index];
  TensorState& tensor = s.tensors[index];
  check(!tensor.arrived, "gradient exchange: tensor '" + spec.name + "' handed in twice in one step");
  check(gradient.size() == spec.elements, "gradient exchange: tensor '" + spec.name + "' has " +
                                              std::to_string(spec.elements) + " elements, its gradient " +
                                              std::to_string(gradient.size()));
  tensor.arrived = true;
  tensor.gradient = gradient;

  Traffic traffic;
  traffic.elements = spec.elements;
  if (tensor.compressed) {
    adacomp::EncodeOptions encode;
    encode.bin = spec.kind == TensorKind::conv ? s.options.bin_conv : s.options.bin_fc;
    encode.threshold_scale = s.options.threshold_scale;
    encode.exact_values = s.options.exact_values;
    Slot& slot = s.slots[tensor.slots.front()];
    slot.message = adacomp::encode(tensor.residual, gradient, encode);
    traffic.selected = adacomp::read_header(slot.message).selected;
    traffic.bytes = slot.message.size() + sizeof(std::uint64_t);
    slot.ready = true;
  } else {
    for (std::size_t slot_index : tensor.slots) {
      Slot& slot = s.slots[slot_index];
      for (const Piece& piece : slot.pieces) {
        if (piece.tensor != index) continue;
        std::memcpy(slot.buffer.data() + piece.bucket_offset, gradient.data() + piece.tensor_offset,
                    piece.length * sizeof(float));
        ++slot.pieces_ready;
      }
      slot.ready = slot.pieces_ready == slot.pieces.size();
    }
    traffic.selected = spec.elements;
    traffic.bytes = spec.elements * sizeof(float);
  }
  s.add_traffic(index, traffic);
  s.start_ready_slots();
  s.comm.progress();
}

void GradientExchange::finish() {
  State& s = *state_;
  check(s.in_step, "gradient exchange: finish() outside a step (call begin_step() first)");
  for (std::size_t t = 0; t < s.specs.size(); ++t) {
    check(s.tensors[t].arrived, "gradient exchange: finish() before the gradient of tensor '" + s.specs[t].name +
                                    "' was handed in");
  }
  s.start_ready_slots();
  const float ranks = static_cast<float>(s.comm.size());
  for (Slot& slot : s.slots) {
    if (!slot.started) continue;  // an empty bucket
    s.comm.wait(slot.request);
    if (slot.dense) {
      for (const Piece& piece : slot.pieces) {
        float* out = s.tensors[piece.tensor].gradient.data() + piece.tensor_offset;
        const float* in = slot.buffer.data() + piece.bucket_offset;
        for (std::size_t i = 0; i < piece.length; ++i) out[i] = in[i] / ranks;
      }
      continue;
    }
    const std::vector<std::vector<std::uint8_t>> messages = s.comm.take_gathered(slot.request);
    const TensorSpec& spec = s.specs[slot.tensor];
    s.sum.assign(spec.elements, 0.0f);
    for (std::size_t r = 0; r < messages.size(); ++r) {
      try {
        adacomp::decode_add(messages[r], s.sum);
      } catch (const Error& error) {
        throw Error(s.comm.describe() + ": tensor '" + spec.name + "' from rank " + std::to_string(r) + ": " +
                    error.what());
      }
    }
    std::span<float> out = s.tensors[slot.tensor].gradient;
    for (std::size_t i = 0; i < spec.elements; ++i) out[i] = s.sum[i] / ranks;
  }
  s.in_step = false;
  s.step.steps = 1;
  s.total.steps += 1;
  for (std::size_t t = 0; t < s.specs.size(); ++t) s.total.tensors[t] += s.step.tensors[t];
  s.total.conv += s.step.conv;
  s.total.fc += s.step.fc;
  s.total.other += s.step.other;
  s.total.total += s.step.total;
}

const std::vector<TensorSpec>& GradientExchange::tensors() const { return state_->specs; }
const ExchangeOptions& GradientExchange::options() const { return state_->options; }
std::size_t GradientExchange::bucket_count() const { return state_->dense_buckets; }
const ExchangeStats& GradientExchange::step_stats() const { return state_->step; }
const ExchangeStats& GradientExchange::total_stats() const { return state_->total; }

bool GradientExchange::has_residual(std::size_t index) const {
  check(index < state_->tensors.size(), "gradient exchange: tensor index " + std::to_string(index) + " out of range");
  return state_->tensors[index].compressed;
}

std::span<const float> GradientExchange::residual(std::size_t index) const {
  check(index < state_->tensors.size(), "gradient exchange: tensor index " + std::to_string(index) + " out of range");
  return state_->tensors[index].residual;
}

void GradientExchange::set_residual(std::size_t index, std::span<const float> values) {
  State& s = *state_;
  check(index < s.tensors.size(), "gradient exchange: tensor index " + std::to_string(index) + " out of range");
  std::vector<float>& residual = s.tensors[index].residual;
  check(values.size() == residual.size(), "gradient exchange: residual of tensor '" + s.specs[index].name +
                                              "' has " + std::to_string(residual.size()) + " elements, got " +
                                              std::to_string(values.size()));
  std::copy(values.begin(), values.end(), residual.begin());
}

}  // namespace tern::dist
