#include "onednn_fp32_runner.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tern/error.h"

namespace tern::bench {
namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;

constexpr float kInf = std::numeric_limits<float>::infinity();

const char* kSupportedOps =
    "Conv, Add, Relu, Clip, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool, ReduceMean, Reshape, Flatten, "
    "Gemm, Identity";

memory::desc plain_desc(const memory::dims& dims) {
  static const memory::format_tag kPlainByRank[] = {memory::format_tag::undef, memory::format_tag::a,
                                                    memory::format_tag::ab,    memory::format_tag::abc,
                                                    memory::format_tag::abcd,  memory::format_tag::abcde};
  check(!dims.empty() && dims.size() < std::size(kPlainByRank),
        "oneDNN runner: tensors of rank " + std::to_string(dims.size()) + " are not supported");
  return {dims, memory::data_type::f32, kPlainByRank[dims.size()]};
}

memory::desc any_desc(const memory::dims& dims) {
  return {dims, memory::data_type::f32, memory::format_tag::any};
}

bool has_clamp(float lo, float hi) { return lo != -kInf || hi != kInf; }

// ReLU gets its own algorithm because oneDNN's kernels special-case it; everything else (ReLU6,
// one-sided clamps) is a clip with infinities replaced by the largest finite floats.
void append_clamp(dnnl::post_ops& ops, float lo, float hi) {
  if (!has_clamp(lo, hi)) return;
  if (lo == 0.0f && hi == kInf) {
    ops.append_eltwise(1.0f, algorithm::eltwise_relu, 0.0f, 0.0f);
  } else {
    float max = std::numeric_limits<float>::max();
    ops.append_eltwise(1.0f, algorithm::eltwise_clip, std::max(lo, -max), std::min(hi, max));
  }
}

// Activation buffers are recycled once their last consumer has been lowered, as any inference
// runtime does: giving every value its own buffer would make the peer pay for cache misses tern
// does not.
struct Block {
  std::shared_ptr<std::byte> data;
  size_t bytes = 0;
  int holders = 0;
};

class BlockPool {
 public:
  Block* acquire(size_t bytes) {
    Block* block;
    auto best_fit = free_.lower_bound(bytes);
    if (best_fit != free_.end()) {
      block = best_fit->second;
      free_.erase(best_fit);
    } else {
      blocks_.push_back(std::make_unique<Block>(Block{allocate_aligned(bytes), bytes, 0}));
      block = blocks_.back().get();
    }
    block->holders = 1;
    return block;
  }
  static void hold(Block* block) {
    if (block) ++block->holders;
  }
  void release(Block* block) {
    if (block && --block->holders == 0) free_.emplace(block->bytes, block);
  }

 private:
  std::vector<std::unique_ptr<Block>> blocks_;
  std::multimap<size_t, Block*> free_;
};

struct Step {
  dnnl::primitive primitive;
  std::unordered_map<int, memory> args;
};

// Everything one batch size needs, built once: the steps reference fixed buffers, so a run is
// just setting two data handles and executing the steps in order.
struct Plan {
  Shape output_shape;
  memory input, output;  // wrap the caller's tensors; handles set per run
  std::vector<Step> steps;
  std::vector<memory> constants;  // reordered weights and biases, owned by oneDNN
  BlockPool blocks;
  OneDnnPlanSummary summary;
};

// A memory together with the block it lives in (null: the caller's input buffer or a constant).
struct Held {
  memory mem;
  Block* block = nullptr;
};

class PlanBuilder {
 public:
  PlanBuilder(const Graph& graph, const dnnl::engine& engine, dnnl::stream& stream, int64_t batch, bool fuse,
              Plan& plan)
      : graph_(graph),
        engine_(engine),
        stream_(stream),
        batch_(batch),
        fuse_(fuse),
        plan_(plan),
        slots_(graph.values.size()) {}

