// The precision plan: defaults, first/last layers, JSON overrides and their errors.
#include <gtest/gtest.h>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/onnx_import.h"
#include "tern/quant_plan.h"

namespace tern::quant {
namespace {

using tern::testing::OnnxBuilder;

// conv1 -> conv2 -> conv3 -> gemm
Graph four_layers() {
  OnnxBuilder b;
  b.input("x", {-1, 2, 6, 6});
  b.floats("w1", {4, 2, 3, 3}, tern::testing::random_floats(72, 1));
  b.floats("w2", {4, 4, 3, 3}, tern::testing::random_floats(144, 2));
  b.floats("w3", {4, 4, 3, 3}, tern::testing::random_floats(144, 3));
  b.floats("fc", {5, 144}, tern::testing::random_floats(720, 4));
  for (auto [in, w, out, name] : {std::tuple{"x", "w1", "a", "conv1"}, {"a", "w2", "b", "block/conv2"},
                                  {"b", "w3", "c", "block/conv3"}}) {
    auto& n = b.node("Conv", {in, w}, {out}, name);
    OnnxBuilder::attr(n, "pads", std::vector<int64_t>{1, 1, 1, 1});
  }
  auto& f = b.node("Flatten", {"c"}, {"f"}, "flatten");
  OnnxBuilder::attr(f, "axis", int64_t{1});
  auto& g = b.node("Gemm", {"f", "fc"}, {"y"}, "fc");
  OnnxBuilder::attr(g, "transB", int64_t{1});
  b.output("y");
  return import_onnx_bytes(b.bytes(), "four.onnx");
}

TEST(Plan, DefaultsKeepFirstAndLastAtInt8) {
  PlanOptions o;  // ternary FGQ N=4, 8-bit activations
  auto plan = make_plan(four_layers(), o);
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[0].node, "conv1");
  EXPECT_EQ(plan[0].weights.format, WeightFormat::kInt);
  EXPECT_EQ(plan[0].weights.bits, 8);
  EXPECT_EQ(plan[1].weights.format, WeightFormat::kTernary);
  EXPECT_EQ(plan[1].weights.group_size, 4);
  EXPECT_EQ(plan[3].weights.format, WeightFormat::kInt);
  o.first_last_8bit = false;
  EXPECT_EQ(make_plan(four_layers(), o)[0].weights.format, WeightFormat::kTernary);
}

// conv1 -> depthwise 3x3 -> pointwise 1x1 -> gemm: under ternary weights the depthwise layer
// stays int8 (per channel) unless told otherwise, and so under any weights below 8 bits (int4).
TEST(Plan, DepthwiseLayersStayInt8UnderTernaryWeights) {
  OnnxBuilder b;
  b.input("x", {-1, 2, 6, 6});
  b.floats("w1", {4, 2, 3, 3}, tern::testing::random_floats(72, 1));
  b.floats("wd", {4, 1, 3, 3}, tern::testing::random_floats(36, 2));
  b.floats("wp", {4, 4, 1, 1}, tern::testing::random_floats(16, 3));
  b.floats("fc", {5, 144}, tern::testing::random_floats(720, 4));
  auto& c1 = b.node("Conv", {"x", "w1"}, {"a"}, "conv1");
  OnnxBuilder::attr(c1, "pads", std::vector<int64_t>{1, 1, 1, 1});
  auto& dw = b.node("Conv", {"a", "wd"}, {"b"}, "dw");
  OnnxBuilder::attr(dw, "group", int64_t{4});
  OnnxBuilder::attr(dw, "pads", std::vector<int64_t>{1, 1, 1, 1});
  b.node("Conv", {"b", "wp"}, {"c"}, "pw");
  b.node("Flatten", {"c"}, {"f"}, "flatten");
  auto& g = b.node("Gemm", {"f", "fc"}, {"y"}, "fc");
  OnnxBuilder::attr(g, "transB", int64_t{1});
  b.output("y");
  Graph graph = import_onnx_bytes(b.bytes(), "dw.onnx");
  PlanOptions o;
  auto plan = make_plan(graph, o);
  ASSERT_EQ(plan.size(), 4u);
  EXPECT_EQ(plan[1].node, "dw");
  EXPECT_EQ(plan[1].weights.format, WeightFormat::kInt);
  EXPECT_EQ(plan[1].weights.bits, 8);
  EXPECT_EQ(plan[1].weights.group_size, 0);
  EXPECT_EQ(plan[1].reason, "depthwise (int8)");
  EXPECT_EQ(plan[2].weights.format, WeightFormat::kTernary);  // the pointwise layer is not depthwise
  // Off by option or config; a layer entry still wins; int4 weights too; int8 is int8.
  o.depthwise_8bit = false;
  EXPECT_EQ(make_plan(graph, o)[1].weights.format, WeightFormat::kTernary);
  EXPECT_EQ(make_plan(graph, PlanOptions{}, std::string(R"({"depthwise_8bit": false})"))[1].weights.format, WeightFormat::kTernary);
  EXPECT_EQ(make_plan(graph, PlanOptions{}, std::string(R"({"layers": [{"name": "dw", "weights": "ternary"}]})"))[1].weights.format,
            WeightFormat::kTernary);
  PlanOptions int4;
  parse_weight_spec("int4", int4.weights, "test");
  EXPECT_EQ(make_plan(graph, int4)[1].weights.bits, 8);
  EXPECT_EQ(make_plan(graph, int4)[1].reason, "depthwise (int8)");
  EXPECT_EQ(make_plan(graph, int4)[2].weights.bits, 4);
  int4.depthwise_8bit = false;
  EXPECT_EQ(make_plan(graph, int4)[1].weights.bits, 4);
}

TEST(Plan, JsonOverridesByNameAndRegex) {
  std::string config = R"({
    "group_size": 8, "activation_bits": 4, "first_last_8bit": false,
    "layers": [
      {"match": "block/.*", "weights": "int4"},
      {"name": "block/conv3", "weights": "ternary", "method": "twn", "group_size": "channel"}
    ]})";
  auto plan = make_plan(four_layers(), PlanOptions{}, config);
  EXPECT_EQ(plan[0].weights.format, WeightFormat::kTernary);
  EXPECT_EQ(plan[0].weights.group_size, 8);
  EXPECT_EQ(plan[0].activation_bits, 4);
  EXPECT_EQ(plan[1].weights.format, WeightFormat::kInt);
  EXPECT_EQ(plan[1].weights.bits, 4);
  EXPECT_EQ(plan[2].weights.method, TernaryMethod::kTwn);
  EXPECT_EQ(plan[2].weights.group_size, kWholeFilter);
  EXPECT_EQ(plan[2].reason, "config: block/conv3");
}

