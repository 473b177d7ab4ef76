// Small graphs that reproduce what real exporters emit (tests/data/idioms/, written by
// scripts/make_idiom_models.py, expected outputs from ONNX Runtime by scripts/idiom_expected.js):
// Paddle's int32 shape arithmetic, tf2onnx's NHWC transposes with SAME padding, Resize sizes from a
// Shape sub-graph, a DBNet ConvTranspose head, attention with Shape-built reshapes, HardSwish and
// HardSigmoid squeeze-excitation, a CRNN head (bidirectional LSTM, GRU, RNN). Each runs from one file at two input sizes (dynamic dims), and
// again with the dims fixed by --input-shape's path; both match ONNX Runtime.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>

#include "temp_dir.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/integer_executor.h"
#include "tern/quantized_model.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> idiom_names() {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(std::string(TERN_TEST_DATA_DIR) + "/idioms"))
    if (e.is_directory()) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

void expect_close(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(got.shape(), want.shape()) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  if (want.dtype() != DataType::kFloat32) {
    EXPECT_EQ(std::memcmp(got.raw(), want.raw(), want.bytes()), 0) << what;
    return;
  }
  float scale = 1e-6f;
  for (float v : want.floats()) scale = std::max(scale, std::fabs(v));
  float worst = 0;
  for (int64_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got.data<float>()[i] - want.data<float>()[i]));
  EXPECT_LE(worst / scale, 1e-5f) << what << ": max error " << worst << " of " << scale;
}

class ExporterIdiom : public ::testing::TestWithParam<std::string> {};

TEST_P(ExporterIdiom, MatchesOnnxRuntimeAtEverySize) {
  std::string dir = std::string(TERN_TEST_DATA_DIR) + "/idioms/" + GetParam();
  Graph g = import_onnx(dir + "/model.onnx");
  Executor dynamic_dims(g);
  int sizes = 0;
  for (int k = 0; fs::exists(dir + "/input_" + std::to_string(k) + ".npy"); ++k, ++sizes) {
    Tensor x = read_npy(dir + "/input_" + std::to_string(k) + ".npy");
    Tensor want = read_npy(dir + "/output_" + std::to_string(k) + ".npy");
    expect_close(dynamic_dims.run(x), want, GetParam() + " input " + std::to_string(k));
    // The same model with every dim fixed to this input's (shape sub-graphs fold at import).
    ImportOptions fixed;
    fixed.input_shapes = {{"", x.shape()}};
    Executor static_dims(import_onnx(dir + "/model.onnx", fixed));
    expect_close(static_dims.run(x), want, GetParam() + " input " + std::to_string(k) + " with fixed dims");
  }
  EXPECT_EQ(sizes, 2);
}

// Saved as .tern and loaded back: the same shapes (what import knew of computed shapes is kept)
// and the same outputs.
TEST_P(ExporterIdiom, SurvivesATernRoundTrip) {
  std::string dir = std::string(TERN_TEST_DATA_DIR) + "/idioms/" + GetParam();
  Graph g = import_onnx(dir + "/model.onnx");
  TempDir tmp;
  save_graph(tmp.file("g.tern"), g, "{}");
  Graph back = load_graph(tmp.file("g.tern"));
  ASSERT_EQ(back.values.size(), g.values.size());
  for (size_t i = 0; i < g.values.size(); ++i) {
    EXPECT_EQ(back.values[i].shape_known, g.values[i].shape_known) << g.values[i].name;
    if (g.values[i].shape_known) {
      EXPECT_EQ(back.values[i].shape, g.values[i].shape) << g.values[i].name;
    }
  }
  Tensor x = read_npy(dir + "/input_1.npy");
  expect_close(Executor(back).run(x), read_npy(dir + "/output_1.npy"), GetParam() + " loaded back");
}