  void build() {
    check(graph_.inputs.size() == 1 && graph_.outputs.size() == 1,
          graph_.source + ": the oneDNN runner supports single-input, single-output graphs");
    plan_fusions();
    count_uses();

    ValueId input = graph_.inputs[0];
    plan_.input = memory(plain_desc(dims_of(input)), engine_, DNNL_MEMORY_NONE);
    define(input, Held{plan_.input, nullptr});

    for (size_t i = 0; i < graph_.nodes.size(); ++i) {
      if (fused_away_[i]) continue;
      const Node& node = graph_.nodes[i];
      try {
        lower(i);
      } catch (const dnnl::error& e) {
        throw Error(who(node) + ": oneDNN: " + e.what());
      }
    }

    ValueId output = graph_.outputs[0];
    memory::dims output_dims = dims_of(output);
    plan_.output_shape = Shape(output_dims.begin(), output_dims.end());
    plan_.output = memory(plain_desc(output_dims), engine_, DNNL_MEMORY_NONE);
    add_reorder(plain_view(output, output_dims).mem, plan_.output);
    plan_.summary.primitives = static_cast<int>(plan_.steps.size());
  }

 private:
  struct Slot {
    Held held;                  // the value in the layout its producer chose
    std::vector<Held> copies;   // the same value reordered into other layouts, shared by consumers
    int uses = 0;               // consumers not lowered yet (a graph output counts as one)
    bool defined = false;
  };

  // A residual Add folded into the convolution producing one of its operands: the other operand
  // is written into the convolution's destination first, and a sum post-op accumulates onto it.
  struct SumFusion {
    size_t add_node;
    ValueId other;
  };

  std::string who(const Node& node) const {
    return graph_.source + ": node '" + node.name + "' (" + to_string(node.op) + ")";
  }

  memory::dims dims_of(ValueId id) const {
    const Value& v = graph_.value(id);
    check(v.shape_known, graph_.source + ": value '" + v.name + "' has no inferred shape");
    memory::dims dims;
    for (int64_t d : v.shape) dims.push_back(d == kDynamicDim ? batch_ : d);
    return dims;
  }

  // ---------------------------------------------------------------- planning
  void plan_fusions() {
    const size_t n = graph_.nodes.size();
    fused_away_.assign(n, false);
    sum_fusion_.assign(n, std::nullopt);
    activation_fusion_.assign(n, std::nullopt);
    producers_ = graph_.producers();
    if (!fuse_) return;
    std::vector<int> consumer_counts = graph_.consumer_counts();
    std::vector<std::vector<size_t>> consumers(graph_.values.size());
    for (size_t i = 0; i < n; ++i)
      for (ValueId in : graph_.nodes[i].inputs)
        if (in != kNoValue) consumers[static_cast<size_t>(in)].push_back(i);

    // The node that alone consumes `value`, if it is a Relu or an attribute-only Clip.
    auto sole_activation = [&](ValueId value) -> std::optional<size_t> {
      if (consumer_counts[static_cast<size_t>(value)] != 1 || consumers[static_cast<size_t>(value)].size() != 1)
        return std::nullopt;
      size_t j = consumers[static_cast<size_t>(value)][0];
      const Node& next = graph_.nodes[j];
      bool simple_clip = next.op == OpType::kClip && next.inputs.size() == 1;
      if (next.op != OpType::kRelu && !simple_clip) return std::nullopt;
      return j;
    };

    for (size_t i = 0; i < n; ++i) {
      const Node& node = graph_.nodes[i];
      if (node.op != OpType::kAdd || node.inputs.size() != 2) continue;
      ValueId a = node.inputs[0], b = node.inputs[1];
      if (a == b || graph_.is_constant(a) || graph_.is_constant(b) || dims_of(a) != dims_of(b)) continue;
      // Fuse into the later of the two producing convolutions, so the other operand is ready.
      std::optional<std::pair<int, ValueId>> chosen;  // (conv node, other operand)
      for (auto [conv_out, other] : {std::pair{a, b}, std::pair{b, a}}) {
        int p = producers_[static_cast<size_t>(conv_out)];
        if (p < 0 || graph_.nodes[static_cast<size_t>(p)].op != OpType::kConv || fused_away_[static_cast<size_t>(p)])
          continue;
        if (consumer_counts[static_cast<size_t>(conv_out)] != 1 || producers_[static_cast<size_t>(other)] >= p) continue;
        if (!chosen || p > chosen->first) chosen = std::pair{p, other};
      }
      std::optional<size_t> activation = sole_activation(node.outputs[0]);
      if (chosen) {
        size_t conv = static_cast<size_t>(chosen->first);
        sum_fusion_[conv] = SumFusion{i, chosen->second};
        fused_away_[i] = true;
        if (activation) {
          activation_fusion_[conv] = *activation;
          fused_away_[*activation] = true;
        }
      } else if (activation) {
        activation_fusion_[i] = *activation;
        fused_away_[*activation] = true;
      }
    }
  }

