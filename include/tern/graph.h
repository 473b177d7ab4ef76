// tern's graph IR: a small, typed, topologically ordered graph of nodes and values.
//
// Every tensor is a Value (a graph input, a constant such as a weight, or a node output); every
// operation is a Node whose attributes are a typed struct chosen by its OpType. Shapes are inferred
// at import; a dimension unknown until run time (the dynamic batch) is kDynamicDim. The importer,
// the graph passes, the executor, the quantizer and the trainers all read this one structure.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <any>
#include <vector>

#include "tern/tensor.h"

namespace tern {

using ValueId = int32_t;
inline constexpr ValueId kNoValue = -1;  // an omitted optional input

// In folded int64 shape tensors (e.g. Reshape's target computed by Shape/Gather/Concat), the
// dynamic batch dimension of the graph input; the executor substitutes the actual batch size.
inline constexpr int64_t kSymbolicBatch = INT64_MIN;
// In Value::known_content, an element shape analysis cannot know before run time.
inline constexpr int64_t kUnknownElement = INT64_MIN + 1;

// One entry per operator record (src/ops/); Identity also stands for inference-mode Dropout,
// HardSigmoid for HardSwish (AffineAttrs::multiply_input), FakeQuantize is tern's own (quantize to
// integer codes and back: simulated quantized inference).
enum class OpType {
#define TERN_OP(name) k##name,
#include "tern/ops.def"
#undef TERN_OP
};

std::string to_string(OpType op);

// ONNX auto_pad; resolved into explicit pads by shape inference once spatial sizes are known.
enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

struct ConvAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel;     // spatial kernel size (from the weight shape when absent)
  std::vector<int64_t> strides;    // one per spatial axis
  std::vector<int64_t> pads;       // begin... then end... (ONNX order)
  std::vector<int64_t> dilations;  // one per spatial axis
  int64_t group = 1;
  // Fused by passes: the activation that follows (a Relu or Clip the Conv alone feeds).
  float clamp_lo = -std::numeric_limits<float>::infinity();
  float clamp_hi = std::numeric_limits<float>::infinity();
};

struct PoolAttrs {
  AutoPad auto_pad = AutoPad::kNotSet;
  std::vector<int64_t> kernel, strides, pads, dilations;
  bool ceil_mode = false;
  bool count_include_pad = false;  // AveragePool only
};

struct GemmAttrs {
  float alpha = 1.0f, beta = 1.0f;
  bool trans_a = false, trans_b = false;
  float clamp_lo = -std::numeric_limits<float>::infinity();  // fused activation, as ConvAttrs
  float clamp_hi = std::numeric_limits<float>::infinity();
};

struct BatchNormAttrs {
  float epsilon = 1e-5f;
};

// LayerNormalization: normalize over axes [axis, rank).
struct LayerNormAttrs {
  int64_t axis = -1;
  float epsilon = 1e-5f;
};

struct ClipAttrs {
  float lo = -std::numeric_limits<float>::infinity();
  float hi = std::numeric_limits<float>::infinity();
};

struct LeakyReluAttrs {
  float alpha = 0.01f;
};

// Concat, Flatten, Softmax, Gather: one axis (normalized to be non-negative at import when the
// rank is known).
struct AxisAttrs {
  int64_t axis = 0;
  // Softmax before opset 13: coerce the input to 2-D at `axis` and normalize over the trailing block.
  bool coerce_2d = false;
};

struct ReduceAttrs {
  std::vector<int64_t> axes;  // empty: all axes (or none with noop_with_empty_axes)
  bool keepdims = true;
  bool noop_with_empty_axes = false;
};

// Unsqueeze / Squeeze (axes from the attribute or a constant input).
struct AxesAttrs {
  std::vector<int64_t> axes;
};

struct TransposeAttrs {
  std::vector<int64_t> perm;  // empty: reverse
};

struct ReshapeAttrs {
  bool allow_zero = false;
};

struct ShapeAttrs {
  int64_t start = 0;
  int64_t end = std::numeric_limits<int64_t>::max();
};

struct SliceAttrs {
  std::vector<int64_t> starts, ends, axes, steps;  // axes/steps default to all / 1
};

// HardSigmoid: clamp(alpha * x + beta, 0, 1); HardSwish: x * that, with alpha 1/6, beta 1/2.
struct AffineAttrs {
  float alpha = 0.2f, beta = 0.5f;
  bool multiply_input = false;
};

struct CastAttrs {
  DataType to = DataType::kFloat32;
};

enum class PadMode { kConstant, kReflect, kEdge, kWrap };

struct PadAttrs {
  std::vector<int64_t> pads;  // begin... then end...
  float value = 0.0f;
  PadMode mode = PadMode::kConstant;
};

