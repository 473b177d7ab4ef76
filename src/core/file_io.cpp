#include "core/file_io.h"

#include <openssl/sha.h>

#include <cstdio>
#include <fstream>
#include <sstream>

#include "tern/error.h"

namespace tern {

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  check(in.good(), path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), path + ": read error");
  return ss.str();
}

void write_file_atomically(const std::string& path, std::initializer_list<std::span<const char>> parts) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    check(out.good(), path + ": cannot write file");
    for (const auto& part : parts) out.write(part.data(), static_cast<std::streamsize>(part.size()));
    out.flush();
    if (!out.good()) {
      out.close();
      std::remove(tmp.c_str());
      throw Error(path + ": write failed (disk full?)");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": cannot move the finished file into place");
  }
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : digest) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

}  // namespace tern