  void count_uses() {
    for (const Node& node : graph_.nodes)
      for (ValueId in : node.inputs)
        if (in != kNoValue && !graph_.is_constant(in)) ++slots_[static_cast<size_t>(in)].uses;
    for (ValueId out : graph_.outputs) ++slots_[static_cast<size_t>(out)].uses;
  }

  // ---------------------------------------------------------------- values and buffers
  Slot& slot(ValueId id) {
    Slot& s = slots_.at(static_cast<size_t>(id));
    check(s.defined, graph_.source + ": value '" + graph_.value(id).name +
                         "' is not available to the oneDNN runner (a constant or unsupported producer)");
    return s;
  }

  void define(ValueId id, Held held) {
    Slot& s = slots_.at(static_cast<size_t>(id));
    s.held = held;
    s.defined = true;
  }

  Held fresh(const memory::desc& desc) {
    Block* block = plan_.blocks.acquire(desc.get_size());
    return {memory(desc, engine_, block->data.get()), block};
  }

  // Called once per use, after the consuming primitive has been added (and its destination
  // acquired), so a buffer is never recycled while a step still reads it.
  void consume(ValueId id) {
    Slot& s = slot(id);
    if (--s.uses > 0) return;
    plan_.blocks.release(s.held.block);
    for (Held& copy : s.copies) plan_.blocks.release(copy.block);
    s.copies.clear();
    s.held = {};
  }

  // True when the node being lowered is the last reader of `id` and nothing else shares its
  // buffer, so the node may write its result in place.
  bool can_overwrite(ValueId id) {
    Slot& s = slot(id);
    return s.held.block != nullptr && s.held.block->holders == 1 && s.uses == 1;
  }

  Held take_over(ValueId id) {
    Held held = slot(id).held;
    BlockPool::hold(held.block);
    return held;
  }

  void add_step(dnnl::primitive primitive, std::unordered_map<int, memory> args) {
    plan_.steps.push_back({std::move(primitive), std::move(args)});
  }

  void add_reorder(const memory& from, const memory& to) {
    add_step(dnnl::reorder(from, to), {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}});
    ++plan_.summary.reorders;
  }

  // The value in the layout a primitive asked for; reordered once and shared by later consumers.
  Held in_layout(ValueId id, const memory::desc& wanted) {
    Slot& s = slot(id);
    if (s.held.mem.get_desc() == wanted) return s.held;
    for (const Held& copy : s.copies)
      if (copy.mem.get_desc() == wanted) return copy;
    Held copy = fresh(wanted);
    add_reorder(s.held.mem, copy.mem);
    s.copies.push_back(copy);
    return copy;
  }

  // The value in row-major order, viewed with `dims` (same element count): Reshape, Flatten and
  // the 2-D input of Gemm. The view shares the block of the plain copy.
  Held plain_view(ValueId id, const memory::dims& dims) {
    Held plain = in_layout(id, plain_desc(slot(id).held.mem.get_desc().dims()));
    return {memory(plain_desc(dims), engine_, plain.mem.get_data_handle()), plain.block};
  }

  // A constant reordered once, now, into the layout the primitive chose.
  memory prepare_constant(const memory::desc& user_desc, const float* data, const memory::desc& wanted) {
    memory user(user_desc, engine_, const_cast<float*>(data));
    memory prepared(wanted, engine_);
    dnnl::reorder(user, prepared).execute(stream_, user, prepared);
    stream_.wait();
    plan_.constants.push_back(prepared);
    return prepared;
  }

  // ---------------------------------------------------------------- lowering
  void lower(size_t index) {
    const Node& node = graph_.nodes[index];
    switch (node.op) {
      case OpType::kConv: return lower_conv(index);
      case OpType::kAdd: return lower_add(index);
      case OpType::kRelu:
      case OpType::kClip: return lower_activation(node);
      case OpType::kMaxPool:
      case OpType::kAveragePool:
      case OpType::kGlobalAveragePool:
      case OpType::kGlobalMaxPool: return lower_pool(node);
      case OpType::kReduceMean: return lower_reduce_mean(node);
      case OpType::kReshape:
      case OpType::kFlatten: return lower_reshape(node);
      case OpType::kGemm: return lower_gemm(index);
      case OpType::kIdentity: {
        Held same = take_over(node.inputs[0]);
        consume(node.inputs[0]);
        return define(node.outputs[0], same);
      }
      default:
        throw Error(who(node) + ": not supported by the oneDNN runner (supported: " + kSupportedOps + ")");
    }
  }

