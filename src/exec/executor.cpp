#include "tern/executor.h"

#include <algorithm>
#include <chrono>
#include <optional>

#include "exec/fp32_ops.h"
#include "graph/shape_inference.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

namespace {
std::string node_who(const std::string& source, const Node& node) {
  return (source.empty() ? "" : source + ": ") + "node '" + node.name + "' (" + to_string(node.op) + ")";
}
}  // namespace

struct Executor::Impl {
  Graph graph;
  ThreadPool* pool;
  std::vector<std::optional<kernels::PackedConvWeights>> packed_conv;  // per node
  std::vector<std::optional<ops::PackedGemm>> packed_gemm;             // per node
  std::vector<NodeKernel> overrides;                                  // per node (empty: none)
  std::vector<int> uses;                                              // consumers per value
  // Nodes whose inputs have dynamic dims past the batch (H, W): their attributes (SAME padding,
  // ConvTranspose's output_shape) are resolved per run on a copy, not once for the first size.
  std::vector<bool> resolve_per_run;
  bool profiling;
  std::vector<double> node_seconds;
  int64_t runs = 0;
  Shape planned_for{-2};  // the input shape the memory plan was last checked for

  Impl(Graph g, ExecutorOptions options)
      : graph(std::move(g)), pool(options.pool ? options.pool : &ThreadPool::global()), profiling(options.profile) {
    graph.validate();
    node_seconds.assign(graph.nodes.size(), 0.0);
    uses = graph.consumer_counts();
    packed_conv.resize(graph.nodes.size());
    packed_gemm.resize(graph.nodes.size());
    overrides.resize(graph.nodes.size());
    resolve_per_run.assign(graph.nodes.size(), false);
    for (size_t i = 0; i < graph.nodes.size(); ++i)
      for (ValueId id : graph.nodes[i].inputs) {
        if (id == kNoValue) continue;
        const Value& v = graph.value(id);
        for (size_t d = 1; d < v.shape.size(); ++d) resolve_per_run[i] = resolve_per_run[i] || v.shape[d] < 0;
        resolve_per_run[i] = resolve_per_run[i] || !v.shape_known;
      }
    for (auto& [name, kernel] : options.node_kernels) {
      auto it = std::find_if(graph.nodes.begin(), graph.nodes.end(), [&, &name = name](const Node& n) { return n.name == name; });
      check(it != graph.nodes.end(), (graph.source.empty() ? std::string("model") : graph.source) +
                                         ": a node kernel names no node '" + name + "'");
      overrides[static_cast<size_t>(it - graph.nodes.begin())] = kernel;
    }
    for (size_t i = 0; i < graph.nodes.size(); ++i)
      if (!overrides[i]) {
        try {
          prepare(i);
        } catch (const Error& e) {  // a kernel's own check: say which node it was
          throw Error(node_who(graph.source, graph.nodes[i]) + ": " + e.what());
        }
      }
  }

  // Packs node i's constant weights for the fast kernels (when it has any).
  void prepare(size_t i) {
    const Node& node = graph.nodes[i];
    packed_conv[i].reset();
    packed_gemm[i].reset();
    if (node.op == OpType::kGemm) packed_gemm[i] = ops::pack_gemm(node, graph);
    if (node.op != OpType::kConv || !graph.is_constant(node.inputs[1])) return;
    const Value& x = graph.value(node.inputs[0]);
    const Tensor& w = graph.constant(node.inputs[1]);
    if (!x.shape_known || (x.shape.size() != 3 && x.shape.size() != 4) || w.dtype() != DataType::kFloat32) return;
    // Packing ignores batch and spatial size: dynamic dims get a placeholder the kernel fits in.
    const auto& a = node.attr<ConvAttrs>();
    Shape x_shape = x.shape;
    for (size_t d = 0; d < x_shape.size(); ++d)
      if (x_shape[d] < 0)
        x_shape[d] = d < 2 || d - 2 >= a.kernel.size() ? 1 : (a.kernel[d - 2] - 1) * a.dilations[d - 2] + 1;
    packed_conv[i].emplace(ops::conv_shape(node.attr<ConvAttrs>(), x_shape, w.shape()), w.data<float>());
  }

