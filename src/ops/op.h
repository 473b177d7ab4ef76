// One record per operator: everything tern knows about an operator, in one place.
//
// A record says how the operator is read from ONNX (names, per-opset attributes and inputs), its
// typed attributes and their JSON form in .tern files, its shape and type rules, its FP32 reference
// kernel, what quantization may assume about its output's sign, and how the integer program treats
// it. Its libtorch forward (fine-tuning and training) lives in the same file, compiled into
// tern_train only (TERN_OPS_TORCH; src/train/torch_op.h). The stages that used to switch over
// OpType look the record up: record(op), or onnx_record("Conv") at import.
//
// Adding an operator: one file in src/ops/ that defines its record(s) and registers them with
// TERN_REGISTER_OP, one TERN_OP line in include/tern/ops.def, and its tests
// (docs/architecture.md, "Adding an operator").
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "format/graph_json.h"
#include "graph/shape_inference.h"
#include "tern/error.h"
#include "tern/graph.h"
#include "tern/thread_pool.h"

namespace tern::ops {

// ---- ONNX import --------------------------------------------------------------------------------

// One ONNX node as a record's import function sees it: its attributes (typed accessors that check
// the attribute's type), its inputs (already resolved to values), and the Node being built. The
// importer implements the attribute access (protobuf stays in src/import/).
class OnnxNode {
 public:
  OnnxNode(Node& node, Graph& graph, std::string op_type, int64_t opset, std::string who)
      : node(node), graph(graph), op_type(std::move(op_type)), opset(opset), who(std::move(who)) {}
  virtual ~OnnxNode() = default;

  Node& node;           // name and inputs set (kNoValue for omitted ones); set op and attrs
  Graph& graph;         // for constants the import adds (Reshape's opset-1 shape attribute)
  std::string op_type;  // the ONNX name (a record may import several: HardSigmoid and HardSwish)
  int64_t opset;
  std::string who;      // "model.onnx: node 'x' (Conv)" for errors
  size_t max_outputs = 1;   // outputs the ONNX node may declare
  size_t kept_outputs = 1;  // of those, how many become values (LayerNorm's statistics, Dropout's mask)
  std::optional<Tensor> constant_output;  // set by Constant: the output is this value, no node is added

  virtual bool has(const std::string& name) const = 0;
  virtual int64_t get_int(const std::string& name, int64_t fallback) const = 0;
  virtual float get_float(const std::string& name, float fallback) const = 0;
  virtual std::string get_string(const std::string& name, const std::string& fallback) const = 0;
  virtual std::vector<int64_t> get_ints(const std::string& name) const = 0;
  virtual std::vector<float> get_floats(const std::string& name) const = 0;
  virtual std::vector<std::string> get_strings(const std::string& name) const = 0;
  virtual bool has_tensor(const std::string& name) const = 0;
  virtual Tensor get_tensor(const std::string& name) const = 0;  // a TENSOR attribute
  virtual DataType data_type(int64_t onnx_type) const = 0;       // ONNX TensorProto type -> tern
  virtual size_t output_count() const = 0;                        // declared outputs (names may be empty)
  virtual bool output_used(size_t i) const = 0;                   // output i has a name

  // Checks the input count (lo..hi) and that the first lo inputs are present.
  void need_inputs(size_t lo, size_t hi) const;
  // Input i's content when it is a constant (an initializer or folded), else null.
  const Tensor* constant_input(size_t i) const;
  // Input i as a constant 1-D int64 list; throws naming `what` when it is not one.
  std::vector<int64_t> constant_ints(size_t i, const char* what) const;
  // True when every present input from `first` on is a constant.
  bool constant_inputs_from(size_t first) const;
  // Rejects an attribute value the record does not implement: "<who>: <what> is not supported".
  void require(bool ok, const std::string& what) const;
};

// ---- attributes -----------------------------------------------------------------------------------

// An attribute struct's JSON form: {"kind": kind, field: value, ...}. Records build it from a field
// list with attrs_codec<T>() (src/ops/attrs_codec.h), so the struct, its JSON and its checks sit in
// the operator's file.
struct AttrsCodec {
  const char* kind = nullptr;  // null: the operator has no attributes
  format::Json (*to_json)(const NodeAttrs&) = nullptr;
  NodeAttrs (*from_json)(const format::Json&) = nullptr;  // throws Error on a bad field
};

// ---- shapes ---------------------------------------------------------------------------------------

struct ShapeCall {
  Node& node;                              // may be normalized (axes made non-negative, auto_pad resolved)
  std::span<const Shape> in;               // input shapes; empty for omitted inputs
  std::span<const Tensor* const> values;   // input contents where known (constants, run time)
  const InferenceContext& context;
  std::string who;

