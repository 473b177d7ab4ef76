// Prints the status of every ONNX node test whose operators tern supports: how
// tests/data/onnx_node_tests.txt is regenerated (see the comment at its top).
#include <cstdio>
#include <set>

#include "onnx_node_runner.h"
#include "tern/onnx_import.h"

int main() {
  using namespace tern::testing;
  const auto& supported = tern::supported_onnx_operators();
  std::set<std::string> ops(supported.begin(), supported.end());
  for (const std::string& name : list_node_tests()) {
    std::string dir = std::string(kOnnxNodeTestDir) + "/" + name;
    bool all_supported = true;
    for (const auto& op : node_test_operators(dir)) all_supported &= ops.count(op) != 0;
    if (!all_supported) continue;
    NodeTestResult r = run_node_test(dir);
    const char* status = r.status == NodeTestStatus::kPass ? "PASS" : r.status == NodeTestStatus::kFail ? "FAIL" : "SKIP";
    std::printf("%s %s%s%s\n", status, name.c_str(), r.message.empty() ? "" : "  # ", r.message.c_str());
  }
  return 0;
}
