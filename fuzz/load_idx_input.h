// What the IDX fuzz target (fuzz_idx.cpp) and the regression test (tests/test_fuzz_regressions.cpp)
// do with one input: read it as an IDX file, gzip-compressed or plain (read_idx takes a path: the
// bytes go to a scratch file first), then use it as `tern eval --data DIR` would: as the images of
// an IDX dataset folder with matching labels, or as the labels of matching images. A hostile input
// may only make this throw tern::Error; any other exception escapes, and a crash, hang or sanitizer
// report is a bug.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_environment.h"
#include "input_files.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/tensor.h"

namespace tern::fuzz {

// A plain IDX file of zero bytes (type 0x08) with the given dims.
inline std::vector<uint8_t> zero_idx(const std::vector<uint32_t>& dims) {
  std::vector<uint8_t> b = {0, 0, 0x08, static_cast<uint8_t>(dims.size())};
  size_t n = 1;
  for (uint32_t d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(d >> s));
    n *= d;
  }
  b.resize(b.size() + n, 0);
  return b;
}

// True when the input read as an IDX file, false when it was rejected with tern::Error (its message
// to *error). The dataset folder's files have no .gz suffix: read_idx tells gzip from plain by content.
inline bool load_idx_input(const uint8_t* data, size_t size, std::string* error = nullptr) {
  const std::string images = "t10k-images-idx3-ubyte", labels = "t10k-labels-idx1-ubyte";
  const std::string path = write_scratch_file(images, data, size);
  try {
    Tensor t = read_idx(path);
    if (t.rank() >= 1 && t.dim(0) > kMaxCompanionLength) return true;  // see kMaxCompanionLength
    if (t.rank() == 3 || t.rank() == 4) {  // the input as images, with as many zero labels
      std::vector<uint8_t> l = zero_idx({static_cast<uint32_t>(t.dim(0))});
      write_scratch_file(labels, l.data(), l.size());
      Dataset d = load_idx_dataset(ScratchDir::path(), "test");
      Shape input = {kDynamicDim, t.rank() == 4 ? t.dim(1) : 1, t.dim(t.rank() - 2), t.dim(t.rank() - 1)};
      (void)make_batch(d, 0, std::min<int64_t>(d.size(), 2), Preprocess{}, input);
    } else if (t.rank() == 1) {  // the input as labels, of as many 1x1 images
      write_scratch_file(labels, data, size);
      std::vector<uint8_t> i = zero_idx({static_cast<uint32_t>(t.dim(0)), 1, 1});
      write_scratch_file(images, i.data(), i.size());
      (void)load_idx_dataset(ScratchDir::path(), "test");
    }
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

}  // namespace tern::fuzz
