// The FP32 executor: runs a graph on NCHW batches on both cores. It is the correctness reference of
// every quantized and integer path, and the "before" of every speed figure.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/tensor.h"
#include "tern/thread_pool.h"

namespace tern {

// Replaces how one node runs: given its inputs (null for absent optional ones) and its inferred
// output shapes, returns its outputs. How the integer engine runs quantized layers inside a graph.
using NodeKernel = std::function<std::vector<Tensor>(std::span<const Tensor* const> inputs,
                                                     const std::vector<Shape>& output_shapes, ThreadPool* pool)>;

struct ExecutorOptions {
  ThreadPool* pool = nullptr;  // null: ThreadPool::global()
  bool profile = false;        // accumulate wall time per node (see Executor::profile)
  std::map<std::string, NodeKernel> node_kernels;  // by node name; every name must exist
};

// Time spent in one node over all runs since the executor was made (profile mode).
struct NodeProfile {
  std::string name;
  std::string op;
  double seconds = 0;
  int64_t runs = 0;
};

// What runs a model: the FP32 Executor, the integer engine (integer_executor.h). Evaluation,
// `tern bench` and `tern run` take any of them.
class InferenceEngine {
 public:
  virtual ~InferenceEngine() = default;
  // The model's graph: its inputs and outputs (names, shapes) are the engine's.
  virtual const Graph& graph() const = 0;
  // Runs one batch; inputs in graph-input order. Throws Error naming the input when a shape or
  // type does not fit the model.
  virtual std::vector<Tensor> run(std::span<const Tensor> inputs) = 0;
  Tensor run(const Tensor& input);  // single input, single output
  // Wall time per node or step, in run order; empty unless profiling was asked for.
  virtual std::vector<NodeProfile> profile() const { return {}; }
};

// One Executor runs one batch at a time (run() is not reentrant); use one per calling thread. The
// kernels inside a run use the thread pool.
class Executor : public InferenceEngine {
 public:
  // Copies the graph and prepares it once (packs constant weights for the fast kernels).
  explicit Executor(Graph graph, ExecutorOptions options = {});
  ~Executor();
  Executor(Executor&&) noexcept;
  Executor& operator=(Executor&&) noexcept;

  const Graph& graph() const override;

  // Replaces constant `name` (same type and shape) and re-prepares only the nodes that read it;
  // the next run() uses it. How a quantized model switches residual levels without reloading.
  void set_constant(const std::string& name, Tensor value);

  std::vector<Tensor> run(std::span<const Tensor> inputs) override;
  using InferenceEngine::run;

  // Per-node wall time, in graph order; empty unless ExecutorOptions::profile.
  std::vector<NodeProfile> profile() const override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs one node on given inputs, without preparation (the path constant folding uses, and the
// path for weights that are not constants). `batch` is what kSymbolicBatch stands for.
std::vector<Tensor> evaluate_node(const Node& node, std::span<const Tensor* const> inputs, int64_t batch,
                                  ThreadPool* pool, const std::string& source = {});

// evaluate_node for a node run again and again (the integer engine's float steps): the node's
// copy (which shape inference may complete, as auto_pad) and its name for messages made once, and
// the output shapes inferred again only when what they can depend on changes: the batch, the
// input shapes, and the contents of the small inputs (a shape rule reads only such: a Reshape
// target, Slice starts, Resize scales, Range's scalars, at most a few values per dim).
class NodeRunner {
 public:
  NodeRunner(const Node& node, const std::string& source);
  std::vector<Tensor> run(std::span<const Tensor* const> inputs, int64_t batch, ThreadPool* pool);
  const std::string& name() const { return node_.name; }

 private:
  const std::vector<Shape>& output_shapes(std::span<const Tensor* const> inputs, int64_t batch);

  Node node_;
  std::string source_, who_;
  // The last inference and what it saw.
  bool inferred_ = false;
  int64_t batch_ = 0;
  std::vector<Shape> in_shapes_, out_shapes_;
  std::vector<std::vector<std::byte>> small_inputs_;  // contents of inputs of at most kSmall elements (else empty)
  std::vector<DataType> in_types_;
};

}  // namespace tern
