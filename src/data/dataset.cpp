#include <sys/stat.h>


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
  if (labels_path.empty()) return d;  // unlabelled: calibration data
  d.labels = labels_from(read_npy(labels_path), labels_path);
  check(static_cast<int64_t>(d.labels.size()) == d.images.dim(0),
        labels_path + ": " + std::to_string(d.labels.size()) + " labels for " + std::to_string(d.images.dim(0)) +
            " images in " + images_path);
  return d;
}

Dataset load_dataset(const std::string& spec, const std::string& labels_path, const std::string& split) {
  bool npy = spec.size() > 4 && spec.compare(spec.size() - 4, 4, ".npy") == 0;
  if (npy) return load_npy_dataset(spec, labels_path);
  check(labels_path.empty(), "--labels goes with an .npy array, not " + spec);
  if (spec == "fashion-mnist") return load_idx_dataset(spec, split);
  struct stat st;
  check(stat(spec.c_str(), &st) == 0, spec + ": no such file or directory");
  // An IDX directory has its files at the top; anything else is a folder of images.
  for (const char* stem : {"t10k-images-idx3-ubyte", "train-images-idx3-ubyte"})
    for (const char* suffix : {".gz", ""})
      if (file_exists(spec + "/" + stem + suffix)) return load_idx_dataset(spec, split);
  return load_image_folder(spec);
}

}  // namespace tern
