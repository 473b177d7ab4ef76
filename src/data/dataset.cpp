#include <sys/stat.h>

#include <cmath>
#include <sstream>

#include "tern/data.h"
#include "tern/error.h"

namespace tern {

namespace {

bool file_exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string find_idx(const std::string& dir, const std::string& stem) {
  for (const char* suffix : {".gz", ""}) {
    std::string path = dir + "/" + stem + suffix;
    if (file_exists(path)) return path;
  }
  throw Error(dir + ": no " + stem + "[.gz] file (expected an IDX dataset directory)");
}

std::vector<int64_t> labels_from(const Tensor& t, const std::string& who) {
  check(t.rank() == 1, who + ": labels must be a 1-D array, got shape " + to_string(t.shape()));
  std::vector<int64_t> labels(static_cast<size_t>(t.size()));
  for (int64_t i = 0; i < t.size(); ++i) {
    switch (t.dtype()) {
      case DataType::kInt64: labels[static_cast<size_t>(i)] = t.data<int64_t>()[i]; break;
      case DataType::kInt32: labels[static_cast<size_t>(i)] = t.data<int32_t>()[i]; break;
      case DataType::kUInt8: labels[static_cast<size_t>(i)] = t.data<uint8_t>()[i]; break;
      case DataType::kInt8: labels[static_cast<size_t>(i)] = t.data<int8_t>()[i]; break;
      default: throw Error(who + ": labels must be integers, got " + to_string(t.dtype()));
    }
    check(labels[static_cast<size_t>(i)] >= 0, who + ": negative label at index " + std::to_string(i));
  }
  return labels;
}

std::vector<float> parse_floats(const std::string& text, const std::string& who) {
  std::vector<float> values;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      float v = std::stof(item, &used);
      check(item.find_first_not_of(" \t", used) == std::string::npos && std::isfinite(v), who + ": not a number: '" + item + "'");
      values.push_back(v);
    } catch (const std::logic_error&) {
      throw Error(who + ": not a number: '" + item + "'");
    }
  }
  check(!values.empty(), who + ": empty list");
  return values;
}

// Images must be [N,H,W] or [N,C,H,W] with a sensible size per image: a set of zero images can still
// declare 4e9 channels, and every later loop runs over those dimensions.
void check_images(const Tensor& images, const std::string& who) {
  check(images.rank() == 3 || images.rank() == 4,
        who + ": images must be [N,H,W] or [N,C,H,W], got " + to_string(images.shape()));
  int64_t per_image = 1;
  for (int64_t d = 1; d < images.rank(); ++d) {
    check(images.dim(d) >= 1, who + ": images of shape " + to_string(images.shape()) + " have an empty dimension");
    check(!__builtin_mul_overflow(per_image, images.dim(d), &per_image) && per_image <= (int64_t{1} << 31),
          who + ": images of shape " + to_string(images.shape()) + " have over 2^31 values each");
  }
}

}  // namespace

Dataset load_idx_dataset(const std::string& spec, const std::string& split) {
  check(split == "test" || split == "train", "--split: expected 'test' or 'train', got '" + split + "'");
  std::string dir = spec == "fashion-mnist" ? std::string(kFashionMnistDir) : spec;
  std::string prefix = split == "test" ? "t10k" : "train";
  Dataset d;
  d.name = dir;
  d.images = read_idx(find_idx(dir, prefix + "-images-idx3-ubyte"));
  Tensor labels = read_idx(find_idx(dir, prefix + "-labels-idx1-ubyte"));
  d.labels = labels_from(labels, dir + "/" + prefix + "-labels-idx1-ubyte");
  check_images(d.images, dir);
  check(static_cast<int64_t>(d.labels.size()) == d.images.dim(0),
        dir + ": " + std::to_string(d.images.dim(0)) + " images but " + std::to_string(d.labels.size()) + " labels");
  return d;
}

Dataset load_npy_dataset(const std::string& images_path, const std::string& labels_path) {
  Dataset d;
  d.name = images_path;
  d.images = read_npy(images_path);
  check(d.images.dtype() == DataType::kFloat32 || d.images.dtype() == DataType::kUInt8,
        images_path + ": images must be float32/float64 or uint8, got " + to_string(d.images.dtype()));
  check_images(d.images, images_path);
  d.labels = labels_from(read_npy(labels_path), labels_path);
  check(static_cast<int64_t>(d.labels.size()) == d.images.dim(0),
        labels_path + ": " + std::to_string(d.labels.size()) + " labels for " + std::to_string(d.images.dim(0)) +
            " images in " + images_path);
  return d;
}