  void set_constant(const std::string& name, Tensor value) {
    std::string who = (graph.source.empty() ? std::string("model") : graph.source) + ": constant '" + name + "'";
    ValueId id = graph.find_value(name);
    check(id != kNoValue && graph.is_constant(id), who + ": no such constant");
    const Tensor& old = graph.constant(id);
    check(value.dtype() == old.dtype() && value.shape() == old.shape(),
          who + ": replacement " + to_string(value.dtype()) + " " + to_string(value.shape()) + " does not match " +
              to_string(old.dtype()) + " " + to_string(old.shape()));
    *graph.value(id).constant = std::move(value);
    for (size_t i = 0; i < graph.nodes.size(); ++i)
      if (!overrides[i] &&
          std::find(graph.nodes[i].inputs.begin(), graph.nodes[i].inputs.end(), id) != graph.nodes[i].inputs.end())
        prepare(i);
  }

  void check_input(const Value& expected, const Tensor& given) const {
    std::string who = (graph.source.empty() ? "" : graph.source + ": ") + "input '" + expected.name + "'";
    check(given.dtype() == expected.dtype, who + ": expected " + to_string(expected.dtype) + " data, got " +
                                               to_string(given.dtype()));
    if (!expected.shape_known) return;
    bool fits = given.rank() == static_cast<int64_t>(expected.shape.size());
    for (size_t d = 0; fits && d < expected.shape.size(); ++d)
      fits = expected.shape[d] < 0 || expected.shape[d] == given.dim(static_cast<int64_t>(d));
    check(fits, who + ": shape " + to_string(given.shape()) + " does not fit the model's " + to_string(expected.shape));
  }

  // Bytes of a value of `shape` (dynamic dims: the batch for the first, else 1).
  static double value_bytes(const Shape& shape, DataType dtype, int64_t batch) {
    double count = 1;
    for (size_t d = 0; d < shape.size(); ++d)
      count *= shape[d] >= 0 ? static_cast<double>(shape[d]) : d == 0 ? static_cast<double>(batch) : 1.0;
    return count * (dtype == DataType::kUndefined ? 4.0 : static_cast<double>(element_size(dtype)));
  }

  // Before a run: the peak of the activations held at once, from the shapes import inferred, walked
  // in execution order and freed after their last use, against the memory limit. Known per input
  // shape, so computed once for each.
  void check_plan(std::span<const Tensor> inputs) {
    Shape key;
    for (const Tensor& t : inputs) key.insert(key.end(), t.shape().begin(), t.shape().end());
    if (key == planned_for) return;
    int64_t batch = !inputs.empty() && inputs[0].rank() > 0 ? inputs[0].dim(0) : 1;
    std::vector<int> remaining = uses;
    for (ValueId out : graph.outputs) ++remaining[static_cast<size_t>(out)];
    double live = 0, peak = 0;
    const Node* peak_node = nullptr;
    for (const Tensor& t : inputs) live += static_cast<double>(t.bytes());
    for (const Node& node : graph.nodes) {
      for (ValueId id : node.outputs)
        if (id != kNoValue && graph.value(id).shape_known)
          live += value_bytes(graph.value(id).shape, graph.value(id).dtype, batch);
      if (live > peak) {
        peak = live;
        peak_node = &node;
      }
      for (ValueId id : node.inputs)
        if (id != kNoValue && !graph.is_constant(id) && --remaining[static_cast<size_t>(id)] == 0 &&
            graph.value(id).shape_known)
          live -= value_bytes(graph.value(id).shape, graph.value(id).dtype, batch);
    }
    check_memory(peak, (graph.source.empty() ? std::string("model") : graph.source) + ": a batch of " +
                           std::to_string(batch),
                 "peak activations" + (peak_node ? ", at node '" + peak_node->name + "'" : std::string()));
    planned_for = key;
  }

