// Fine-tuned ONNX models: the source file's own protobuf with some float32 initializers given new
// values, so everything tern's IR does not keep (names, attributes, metadata, opsets) survives.
#include <onnx/onnx_pb.h>

#include <bit>
#include <cstring>
#include <set>
#include <span>

#include "core/file_io.h"
#include "tern/error.h"
#include "tern/onnx_import.h"

namespace tern {

namespace {

static_assert(std::endian::native == std::endian::little, "ONNX raw_data is little-endian; tern copies it as is");

// Replaces the initializer's values with `value` as little-endian raw_data, keeping its stored
// dims. A 2-D value whose dims are the stored dims swapped is in tern's [out][in] Gemm layout and
// is transposed back.
void store_floats(onnx::TensorProto& initializer, const Tensor& value, const std::string& who) {
  check(value.dtype() == DataType::kFloat32, who + ": the new value is " + to_string(value.dtype()) + ", not float32");
  check(initializer.data_type() == onnx::TensorProto::FLOAT,
        who + ": not a float32 tensor (ONNX data type " + std::to_string(initializer.data_type()) + ")");
  check(initializer.data_location() != onnx::TensorProto::EXTERNAL, who + ": external tensor data is not supported");
  check(!initializer.has_segment(), who + ": segmented tensors are not supported");
  Shape stored(initializer.dims().begin(), initializer.dims().end());
  for (int64_t d : stored) check(d >= 0, who + ": negative dimension in tensor");
  check(element_count(stored) == value.size(), who + ": holds " + std::to_string(element_count(stored)) +
                                                   " values " + to_string(stored) + ", the new value " +
                                                   std::to_string(value.size()) + " " + to_string(value.shape()));

  std::string raw(value.bytes(), '\0');
  bool transposed = stored.size() == 2 && value.rank() == 2 && stored != value.shape() &&
                    stored[0] == value.dim(1) && stored[1] == value.dim(0);
  if (transposed) {
    int64_t rows = value.dim(0), cols = value.dim(1);
    float* out = reinterpret_cast<float*>(raw.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = value.data<float>()[r * cols + c];
  } else {
    std::memcpy(raw.data(), value.raw(), value.bytes());
  }
  initializer.clear_float_data();  // raw_data and float_data must not both hold values
  initializer.set_raw_data(std::move(raw));
}

void set_metadata(onnx::ModelProto& model, const std::string& key, const std::string& value) {
  bool found = false;
  for (auto& prop : *model.mutable_metadata_props())
    if (prop.key() == key) {
      prop.set_value(value);
      found = true;
    }
  if (found) return;
  auto* prop = model.add_metadata_props();
  prop->set_key(key);
  prop->set_value(value);
}

}  // namespace

void write_onnx_with_initializers(const std::string& source_path, const std::string& out_path,
                                  const std::map<std::string, Tensor>& replacements,
                                  const std::map<std::string, std::string>& metadata) {
  // The same checks as import_onnx_bytes, so both reject the same files with the same messages.
  std::string bytes = read_whole_file(source_path);
  onnx::ModelProto model;
  check(!bytes.empty(), source_path + ": empty file, not an ONNX model");
  check(bytes.size() < (size_t{1} << 31), source_path + ": larger than 2 GiB (external data is not supported)");
  check(model.ParseFromArray(bytes.data(), static_cast<int>(bytes.size())),
        source_path + ": not an ONNX model, or truncated (protobuf parse failed)");
  check(model.has_graph(), source_path + ": not an ONNX model (no graph)");

  std::set<std::string> initializers;
  for (const auto& init : model.graph().initializer()) initializers.insert(init.name());
  for (const auto& [name, value] : replacements)
    check(initializers.count(name) != 0, source_path + ": '" + name + "' is not an initializer of the main graph");
  for (onnx::TensorProto& init : *model.mutable_graph()->mutable_initializer()) {
    auto it = replacements.find(init.name());
    if (it != replacements.end()) store_floats(init, it->second, source_path + ": initializer '" + init.name() + "'");
  }
  for (const auto& [key, value] : metadata) set_metadata(model, key, value);

  std::string out;
  check(model.SerializeToString(&out), out_path + ": cannot serialize the model (larger than 2 GiB?)");
  write_file_atomically(out_path, {std::span<const char>(out.data(), out.size())});
}

}  // namespace tern
