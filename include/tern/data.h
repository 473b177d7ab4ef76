// Data: IDX files (as Debian ships Fashion-MNIST, gzip or plain), .npy arrays, datasets of images
// with labels, and the input normalization a model expects.
#pragma once

#include <string>
#include <vector>

#include "tern/graph.h"
#include "tern/tensor.h"

namespace tern {

// Reads an IDX file (gzip-compressed or not). Returns a uint8 or float32 tensor with the file's
// dims. Throws Error naming the path for a missing, truncated or malformed file.
Tensor read_idx(const std::string& path);

// Reads a .npy array (little-endian float32/float64/int64/int32/uint8/int8/bool, C order);
// float64 is converted to float32.
Tensor read_npy(const std::string& path);
// Writes atomically (temporary file, then rename): no partial file is ever left behind.
void write_npy(const std::string& path, const Tensor& tensor);

struct Dataset {
  std::string name;             // for messages: the directory or file it came from
  Tensor images;                // uint8 or float32, [N, H, W] or [N, C, H, W]
  std::vector<int64_t> labels;  // N class indices
  int64_t size() const { return images.empty() ? 0 : images.dim(0); }
};

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// `spec` is "fashion-mnist" (Debian's copy) or a directory holding <prefix>-images-idx3-ubyte[.gz]
// and <prefix>-labels-idx1-ubyte[.gz], prefix "t10k" for split "test" and "train" for "train".
Dataset load_idx_dataset(const std::string& spec, const std::string& split = "test");
// Images from an .npy array, labels from another (int64/int32/uint8, one per image).
Dataset load_npy_dataset(const std::string& images_path, const std::string& labels_path);

// input = (pixel * scale - mean[c]) / std[c], per channel (one entry applies to all channels).
struct Normalization {
  double scale = 1.0 / 255.0;  // double: pixel * scale rounds like PyTorch's float32 pixel / 255
  std::vector<float> mean = {0.0f};
  std::vector<float> std = {1.0f};
  std::string describe() const;
};

// The model's normalization from metadata_props (tern.scale, tern.mean, tern.std, comma-separated
// per channel), else pixels / 255. Throws naming the key if a value does not parse.
Normalization normalization_from_metadata(const Graph& graph);

// Float32 NCHW batch of images [begin, begin+count) normalized for a model whose input has
// `channels` channels. Throws naming the dataset when the images do not fit `input_shape`.
Tensor make_batch(const Dataset& data, int64_t begin, int64_t count, const Normalization& norm,
                  const Shape& input_shape);

}  // namespace tern
