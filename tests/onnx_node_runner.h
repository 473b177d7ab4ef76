// Runs one of the ONNX project's node tests (model.onnx + test_data_set_*/input_*.pb, output_*.pb)
// on tern's FP32 executor. Shared by the GoogleTest suite and the listing tool.
#pragma once

#include <string>
#include <vector>

namespace tern::testing {

enum class NodeTestStatus { kPass, kFail, kUnsupported };

struct NodeTestResult {
  NodeTestStatus status;
  std::string message;
};

inline constexpr const char* kOnnxNodeTestDir = "/usr/share/libonnx-testdata/data/node";

// Op types used by the test's model (read without importing).
std::vector<std::string> node_test_operators(const std::string& test_dir);

// Imports and runs every data set of the test; compares with |got - want| <= rtol * |want| + atol.
NodeTestResult run_node_test(const std::string& test_dir, double rtol = 1e-4, double atol = 1e-6);

std::vector<std::string> list_node_tests();  // sorted directory names

}  // namespace tern::testing