  // The clamp of a fused Relu/Clip node.
  std::pair<float, float> activation_bounds(size_t index) const {
    const Node& node = graph_.nodes[index];
    if (node.op == OpType::kRelu) return {0.0f, kInf};
    const auto& clip = node.attr<ClipAttrs>();
    return {clip.lo, clip.hi};
  }

  // The value a fused chain finally produces: the activation's output, else the Add's, else the node's.
  ValueId fused_output(size_t index) const {
    if (activation_fusion_[index]) return graph_.nodes[*activation_fusion_[index]].outputs[0];
    if (sum_fusion_[index]) return graph_.nodes[sum_fusion_[index]->add_node].outputs[0];
    return graph_.nodes[index].outputs[0];
  }

  void lower_conv(size_t index) {
    const Node& node = graph_.nodes[index];
    const auto& attrs = node.attr<ConvAttrs>();
    ValueId x = node.inputs[0], w = node.inputs[1];
    ValueId bias = node.inputs.size() > 2 ? node.inputs[2] : kNoValue;
    check(graph_.is_constant(w) && (bias == kNoValue || graph_.is_constant(bias)),
          who(node) + ": the oneDNN runner needs constant weights and bias");
    memory::dims src_dims = dims_of(x), dst_dims = dims_of(node.outputs[0]);
    check(src_dims.size() == 4, who(node) + ": the oneDNN runner supports 2-D convolutions only");
    const Tensor& weights = graph_.constant(w);
    const int64_t groups = attrs.group, out_channels = weights.dim(0);
    const size_t spatial = 2;

    auto per_axis = [&](const std::vector<int64_t>& v, size_t i, int64_t fallback) {
      return v.empty() ? fallback : v.at(i);
    };
    memory::dims strides, dilations, pad_begin, pad_end;
    for (size_t i = 0; i < spatial; ++i) {
      strides.push_back(per_axis(attrs.strides, i, 1));
      dilations.push_back(per_axis(attrs.dilations, i, 1) - 1);  // oneDNN counts the gaps
      pad_begin.push_back(per_axis(attrs.pads, i, 0));
      pad_end.push_back(per_axis(attrs.pads, i + spatial, 0));
    }

    // ONNX weights [O, I/G, kH, kW] are goihw for grouped and depthwise convolutions as they stand.
    memory::dims user_weight_dims(weights.shape().begin(), weights.shape().end());
    memory::format_tag user_weight_tag = memory::format_tag::oihw;
    if (groups > 1) {
      check(out_channels % groups == 0, who(node) + ": output channels not divisible by group");
      user_weight_dims.insert(user_weight_dims.begin(), groups);
      user_weight_dims[1] = out_channels / groups;
      user_weight_tag = memory::format_tag::goihw;
    }
    memory::desc user_weight_desc(user_weight_dims, memory::data_type::f32, user_weight_tag);

    dnnl::post_ops post_ops;
    append_clamp(post_ops, attrs.clamp_lo, attrs.clamp_hi);
    const std::optional<SumFusion>& sum = sum_fusion_[index];
    if (sum) {
      post_ops.append_sum(1.0f);
      ++plan_.summary.fused_sums;
    }
    if (activation_fusion_[index]) {
      auto [lo, hi] = activation_bounds(*activation_fusion_[index]);
      append_clamp(post_ops, lo, hi);
      ++plan_.summary.fused_activations;
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);

    memory::desc src_any = any_desc(src_dims), weights_any = any_desc(user_weight_dims), dst_any = any_desc(dst_dims);
    auto desc = bias == kNoValue
                    ? dnnl::convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct,
                                                      src_any, weights_any, dst_any, strides, dilations, pad_begin,
                                                      pad_end)
                    : dnnl::convolution_forward::desc(prop_kind::forward_inference, algorithm::convolution_direct,
                                                      src_any, weights_any, plain_desc({out_channels}), dst_any,
                                                      strides, dilations, pad_begin, pad_end);
    dnnl::convolution_forward::primitive_desc pd(desc, attr, engine_);

