// Graph passes over the IR. optimize() runs the default pipeline that import_onnx applies.
#pragma once

#include "tern/graph.h"

namespace tern {

// Evaluates every node whose inputs are all constants and replaces it by its outputs. Shape
// sub-graphs (Shape, Gather, Slice, Concat, Cast, arithmetic, ...) are followed element by element
// (each operator record's content rule): what is fully known at import folds, a Reshape target
// known up to the dynamic batch becomes a constant (kSymbolicBatch), and the rest stays to run for
// each input, its known elements recorded (Value::known_content) for shape inference. Turns Clip's
// constant min/max inputs into attributes, and infers the shapes of the nodes it keeps (import
// runs it first for that reason). Returns the number of nodes folded or removed.
int fold_constants(Graph& graph);

// A shape a user gives for a model input (--input-shape x=Nx3x48x320): the input's name (empty:
// the model's only input) and its dims, kDynamicDim where the user keeps one dynamic (a name such
// as N, or ?).
struct InputShape {
  std::string name;
  Shape dims;
};
// Parses "NAME=DIMS" or "DIMS", DIMS separated by x or commas ("Nx3x48x320", "1,3,224,224").
// Throws Error quoting the text.
InputShape parse_input_shape(const std::string& text);
// Gives the named inputs these shapes, then re-infers every shape (and folds what became known).
// A given dim must agree with a static one the model declares; the rank must match. Throws Error
// naming the input.
void set_input_shapes(Graph& graph, const std::vector<InputShape>& shapes);

// Folds a BatchNormalization into the Conv or Gemm feeding it (when that op has constant weights
// and no other consumer): W' = W * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta.
int fold_batchnorm(Graph& graph);

// Puts every fully connected layer in one form: a MatMul by constant 2-D weights becomes a Gemm
// (its input may keep leading dims: [..., K], a transformer's linear layer), and a Gemm's constant
// weights are stored [out, in] (transB = 1), so quantizers and kernels see weights as [out][in]
// like a Conv's. Returns the number of nodes changed.
int canonicalize_gemm(Graph& graph);

// Folds an Add of a constant per-output bias ([N], [1, N], ...) that alone consumes a bias-free
// Gemm into the Gemm's C (the exporters' MatMul + Add). Returns the number folded.
int fuse_gemm_bias(Graph& graph);

// Removes Identity nodes (Dropout imports as Identity), rewiring their consumers.
int drop_identities(Graph& graph);

// Folds a Relu or constant Clip that alone consumes a Conv/Gemm output into that node's clamp.
int fuse_activations(Graph& graph);

struct OptimizeOptions {
  bool fold_batchnorm = true;     // false: keep BatchNormalization nodes (fine-tuning trains them)
  bool fuse_activations = true;   // false: keep Relu/Clip nodes
};

// The default pipeline: fold constants, canonicalize Gemm, fold BatchNorm, drop identities, fuse
// activations, compact. A graph optimized without BatchNorm folding and activation fusion, then
// optimized again, ends up as the default pipeline leaves it (names included).
void optimize(Graph& graph, const OptimizeOptions& options = {});

}  // namespace tern
