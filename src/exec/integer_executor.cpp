// The integer engine (see tern/integer_executor.h): quantized Conv/Gemm nodes of the simulation
// graph run as integer kernels through the executor's node-kernel hook.
#include "tern/integer_executor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <optional>

#include "exec/fp32_ops.h"
#include "exec/integer_layers.h"
#include "exec/integer_program.h"
#include "kernels/int8/qgemm.h"
#include "kernels/int8/requantize.h"
#include "kernels/int8/ternary_panels.h"
#include "tern/error.h"

namespace tern {

using integer::IntLayer;
using integer::IntTerm;
using integer::TermGroup;
using kernels::kQPanelRows;
using kernels::kQStep;

struct IntegerExecutor::Impl {
  quant::QuantizedModel model;
  std::vector<IntLayer> layers;
  std::vector<IntegerLayerInfo> info;
  std::unique_ptr<integer::Program> program;  // the fused program, or
  // Batches of several images: one single-threaded copy of the program per thread of the pool,
  // each taking whole images (empty: every batch runs on `program`).
  std::vector<std::unique_ptr<integer::Program>> per_thread;
  ThreadPool* pool = nullptr;
  std::string why_hybrid;
  std::unique_ptr<Executor> executor;         // the hybrid graph
  Graph graph;                                // the program's inputs and outputs
  integer::LayerScratch scratch;  // the work buffers of the layer running now

  Impl(quant::QuantizedModel m, ExecutorOptions options, const IntegerEngineOptions& engine) : model(std::move(m)) {
    // A model loaded without float weights: the fused program runs the codes alone; the hybrid
    // graph below gets the weights first.
    Graph sim = quant::simulation_graph(model, quant::Placeholders::kAccepted);
    std::vector<std::string> float_layers;
    for (const quant::QuantizedLayer& l : model.layers) {
      const Node* node = nullptr;
      for (const Node& n : sim.nodes)
        if (n.name == l.node) node = &n;
      check(node != nullptr, "integer engine: layer '" + l.node + "' is not in the graph");
      std::string why;
      std::optional<IntLayer> L = integer::build_int_layer(l, *node, sim, why);
      if (!L) {
        info.push_back({l.node, "float32 simulation (" + why + ")"});
        float_layers.push_back(l.node);
        continue;
      }
      layers.push_back(std::move(*L));
      info.push_back({l.node, ""});
    }
    // The fused program when every layer has an integer form; else the hybrid graph.
    if (engine.fused && float_layers.empty()) {
      pool = options.pool ? options.pool : &ThreadPool::global();
      program = integer::Program::compile(sim, layers, pool, options.profile, why_hybrid);
      // A batch of images splits best by image: each core runs whole images through every layer
      // on its own buffers (one image's activations stay in its caches, and no layer waits for
      // the other core), rather than both cores on every layer of the whole batch. Not when
      // profiling (one program's times) or when an output does not lead with the batch.
      bool by_image = program && pool->size() > 1 && !options.profile && sim.inputs.size() == 1 &&
                      sim.value(sim.inputs[0]).batch_leading();
      for (ValueId out : sim.outputs) by_image = by_image && sim.value(out).batch_leading();
      for (int t = 0; by_image && t < pool->size(); ++t) {
        std::string why;
        per_thread.push_back(integer::Program::compile(sim, layers, nullptr, false, why));
        by_image = per_thread.back() != nullptr;
      }
      if (!by_image) per_thread.clear();
    } else {
      why_hybrid = engine.fused ? "layer " + float_layers.front() + " has no integer form" : "asked for";
    }
    if (program) {
      for (IntegerLayerInfo& i : info) i.kernel = program->kernel_of(i.node);
      // The program keeps what it runs (packed weights, biases, scales); the graph is kept for its
      // inputs and outputs, and the model for its levels: their weights go.
      for (Value& v : sim.values) v.constant.reset();
      graph = std::move(sim);
      release_weights();
      return;
    }
    for (size_t index = 0; index < layers.size(); ++index)
      options.node_kernels[layers[index].node] = [this, index](std::span<const Tensor* const> in,
                                                               const std::vector<Shape>& shapes, ThreadPool* pool) {
        return std::vector<Tensor>{integer::run_layer(layers[index], *in[0], shapes[0], scratch, pool)};
      };
    for (IntegerLayerInfo& i : info)
      for (const IntLayer& L : layers)
        if (L.node == i.node) i.kernel = describe(L) + " (hybrid)";
    if (!model.float_weights) {  // the hybrid graph runs some quantized layers as their simulation
      quant::dequantize_weights(model);
      sim = quant::simulation_graph(model);
    }
    drop_input_quantizers(sim);
    executor = std::make_unique<Executor>(std::move(sim), options);
  }

  // The dequantized float weights, int8 codes and group scales of the loaded model: the program
  // has its own packed form, and switching levels only changes which terms run.
  void release_weights() {
    for (Value& v : model.graph.values) v.constant.reset();
    for (quant::QuantizedLayer& l : model.layers)
      for (quant::QuantizedWeights& q : l.terms) {
        std::vector<int8_t>().swap(q.codes);
        std::vector<quant::ScalePair>().swap(q.scales);
      }
  }

