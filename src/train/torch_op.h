// The libtorch half of an operator record (src/ops/op.h): its forward for fine-tuning and training.
// Each src/ops/ file defines it for its operators in a TERN_OPS_TORCH section, compiled into
// tern_train only, so libtern never includes libtorch.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tern/error.h"
#include "tern/graph.h"

namespace tern::train {

struct TorchCall {
  const Node& node;
  const Graph& graph;
  std::function<torch::Tensor(size_t)> input;  // input i as a torch tensor (undefined when omitted)
  std::string who;
};

struct TorchRecord {
  // Null: the operator cannot be fine-tuned or trained through (TrainableGraph refuses it).
  torch::Tensor (*forward)(TorchCall&) = nullptr;
  // Checks a node before training starts (constant targets, ...); throws Error naming it.
  void (*check)(const Node&, const Graph&, const std::string& who) = nullptr;
};

const TorchRecord& torch_record(OpType op);

// ONNX pads (begin..., end...) -> symmetric per-axis padding, or nullopt when begin != end.
inline std::optional<std::vector<int64_t>> symmetric_pads(const std::vector<int64_t>& pads, size_t axes) {
  std::vector<int64_t> p(axes, 0);
  if (pads.empty()) return p;
  if (pads.size() != 2 * axes) return std::nullopt;
  for (size_t i = 0; i < axes; ++i) {
    if (pads[i] != pads[i + axes]) return std::nullopt;
    p[i] = pads[i];
  }
  return p;
}

// Pads the trailing `axes` dims explicitly (torch wants last-axis pairs first).
inline torch::Tensor pad_trailing(const torch::Tensor& x, const std::vector<int64_t>& pads, size_t axes, double value) {
  std::vector<int64_t> p;
  for (size_t i = axes; i-- > 0;) {
    p.push_back(pads[i]);
    p.push_back(pads[i + axes]);
  }
  return torch::constant_pad_nd(x, p, value);
}

inline std::vector<int64_t> or_ones(const std::vector<int64_t>& v, size_t n) {
  return v.empty() ? std::vector<int64_t>(n, 1) : v;
}

inline torch::Tensor clamp_if(const torch::Tensor& x, float lo, float hi) {
  bool has_lo = std::isfinite(lo), has_hi = std::isfinite(hi);
  if (has_lo && has_hi) return torch::clamp(x, lo, hi);
  if (has_lo) return torch::clamp_min(x, lo);
  if (has_hi) return torch::clamp_max(x, hi);
  return x;
}

inline int64_t torch_axis(int64_t axis, int64_t rank) { return axis < 0 ? axis + rank : axis; }

}  // namespace tern::train

#define TERN_DECLARE_TORCH_OP(name) const ::tern::train::TorchRecord& torch_record_##name();
namespace tern::train {
#define TERN_OP(name) TERN_DECLARE_TORCH_OP(name)
#include "tern/ops.def"
#undef TERN_OP
}  // namespace tern::train

// Defines torch_record_<name>() (inside namespace tern::train) from a forward and an optional check.
#define TERN_REGISTER_TORCH_OP(name, ...)                               \
  const ::tern::train::TorchRecord& torch_record_##name() {             \
    static const ::tern::train::TorchRecord r{__VA_ARGS__};             \
    return r;                                                           \
  }