    Held src = in_layout(x, pd.src_desc());
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src.mem},
        {DNNL_ARG_WEIGHTS, prepare_constant(user_weight_desc, weights.data<float>(), pd.weights_desc())}};
    if (bias != kNoValue)
      args[DNNL_ARG_BIAS] =
          prepare_constant(plain_desc({out_channels}), graph_.constant(bias).data<float>(), pd.bias_desc());

    Held dst;
    if (sum && can_overwrite(sum->other) && slot(sum->other).held.mem.get_desc() == pd.dst_desc()) {
      dst = take_over(sum->other);  // the residual is accumulated onto in place
    } else {
      dst = fresh(pd.dst_desc());
      if (sum) add_reorder(slot(sum->other).held.mem, dst.mem);
    }
    args[DNNL_ARG_DST] = dst.mem;
    add_step(dnnl::convolution_forward(pd), std::move(args));
    ++plan_.summary.convolutions;

    consume(x);
    if (sum) consume(sum->other);
    define(fused_output(index), dst);
  }

  void lower_add(size_t index) {
    const Node& node = graph_.nodes[index];
    check(node.inputs.size() == 2 && !graph_.is_constant(node.inputs[0]) && !graph_.is_constant(node.inputs[1]),
          who(node) + ": the oneDNN runner supports Add of two computed tensors only");
    ValueId a = node.inputs[0], b = node.inputs[1];
    check(dims_of(a) == dims_of(b), who(node) + ": the oneDNN runner does not support broadcasting Add");
    memory::desc desc = slot(a).held.mem.get_desc();

    dnnl::post_ops post_ops;
    if (activation_fusion_[index]) {
      auto [lo, hi] = activation_bounds(*activation_fusion_[index]);
      append_clamp(post_ops, lo, hi);
      ++plan_.summary.fused_activations;
    }
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);
    dnnl::binary::primitive_desc pd(dnnl::binary::desc(algorithm::binary_add, desc, desc, desc), attr, engine_);

    Held rhs = in_layout(b, desc);
    Held dst = a != b && can_overwrite(a) ? take_over(a) : fresh(desc);
    add_step(dnnl::binary(pd), {{DNNL_ARG_SRC_0, slot(a).held.mem}, {DNNL_ARG_SRC_1, rhs.mem}, {DNNL_ARG_DST, dst.mem}});
    consume(a);
    consume(b);
    define(fused_output(index), dst);
  }

  void lower_activation(const Node& node) {
    float lo = 0.0f, hi = kInf;
    if (node.op == OpType::kClip) {
      const auto& clip = node.attr<ClipAttrs>();
      lo = clip.lo;
      hi = clip.hi;
      auto bound = [&](size_t i, float& target) {
        if (i >= node.inputs.size() || node.inputs[i] == kNoValue) return;
        check(graph_.is_constant(node.inputs[i]) && graph_.constant(node.inputs[i]).size() == 1,
              who(node) + ": the oneDNN runner needs constant scalar Clip bounds");
        target = graph_.constant(node.inputs[i]).data<float>()[0];
      };
      bound(1, lo);
      bound(2, hi);
    }
    ValueId x = node.inputs[0];
    memory::desc desc = slot(x).held.mem.get_desc();
    bool relu = lo == 0.0f && hi == kInf;
    float max = std::numeric_limits<float>::max();
    dnnl::eltwise_forward::desc eltwise(prop_kind::forward_inference,
                                        relu ? algorithm::eltwise_relu : algorithm::eltwise_clip, desc,
                                        relu ? 0.0f : std::max(lo, -max), relu ? 0.0f : std::min(hi, max));
    dnnl::eltwise_forward::primitive_desc pd(eltwise, engine_);
    Held dst = can_overwrite(x) ? take_over(x) : fresh(desc);
    add_step(dnnl::eltwise_forward(pd), {{DNNL_ARG_SRC, slot(x).held.mem}, {DNNL_ARG_DST, dst.mem}});
    consume(x);
    define(node.outputs[0], dst);
  }

  void lower_pool(const Node& node) {
    ValueId x = node.inputs[0];
    memory::dims src_dims = dims_of(x), dst_dims = dims_of(node.outputs[0]);
    check(src_dims.size() == 4, who(node) + ": the oneDNN runner supports 2-D pooling only");
    memory::dims kernel, strides, dilations, pad_begin, pad_end;
    algorithm alg = algorithm::pooling_max;
    if (node.op == OpType::kGlobalAveragePool || node.op == OpType::kGlobalMaxPool) {
      kernel = {src_dims[2], src_dims[3]};
      strides = {1, 1};
      dilations = pad_begin = pad_end = {0, 0};
      if (node.op == OpType::kGlobalAveragePool) alg = algorithm::pooling_avg_exclude_padding;
    } else {
      const auto& attrs = node.attr<PoolAttrs>();
      if (node.op == OpType::kAveragePool) {
        check(!(attrs.ceil_mode && attrs.count_include_pad),
              who(node) + ": ceil_mode with count_include_pad is not supported by the oneDNN runner");
        alg = attrs.count_include_pad ? algorithm::pooling_avg_include_padding
                                      : algorithm::pooling_avg_exclude_padding;
      }
      for (size_t i = 0; i < 2; ++i) {
        int64_t k = attrs.kernel.at(i);
        int64_t stride = attrs.strides.empty() ? 1 : attrs.strides[i];
        int64_t dilation = attrs.dilations.empty() ? 1 : attrs.dilations[i];
        int64_t begin = attrs.pads.empty() ? 0 : attrs.pads[i];
        int64_t end = attrs.pads.empty() ? 0 : attrs.pads[i + 2];
        // ceil_mode: oneDNN rounds the output size down, so pad the end until the last window fits.
        int64_t needed = (dst_dims[i + 2] - 1) * stride + (k - 1) * dilation + 1 - src_dims[i + 2] - begin;
        kernel.push_back(k);
        strides.push_back(stride);
        dilations.push_back(dilation - 1);
        pad_begin.push_back(begin);
        pad_end.push_back(std::max(end, needed));
      }
    }
    dnnl::pooling_v2_forward::desc desc(prop_kind::forward_inference, alg, slot(x).held.mem.get_desc(),
                                        any_desc(dst_dims), strides, kernel, dilations, pad_begin, pad_end);
    dnnl::pooling_v2_forward::primitive_desc pd(desc, engine_);
    Held dst = fresh(pd.dst_desc());
    add_step(dnnl::pooling_v2_forward(pd), {{DNNL_ARG_SRC, slot(x).held.mem}, {DNNL_ARG_DST, dst.mem}});
    consume(x);
    define(node.outputs[0], dst);
  }

  // A mean over both spatial axes is global average pooling; without keepdims the result is then
  // viewed as [N, C] (after a reorder to plain layout when the pooling kept a blocked one).
  void lower_reduce_mean(const Node& node) {
    const auto& attrs = node.attr<ReduceAttrs>();
    ValueId x = node.inputs[0];
    memory::dims src_dims = dims_of(x), dst_dims = dims_of(node.outputs[0]);
    std::vector<int64_t> axes = attrs.axes;
    for (int64_t& a : axes)
      if (a < 0) a += static_cast<int64_t>(src_dims.size());
    std::sort(axes.begin(), axes.end());
    check(src_dims.size() == 4 && axes == std::vector<int64_t>{2, 3},
          who(node) + ": the oneDNN runner supports ReduceMean over the spatial axes of NCHW only");
    memory::dims pooled_dims{src_dims[0], src_dims[1], 1, 1};
    dnnl::pooling_v2_forward::desc desc(prop_kind::forward_inference, algorithm::pooling_avg_exclude_padding,
                                        slot(x).held.mem.get_desc(), any_desc(pooled_dims), {1, 1},
                                        {src_dims[2], src_dims[3]}, {0, 0}, {0, 0}, {0, 0});
    dnnl::pooling_v2_forward::primitive_desc pd(desc, engine_);
    Held pooled = fresh(pd.dst_desc());
    add_step(dnnl::pooling_v2_forward(pd), {{DNNL_ARG_SRC, slot(x).held.mem}, {DNNL_ARG_DST, pooled.mem}});
    consume(x);
    if (dst_dims == pooled_dims) return define(node.outputs[0], pooled);

    Held plain = pooled;
    if (pooled.mem.get_desc() != plain_desc(pooled_dims)) {
      plain = fresh(plain_desc(pooled_dims));
      add_reorder(pooled.mem, plain.mem);
      plan_.blocks.release(pooled.block);
    }
    define(node.outputs[0], {memory(plain_desc(dst_dims), engine_, plain.mem.get_data_handle()), plain.block});
  }

  void lower_reshape(const Node& node) {
    ValueId x = node.inputs[0];
    Held view = plain_view(x, dims_of(node.outputs[0]));
    BlockPool::hold(view.block);
    consume(x);
    define(node.outputs[0], view);
  }

  // Gemm with a constant B is an inner product; alpha and beta are folded into the constants.
  void lower_gemm(size_t index) {
    const Node& node = graph_.nodes[index];
    const auto& attrs = node.attr<GemmAttrs>();
    ValueId a = node.inputs[0], b = node.inputs[1];
    ValueId c = node.inputs.size() > 2 ? node.inputs[2] : kNoValue;
    check(!attrs.trans_a, who(node) + ": the oneDNN runner does not support transA");
    check(graph_.is_constant(b) && (c == kNoValue || graph_.is_constant(c)),
          who(node) + ": the oneDNN runner needs constant B and C");
    memory::dims src_dims = dims_of(a);
    const Tensor& weights = graph_.constant(b);
    check(src_dims.size() == 2 && weights.rank() == 2, who(node) + ": Gemm operands must be 2-D");
    const int64_t batch = src_dims[0], depth = src_dims[1];
    const int64_t outputs = attrs.trans_b ? weights.dim(0) : weights.dim(1);
    check((attrs.trans_b ? weights.dim(1) : weights.dim(0)) == depth, who(node) + ": A and B do not fit");

    std::vector<float> scaled_weights(static_cast<size_t>(outputs * depth));  // [outputs, depth]
    const float* w = weights.data<float>();
    for (int64_t o = 0; o < outputs; ++o)
      for (int64_t k = 0; k < depth; ++k)
        scaled_weights[static_cast<size_t>(o * depth + k)] =
            attrs.alpha * (attrs.trans_b ? w[o * depth + k] : w[k * outputs + o]);
    std::vector<float> scaled_bias;
    if (c != kNoValue && attrs.beta != 0.0f) {
      const Tensor& bias = graph_.constant(c);
      check(bias.size() == outputs || bias.size() == 1,
            who(node) + ": the oneDNN runner supports a per-output or scalar C only");
      for (int64_t o = 0; o < outputs; ++o)
        scaled_bias.push_back(attrs.beta * bias.data<float>()[bias.size() == 1 ? 0 : o]);
    }

    dnnl::post_ops post_ops;
    append_clamp(post_ops, attrs.clamp_lo, attrs.clamp_hi);
    dnnl::primitive_attr attr;
    attr.set_post_ops(post_ops);

    Held src = plain_view(a, src_dims);
    memory::dims weight_dims{outputs, depth}, dst_dims{batch, outputs};
    auto desc = scaled_bias.empty()
                    ? dnnl::inner_product_forward::desc(prop_kind::forward_inference, src.mem.get_desc(),
                                                        any_desc(weight_dims), any_desc(dst_dims))
                    : dnnl::inner_product_forward::desc(prop_kind::forward_inference, src.mem.get_desc(),
                                                        any_desc(weight_dims), plain_desc({outputs}),
                                                        any_desc(dst_dims));
    dnnl::inner_product_forward::primitive_desc pd(desc, attr, engine_);
    check(pd.src_desc() == src.mem.get_desc(), who(node) + ": oneDNN wants a different input layout");
    std::unordered_map<int, memory> args{
        {DNNL_ARG_SRC, src.mem},
        {DNNL_ARG_WEIGHTS, prepare_constant(plain_desc(weight_dims), scaled_weights.data(), pd.weights_desc())}};
    if (!scaled_bias.empty())
      args[DNNL_ARG_BIAS] = prepare_constant(plain_desc({outputs}), scaled_bias.data(), pd.bias_desc());
    Held dst = fresh(pd.dst_desc());
    args[DNNL_ARG_DST] = dst.mem;
    add_step(dnnl::inner_product_forward(pd), std::move(args));
    consume(a);
    define(node.outputs[0], dst);
  }

  const Graph& graph_;
  const dnnl::engine& engine_;
  dnnl::stream& stream_;
  const int64_t batch_;
  const bool fuse_;
  Plan& plan_;
  std::vector<Slot> slots_;
  std::vector<int> producers_;
  std::vector<bool> fused_away_;
  std::vector<std::optional<SumFusion>> sum_fusion_;
  std::vector<std::optional<size_t>> activation_fusion_;
};

}  // namespace