std::string Normalization::describe() const {
  std::ostringstream ss;
  ss << "x * " << scale << ", mean";
  for (float m : mean) ss << " " << m;
  ss << ", std";
  for (float s : std) ss << " " << s;
  return ss.str();
}

Normalization normalization_from_metadata(const Graph& graph) {
  Normalization n;
  std::string prefix = graph.source.empty() ? std::string() : graph.source + ": ";
  if (auto it = graph.metadata.find("tern.scale"); it != graph.metadata.end()) {
    parse_floats(it->second, prefix + "metadata tern.scale");  // validates
    n.scale = std::stod(it->second);
    check(n.scale > 0, prefix + "metadata tern.scale must be positive");
  }
  if (auto it = graph.metadata.find("tern.mean"); it != graph.metadata.end())
    n.mean = parse_floats(it->second, prefix + "metadata tern.mean");
  if (auto it = graph.metadata.find("tern.std"); it != graph.metadata.end()) {
    n.std = parse_floats(it->second, prefix + "metadata tern.std");
    for (float s : n.std) check(s > 0, prefix + "metadata tern.std must be positive");
  }
  return n;
}

Tensor make_batch(const Dataset& data, int64_t begin, int64_t count, const Normalization& norm,
                  const Shape& input_shape) {
  check_images(data.images, data.name);
  const Shape& s = data.images.shape();
  check(input_shape.size() == 4, data.name + ": the model input " + to_string(input_shape) +
                                     " is not an image batch [N,C,H,W]");
  int64_t channels = s.size() == 4 ? s[1] : 1, h = s[s.size() - 2], w = s[s.size() - 1];
  auto fits = [](int64_t model, int64_t have) { return model < 0 || model == have; };
  check(fits(input_shape[1], channels) && fits(input_shape[2], h) && fits(input_shape[3], w),
        data.name + ": images of " + std::to_string(channels) + "x" + std::to_string(h) + "x" + std::to_string(w) +
            " (CxHxW) do not fit the model input " + to_string(input_shape));
  check(norm.mean.size() == 1 || static_cast<int64_t>(norm.mean.size()) == channels,
        data.name + ": " + std::to_string(norm.mean.size()) + " mean values for " + std::to_string(channels) + " channels");
  check(norm.std.size() == 1 || static_cast<int64_t>(norm.std.size()) == channels,
        data.name + ": " + std::to_string(norm.std.size()) + " std values for " + std::to_string(channels) + " channels");
  check(begin >= 0 && count >= 0 && begin + count <= data.size(), data.name + ": batch out of range");
  Tensor batch(DataType::kFloat32, {count, channels, h, w});
  int64_t plane = h * w;
  for (int64_t c = 0; c < channels; ++c) {
    float mean = norm.mean.size() == 1 ? norm.mean[0] : norm.mean[static_cast<size_t>(c)];
    float std = norm.std.size() == 1 ? norm.std[0] : norm.std[static_cast<size_t>(c)];
    for (int64_t n = 0; n < count; ++n) {
      int64_t src = ((begin + n) * channels + c) * plane;
      float* dst = batch.data<float>() + (n * channels + c) * plane;
      for (int64_t i = 0; i < plane; ++i) {
        double pixel = data.images.dtype() == DataType::kUInt8 ? data.images.data<uint8_t>()[src + i]
                                                                : data.images.data<float>()[src + i];
        // Rounding the double product once matches PyTorch's float32 pixels / 255.
        float x = static_cast<float>(pixel * norm.scale);
        dst[i] = (x - mean) / std;
        if (!std::isfinite(dst[i]))  // NaN in, NaN out: a run would score nothing honestly
          throw Error(data.name + ": image " + std::to_string(begin + n) + " holds " + std::to_string(pixel) +
                      (std::isfinite(pixel) ? " which the normalization (scale, mean, std) makes non-finite"
                                            : ", not a finite pixel value"));
      }
    }
  }
  return batch;
}

}  // namespace tern