  std::vector<Tensor> run(std::span<const Tensor> inputs) {
    check(inputs.size() == graph.inputs.size(), (graph.source.empty() ? std::string("model") : graph.source) +
                                                    ": expects " + std::to_string(graph.inputs.size()) +
                                                    " input(s), got " + std::to_string(inputs.size()));
    std::vector<Tensor> values(graph.values.size());
    std::vector<int> remaining = uses;
    for (size_t i = 0; i < inputs.size(); ++i) {
      check_input(graph.value(graph.inputs[i]), inputs[i]);
      values[static_cast<size_t>(graph.inputs[i])] = inputs[i];
    }
    int64_t batch = !inputs.empty() && inputs[0].rank() > 0 ? inputs[0].dim(0) : 1;
    check_plan(inputs);
    InferenceContext ictx{batch, &graph.source, {}};
    double live_bytes = 0;  // what this run holds now: the backstop when the plan could not see a size
    for (const Tensor& t : inputs) live_bytes += static_cast<double>(t.bytes());
    auto get = [&](ValueId id) -> const Tensor* {
      if (id == kNoValue) return nullptr;
      if (graph.is_constant(id)) return &graph.constant(id);
      return &values[static_cast<size_t>(id)];
    };
    std::optional<Node> copy;
    for (size_t n = 0; n < graph.nodes.size(); ++n) {
      if (resolve_per_run[n]) copy = graph.nodes[n];
      Node& node = resolve_per_run[n] ? *copy : graph.nodes[n];
      std::vector<const Tensor*> in;
      std::vector<Shape> shapes;
      for (ValueId id : node.inputs) {
        const Tensor* t = get(id);
        in.push_back(t);
        shapes.push_back(t ? t->shape() : Shape{});
      }
      std::vector<Shape> out_shapes = infer_output_shapes(node, shapes, in, ictx);
      double out_bytes = 0;
      for (size_t i = 0; i < out_shapes.size() && i < node.outputs.size(); ++i)
        out_bytes += value_bytes(out_shapes[i], graph.value(node.outputs[i]).dtype, batch);
      check_memory(live_bytes + out_bytes, [&] {
        return std::pair<std::string, std::string>{node_who(graph.source, node) + " on a batch of " + std::to_string(batch),
                                                   "activations held at that node"};
      });
      live_bytes += out_bytes;
      ops::OpContext ctx{node, node_who(graph.source, node), batch, pool};
      auto start = profiling ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point{};
      std::vector<Tensor> out;
      if (overrides[n])
        out = overrides[n](in, out_shapes, pool);
      else if (packed_conv[n] && in[0]->rank() == static_cast<int64_t>(graph.value(node.inputs[0]).shape.size()))
        out.push_back(ops::conv_packed(ctx, *in[0], *packed_conv[n], in.size() > 2 ? in[2] : nullptr, out_shapes[0]));
      else if (packed_gemm[n])
        out.push_back(ops::gemm_packed(ctx, *in[0], *packed_gemm[n], out_shapes[0]));
      else
        out = ops::run(ctx, in, out_shapes);
      if (profiling) node_seconds[n] += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      for (size_t i = 0; i < node.outputs.size() && i < out.size(); ++i)
        values[static_cast<size_t>(node.outputs[i])] = std::move(out[i]);
      for (ValueId id : node.inputs)  // free activations after their last use
        if (id != kNoValue && --remaining[static_cast<size_t>(id)] == 0 && !graph.is_constant(id)) {
          live_bytes -= static_cast<double>(values[static_cast<size_t>(id)].bytes());
          values[static_cast<size_t>(id)] = Tensor();
        }
    }
    std::vector<Tensor> outputs;
    for (ValueId id : graph.outputs) outputs.push_back(*get(id));
    ++runs;
    return outputs;
  }
};