TEST(Plan, BadConfigsAreClearErrors) {
  Graph g = four_layers();
  auto error_of = [&](const std::string& config) -> std::string {
    try {
      make_plan(g, PlanOptions{}, config, "plan.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  EXPECT_NE(error_of(R"({"layers": [{"name": "conv9", "weights": "int8"}]})").find("no layer is named 'conv9'"),
            std::string::npos);
  EXPECT_NE(error_of(R"({"layers": [{"match": "nothing.*"}]})").find("matches"), std::string::npos);
  EXPECT_NE(error_of(R"({"layers": [{"match": "("}]})").find("regular expression"), std::string::npos);
  EXPECT_NE(error_of(R"({"group_size": 0})").find("group_size"), std::string::npos);
  EXPECT_NE(error_of(R"({"activation_bits": 1})").find("activation_bits"), std::string::npos);
  EXPECT_NE(error_of(R"({"weights": "int9"})").find("int9"), std::string::npos);
  EXPECT_NE(error_of(R"({"method": "magic"})").find("magic"), std::string::npos);
  EXPECT_NE(error_of(R"({"grup_size": 4})").find("unknown key 'grup_size'"), std::string::npos);
  EXPECT_NE(error_of(R"({"group_size": "four"})").find("group"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of(R"({"layers": [{"name": "conv1", "match": "conv1"}]})").find("exactly one"), std::string::npos);
  for (const std::string& e : {error_of(R"({"weights": 3})"), error_of(R"([1, 2])")}) {
    EXPECT_EQ(e.rfind("plan.json", 0), 0u) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  }
}

TEST(Plan, SpecParsers) {
  WeightQuantConfig c;
  parse_weight_spec("int6", c, "x");
  EXPECT_EQ(c.bits, 6);
  EXPECT_THROW(parse_weight_spec("int1", c, "x"), Error);
  EXPECT_EQ(parse_group_size("channel", "x"), kWholeFilter);
  EXPECT_EQ(parse_group_size("64", "x"), 64);
  EXPECT_THROW(parse_group_size("0", "x"), Error);
  EXPECT_THROW(parse_group_size("4x", "x"), Error);
}

}  // namespace
}  // namespace tern::quant
