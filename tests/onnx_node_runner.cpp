#include "onnx_node_runner.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tern/error.h"
#include "tern/executor.h"
#include "tern/onnx_import.h"

namespace tern::testing {

namespace fs = std::filesystem;

std::vector<std::string> list_node_tests() {
  std::vector<std::string> names;
  if (!fs::is_directory(kOnnxNodeTestDir)) return names;
  for (const auto& entry : fs::directory_iterator(kOnnxNodeTestDir))
    if (fs::exists(entry.path() / "model.onnx")) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<std::string> node_test_operators(const std::string& test_dir) {
  std::ifstream in(test_dir + "/model.onnx", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  onnx::ModelProto model;
  std::vector<std::string> ops;
  if (!model.ParseFromString(ss.str())) return ops;
  for (const auto& node : model.graph().node()) ops.push_back(node.op_type());
  return ops;
}

NodeTestResult run_node_test(const std::string& test_dir, double rtol, double atol) {
  Graph graph;
  try {
    graph = import_onnx(test_dir + "/model.onnx");
  } catch (const Error& e) {
    return {NodeTestStatus::kUnsupported, e.what()};
  }
  try {
    Executor executor(graph);
    int sets = 0;
    for (int set = 0;; ++set) {
      fs::path dir = fs::path(test_dir) / ("test_data_set_" + std::to_string(set));
      if (!fs::is_directory(dir)) break;
      ++sets;
      std::vector<Tensor> inputs, expected;
      for (size_t i = 0; i < graph.inputs.size(); ++i)
        inputs.push_back(read_onnx_tensor((dir / ("input_" + std::to_string(i) + ".pb")).string()));
      for (size_t i = 0;; ++i) {
        fs::path p = dir / ("output_" + std::to_string(i) + ".pb");
        if (!fs::exists(p)) break;
        expected.push_back(read_onnx_tensor(p.string()));
      }
      std::vector<Tensor> got = executor.run(inputs);
      if (got.size() != expected.size())
        return {NodeTestStatus::kFail, "output count " + std::to_string(got.size()) + " != " + std::to_string(expected.size())};
      for (size_t o = 0; o < got.size(); ++o) {
        const Tensor& g = got[o];
        const Tensor& w = expected[o];
        if (g.shape() != w.shape())
          return {NodeTestStatus::kFail, "output " + std::to_string(o) + " shape " + to_string(g.shape()) + " != " +
                                             to_string(w.shape())};
        if (g.dtype() != w.dtype())
          return {NodeTestStatus::kFail, "output " + std::to_string(o) + " type " + to_string(g.dtype()) + " != " +
                                             to_string(w.dtype())};
        for (int64_t i = 0; i < g.size(); ++i) {
          double a, b;
          switch (g.dtype()) {
            case DataType::kFloat32: a = g.data<float>()[i], b = w.data<float>()[i]; break;
            case DataType::kInt64: a = static_cast<double>(g.data<int64_t>()[i]), b = static_cast<double>(w.data<int64_t>()[i]); break;
            case DataType::kInt32: a = g.data<int32_t>()[i], b = w.data<int32_t>()[i]; break;
            case DataType::kInt8: a = g.data<int8_t>()[i], b = w.data<int8_t>()[i]; break;
            default: a = g.data<uint8_t>()[i], b = w.data<uint8_t>()[i]; break;
          }
          bool both_nan = std::isnan(a) && std::isnan(b);
          if (!both_nan && !(std::fabs(a - b) <= rtol * std::fabs(b) + atol)) {
            std::ostringstream m;
            m << "set " << set << " output " << o << " element " << i << ": got " << a << ", want " << b;
            return {NodeTestStatus::kFail, m.str()};
          }
        }
      }
    }
    if (sets == 0) return {NodeTestStatus::kUnsupported, "no test data sets"};
    return {NodeTestStatus::kPass, ""};
  } catch (const Error& e) {
    return {NodeTestStatus::kFail, e.what()};
  }
}

}  // namespace tern::testing
