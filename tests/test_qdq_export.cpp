// tern export: quantized models written as QDQ ONNX. The file must pass ONNX's checker, hold the
// quantized weights as integers times a step per channel (bit for bit tern's weights), and compute
// what tern's simulation computes when read back; what ONNX cannot state is reported, and an
// operator without an ONNX form is a clear error.
#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <set>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_export.h"
#include "tern/onnx_import.h"
#include "tern/quantized_model.h"

namespace tern::testing {
namespace {

using B = OnnxBuilder;
namespace q = tern::quant;

// A small CNN with the shapes exporters give: a fused ReLU6 (Clip), a HardSwish, a residual Add,
// global pooling, a Reshape whose target import knows only up to the batch, a Gemm.
// zero_filter: conv2's first filter all zero (a pruned filter), its bias not.
std::string cnn_model(bool zero_filter = false) {
  B b;
  b.input("x", {-1, 3, 8, 8});
  b.floats("w1", {8, 3, 3, 3}, random_floats(216, 21));
  b.floats("b1", {8}, random_floats(8, 22));
  std::vector<float> w2 = random_floats(576, 23);
  if (zero_filter) std::fill(w2.begin(), w2.begin() + 72, 0.0f);
  b.floats("w2", {8, 8, 3, 3}, w2);
  b.floats("b2", {8}, random_floats(8, 24));
  b.floats("w3", {8, 1, 3, 3}, random_floats(72, 25));
  b.floats("fc_w", {5, 8}, random_floats(40, 26));
  b.floats("fc_b", {5}, random_floats(5, 27));
  b.floats("lo", {}, {0.0f});
  b.floats("hi", {}, {6.0f});
  b.ints("minus1", {1}, {-1});
  auto& c1 = b.node("Conv", {"x", "w1", "b1"}, {"c1"}, "conv1");
  B::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Clip", {"c1", "lo", "hi"}, {"r1"}, "relu6");
  auto& c2 = b.node("Conv", {"r1", "w2", "b2"}, {"c2"}, "conv2");
  B::attr(c2, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("HardSwish", {"c2"}, {"h2"}, "hswish");
  auto& c3 = b.node("Conv", {"h2", "w3"}, {"c3"}, "depthwise");
  B::attr(c3, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(c3, "group", int64_t{8});
  b.node("Add", {"c3", "r1"}, {"sum"}, "residual");
  b.node("GlobalAveragePool", {"sum"}, {"p"}, "gap");
  b.node("Shape", {"p"}, {"ps"}, "shape");
  b.ints("zero", {1}, {0});
  b.node("Gather", {"ps", "zero"}, {"n"}, "batch");
  auto& cat = b.node("Concat", {"n", "minus1"}, {"target"}, "target");
  B::attr(cat, "axis", int64_t{0});
  b.node("Reshape", {"p", "target"}, {"f"}, "flatten");
  auto& fc = b.node("Gemm", {"f", "fc_w", "fc_b"}, {"logits"}, "fc");
  B::attr(fc, "transB", int64_t{1});
  b.node("Softmax", {"logits"}, {"y"}, "softmax");
  b.output("y");
  return b.bytes();
}

const Graph& cnn() {
  static const Graph g = import_onnx_bytes(cnn_model(), "cnn.onnx");
  return g;
}

Tensor images(int64_t n, uint32_t seed) {
  std::vector<float> v = random_floats(static_cast<size_t>(n * 3 * 8 * 8), seed);
  for (float& x : v) x *= 2.0f;
  return Tensor::from_floats({n, 3, 8, 8}, v);
}

q::QuantizeOptions options(q::WeightFormat format, int bits, int64_t group) {
  q::QuantizeOptions o;
  o.plan.weights = {format, q::TernaryMethod::kFgq, bits, group};
  o.plan.first_last_8bit = false;  // every layer at the tested precision
  o.plan.depthwise_8bit = false;
  o.calibration = q::CalibrationMethod::kMinMax;  // no calibration value beyond the codes' range
  return o;
}

onnx::ModelProto parse(const std::string& bytes) {
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())));
  return m;
}

const onnx::TensorProto* initializer(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& t : m.graph().initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

struct Case {
  const char* name;
  q::WeightFormat format;
  int bits;
  int64_t group;
};

const Case kCases[] = {{"ternary fgq N=4", q::WeightFormat::kTernary, 2, 4},
                       {"int4 per channel", q::WeightFormat::kInt, 4, 0},
                       {"int8 per channel", q::WeightFormat::kInt, 8, 0}};

const Tensor& calibration() {
  static const Tensor t = images(16, 101);
  return t;
}

q::QuantizedModel quantized(const Case& c, const Graph& g = cnn()) {
  return q::quantize_model(g, options(c.format, c.bits, c.group), &calibration());
}

TEST(QdqExport, WeightsAreIntegersTimesAStepPerChannelBitForBit) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    q::QuantizedModel m = quantized(c);
    OnnxExportReport r;
    onnx::ModelProto proto = parse(qdq_onnx_bytes(m, &r));
    EXPECT_EQ(r.int8_layers, static_cast<int64_t>(m.layers.size()));
    EXPECT_EQ(r.float_layers, 0);
    EXPECT_EQ(proto.opset_import(0).version(), 17);
    Graph sim = q::simulation_graph(m);
    for (const q::QuantizedLayer& l : m.layers) {
      const onnx::TensorProto* w = initializer(proto, l.weight_value + "_quantized");
      const onnx::TensorProto* s = initializer(proto, l.weight_value + "_scale");
      ASSERT_TRUE(w && s) << l.node;
      ASSERT_EQ(w->data_type(), onnx::TensorProto::INT8);
      const Tensor& ref = sim.constant(sim.find_value(l.weight_value));
      ASSERT_EQ(static_cast<int64_t>(w->raw_data().size()), ref.size());
      ASSERT_EQ(static_cast<int64_t>(s->raw_data().size()), l.out * 4);
      const auto* codes = reinterpret_cast<const int8_t*>(w->raw_data().data());
      std::vector<float> step(static_cast<size_t>(l.out));
      std::memcpy(step.data(), s->raw_data().data(), step.size() * 4);
      const int64_t per = ref.size() / l.out;
      int64_t nonzero = 0;
      for (int64_t i = 0; i < ref.size(); ++i) {
        EXPECT_EQ(static_cast<float>(codes[i]) * step[static_cast<size_t>(i / per)], ref.data<float>()[i]) << l.node << " " << i;
        EXPECT_GE(codes[i], -127);
        nonzero += codes[i] != 0;
      }
      EXPECT_GT(nonzero, 0) << l.node;
      if (c.format == q::WeightFormat::kInt && c.bits == 4)
        for (int64_t i = 0; i < ref.size(); ++i) EXPECT_LE(std::abs(codes[i]), 7) << "int4 codes times a per-channel step";
      // The bias: int32 at the input scale times the step.
      if (!l.bias_value.empty()) {
        const onnx::TensorProto* b = initializer(proto, l.bias_value + "_quantized");
        ASSERT_TRUE(b) << l.node;
        EXPECT_EQ(b->data_type(), onnx::TensorProto::INT32);
      }
    }
  }
}