Executor::Executor(Graph graph, ExecutorOptions options) : impl_(std::make_unique<Impl>(std::move(graph), options)) {}
Executor::~Executor() = default;
Executor::Executor(Executor&&) noexcept = default;
Executor& Executor::operator=(Executor&&) noexcept = default;

const Graph& Executor::graph() const { return impl_->graph; }

void Executor::set_constant(const std::string& name, Tensor value) { impl_->set_constant(name, std::move(value)); }

std::vector<NodeProfile> Executor::profile() const {
  std::vector<NodeProfile> out;
  if (!impl_->profiling) return out;
  for (size_t i = 0; i < impl_->graph.nodes.size(); ++i)
    out.push_back({impl_->graph.nodes[i].name, to_string(impl_->graph.nodes[i].op), impl_->node_seconds[i], impl_->runs});
  return out;
}

std::vector<Tensor> Executor::run(std::span<const Tensor> inputs) { return impl_->run(inputs); }

Tensor InferenceEngine::run(const Tensor& input) {
  std::vector<Tensor> out = run(std::span<const Tensor>(&input, 1));
  check(out.size() == 1, "model has " + std::to_string(out.size()) + " outputs; use the multi-output run()");
  return out[0];
}

std::vector<Tensor> evaluate_node(const Node& node, std::span<const Tensor* const> inputs, int64_t batch,
                                  ThreadPool* pool, const std::string& source) {
  Node copy = node;
  std::vector<Shape> shapes;
  for (const Tensor* t : inputs) shapes.push_back(t ? t->shape() : Shape{});
  InferenceContext ictx{batch, &source, {}};
  std::vector<Shape> out_shapes = infer_output_shapes(copy, shapes, inputs, ictx);
  ops::OpContext ctx{copy, node_who(source, copy), batch, pool};
  return ops::run(ctx, inputs, out_shapes);
}

NodeRunner::NodeRunner(const Node& node, const std::string& source) : node_(node), source_(source), who_(node_who(source, node)) {}

const std::vector<Shape>& NodeRunner::output_shapes(std::span<const Tensor* const> inputs, int64_t batch) {
  constexpr int64_t kSmall = 64;
  auto small = [](const Tensor* t) { return t && t->size() <= kSmall; };
  bool same = inferred_ && batch == batch_ && inputs.size() == in_shapes_.size();
  for (size_t i = 0; same && i < inputs.size(); ++i) {
    const Tensor* t = inputs[i];
    same = (t ? t->shape() : Shape{}) == in_shapes_[i] && (t ? t->dtype() : DataType::kFloat32) == in_types_[i] &&
           (!small(t) || (t->bytes() == small_inputs_[i].size() &&
                          std::equal(t->raw(), t->raw() + t->bytes(), small_inputs_[i].begin())));
  }
  if (same) return out_shapes_;
  inferred_ = false;
  in_shapes_.clear();
  in_types_.clear();
  small_inputs_.clear();
  for (const Tensor* t : inputs) {
    in_shapes_.push_back(t ? t->shape() : Shape{});
    in_types_.push_back(t ? t->dtype() : DataType::kFloat32);
    small_inputs_.emplace_back();
    if (small(t)) small_inputs_.back().assign(t->raw(), t->raw() + t->bytes());
  }
  InferenceContext ictx{batch, &source_, {}};
  out_shapes_ = infer_output_shapes(node_, in_shapes_, inputs, ictx);  // throws: nothing cached
  batch_ = batch;
  inferred_ = true;
  return out_shapes_;
}

std::vector<Tensor> NodeRunner::run(std::span<const Tensor* const> inputs, int64_t batch, ThreadPool* pool) {
  const std::vector<Shape>& out_shapes = output_shapes(inputs, batch);
  ops::OpContext ctx{node_, who_, batch, pool};
  return ops::run(ctx, inputs, out_shapes);
}

}  // namespace tern