// Quantized (calibrated on the first input's images) and run on the integer engine: integer where
// it can, float where it cannot (the engine says which), with the simulation's outputs.
TEST_P(ExporterIdiom, IntegerEngineMatchesTheSimulation) {
  std::string dir = std::string(TERN_TEST_DATA_DIR) + "/idioms/" + GetParam();
  Tensor x = read_npy(dir + "/input_0.npy");
  ImportOptions fixed;
  fixed.input_shapes = {{"", x.shape()}};
  Graph g = import_onnx(dir + "/model.onnx", fixed);
  quant::QuantizeOptions options;
  options.input_non_negative = false;  // the inputs are standard normal
  quant::QuantizedModel m;
  try {
    m = quant::quantize_model(g, options, &x);
  } catch (const Error& e) {  // no Conv/Gemm with constant weights (attention's 3-D MatMuls)
    EXPECT_NE(std::string(e.what()).find("no"), std::string::npos) << e.what();
    return;
  }
  Tensor want = Executor(quant::simulation_graph(m)).run(x);
  IntegerExecutor engine(std::move(m));
  EXPECT_FALSE(engine.mode().empty());
  for (const IntegerLayerInfo& l : engine.layers()) EXPECT_FALSE(l.kernel.empty()) << l.node;
  Tensor got = engine.run(x);
  ASSERT_EQ(got.shape(), want.shape());
  float scale = 1e-6f, worst = 0;
  for (float v : want.floats()) scale = std::max(scale, std::fabs(v));
  for (int64_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(got.data<float>()[i] - want.data<float>()[i]));
  EXPECT_LE(worst / scale, 1e-3f) << GetParam() << " (" << engine.mode() << "): max error " << worst << " of " << scale;
}

INSTANTIATE_TEST_SUITE_P(Idioms, ExporterIdiom, ::testing::ValuesIn(idiom_names()),
                         [](const auto& info) { return info.param; });

TEST(ExporterIdioms, AllSevenArePresent) { EXPECT_EQ(idiom_names().size(), 7u); }

// A model input's shape from --input-shape: parsed, applied, checked against the model.
TEST(InputShape, ParsesNamesSymbolsAndSeparators) {
  InputShape a = parse_input_shape("x=Nx3x48x320");
  EXPECT_EQ(a.name, "x");
  EXPECT_EQ(a.dims, (Shape{kDynamicDim, 3, 48, 320}));
  InputShape b = parse_input_shape("1,3,?,224");
  EXPECT_EQ(b.name, "");
  EXPECT_EQ(b.dims, (Shape{1, 3, kDynamicDim, 224}));
  for (const char* bad : {"x=", "=1x2", "1xx2", "1x0x3", "1x-2", "x=1x3xfoo-1", "99999999999999x1"})
    EXPECT_THROW(parse_input_shape(bad), Error) << bad;
}

TEST(InputShape, FixesDynamicDimsAndRefusesWhatDoesNotFit) {
  std::string path = std::string(TERN_TEST_DATA_DIR) + "/idioms/tf_nhwc_conv/model.onnx";
  Graph g = import_onnx(path);
  EXPECT_EQ(g.value(g.outputs[0]).shape, (Shape{kDynamicDim, kDynamicDim, kDynamicDim, 8}));
  set_input_shapes(g, {{"x", {kDynamicDim, 9, 7, 3}}});
  EXPECT_EQ(g.value(g.outputs[0]).shape, (Shape{kDynamicDim, 5, 4, 8}));  // SAME, stride 2: ceil(9/2), ceil(7/2)
  auto message = [&](const std::vector<InputShape>& shapes) {
    Graph h = import_onnx(path);
    try {
      set_input_shapes(h, shapes);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message({{"y", {1, 9, 7, 3}}}).find("no input named 'y' (inputs: x)"), std::string::npos);
  EXPECT_NE(message({{"x", {1, 9, 7}}}).find("has 4 dimensions"), std::string::npos);
  EXPECT_NE(message({{"x", {1, 9, 7, 4}}}).find("dimension 3 is 3 in the model, not 4"), std::string::npos);
  EXPECT_NE(message({{"", {1, 9, 7, 3}}, {"x", {1, 9, 7, 3}}}).find("given two shapes"), std::string::npos);
}

}  // namespace
}  // namespace tern::testing
