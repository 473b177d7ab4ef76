#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/file_io.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

namespace {

// Value of `key` in the header dict, e.g. 'descr': '<f4' -> "'<f4'"; empty if absent.
std::string dict_value(const std::string& header, const std::string& key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) return {};
  size_t colon = header.find(':', k);
  if (colon == std::string::npos) return {};
  size_t start = header.find_first_not_of(' ', colon + 1);
  if (start == std::string::npos) return {};
  size_t end = header[start] == '(' ? header.find(')', start) + 1 : header.find_first_of(",}", start);
  if (end == std::string::npos || end < start) return {};
  return header.substr(start, end - start);
}

}  // namespace

Tensor read_npy(const std::string& path) {
  std::string b = read_whole_file(path);
  check(b.size() >= 10 && std::memcmp(b.data(), "\x93NUMPY", 6) == 0, path + ": not a .npy file (bad magic)");
  int major = static_cast<unsigned char>(b[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(b[8]) | (static_cast<size_t>(static_cast<unsigned char>(b[9])) << 8);
    offset = 10;
  } else {
    check(major == 2 || major == 3, path + ": unsupported .npy version " + std::to_string(major));
    check(b.size() >= 12, path + ": truncated .npy header");
    header_len = 0;
    for (int i = 0; i < 4; ++i) header_len |= static_cast<size_t>(static_cast<unsigned char>(b[8 + i])) << (8 * i);
    offset = 12;
  }
  check(b.size() >= offset + header_len, path + ": truncated .npy header");
  std::string header = b.substr(offset, header_len);
  std::string descr = dict_value(header, "descr"), order = dict_value(header, "fortran_order"),
              shape_text = dict_value(header, "shape");
  check(!descr.empty() && !order.empty() && !shape_text.empty(), path + ": malformed .npy header");
  check(order == "False", path + ": Fortran-order arrays are not supported");
  Shape shape;
  std::string dims = shape_text.substr(1, shape_text.size() - 2);
  std::stringstream ds(dims);
  for (std::string item; std::getline(ds, item, ',');) {
    size_t p = item.find_first_not_of(' ');
    if (p == std::string::npos) continue;
    try {
      size_t used = 0;
      long long d = std::stoll(item.substr(p), &used);
      check(d >= 0, path + ": negative dimension in .npy shape");
      shape.push_back(d);
    } catch (const std::logic_error&) {
      throw Error(path + ": malformed .npy shape " + shape_text);
    }
  }
  struct Kind {
    const char* descr;
    DataType type;
    size_t bytes;
  };
  static const Kind kinds[] = {{"'<f4'", DataType::kFloat32, 4}, {"'<f8'", DataType::kFloat32, 8},
                               {"'<i8'", DataType::kInt64, 8},   {"'<i4'", DataType::kInt32, 4},
                               {"'|u1'", DataType::kUInt8, 1},   {"'|i1'", DataType::kInt8, 1},
                               {"'|b1'", DataType::kBool, 1}};
  const Kind* kind = nullptr;
  for (const Kind& k : kinds)
    if (descr == k.descr) kind = &k;
  check(kind != nullptr, path + ": .npy dtype " + descr + " is not supported (float32/64, int64/32, uint8, int8, bool)");
  double claimed = static_cast<double>(kind->bytes);
  for (int64_t d : shape) claimed *= static_cast<double>(d);
  size_t data_bytes = b.size() - offset - header_len;
  check(claimed == static_cast<double>(data_bytes), path + ": shape " + to_string(shape) + " needs " +
                                                        format_bytes(claimed) + " of data, the file holds " +
                                                        format_bytes(static_cast<double>(data_bytes)) +
                                                        " (truncated or corrupt)");
  Tensor t(kind->type, shape);
  const char* src = b.data() + offset + header_len;
  if (kind->bytes == 8 && kind->type == DataType::kFloat32) {
    for (int64_t i = 0; i < t.size(); ++i) {
      double v;
      std::memcpy(&v, src + 8 * i, 8);
      t.data<float>()[i] = static_cast<float>(v);
    }
  } else {
    std::memcpy(t.raw(), src, t.bytes());
  }
  return t;
}

void write_npy(const std::string& path, const Tensor& tensor) {
  const char* descr = nullptr;
  switch (tensor.dtype()) {
    case DataType::kFloat32: descr = "<f4"; break;
    case DataType::kInt64: descr = "<i8"; break;
    case DataType::kInt32: descr = "<i4"; break;
    case DataType::kUInt8: descr = "|u1"; break;
    case DataType::kInt8: descr = "|i1"; break;
    case DataType::kBool: descr = "|b1"; break;
    case DataType::kUndefined: throw Error(path + ": cannot write an undefined tensor");
  }
  std::string shape = "(";
  for (int64_t d : tensor.shape()) shape += std::to_string(d) + ",";
  if (tensor.rank() > 1) shape.pop_back();
  shape += ")";
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  uint16_t len = static_cast<uint16_t>(header.size());
  const char prefix[10] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  write_file_atomically(path, {{prefix, 10}, {header.data(), header.size()},
                               {reinterpret_cast<const char*>(tensor.raw()), tensor.bytes()}});
}

}  // namespace tern