  // Integer layers quantize their own input (same rounding): they read the value the simulation's
  // FakeQuantize node reads, and FakeQuantize nodes nobody reads any more go.
  void drop_input_quantizers(Graph& g) const {
    std::vector<int> producer = g.producers();
    for (Node& n : g.nodes) {
      bool integer = std::any_of(layers.begin(), layers.end(), [&](const IntLayer& L) { return L.node == n.name; });
      int p = n.inputs.empty() || n.inputs[0] == kNoValue ? -1 : producer[static_cast<size_t>(n.inputs[0])];
      if (integer && p >= 0 && g.nodes[static_cast<size_t>(p)].op == OpType::kFakeQuantize)
        n.inputs[0] = g.nodes[static_cast<size_t>(p)].inputs[0];
    }
    std::vector<int> uses = g.consumer_counts();
    for (ValueId out : g.outputs) ++uses[static_cast<size_t>(out)];
    std::erase_if(g.nodes, [&](const Node& n) { return n.op == OpType::kFakeQuantize && uses[static_cast<size_t>(n.outputs[0])] == 0; });
  }

  std::string describe(const IntLayer& L) const {
    std::string s = L.weights_kind();
    if (L.terms.size() > 1) s += " x" + std::to_string(L.active) + "/" + std::to_string(L.terms.size());
    return s + " " + kernels::qgemm_kernel_name();
  }

  void set_level(int level) {
    if (program) {
      check(level >= 0 && level <= model.max_level(), "level " + std::to_string(level) + " is outside 0.." +
                                                          std::to_string(model.max_level()));
      model.level = level;
      for (quant::QuantizedLayer& l : model.layers) l.active_terms = 1;
      for (int k = 0; k < level; ++k)
        if (quant::QuantizedLayer* l = find_layer(model.edges[static_cast<size_t>(k)].layer)) ++l->active_terms;
    } else {
      std::vector<std::string> changed = quant::set_level(model, level);
      for (const std::string& name : changed)
        for (const Value& v : model.graph.values)
          if (v.name == name && v.constant) executor->set_constant(name, *v.constant);
    }
    for (IntLayer& L : layers)
      if (const quant::QuantizedLayer* l = model.find(L.node)) L.active = l->active_terms;
    if (!program)
      for (IntegerLayerInfo& i : info)
        for (const IntLayer& L : layers)
          if (L.node == i.node) i.kernel = describe(L) + " (hybrid)";
  }

  quant::QuantizedLayer* find_layer(const std::string& node) {
    for (quant::QuantizedLayer& l : model.layers)
      if (l.node == node) return &l;
    return nullptr;
  }
};

IntegerExecutor::IntegerExecutor(quant::QuantizedModel model, ExecutorOptions options, IntegerEngineOptions engine)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options), engine)) {}
IntegerExecutor::~IntegerExecutor() = default;
IntegerExecutor::IntegerExecutor(IntegerExecutor&&) noexcept = default;
IntegerExecutor& IntegerExecutor::operator=(IntegerExecutor&&) noexcept = default;

const Graph& IntegerExecutor::graph() const { return impl_->program ? impl_->graph : impl_->executor->graph(); }
std::vector<Tensor> IntegerExecutor::run(std::span<const Tensor> inputs) {
  Impl& I = *impl_;
  if (!I.program) return I.executor->run(inputs);
  bool by_image = !I.per_thread.empty() && inputs.size() == 1 && inputs[0].dtype() == DataType::kFloat32 &&
                  inputs[0].rank() >= 2 && inputs[0].dim(0) >= 2;
  if (by_image) {  // else the whole program checks the input, and says what does not fit
    const Shape& want = I.graph.value(I.graph.inputs[0]).shape;
    by_image = want.size() == inputs[0].shape().size() && std::equal(want.begin() + 1, want.end(), inputs[0].shape().begin() + 1);
  }
  if (!by_image) return I.program->run(inputs);
  // Image n through one thread's program (its own buffers), the outputs stacked in image order.
  const Tensor& x = inputs[0];
  const int64_t images = x.dim(0), per_image = x.size() / images;
  Shape one = x.shape();
  one[0] = 1;
  std::vector<std::vector<Tensor>> results(static_cast<size_t>(images));
  std::atomic<int64_t> next{0};
  I.pool->parallel_for(static_cast<int64_t>(I.per_thread.size()), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t)
      for (int64_t n; (n = next.fetch_add(1)) < images;) {
        const Tensor image = Tensor::from_floats(one, std::span<const float>(x.data<float>() + n * per_image,
                                                                             static_cast<size_t>(per_image)));
        results[static_cast<size_t>(n)] = I.per_thread[static_cast<size_t>(t)]->run(std::span<const Tensor>(&image, 1));
      }
  });
  std::vector<Tensor> out;
  for (size_t k = 0; k < results[0].size(); ++k) {
    Shape shape = results[0][k].shape();
    shape[0] = images;
    Tensor y = Tensor::uninitialized(results[0][k].dtype(), shape);
    const size_t bytes = results[0][k].bytes();
    for (size_t n = 0; n < results.size(); ++n) std::memcpy(y.raw() + n * bytes, results[n][k].raw(), bytes);
    out.push_back(std::move(y));
  }
  return out;
}
std::vector<NodeProfile> IntegerExecutor::profile() const {
  return impl_->program ? impl_->program->profile() : impl_->executor->profile();
}
void IntegerExecutor::set_level(int level) { impl_->set_level(level); }
int IntegerExecutor::level() const { return impl_->model.level; }
int IntegerExecutor::max_level() const { return impl_->model.max_level(); }
const std::vector<IntegerLayerInfo>& IntegerExecutor::layers() const { return impl_->info; }
bool IntegerExecutor::fused() const { return impl_->program != nullptr; }
std::string IntegerExecutor::mode() const {
  if (!impl_->program) return "hybrid (" + impl_->why_hybrid + ")";
  if (impl_->per_thread.empty()) return "fused integer program";
  return "fused integer program (batches image by image, one copy per thread: " + std::to_string(impl_->per_thread.size()) + ")";
}
std::vector<std::string> IntegerExecutor::steps() const {
  return impl_->program ? impl_->program->describe() : std::vector<std::string>{};
}

}  // namespace tern
