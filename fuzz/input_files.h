// A per-process scratch folder for the fuzz entries whose library API reads paths, not bytes
// (read_npy, read_idx, the dataset loaders): created once under /tmp, files overwritten for every
// input, removed at exit. Shared by the fuzz targets and tests/test_fuzz_regressions.cpp.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>

namespace tern::fuzz {

class ScratchDir {
 public:
  static const std::string& path() {
    static ScratchDir dir;
    return dir.path_;
  }

 private:
  ScratchDir() {
    char templ[] = "/tmp/tern-fuzz-XXXXXX";
    // Not tern::Error: a harness failure must not look like the library rejecting an input.
    if (!mkdtemp(templ)) throw std::runtime_error("cannot create a scratch folder in /tmp");
    path_ = templ;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string path_;
};

// Empty arrays may claim any length ([4e9,0,0] holds no bytes); the npy and IDX entries make
// companion files (labels for images, images for labels) only up to this length, so that the
// harness itself never allocates much.
inline constexpr int64_t kMaxCompanionLength = int64_t{1} << 16;

// Writes the bytes to <scratch>/<name> (replacing it) and returns the path.
inline std::string write_scratch_file(const std::string& name, const void* data, size_t size) {
  std::string path = ScratchDir::path() + "/" + name;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot write " + path);
  bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size);
  ok = std::fclose(f) == 0 && ok;
  if (!ok) throw std::runtime_error("cannot write " + path);
  return path;
}

}  // namespace tern::fuzz
