// The bundled models: each imports, its card is complete, and tern's FP32 top-1 on the full
// Fashion-MNIST test set agrees with the PyTorch figure in the card within 0.05 pp.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tern/data.h"
#include "tern/evaluate.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> bundled_models() {
  std::vector<std::string> names;
  std::error_code ec;  // a missing folder lists nothing; ResNet20MeetsTheAccuracyTarget then fails
  for (const auto& e : fs::directory_iterator(std::string(TERN_SOURCE_DIR) + "/models", ec))
    if (e.path().extension() == ".onnx") names.push_back(e.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

class BundledModel : public ::testing::TestWithParam<std::string> {};

TEST_P(BundledModel, TopOneMatchesModelCard) {
  std::string base = std::string(TERN_SOURCE_DIR) + "/models/" + GetParam();
  std::ifstream card_file(base + ".json");
  ASSERT_TRUE(card_file.good()) << "no model card " << base << ".json";
  nlohmann::json card = nlohmann::json::parse(card_file);
  for (const char* key : {"architecture", "epochs", "seed", "input", "pytorch_test_top1", "training_seconds"})
    EXPECT_TRUE(card.contains(key)) << "card lacks " << key;
  EXPECT_LE(fs::file_size(base + ".onnx"), 8u << 20) << "bundled models stay small";

  Graph graph = import_onnx(base + ".onnx");
  EXPECT_EQ(graph.opset, 13);
  Preprocess norm = preprocess_from_metadata(graph);
  EXPECT_EQ(norm.mean.size(), 1u);
  Executor executor(std::move(graph));
  EvalResult r = evaluate_classifier(executor, load_idx_dataset("fashion-mnist", "test"), norm, {.batch = 250});
  EXPECT_EQ(r.images, 10000);
  double card_top1 = card["pytorch_test_top1"].get<double>();
  EXPECT_NEAR(r.top1, card_top1, 0.05) << GetParam() << ": tern " << r.top1 << " vs PyTorch " << card_top1;
}

INSTANTIATE_TEST_SUITE_P(Models, BundledModel, ::testing::ValuesIn(bundled_models()),
                         [](const auto& info) { return info.param; });

// The accuracy target of the bundled ResNet-20, measured by tern itself on the 10,000 test images
// (not read from the card).
TEST(BundledModels, ResNet20MeetsTheAccuracyTarget) {
  const std::string path = std::string(TERN_SOURCE_DIR) + "/models/resnet20.onnx";
  ASSERT_TRUE(fs::exists(path)) << path;
  Graph graph = import_onnx(path);
  Preprocess norm = preprocess_from_metadata(graph);
  Executor executor(std::move(graph));
  EvalResult r = evaluate_classifier(executor, load_idx_dataset("fashion-mnist", "test"), norm, {.batch = 250});
  ASSERT_EQ(r.images, 10000);
  EXPECT_GE(r.top1, 93.0);
}

}  // namespace
}  // namespace tern::testing
