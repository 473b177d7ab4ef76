#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>

#include "tern/data.h"
#include "core/file_io.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

namespace {

// Reads up to `size` bytes from a plain or gzip file; returns how many (fewer only at the end).
size_t read_some(gzFile file, const std::string& path, unsigned char* out, size_t size) {
  size_t got = 0;
  while (got < size) {
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(size - got, 1u << 30));
    int n = gzread(file, out + got, chunk);
    if (n < 0) {
      int err = 0;
      const char* msg = gzerror(file, &err);
      throw Error(path + ": corrupt or truncated gzip data (" + std::string(msg ? msg : "read error") + ")");
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return got;
}

}  // namespace

// The header is read and checked first; then exactly the bytes it declares (checked against the
// memory limit before they are allocated), and one more to catch trailing data. A compressed file
// is never inflated past what its header declares, however large it would grow.
Tensor read_idx(const std::string& path) {
  InputFile input(path);  // regular files only: a FIFO or a device would block or never end
  int64_t file_size = input.size();
  gzFile file = gzdopen(input.release(), "rb");
  check(file != nullptr, path + ": cannot open file");
  std::unique_ptr<gzFile_s, int (*)(gzFile)> guard(file, gzclose);
  unsigned char head[4 + 4 * 8];
  check(read_some(file, path, head, 4) == 4 && head[0] == 0 && head[1] == 0,
        path + ": not an IDX file (bad magic number)");
  unsigned char type = head[2];
  size_t rank = head[3];
  check(rank >= 1 && rank <= 8, path + ": IDX rank " + std::to_string(rank) + " is not supported");
  check(read_some(file, path, head + 4, 4 * rank) == 4 * rank, path + ": truncated IDX header");
  DataType dtype = type == 0x08 ? DataType::kUInt8 : type == 0x0D ? DataType::kFloat32 : DataType::kUndefined;
  char hex[8];
  std::snprintf(hex, sizeof hex, "0x%02X", type);
  check(dtype != DataType::kUndefined,
        path + ": IDX element type " + std::string(hex) + " is not supported (unsigned byte or float only)");
  Shape shape;
  double claimed = static_cast<double>(element_size(dtype));
  for (size_t i = 0; i < rank; ++i) {
    const unsigned char* p = &head[4 + 4 * i];
    shape.push_back((int64_t{p[0]} << 24) | (int64_t{p[1]} << 16) | (int64_t{p[2]} << 8) | int64_t{p[3]});
    claimed *= static_cast<double>(shape.back());
  }
  check_memory(claimed, path + ": IDX header " + to_string(shape), "its data");
  const bool compressed = gzdirect(file) == 0;
  const size_t header = 4 + 4 * rank;
  if (!compressed)  // a plain file's size is known: check it before reading anything
    check(claimed == static_cast<double>(file_size) - static_cast<double>(header),
          path + ": IDX header " + to_string(shape) + " declares " + format_bytes(claimed) + " of data, the file holds " +
              format_bytes(static_cast<double>(file_size) - static_cast<double>(header)) + " (truncated or corrupt)");
  Tensor t;
  size_t got = 0;
  if (!compressed) {
    t = Tensor::uninitialized(dtype, shape);
    got = read_some(file, path, reinterpret_cast<unsigned char*>(t.raw()), t.bytes());
  } else {
    // A 42-byte gzip file can declare 16 GiB: memory follows the data actually inflated, in chunks,
    // and only a stream that delivers everything it declared becomes a tensor.
    std::vector<unsigned char> data;
    const size_t want = static_cast<size_t>(claimed);
    while (data.size() < want) {
      size_t chunk = std::min<size_t>(want - data.size(), size_t{1} << 24);
      size_t at = data.size();
      data.resize(at + chunk);
      size_t n = read_some(file, path, data.data() + at, chunk);
      data.resize(at + n);
      if (n < chunk) break;
    }
    got = data.size();
    if (got == want) {
      t = Tensor::uninitialized(dtype, shape);
      if (got > 0) std::memcpy(t.raw(), data.data(), got);
    }
  }
  check(got == static_cast<size_t>(claimed), path + ": IDX header " + to_string(shape) + " declares " + format_bytes(claimed) +
                              " of data, the file holds " + format_bytes(static_cast<double>(got)) + " (truncated)");
  unsigned char extra;
  check(read_some(file, path, &extra, 1) == 0,
        path + ": IDX data continues past the " + format_bytes(claimed) + " its header " + to_string(shape) +
            " declares (corrupt)");
  if (dtype == DataType::kFloat32) {  // IDX stores big-endian
    uint32_t* words = t.data<uint32_t>();
    for (int64_t i = 0; i < t.size(); ++i) words[i] = __builtin_bswap32(words[i]);
  }
  return t;
}

}  // namespace tern