TEST(QdqExport, ReadBackItComputesTheSimulation) {
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    q::QuantizedModel m = quantized(c);
    const Tensor& calib = calibration();
    OnnxExportReport r;
    std::string bytes = qdq_onnx_bytes(m, &r);
    EXPECT_EQ(r.quantized_activations, static_cast<int64_t>(m.layers.size()));
    // On the calibration images (min-max: nothing beyond the codes' range) only exact ties could
    // round differently (ONNX: half to even); the outputs agree to float rounding.
    ExportCheck k = check_export(q::simulation_graph(m), bytes, calib);
    EXPECT_EQ(k.values, 16 * 5);
    EXPECT_LE(k.max_abs_diff, 1e-6) << k.differing << " values differ";
    // A batch of another size: the Reshape's batch is written as ONNX's 0 (copy), not a number.
    Tensor three = images(3, 7);
    EXPECT_EQ(check_export(q::simulation_graph(m), bytes, three).values, 3 * 5);
  }
}

TEST(QdqExport, AZeroFilterKeepsItsBias) {
  // Its step is zero, so no int32 at the input scale times the step holds the bias: it stays
  // float (noted), and the file still computes the simulation.
  const Graph g = import_onnx_bytes(cnn_model(true), "pruned.onnx");
  q::QuantizedModel m = quantized(kCases[2], g);
  OnnxExportReport r;
  std::string bytes = qdq_onnx_bytes(m, &r);
  bool noted = false;
  for (const std::string& n : r.notes) noted |= n.find("conv2") != std::string::npos && n.find("float32 bias") != std::string::npos;
  EXPECT_TRUE(noted) << "no note on conv2's bias";
  EXPECT_LE(check_export(q::simulation_graph(m), bytes, calibration()).max_abs_diff, 1e-6);
}

TEST(QdqExport, FloatGraphRoundTripsExactly) {
  OnnxExportReport r;
  std::string bytes = graph_onnx_bytes(cnn(), &r);
  EXPECT_TRUE(r.notes.empty());
  ExportCheck k = check_export(cnn(), bytes, images(4, 9));
  EXPECT_EQ(k.differing, 0);
  EXPECT_GT(k.max_abs_reference, 0.0);
  // The fused clamp and the HardSwish come back as ONNX operators.
  onnx::ModelProto proto = parse(bytes);
  std::map<std::string, int> ops;
  for (const auto& n : proto.graph().node()) ++ops[n.op_type()];
  EXPECT_EQ(ops["Clip"], 1);
  std::set<std::string> read;
  for (const auto& n : proto.graph().node()) read.insert(n.input().begin(), n.input().end());
  for (const auto& t : proto.graph().initializer()) EXPECT_TRUE(read.count(t.name())) << t.name() << " is written but not read";
  EXPECT_EQ(ops["HardSwish"], 1);
  EXPECT_EQ(ops["Conv"], 3);
}

