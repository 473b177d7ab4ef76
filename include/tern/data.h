// Data: IDX files (as Debian ships Fashion-MNIST, gzip or plain), .npy arrays, folders of JPEG/PNG
// images, datasets of images with labels, and the preprocessing a model expects.
#pragma once

#include <string>
#include <utility>
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

// A set of images with labels. The images are held in memory (`images`: IDX, .npy) or listed
// (`files`: a folder of JPEG/PNG files, decoded batch by batch when make_batch reads them).
struct Dataset {
  std::string name;                 // for messages: the directory or file it came from
  Tensor images;                    // uint8 pixels or float32 model inputs, [N, H, W] or [N, C, H, W]
  std::vector<std::string> files;   // or: image files (JPEG/PNG), one per image
  std::vector<int64_t> labels;      // N class indices; empty for unlabelled data (calibration)
  std::vector<std::string> classes; // an image folder's class names, index = label
  int64_t size() const { return !files.empty() ? static_cast<int64_t>(files.size()) : images.empty() ? 0 : images.dim(0); }
  bool labelled() const { return static_cast<int64_t>(labels.size()) == size() && size() > 0; }
  // Pixels (uint8 arrays, IDX, image files) go through the preprocessing; float arrays are model
  // inputs as they are.
  bool pixels() const { return !files.empty() || images.dtype() == DataType::kUInt8; }
};

inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

// `spec` is "fashion-mnist" (Debian's copy) or a directory holding <prefix>-images-idx3-ubyte[.gz]
// and <prefix>-labels-idx1-ubyte[.gz], prefix "t10k" for split "test" and "train" for "train".
Dataset load_idx_dataset(const std::string& spec, const std::string& split = "test");
// Images from an .npy array, labels from another (int64/int32/uint8, one per image); no labels
// when labels_path is empty.
Dataset load_npy_dataset(const std::string& images_path, const std::string& labels_path);
// A folder of JPEG/PNG images: one sub-folder per class (ImageNet layout; classes sorted by name,
// label = index) or the images directly (unlabelled, for calibration). Files are listed in sorted
// order; other files are ignored; an empty folder is an Error.
Dataset load_image_folder(const std::string& dir);
// Any of the above by what `spec` is: "fashion-mnist" or an IDX directory (split), a folder of
// images, or X.npy (labels from labels_path).
Dataset load_dataset(const std::string& spec, const std::string& labels_path, const std::string& split);

// A decoded image: height x width x channels (1 grey or 3 RGB) uint8, row-major.
struct Image {
  int64_t height = 0, width = 0, channels = 0;
  std::vector<uint8_t> pixels;
};
// Decodes a JPEG or PNG file (by its signature, not its name). Alpha is dropped; 16-bit PNGs are
// reduced to 8 bits. Throws Error naming the file for anything else, a corrupt file, or an image
// over 2^14 pixels on a side.
Image decode_image(const std::string& path);

// How images become a model's input, in this order: channels converted (grey replicated to RGB or
// RGB to grey, BGR order if asked); resized (bilinear, antialiased when shrinking, as PIL does);
// center-cropped; scaled and normalized per channel, input = (pixel * scale - mean[c]) / std[c];
// padded at the bottom and right with 0 (after normalization); laid out NCHW or NHWC.
// From the model's metadata_props (tern.resize, tern.crop, tern.pad, tern.channels, tern.layout,
// tern.scale, tern.mean, tern.std: the flags' syntax), overridden by the command's flags.
struct Preprocess {
  enum class Resize { kNone, kExact, kShorterSide, kHeight };
  Resize resize = Resize::kNone;
  int64_t resize_h = 0, resize_w = 0;  // kExact: HxW; kShorterSide: S in both; kHeight: H (width by aspect)
  int64_t crop_h = 0, crop_w = 0;      // center crop; 0: none
  int64_t pad_h = 0, pad_w = 0;        // pad to; 0: none. A resized image larger than this is squeezed to fit.
  enum class Channels { kModel, kRgb, kBgr, kGrey };
  Channels channels = Channels::kModel;  // kModel: as stored, grey replicated when the model wants 3
  bool nhwc = false;
  double scale = 1.0 / 255.0;  // double: pixel * scale rounds like PyTorch's float32 pixels / 255
  std::vector<float> mean = {0.0f};
  std::vector<float> std = {1.0f};
  bool given = false;  // some value came from the model's metadata or a flag (else: defaults only)
  std::string describe() const;
  // Sets one key ("resize", "crop", "pad", "channels", "layout", "scale", "mean", "std") from its
  // text; throws Error naming `who` and the key when the text does not parse.
  void set(const std::string& key, const std::string& value, const std::string& who);
  // The metadata_props form of every non-default key (stored in .tern files beside the model).
  std::vector<std::pair<std::string, std::string>> metadata() const;
  // The exact range of model inputs made from 8-bit pixels: [lo, hi] over every channel, the
  // padding's 0 included. What quantization may assume of the graph input when the data are pixels.
  std::pair<float, float> input_range() const;
};
inline const std::vector<std::string> kPreprocessKeys = {"resize", "crop", "pad", "channels", "layout", "scale", "mean", "std"};

// The model's preprocessing from metadata_props (tern.<key>), else the defaults (pixels / 255).
// Throws naming the key if a value does not parse.
Preprocess preprocess_from_metadata(const Graph& graph);

// Float32 batch of images [begin, begin+count) made into model inputs for `input_shape` (pixels
// through `pre`; float arrays as they are). Throws naming the dataset (or the file) when the images
// do not fit `input_shape`.
Tensor make_batch(const Dataset& data, int64_t begin, int64_t count, const Preprocess& pre, const Shape& input_shape);

}  // namespace tern
