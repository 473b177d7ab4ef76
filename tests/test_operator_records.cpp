// The operator table (src/ops/): one complete record per OpType, and what the stages built on it
// promise: every unsupported operator named at once, attributes that survive a .tern round trip.
#include <gtest/gtest.h>

#include <set>

#include "onnx_builder.h"
#include "ops/op.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"
#include "temp_dir.h"

namespace tern::testing {
namespace {

using B = OnnxBuilder;

std::vector<OpType> all_ops() {
  std::vector<OpType> ops;
  for (int i = 0; to_string(static_cast<OpType>(i)) != "?"; ++i) ops.push_back(static_cast<OpType>(i));
  return ops;
}

TEST(OperatorRecords, EveryOperatorHasOneCompleteRecord) {
  std::vector<OpType> ops = all_ops();
  ASSERT_GE(ops.size(), 38u);
  std::set<std::string> onnx_names;
  for (OpType op : ops) {
    const ops::OpRecord& r = ops::record(op);
    SCOPED_TRACE(to_string(op));
    EXPECT_EQ(r.op, op);
    EXPECT_EQ(std::string(r.name), to_string(op));
    for (std::string_view n : r.onnx_names) {
      EXPECT_TRUE(onnx_names.insert(std::string(n)).second) << n << " imported by two records";
      EXPECT_EQ(ops::onnx_record(n), &r) << n;
      EXPECT_NE(r.import, nullptr);
    }
    if (op == OpType::kConstant) continue;  // imported as a value, never a node
    EXPECT_NE(r.shapes, nullptr);
    EXPECT_NE(r.run, nullptr);
    EXPECT_NE(r.non_negative, nullptr);
    // An attribute codec reads back what it writes.
    if (r.attrs.kind) {
      EXPECT_NE(r.attrs.to_json, nullptr);
      EXPECT_NE(r.attrs.from_json, nullptr);
    }
  }
  EXPECT_EQ(ops::onnx_record("NoSuchOperator"), nullptr);
  const auto& supported = supported_onnx_operators();
  EXPECT_EQ(std::set<std::string>(supported.begin(), supported.end()), onnx_names);
  EXPECT_TRUE(onnx_names.count("HardSwish") && onnx_names.count("Dropout"));
}

TEST(OperatorRecords, EveryUnsupportedOperatorIsListedAtOnce) {
  B b;
  b.input("x", {1, 3, 8, 8});
  b.node("Relu", {"x"}, {"r"});
  b.node("NoSuchResize", {"r"}, {"a"}, "resize_a");
  b.node("NoSuchResize", {"a"}, {"b"}, "resize_b");
  b.node("NoSuchTranspose", {"b"}, {"c"}, "deconv");
  auto& custom = b.node("FusedThing", {"c"}, {"y"}, "fused");
  custom.set_domain("com.example");
  b.output("y");
  try {
    import_onnx_bytes(b.bytes(), "model.onnx");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_EQ(m, "model.onnx: unsupported operators: NoSuchResize (2 nodes, first 'resize_a'), "
                 "NoSuchTranspose (1 node: 'deconv'), com.example.FusedThing (1 node: 'fused')");
  }
}

// Attributes of every kind the bundled and exporter-style graphs carry survive save and load:
// the JSON each record writes is the JSON it reads.
TEST(OperatorRecords, AttributesRoundTripThroughTernFiles) {
  B b(13);
  b.input("x", {-1, 3, 8, 8});
  b.floats("w", {4, 3, 3, 3}, random_floats(108, 1));
  b.floats("g", {4}, {1, 2, 3, 4});
  b.floats("be", {4}, {0, 1, 0, 1});
  b.floats("m", {4}, {0, 0, 0, 0});
  b.floats("v", {4}, {1, 1, 1, 1});
  b.ints("axes", {2}, {2, 3});
  auto& conv = b.node("Conv", {"x", "w"}, {"c"});
  B::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("BatchNormalization", {"c", "g", "be", "m", "v"}, {"bn"});
  auto& leaky = b.node("LeakyRelu", {"bn"}, {"l"});
  B::attr(leaky, "alpha", 0.25f);
  b.node("HardSwish", {"l"}, {"hs"});
  auto& pool = b.node("MaxPool", {"hs"}, {"p"});
  B::attr(pool, "kernel_shape", std::vector<int64_t>{2, 2});
  B::attr(pool, "strides", std::vector<int64_t>{2, 2});
  auto& avg = b.node("AveragePool", {"p"}, {"ap"});
  B::attr(avg, "kernel_shape", std::vector<int64_t>{3, 3});
  B::attr(avg, "pads", std::vector<int64_t>{1, 1, 1, 1});
  B::attr(avg, "count_include_pad", int64_t{1});
  auto& tr = b.node("Transpose", {"ap"}, {"t"});
  B::attr(tr, "perm", std::vector<int64_t>{0, 2, 3, 1});
  auto& sm = b.node("Softmax", {"t"}, {"s"});
  B::attr(sm, "axis", int64_t{-1});
  b.node("Unsqueeze", {"s", "axes"}, {"u"});
  auto& rm = b.node("ReduceMean", {"u"}, {"y"});
  B::attr(rm, "axes", std::vector<int64_t>{2, 3});
  B::attr(rm, "keepdims", int64_t{0});
  b.output("y");
  Graph g = import_onnx_bytes(b.bytes(), "model.onnx", {.optimize = false, .input_shapes = {}});
  TempDir dir;
  std::string path = dir.file("g.tern");
  save_graph(path, g, "{}");
  Graph back = load_graph(path);
  ASSERT_EQ(back.nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) EXPECT_EQ(back.nodes[i].op, g.nodes[i].op);
  const auto& a = back.nodes[2].attr<LeakyReluAttrs>();
  EXPECT_EQ(a.alpha, 0.25f);
  EXPECT_TRUE(back.nodes[3].attr<AffineAttrs>().multiply_input);
  EXPECT_TRUE(back.nodes[5].attr<PoolAttrs>().count_include_pad);
  EXPECT_EQ(back.nodes[6].attr<TransposeAttrs>().perm, (std::vector<int64_t>{0, 2, 3, 1}));
  EXPECT_FALSE(back.nodes[9].attr<ReduceAttrs>().keepdims);
  // Infinite clamps are stored as null and read back as infinite.
  EXPECT_TRUE(std::isinf(back.nodes[0].attr<ConvAttrs>().clamp_hi));
  Tensor x = Tensor::from_floats({2, 3, 8, 8}, random_floats(384, 2));
  Tensor y0 = Executor(g).run(x), y1 = Executor(back).run(x);
  ASSERT_EQ(y0.shape(), y1.shape());
  for (int64_t i = 0; i < y0.size(); ++i) EXPECT_EQ(y0.data<float>()[i], y1.data<float>()[i]);
}

TEST(OperatorRecords, AttributesOfTheWrongKindAreRefused) {
  Node n;
  n.name = "c";
  n.op = OpType::kConv;
  n.attrs = PoolAttrs{};
  try {
    (void)n.attr<ConvAttrs>();
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("node 'c' (Conv)"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(n.has_attrs<PoolAttrs>());
  EXPECT_FALSE(n.has_attrs<ConvAttrs>());
}

}  // namespace
}  // namespace tern::testing