TEST(QdqExport, ResidualTermsFoldOrStayFloatWithANote) {
  const Tensor& calib = calibration();
  q::QuantizeOptions o = options(q::WeightFormat::kTernary, 2, 4);
  o.output_aware = true;
  o.residual = q::parse_residual_budget("all");
  o.residual_fallback = false;
  o.residual_max_terms = 3;
  q::QuantizedModel m = q::quantize_model(cnn(), o, &calib);
  ASSERT_GT(m.max_level(), 0);
  q::set_level(m, m.max_level());
  OnnxExportReport r;
  std::string bytes = qdq_onnx_bytes(m, &r);
  EXPECT_EQ(r.int8_layers + r.float_layers, static_cast<int64_t>(m.layers.size()));
  int64_t multi = 0;
  for (const q::QuantizedLayer& l : m.layers) multi += l.active_terms > 1;
  ASSERT_GT(multi, 0);
  // Each layer of several active terms is either folded exactly (int8) or float with a note.
  int64_t float_notes = 0;
  for (const std::string& n : r.notes) float_notes += n.find("float32 weights") != std::string::npos;
  EXPECT_EQ(float_notes, r.float_layers);
  EXPECT_LE(check_export(q::simulation_graph(m), bytes, calib).max_abs_diff, 1e-6);
}

TEST(QdqExport, DynamicActivationsAreNotedAndStayFloat) {
  const Tensor& calib = calibration();
  q::QuantizeOptions o = options(q::WeightFormat::kInt, 8, 0);
  o.activation_mode = q::ActivationMode::kDynamic;
  q::QuantizedModel m = q::quantize_model(cnn(), o, &calib);
  OnnxExportReport r;
  qdq_onnx_bytes(m, &r);
  EXPECT_EQ(r.quantized_activations, 0);
  ASSERT_FALSE(r.notes.empty());
  EXPECT_NE(r.notes[0].find("dynamic activation scales"), std::string::npos) << r.notes[0];
}

TEST(QdqExport, AnOperatorWithoutAnOnnxFormIsAClearError) {
  B b;
  b.input("x", {-1, 2, 4, 4});
  b.floats("w", {2, 3, 3, 3}, random_floats(54, 5));
  b.node("ConvTranspose", {"x", "w"}, {"y"}, "upsample");
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "up.onnx");
  try {
    graph_onnx_bytes(g);
    ADD_FAILURE() << "ConvTranspose has no exporter yet";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("'upsample'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cannot be written to ONNX"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

// Linear layers on tokens [N, T, K] (MatMul by constant weights, imported as tern's Gemm): ONNX's
// Gemm takes matrices only, so they are written back as MatMul (+ Add of the bias), in float and
// in QDQ form, and compute what tern computes.
TEST(QdqExport, GemmsOnTokensAreWrittenAsMatMul) {
  OnnxBuilder b;
  b.input("x", {-1, 5, 8});
  b.floats("w1", {8, 6}, random_floats(48, 151));
  b.floats("b1", {6}, random_floats(6, 152));
  b.floats("w2", {6, 4}, random_floats(24, 153));
  b.node("MatMul", {"x", "w1"}, {"m1"}, "fc1");
  b.node("Add", {"m1", "b1"}, {"a1"}, "bias1");
  b.node("Relu", {"a1"}, {"r1"}, "relu");
  b.node("MatMul", {"r1", "w2"}, {"y"}, "fc2");
  b.output("y");
  const Graph g = import_onnx_bytes(b.bytes(), "tokens.onnx");
  const Tensor x = Tensor::from_floats({3, 5, 8}, random_floats(120, 154));
  const Tensor calib = Tensor::from_floats({16, 5, 8}, random_floats(640, 155));
  auto count_ops = [](const std::string& bytes) {
    std::map<std::string, int> ops;
    const onnx::ModelProto proto = parse(bytes);
    for (const auto& n : proto.graph().node()) ++ops[n.op_type()];
    return ops;
  };
  std::string fp32 = graph_onnx_bytes(g);
  std::map<std::string, int> ops = count_ops(fp32);
  EXPECT_EQ(ops["Gemm"], 0);
  EXPECT_EQ(ops["MatMul"], 2);
  EXPECT_EQ(check_export(g, fp32, x).differing, 0);
  q::QuantizeOptions o = options(q::WeightFormat::kInt, 8, 0);
  o.calibration = q::CalibrationMethod::kMinMax;
  q::QuantizedModel m = q::quantize_model(g, o, &calib);
  ASSERT_EQ(m.layers.size(), 2u);
  std::string qdq = qdq_onnx_bytes(m);
  EXPECT_EQ(count_ops(qdq)["Gemm"], 0);
  EXPECT_LE(check_export(q::simulation_graph(m), qdq, calib).max_abs_diff, 1e-5);
}

}  // namespace
}  // namespace tern::testing
