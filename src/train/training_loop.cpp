#include "train/training_loop.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <numeric>

#include "format/graph_json.h"
#include "tern/error.h"
#include "tern/tern_file.h"
#include "train/fake_quant.h"

namespace tern::train {

using nlohmann::json;

void Fingerprint::add(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
}

void Fingerprint::add(const torch::Tensor& t) {
  torch::Tensor c = t.contiguous();
  add(c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
}

std::string Fingerprint::hex() const {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

ProgressBar::ProgressBar(bool enabled)
    : enabled_(enabled), tty_(isatty(STDERR_FILENO)), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::step(int epoch, int epochs, int64_t pos, int64_t steps, double loss, double accuracy, int64_t batch,
                       int64_t left) {
  ++steps_run_;
  const bool done = pos == steps || left == 0;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  int64_t tenth = steps >= 10 ? steps / 10 : 1;
  bool due = tty_ ? done || std::chrono::duration<double>(now - last_).count() > 0.25 : done || (pos % tenth == 0);
  if (!due) return;
  last_ = now;
  constexpr int kWidth = 24;
  int filled = static_cast<int>(kWidth * pos / std::max<int64_t>(1, steps));
  std::string bar(static_cast<size_t>(filled), '#');
  bar.resize(kWidth, '.');
  const double per_step = std::chrono::duration<double>(now - start_).count() / static_cast<double>(steps_run_);
  const double images_per_s = static_cast<double>(batch) / per_step;
  int eta = static_cast<int>(std::lround(per_step * static_cast<double>(left)));
  std::fprintf(stderr, "%sepoch %d/%d [%s] %lld/%lld  loss %.4f  acc %.2f%%  %.0f img/s  ETA %d:%02d%s",
               tty_ ? "\r" : "", epoch, epochs, bar.c_str(), static_cast<long long>(pos), static_cast<long long>(steps),
               loss, accuracy, images_per_s, eta / 60, eta % 60, tty_ && !done ? "" : "\n");
  std::fflush(stderr);
}

TrainingData load_training_data(const Dataset& data, int64_t count, const Preprocess& norm, const Shape& input_shape) {
  TrainingData d;
  d.images = to_torch(make_batch(data, 0, count, norm, input_shape));
  d.labels.assign(data.labels.begin(), data.labels.begin() + count);
  for (size_t c = 0; c < std::max(norm.mean.size(), norm.std.size()); ++c)
    d.pad_value.push_back(static_cast<float>((0.0 - norm.mean[std::min(c, norm.mean.size() - 1)]) /
                                             norm.std[std::min(c, norm.std.size() - 1)]));
  return d;
}

torch::Tensor make_training_batch(const TrainingData& d, const std::vector<int64_t>& indices, bool augment,
                                  std::mt19937_64& rng) {
  std::vector<int64_t> dims(d.images.sizes().begin(), d.images.sizes().end());
  dims[0] = static_cast<int64_t>(indices.size());
  torch::Tensor out = torch::empty(dims, torch::kFloat32);
  const int64_t per_image = d.images.numel() / std::max<int64_t>(1, d.images.size(0));
  const float* src = d.images.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  const bool spatial = augment && dims.size() == 4 && dims[2] >= 8 && dims[3] >= 8;
  for (size_t b = 0; b < indices.size(); ++b) {
    const float* in = src + indices[b] * per_image;
    float* o = dst + static_cast<int64_t>(b) * per_image;
    if (!spatial) {
      std::memcpy(o, in, static_cast<size_t>(per_image) * sizeof(float));
      continue;
    }
    const int64_t C = dims[1], H = dims[2], W = dims[3];
    const int64_t dy = static_cast<int64_t>(rng() % 5) - 2, dx = static_cast<int64_t>(rng() % 5) - 2;
    const bool flip = rng() & 1;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t y = 0; y < H; ++y)
        for (int64_t x = 0; x < W; ++x) {
          int64_t sy = y + dy, sx = (flip ? W - 1 - x : x) + dx;
          o[(c * H + y) * W + x] = sy >= 0 && sy < H && sx >= 0 && sx < W
                                       ? in[(c * H + sy) * W + sx]
                                       : d.pad_value[std::min<size_t>(static_cast<size_t>(c), d.pad_value.size() - 1)];
        }
  }
  return out;
}

torch::Tensor batch_labels(const TrainingData& d, const std::vector<int64_t>& indices) {
  std::vector<int64_t> values;
  values.reserve(indices.size());
  for (int64_t i : indices) values.push_back(d.labels[static_cast<size_t>(i)]);
  return torch::tensor(values, torch::kInt64);
}

std::vector<int64_t> epoch_order(uint64_t seed, int64_t epoch, int64_t n) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1);
  for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng() % i]);  // Fisher-Yates
  return order;
}

