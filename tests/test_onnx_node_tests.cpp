// The ONNX project's own operator tests, run on tern's FP32 executor. The list of tests that must
// pass is tests/data/onnx_node_tests.txt; every test whose operators tern supports must be either
// in it or in onnx_node_tests_skipped.txt with a reason, so a new operator cannot go untested.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "onnx_node_runner.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

std::vector<std::string> read_list(const std::string& file) {
  std::ifstream in(std::string(TERN_TEST_DATA_DIR) + "/" + file);
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    names.push_back(line.substr(0, line.find(' ')));
  }
  return names;
}

class OnnxNodeTest : public ::testing::TestWithParam<std::string> {};

TEST_P(OnnxNodeTest, MatchesReferenceOutputs) {
  std::string dir = std::string(kOnnxNodeTestDir) + "/" + GetParam();
  ASSERT_TRUE(std::filesystem::exists(dir + "/model.onnx")) << dir << " missing: install libonnx-testdata";
  NodeTestResult r = run_node_test(dir);
  EXPECT_EQ(r.status, NodeTestStatus::kPass) << r.message;
}

INSTANTIATE_TEST_SUITE_P(Node, OnnxNodeTest, ::testing::ValuesIn(read_list("onnx_node_tests.txt")),
                         [](const auto& info) { return info.param; });

TEST(OnnxNodeTestCoverage, EverySupportedOperatorTestIsListed) {
  std::vector<std::string> all = list_node_tests();
  ASSERT_GT(all.size(), 500u) << "libonnx-testdata not installed?";
  std::vector<std::string> pass = read_list("onnx_node_tests.txt"), skip = read_list("onnx_node_tests_skipped.txt");
  ASSERT_GT(pass.size(), 150u);
  std::set<std::string> listed(pass.begin(), pass.end());
  listed.insert(skip.begin(), skip.end());
  const auto& supported = supported_onnx_operators();
  std::set<std::string> ops(supported.begin(), supported.end());
  for (const std::string& name : all) {
    bool all_supported = true;
    for (const auto& op : node_test_operators(std::string(kOnnxNodeTestDir) + "/" + name)) all_supported &= ops.count(op) != 0;
    if (all_supported) {
      EXPECT_TRUE(listed.count(name)) << name << " uses only supported operators but is not listed";
    }
  }
}

}  // namespace
}  // namespace tern::testing