// FakeQuantize: y = scale * clamp(round(x / scale), qmin, qmax), rounding half away from zero;
// qmin = 0, qmax = 2^bits - 1 unsigned; qmin = -qmax, qmax = 2^(bits-1) - 1 signed. Asymmetric
// (unsigned, static): codes [0, 2^bits - 1] less zero_point, i.e. qmin = -zero_point,
// qmax = 2^bits - 1 - zero_point. A dynamic one
// picks the scale per image (per index of axis 0) from that image's max |x| (unsigned: max x):
// T / qmax, or the power of two 2^ceil(log2(T / qmax)); an all-zero image stays zero.
struct FakeQuantAttrs {
  int bits = 8;
  bool is_unsigned = false;
  bool dynamic = false;
  bool power_of_two = false;  // dynamic only (a static scale is stored as chosen)
  float scale = 1.0f;         // static only
  int32_t zero_point = 0;     // static unsigned only
  bool per_row = false;       // dynamic only: a scale per slice along the last axis (per token)
};

// The node's typed attribute struct (ConvAttrs, ...; empty for operators without attributes).
// Which struct an operator carries is its record's business (src/ops/); std::any keeps Node
// copyable without one central list of every struct.
using NodeAttrs = std::any;

struct Value {
  std::string name;
  DataType dtype = DataType::kFloat32;
  Shape shape;                      // may hold kDynamicDim
  bool shape_known = false;         // false: rank unknown
  std::optional<Tensor> constant;   // set for weights and folded constants
  // For a small integer tensor computed at run time (a shape an exporter's Shape/Gather/Concat
  // sub-graph builds): what import-time analysis knows of its elements, each a number,
  // kSymbolicBatch (the graph's dynamic batch) or kUnknownElement. Empty: nothing known.
  std::vector<int64_t> known_content;
  bool has_known_content = false;
  // Which of its dims is dynamic and is the graph's batch, or -1 (traced from the input through
  // operators that keep it in place, Transposes that move it, and Reshapes whose target names it):
  // Shape of it may say kSymbolicBatch there, a Reshape of it may divide the batch out.
  int batch_axis = -1;
  // Its first dim is the graph's batch (a batch of images, samples or sequences).
  bool batch_leading() const { return batch_axis == 0; }
};

struct Node {
  std::string name;                 // unique; the importer names unnamed nodes "<op>_<index>"
  OpType op = OpType::kIdentity;
  std::vector<ValueId> inputs;      // kNoValue for omitted optional inputs
  std::vector<ValueId> outputs;
  NodeAttrs attrs;

  template <typename T>
  const T& attr() const {
    const T* a = std::any_cast<T>(&attrs);
    if (!a) throw_wrong_attrs();
    return *a;
  }
  template <typename T>
  T& attr() {
    T* a = std::any_cast<T>(&attrs);
    if (!a) throw_wrong_attrs();
    return *a;
  }
  template <typename T>
  bool has_attrs() const { return std::any_cast<T>(&attrs) != nullptr; }
  [[noreturn]] void throw_wrong_attrs() const;  // names the node and the operator
};

class Graph {
 public:
  std::vector<Value> values;
  std::vector<Node> nodes;  // topological order
  std::vector<ValueId> inputs;
  std::vector<ValueId> outputs;
  std::map<std::string, std::string> metadata;  // ONNX metadata_props
  int64_t opset = 0;
  std::string source;  // where it came from (a file path), for error messages

  ValueId add_value(Value value);
  ValueId add_constant(std::string name, Tensor tensor);
  ValueId find_value(const std::string& name) const;  // kNoValue when no value has that name
  const Value& value(ValueId id) const { return values.at(static_cast<size_t>(id)); }
  Value& value(ValueId id) { return values.at(static_cast<size_t>(id)); }
  bool is_constant(ValueId id) const { return id != kNoValue && value(id).constant.has_value(); }
  const Tensor& constant(ValueId id) const { return *value(id).constant; }

  // Index of the node producing each value (-1 for inputs and constants), and consumer counts
  // (graph outputs count as a consumer).
  std::vector<int> producers() const;
  std::vector<int> consumer_counts() const;

  // Checks the structure: ids in range, each value produced at most once, inputs defined before
  // use, outputs reachable. Throws Error naming the source and the offending node.
  void validate() const;

  // Drops constants and values no node or output references; renumbers ids.
  void compact();

  // The batch an exporter fixed in the first input's shape ([1,3,224,224]: 1), or 0 when that
  // dimension is dynamic or unknown. Tools that run many images feed such a model in batches of it.
  int64_t fixed_batch() const;
};

}  // namespace tern
