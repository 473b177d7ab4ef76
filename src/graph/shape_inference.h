// Shape inference, shared by the importer (symbolic batch) and the executor (concrete shapes).
#pragma once

#include <span>
#include <vector>

#include "tern/graph.h"

namespace tern {

struct InferenceContext {
  // The batch size that kSymbolicBatch in shape tensors stands for; kDynamicDim at import time.
  int64_t batch = kDynamicDim;
  // Where errors say the problem is: the model's path.
  const std::string* source = nullptr;
  // At import: input i's dim that is the graph's dynamic batch, or -1 (Value::batch_axis); empty
  // at run time, when every dim is known.
  std::span<const int8_t> batch_axis;
};

// Output shapes of `node` given its input shapes; `input_values[i]` is non-null where input i's
// content is known (needed by Reshape's target, for example). May resolve auto_pad in `node`.
// Throws Error naming the node when the inputs do not fit the operator.
std::vector<Shape> infer_output_shapes(Node& node, std::span<const Shape> input_shapes,
                                       std::span<const Tensor* const> input_values, const InferenceContext& context);

// The output data type of `node` given its input types.
DataType infer_output_type(const Node& node, std::span<const DataType> input_types, size_t output_index);

// Infers every value's shape and type in topological order (import time), and which values lead
// with the graph's dynamic batch, or hold it elsewhere (Value::batch_axis).
void infer_shapes(Graph& graph);
// Marks the graph inputs whose first dim is dynamic as batch-leading (what infer_shapes starts from).
void mark_batch_leading_inputs(Graph& graph);
// The same for one node whose inputs' shapes are known.
void infer_node_shapes(Graph& graph, Node& node);

// Normalizes a possibly negative axis for a tensor of `rank` dims; throws naming `what` if out of range.
int64_t normalize_axis(int64_t axis, int64_t rank, const std::string& what);

// One sliced axis: elements start, start+step, ... (length of them).
struct SliceRange {
  int64_t axis, start, step, length;
};
// Resolves a Slice's starts/ends/axes/steps against input shape `x` (ONNX clamping rules).
std::vector<SliceRange> slice_ranges(const SliceAttrs& attrs, const Shape& x, const std::string& who);

// True when output shapes depend on the content of input `input_index` (Reshape's target, ...).
bool shape_depends_on_value(const Node& node, size_t input_index);

// The [begin, end) range of dims a Shape node reports for an input of `rank` dims.
std::pair<int64_t, int64_t> shape_slice(const ShapeAttrs& attrs, int64_t rank);

// Numpy-style multidirectional broadcast of two shapes; throws naming `what` if they do not fit.
Shape broadcast_shapes(const Shape& a, const Shape& b, const std::string& what);

}  // namespace tern
