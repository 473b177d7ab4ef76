// Dense tensors: a data type, a shape and a reference-counted 64-byte-aligned buffer.
// Copies share the buffer (reshape and identity are free); clone() makes a deep copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tern {

// Numbering follows onnx.TensorProto.DataType so importers can cast directly.
enum class DataType : int32_t {
  kUndefined = 0,
  kFloat32 = 1,
  kUInt8 = 2,
  kInt8 = 3,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
};

size_t element_size(DataType type);
std::string to_string(DataType type);

using Shape = std::vector<int64_t>;

// A dimension that is not known until run time (the dynamic batch of an exported classifier).
inline constexpr int64_t kDynamicDim = -1;

int64_t element_count(const Shape& shape);  // product of dims; requires every dim >= 0
bool is_static(const Shape& shape);         // no kDynamicDim
std::string to_string(const Shape& shape);  // "[1,3,28,28]", dynamic dims as "?"

class Tensor {
 public:
  Tensor() = default;
  Tensor(DataType type, Shape shape);  // zero-filled
  // For outputs the caller overwrites completely: skips the zero fill (a full pass over memory).
  static Tensor uninitialized(DataType type, Shape shape);
  // Zero-filled, its pages mapped by the system on first write (reads see the shared zero page):
  // a placeholder that costs no memory while nothing writes it.
  static Tensor lazy_zeros(DataType type, Shape shape);

  static Tensor from_floats(Shape shape, std::span<const float> values);
  static Tensor from_int64s(Shape shape, std::span<const int64_t> values);

  DataType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int64_t rank() const { return static_cast<int64_t>(shape_.size()); }
  int64_t dim(int64_t axis) const { return shape_.at(static_cast<size_t>(axis)); }
  int64_t size() const { return size_; }
  size_t bytes() const { return static_cast<size_t>(size_) * element_size(dtype_); }
  bool empty() const { return buffer_ == nullptr; }

  template <typename T>
  T* data() { return reinterpret_cast<T*>(buffer_.get()); }
  template <typename T>
  const T* data() const { return reinterpret_cast<const T*>(buffer_.get()); }
  std::byte* raw() { return buffer_.get(); }
  const std::byte* raw() const { return buffer_.get(); }

  std::span<const float> floats() const;  // requires kFloat32
  std::span<float> floats();
  std::span<const int64_t> int64s() const;  // requires kInt64

  // Same buffer, new shape with the same element count.
  Tensor reshaped(Shape shape) const;
  Tensor clone() const;

 private:
  // Type, shape and size without data; throws Error for a shape past the memory limit.
  static Tensor described(DataType type, Shape shape);

  DataType dtype_ = DataType::kUndefined;
  Shape shape_;
  int64_t size_ = 0;
  std::shared_ptr<std::byte> buffer_;
};

// Allocates `bytes` bytes aligned to 64 (a cache line, and an AVX-512 register).
std::shared_ptr<std::byte> allocate_aligned(size_t bytes);

}  // namespace tern