  void need_inputs(size_t n) const;
  // Input i's content as a 1-D int64 list (Reshape's target, Slice's starts, ...).
  std::vector<int64_t> ints(size_t i, const char* what) const;
};
using ShapeRule = std::vector<Shape> (*)(ShapeCall&);
using TypeRule = DataType (*)(const Node&, std::span<const DataType> inputs, size_t output);

// ---- shape values --------------------------------------------------------------------------------

// What import-time analysis knows of a small integer tensor's elements (a shape being computed by
// Shape/Gather/Concat/arithmetic): each a number, kSymbolicBatch or kUnknownElement. Constant
// folding (src/graph/passes.cpp) folds what is fully known, turns Reshape targets known up to the
// dynamic batch into constants, and leaves the rest to run time with this as a hint for shapes.
using Content = std::vector<int64_t>;
struct ContentCall {
  const Node& node;
  std::span<const Content* const> in;   // null: nothing known of input i's elements
  std::span<const Value* const> values; // the inputs' values (shape, type); null when omitted
  std::span<const int8_t> batch_axis;  // input i's dim that is the graph's batch, or -1 (Value::batch_axis)
};
using ContentRule = std::optional<Content> (*)(const ContentCall&);
// Contents larger than this are not tracked (shapes have a handful of elements).
inline constexpr size_t kMaxContent = 64;

// ---- FP32 reference kernels ------------------------------------------------------------------------

struct OpContext {
  const Node& node;
  std::string who;  // "model.onnx: node 'x' (Conv)" for errors
  int64_t batch;    // what kSymbolicBatch stands for
  ThreadPool* pool;
};
using Kernel = std::vector<Tensor> (*)(const OpContext&, std::span<const Tensor* const> in,
                                       std::span<const Shape> out_shapes);

// ---- quantization ---------------------------------------------------------------------------------

// Whether the output is provably >= 0 (activations after it may be quantized unsigned), given
// whether each input is (constants answer from their data).
struct SignCall {
  const Node& node;
  const Graph& graph;
  // Input i is provably non-negative (false for an omitted input).
  std::function<bool(size_t)> input_non_negative;
};
using SignRule = bool (*)(const SignCall&);
bool never_non_negative(const SignCall&);
bool always_non_negative(const SignCall&);
bool like_input0(const SignCall&);        // values of input 0 rearranged, selected, pooled
bool like_all_inputs(const SignCall&);    // Add, Mul, Concat of non-negative inputs

// keeps_batch rules: always (element-wise, Conv, pooling, ...); broadcasting operators, when
// input 0 has the largest rank.
bool keeps_batch_always(const Node&, const Graph&);
bool keeps_batch_broadcast(const Node&, const Graph&);

// How the integer program treats a node (src/exec/integer_program.cpp).
enum class IntegerUse {
  kNone,     // no integer implementation: the model runs in the hybrid mode
  kOnCodes,  // runs on u8 codes unchanged in scale (copies, max, clamps, reshapes)
  kFloat,    // runs between integer layers on dequantized values (Add, averages)
};

// ---- ONNX export -----------------------------------------------------------------------------------

// One node being written as ONNX (tern export; src/import/onnx_export_qdq.cpp implements it, so
// protobuf stays in src/import/). A record's exporter emits ONNX nodes (opset kExportOpset) that
// read `inputs` and write `outputs`; records without attributes whose ONNX name is their own are
// written as they are. Errors go through fail(), which names the node.
inline constexpr int64_t kExportOpset = 17;

class OnnxWriter {
 public:
  OnnxWriter(const Node& node, const Graph& graph, std::string who) : node(node), graph(graph), who(std::move(who)) {}
  virtual ~OnnxWriter() = default;

  const Node& node;
  const Graph& graph;
  std::string who;
  std::vector<std::string> inputs;   // value names ("" for an omitted input)
  std::vector<std::string> outputs;

  // Adds an ONNX node; the returned index takes attributes.
  virtual size_t emit(const std::string& op_type, std::vector<std::string> ins, std::vector<std::string> outs) = 0;
  virtual void attr(size_t node, const std::string& name, int64_t value) = 0;
  virtual void attr(size_t node, const std::string& name, float value) = 0;
  virtual void attr(size_t node, const std::string& name, const std::string& value) = 0;
  virtual void attr(size_t node, const std::string& name, const std::vector<int64_t>& value) = 0;
  // A new initializer holding `value`, or a fresh value name; both derived from `hint`.
  virtual std::string constant(const std::string& hint, const Tensor& value) = 0;
  virtual std::string temp(const std::string& hint) = 0;
  // Says where the ONNX model will not compute what tern does (the export's report lists it).
  virtual void note(const std::string& what) = 0;
  [[noreturn]] void fail(const std::string& what) const { throw Error(who + ": " + what + " cannot be written to ONNX"); }

