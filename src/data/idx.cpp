#include <zlib.h>

#include <cstring>
#include <memory>

#include "tern/data.h"
#include "tern/error.h"

namespace tern {

namespace {
// gzread reads both compressed and plain files; returns everything or throws.
std::vector<unsigned char> read_maybe_gzip(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  check(file != nullptr, path + ": cannot open file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(file, gzclose);
  std::vector<unsigned char> bytes;
  unsigned char chunk[1 << 16];
  for (;;) {
    int n = gzread(file, chunk, sizeof chunk);
    if (n < 0) {
      int err = 0;
      const char* msg = gzerror(file, &err);
      throw Error(path + ": corrupt or truncated gzip data (" + std::string(msg ? msg : "read error") + ")");
    }
    if (n == 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
    check(bytes.size() < (size_t{1} << 34), path + ": file too large");
  }
  return bytes;
}
}  // namespace

Tensor read_idx(const std::string& path) {
  std::vector<unsigned char> b = read_maybe_gzip(path);
  check(b.size() >= 4 && b[0] == 0 && b[1] == 0, path + ": not an IDX file (bad magic number)");
  unsigned char type = b[2];
  size_t rank = b[3];
  check(rank >= 1 && rank <= 8, path + ": IDX rank " + std::to_string(rank) + " is not supported");
  check(b.size() >= 4 + 4 * rank, path + ": truncated IDX header");
  Shape shape;
  for (size_t i = 0; i < rank; ++i) {
    const unsigned char* p = &b[4 + 4 * i];
    shape.push_back((int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]});
  }
  DataType dtype = type == 0x08 ? DataType::kUInt8 : type == 0x0D ? DataType::kFloat32 : DataType::kUndefined;
  check(dtype != DataType::kUndefined, path + ": IDX element type 0x" + std::to_string(type) +
                                           " is not supported (unsigned byte or float only)");
  size_t header = 4 + 4 * rank;
  // Check the size before allocating, so a hostile header cannot ask for terabytes.
  double claimed = static_cast<double>(element_size(dtype));
  for (int64_t d : shape) claimed *= static_cast<double>(d);
  check(claimed == static_cast<double>(b.size() - header),
        path + ": IDX header " + to_string(shape) + " needs " + std::to_string(static_cast<int64_t>(claimed)) +
            " data bytes, file has " + std::to_string(b.size() - header) + " (truncated or corrupt)");
  Tensor t(dtype, shape);
  if (dtype == DataType::kUInt8) {
    std::memcpy(t.raw(), b.data() + header, t.bytes());
  } else {
    for (int64_t i = 0; i < t.size(); ++i) {  // IDX stores big-endian
      const unsigned char* p = b.data() + header + 4 * i;
      uint32_t u = (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
      std::memcpy(t.data<float>() + i, &u, 4);
    }
  }
  return t;
}

}  // namespace tern