std::string OneDnnPlanSummary::to_string() const {
  auto count = [](int n, const std::string& noun) { return std::to_string(n) + " " + noun + (n == 1 ? "" : "s"); };
  return count(primitives, "primitive") + " per run: " + count(convolutions, "convolution") + " (" +
         std::to_string(fused_sums) + " with a fused residual sum), " + count(fused_activations, "Relu/Clip node") +
         " fused as post-ops, " + count(reorders, "reorder");
}

struct OneDnnFp32Runner::Impl {
  Graph graph;
  OneDnnRunnerOptions options;
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  std::map<int64_t, std::unique_ptr<Plan>> plans;

  Plan& plan_for(int64_t batch) {
    auto found = plans.find(batch);
    if (found != plans.end()) return *found->second;
    auto plan = std::make_unique<Plan>();
    PlanBuilder(graph, engine, stream, batch, options.fuse, *plan).build();
    return *plans.emplace(batch, std::move(plan)).first->second;
  }
};

OneDnnFp32Runner::OneDnnFp32Runner(const Graph& graph, OneDnnRunnerOptions options)
    : impl_(std::make_unique<Impl>()) {
  check(options.threads > 0, graph.source + ": the oneDNN runner needs at least one thread");
  // OpenMP's thread count is a per-thread setting: it applies to oneDNN calls from this thread.
  omp_set_num_threads(options.threads);
  impl_->graph = graph;
  impl_->options = options;
}

