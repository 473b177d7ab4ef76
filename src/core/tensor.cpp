#include "tern/tensor.h"

#include <cstdlib>
#include <cstring>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <sys/mman.h>
#include <limits>

#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

size_t element_size(DataType type) {
  switch (type) {
    case DataType::kFloat32: return 4;
    case DataType::kUInt8: return 1;
    case DataType::kInt8: return 1;
    case DataType::kInt32: return 4;
    case DataType::kInt64: return 8;
    case DataType::kBool: return 1;
    case DataType::kUndefined: break;
  }
  throw Error("internal: element size of undefined data type");
}

std::string to_string(DataType type) {
  switch (type) {
    case DataType::kFloat32: return "float32";
    case DataType::kUInt8: return "uint8";
    case DataType::kInt8: return "int8";
    case DataType::kInt32: return "int32";
    case DataType::kInt64: return "int64";
    case DataType::kBool: return "bool";
    case DataType::kUndefined: break;
  }
  return "undefined";
}

int64_t element_count(const Shape& shape) {
  int64_t count = 1;
  for (int64_t d : shape) {  // (messages built only on failure: this runs on every tensor made)
    if (d < 0) throw Error("shape " + to_string(shape) + " has a dynamic or negative dimension");
    if (d != 0 && count > std::numeric_limits<int64_t>::max() / d) throw Error("shape " + to_string(shape) + " is too large");
    count *= d;
  }
  return count;
}

bool is_static(const Shape& shape) {
  for (int64_t d : shape)
    if (d < 0) return false;
  return true;
}

std::string to_string(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += shape[i] < 0 ? std::string("?") : std::to_string(shape[i]);
  }
  return s + "]";
}

std::shared_ptr<std::byte> allocate_aligned(size_t bytes) {
#ifdef __GLIBC__
  // glibc gives a freed block of more than 128 KiB (and free memory at the heap's top) back to the
  // system, and the next allocation of that size faults its pages in again: a transformer's
  // per-run tensors (~1 MB at batch 8) spent as long in page faults as in arithmetic. Blocks up to
  // 64 MiB stay in the heap instead, as an inference runtime's arena keeps them.
  static const bool kept_in_heap = [] {
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    return true;
  }();
  (void)kept_in_heap;
#endif
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  void* p = std::aligned_alloc(64, rounded);
  if (!p) throw Error("out of memory allocating " + std::to_string(bytes) + " bytes");
  return std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [](std::byte* q) { std::free(q); });
}

Tensor Tensor::described(DataType type, Shape shape) {
  Tensor t;
  t.dtype_ = type;
  t.shape_ = std::move(shape);
  t.size_ = element_count(t.shape_);
  check_memory(static_cast<double>(t.size_) * static_cast<double>(element_size(type)), [&] {
    return std::pair<std::string, std::string>{"a " + to_string(type) + " tensor of shape " + to_string(t.shape_), "its data"};
  });
  return t;
}

Tensor Tensor::uninitialized(DataType type, Shape shape) {
  Tensor t = described(type, std::move(shape));
  t.buffer_ = allocate_aligned(t.bytes());
  return t;
}

Tensor Tensor::lazy_zeros(DataType type, Shape shape) {
  Tensor t = described(type, std::move(shape));
  constexpr size_t kPage = 4096;
  if (t.bytes() < 16 * kPage) {  // small: an ordinary allocation
    t.buffer_ = allocate_aligned(t.bytes());
    std::memset(t.buffer_.get(), 0, t.bytes());
    return t;
  }
  const size_t length = (t.bytes() + kPage - 1) / kPage * kPage;
  void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw Error("out of memory mapping " + std::to_string(t.bytes()) + " bytes");
  t.buffer_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(p), [length](std::byte* q) { ::munmap(q, length); });
  return t;
}

Tensor::Tensor(DataType type, Shape shape) : Tensor(uninitialized(type, std::move(shape))) {
  std::memset(buffer_.get(), 0, bytes());
}

Tensor Tensor::from_floats(Shape shape, std::span<const float> values) {
  Tensor t(DataType::kFloat32, std::move(shape));
  check(static_cast<int64_t>(values.size()) == t.size(), "tensor of shape " + to_string(t.shape()) + " given " +
                                                              std::to_string(values.size()) + " values");
  if (t.bytes() > 0) std::memcpy(t.raw(), values.data(), t.bytes());  // an empty span's data may be null
  return t;
}

Tensor Tensor::from_int64s(Shape shape, std::span<const int64_t> values) {
  Tensor t(DataType::kInt64, std::move(shape));
  check(static_cast<int64_t>(values.size()) == t.size(), "tensor of shape " + to_string(t.shape()) + " given " +
                                                              std::to_string(values.size()) + " values");
  if (t.bytes() > 0) std::memcpy(t.raw(), values.data(), t.bytes());  // an empty span's data may be null
  return t;
}

std::span<const float> Tensor::floats() const {
  check(dtype_ == DataType::kFloat32, "expected a float32 tensor, got " + to_string(dtype_));
  return {data<float>(), static_cast<size_t>(size_)};
}

std::span<float> Tensor::floats() {
  check(dtype_ == DataType::kFloat32, "expected a float32 tensor, got " + to_string(dtype_));
  return {data<float>(), static_cast<size_t>(size_)};
}

std::span<const int64_t> Tensor::int64s() const {
  check(dtype_ == DataType::kInt64, "expected an int64 tensor, got " + to_string(dtype_));
  return {data<int64_t>(), static_cast<size_t>(size_)};
}

Tensor Tensor::reshaped(Shape shape) const {
  if (element_count(shape) != size_) throw Error("cannot reshape " + to_string(shape_) + " to " + to_string(shape));
  Tensor t = *this;
  t.shape_ = std::move(shape);
  return t;
}

Tensor Tensor::clone() const {
  Tensor t = *this;
  if (buffer_) {
    t.buffer_ = allocate_aligned(bytes());
    std::memcpy(t.buffer_.get(), buffer_.get(), bytes());
  }
  return t;
}

}  // namespace tern