std::mt19937_64 augmentation_rng(uint64_t seed, int64_t step) {
  return std::mt19937_64(seed ^ (0xD1B54A32D192ED03ull * static_cast<uint64_t>(step + 1)));
}

namespace {

const char* dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return "float32";
    case torch::kFloat64: return "float64";
    case torch::kUInt8: return "uint8";
    default: throw Error("checkpoint: unsupported tensor type");
  }
}

}  // namespace

void save_checkpoint(const std::string& path, const std::string& kind, int version, const std::string& fingerprint,
                     json state, const std::vector<CheckpointTensor>& tensors) {
  std::vector<std::byte> payload;
  json table = json::array();
  for (const CheckpointTensor& t : tensors) {
    torch::Tensor c = t.tensor.detach().contiguous();
    size_t bytes = static_cast<size_t>(c.numel()) * c.element_size();
    size_t offset = payload.size();
    payload.resize(offset + bytes);
    if (bytes) std::memcpy(payload.data() + offset, c.data_ptr(), bytes);
    table.push_back({{"name", t.name}, {"role", t.role}, {"offset", offset}, {"count", c.numel()},
                     {"dtype", dtype_name(c.scalar_type())}});
  }
  state["kind"] = kind;
  state["version"] = version;
  state["fingerprint"] = fingerprint;
  state["tensors"] = table;
  write_tern_file(path, {{SectionType::kCheckpoint, format::to_bytes(state.dump())}, {SectionType::kTensors, std::move(payload)}});
}

json load_checkpoint(const std::string& path, const std::string& kind, int version, const std::string& fingerprint,
                     std::vector<CheckpointTensor>& tensors) {
  TernFile file = TernFile::open(path);  // checks magic, sizes, checksums: a corrupt file stops here
  check(file.has_section(SectionType::kCheckpoint), path + ": not a training checkpoint (no checkpoint section)");
  json j = format::parse_json_section(file.section(SectionType::kCheckpoint), "checkpoint");
  std::span<const std::byte> payload = file.section(SectionType::kTensors);
  try {
    check(j.at("kind") == kind, path + ": not a " + kind);
    check(j.at("version").get<int>() == version, path + ": unsupported checkpoint version");
    check(j.at("fingerprint").get<std::string>() == fingerprint,
          path + ": checkpoint of a different model, data set or options (resume with the options it was made with)");
    const json& table = j.at("tensors");
    check(table.is_array() && table.size() == tensors.size(), path + ": tensor table does not match the model");
    for (size_t i = 0; i < table.size(); ++i) {
      const json& t = table[i];
      CheckpointTensor& into = tensors[i];
      check(t.at("name").get<std::string>() == into.name && t.at("role").get<std::string>() == into.role,
            path + ": tensor " + std::to_string(i) + " is not " + into.role + " '" + into.name + "'");
      const std::string dtype = t.contains("dtype") ? t.at("dtype").get<std::string>() : "float32";
      check(dtype == dtype_name(into.tensor.scalar_type()), path + ": '" + into.name + "' (" + into.role + ") is " + dtype);
      uint64_t offset = t.at("offset").get<uint64_t>(), count = t.at("count").get<uint64_t>();
      const uint64_t element = static_cast<uint64_t>(into.tensor.element_size());
      check(count == static_cast<uint64_t>(into.tensor.numel()), path + ": '" + into.name + "' has the wrong size");
      check(offset <= payload.size() && count * element <= payload.size() - offset,
            path + ": '" + into.name + "' lies outside the tensor section");
      torch::Tensor value = torch::empty(into.tensor.sizes(), torch::TensorOptions().dtype(into.tensor.scalar_type()));
      if (count) std::memcpy(value.data_ptr(), payload.data() + offset, count * element);
      torch::NoGradGuard no_grad;
      into.tensor.copy_(value);
    }
  } catch (const json::exception& e) {
    throw Error(path + ": malformed checkpoint: " + e.what());
  }
  return j;
}

}  // namespace tern::train