OneDnnFp32Runner::~OneDnnFp32Runner() = default;

const OneDnnPlanSummary& OneDnnFp32Runner::prepare(int64_t batch) {
  check(batch > 0, impl_->graph.source + ": batch must be positive");
  return impl_->plan_for(batch).summary;
}

Tensor OneDnnFp32Runner::run(const Tensor& input) {
  const Graph& graph = impl_->graph;
  const Shape& expected = graph.value(graph.inputs[0]).shape;
  bool fits = input.dtype() == DataType::kFloat32 && input.rank() == static_cast<int64_t>(expected.size()) &&
              input.rank() > 0;
  for (size_t d = 0; fits && d < expected.size(); ++d)
    fits = expected[d] == kDynamicDim ? d == 0 : expected[d] == input.dim(static_cast<int64_t>(d));
  check(fits, graph.source + ": input " + tern::to_string(input.shape()) + " does not fit the model's " +
                  tern::to_string(expected) + " (float32, dynamic batch only)");

  Plan& plan = impl_->plan_for(input.dim(0));
  Tensor output(DataType::kFloat32, plan.output_shape);
  plan.input.set_data_handle(const_cast<std::byte*>(input.raw()));  // only ever read
  plan.output.set_data_handle(output.raw());
  try {
    for (Step& step : plan.steps) step.primitive.execute(impl_->stream, step.args);
    impl_->stream.wait();
  } catch (const dnnl::error& e) {
    throw Error(graph.source + ": oneDNN: " + e.what());
  }
  return output;
}

OutputAgreement compare_outputs(const Tensor& got, const Tensor& reference) {
  check(got.shape() == reference.shape(), "output shape " + tern::to_string(got.shape()) + " differs from reference " +
                                              tern::to_string(reference.shape()));
  OutputAgreement agreement;
  std::span<const float> a = got.floats(), b = reference.floats();
  for (size_t i = 0; i < a.size(); ++i) {
    double diff = std::abs(static_cast<double>(a[i]) - b[i]);
    agreement.max_abs_diff = std::isnan(diff) ? std::numeric_limits<double>::infinity()
                                              : std::max(agreement.max_abs_diff, diff);
    agreement.max_abs_reference = std::max(agreement.max_abs_reference, std::abs(static_cast<double>(b[i])));
  }
  return agreement;
}

std::string onednn_version() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

}  // namespace tern::bench