  // Conv/Gemm's fused activation clamp, after the node: y = clamp(x, lo, hi) as Relu or Clip.
  // Returns the name the node itself must write (a temporary when there is a clamp).
  std::string clamped_output(float lo, float hi);
};
using Exporter = void (*)(OnnxWriter&);

// ---- inspect's counts -----------------------------------------------------------------------------

// What `inspect` reports of a node (src/eval/inspect.cpp): its multiply-accumulates per image.
struct CostCall {
  const Node& node;
  const Graph& graph;
  int64_t outputs_per_image;  // output 0's elements at batch 1; -1 when a dim is unknown
  std::string who;
  // Input i's shape with a dynamic batch at 1, or null when omitted or unknown.
  std::optional<Shape> input(size_t i) const;
};
// Multiply-accumulates per image; -1 when a shape it needs is unknown. Products go through
// mac_product (src/ops/support.h), which refuses a count past 2^63.
using MacRule = int64_t (*)(const CostCall&);

// ---- the record -----------------------------------------------------------------------------------

struct OpRecord {
  OpType op = OpType::kIdentity;
  std::string_view name;                      // tern's name: JSON, messages ("Conv")
  std::vector<std::string_view> onnx_names;   // the ONNX operators it imports; empty: tern's own
  void (*import)(OnnxNode&) = nullptr;
  AttrsCodec attrs;
  ShapeRule shapes = nullptr;
  uint32_t shape_reads_inputs = 0;  // bit i: output shapes depend on input i's content
  // The shape rule accepts contents with kUnknownElement / kSymbolicBatch elements at import
  // (Reshape's target known only in part): otherwise such an input leaves the output unknown.
  bool shape_reads_partial = false;
  ContentRule content = nullptr;    // null: the output's elements are not tracked
  // Whether output 0's first dim is input 0's (so a dynamic batch stays the batch through it:
  // Shape of it may read the batch). Null: not known to be (the safe answer).
  bool (*keeps_batch)(const Node&, const Graph&) = nullptr;
  TypeRule type = nullptr;          // null: every output has input 0's type
  Kernel run = nullptr;
  SignRule non_negative = never_non_negative;
  IntegerUse integer = IntegerUse::kNone;
  // inspect: whether its float constant inputs are learned parameters (weights, not shapes or
  // lookup tables); its multiply-accumulates (null: none worth counting, as element-wise work);
  // the activation clamp fused into it ("Conv+Relu"), null when it has none.
  bool counts_parameters = false;
  MacRule macs = nullptr;
  std::pair<float, float> (*fused_clamp)(const Node&) = nullptr;
  // tern export: writes the node as ONNX nodes (null: as it is, for operators without attributes
  // whose ONNX name is tern's; otherwise not exportable).
  Exporter export_onnx = nullptr;
};

const OpRecord& record(OpType op);
// The record that imports ONNX operator `name` (default domain), or null.
const OpRecord* onnx_record(std::string_view name);
// Every ONNX operator name some record imports, sorted.
std::vector<std::string> onnx_operator_names();

// "model.onnx: node 'x' (Conv)".
std::string node_who(const std::string& source, const Node& node);

}  // namespace tern::ops

// Registration: each op file defines `const OpRecord& record_<Name>()` for its operators, the
// registry (src/ops/registry.cpp) collects them in OpType order from include/tern/ops.def.
#define TERN_DECLARE_OP(name) const ::tern::ops::OpRecord& record_##name();
namespace tern::ops {
#define TERN_OP(name) TERN_DECLARE_OP(name)
#include "tern/ops.def"
#undef TERN_OP
}  // namespace tern::ops

// Defines record_<name>() returning the record built by `make` (a function returning OpRecord).
#define TERN_REGISTER_OP(op_name, make)                   \
  const ::tern::ops::OpRecord& record_##op_name() {       \
    static const ::tern::ops::OpRecord r = [] {           \
      ::tern::ops::OpRecord x = make();                   \
      x.op = ::tern::OpType::k##op_name;                  \
      x.name = #op_name;                                  \
      return x;                                           \
    }();                                                  \
    return r;                                             \
  }
