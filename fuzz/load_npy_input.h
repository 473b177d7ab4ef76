// What the .npy fuzz target (fuzz_npy.cpp) and the regression test (tests/test_fuzz_regressions.cpp)
// do with one input: read it as a .npy file (read_npy takes a path: the bytes go to a scratch file
// first), write it back and read it again (the round trip must reproduce it), then use it as
// `tern eval --data X.npy --labels Y.npy` would: as the images with matching labels, or as the
// labels of matching images. A hostile input may only make this throw tern::Error; any other
// exception escapes (a round trip that changes the array throws std::logic_error), and a crash,
// hang or sanitizer report is a bug.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "fuzz_environment.h"
#include "input_files.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/tensor.h"

namespace tern::fuzz {

inline bool same_array(const Tensor& a, const Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() && a.bytes() == b.bytes() &&
         (a.bytes() == 0 || std::memcmp(a.raw(), b.raw(), a.bytes()) == 0);
}

// True when the input read as a .npy array, false when it was rejected with tern::Error (its
// message to *error).
inline bool load_npy_input(const uint8_t* data, size_t size, std::string* error = nullptr) {
  const std::string path = write_scratch_file("input.npy", data, size);
  const std::string copy = ScratchDir::path() + "/copy.npy";
  const std::string other = ScratchDir::path() + "/other.npy";
  try {
    Tensor t = read_npy(path);
    write_npy(copy, t);
    if (!same_array(read_npy(copy), t)) throw std::logic_error("read_npy(write_npy(x)) differs from x");
    bool images = (t.rank() == 3 || t.rank() == 4) && (t.dtype() == DataType::kFloat32 || t.dtype() == DataType::kUInt8);
    if (t.rank() >= 1 && t.dim(0) > kMaxCompanionLength) return true;  // see kMaxCompanionLength
    if (images) {  // the input as images, with as many zero labels
      write_npy(other, Tensor(DataType::kInt64, {t.dim(0)}));
      Dataset d = load_npy_dataset(path, other);
      Shape input = {kDynamicDim, t.rank() == 4 ? t.dim(1) : 1, t.dim(t.rank() - 2), t.dim(t.rank() - 1)};
      (void)make_batch(d, 0, std::min<int64_t>(d.size(), 2), Preprocess{}, input);
    } else if (t.rank() == 1) {  // the input as labels, of as many 1x1 images
      write_npy(other, Tensor(DataType::kUInt8, {t.dim(0), 1, 1}));
      (void)load_npy_dataset(other, path);
    }
    return true;
  } catch (const Error& e) {
    if (error) *error = e.what();
    return false;
  }
}

}  // namespace tern::fuzz
