// attrs_codec<T, describe>("kind"): the JSON form of an attribute struct from one field list.
//
//   constexpr auto describe_conv = [](auto& a, auto&& field) {
//     field("kernel", a.kernel);
//     field("group", a.group);
//   };
//   record.attrs = attrs_codec<ConvAttrs, describe_conv>("conv");
//
// Fields may be bool, integers, float, std::string, vectors of int64_t or float, or enums (stored as
// their integer; `field(name, member, lo, hi)` bounds an enum or integer). A non-finite float is
// stored as null and read back as the struct's default (clamp bounds are +-infinity by default).
// Reading checks every field's type and bound (.tern files are untrusted input); `Validate`, when
// given, checks the struct as a whole. The caller writes and checks "kind".
#pragma once

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "ops/op.h"

namespace tern::ops {

namespace detail {

struct FieldWriter {
  format::Json& j;
  template <typename V>
  void operator()(const char* name, const V& v, int64_t = 0, int64_t = 0) const {
    if constexpr (std::is_enum_v<V>) j[name] = static_cast<int64_t>(v);
    else if constexpr (std::is_floating_point_v<V>) j[name] = std::isfinite(v) ? format::Json(v) : format::Json(nullptr);
    else j[name] = v;
  }
  // A field added after .tern files were written: absent in old files, read as its default.
  template <typename V>
  void optional(const char* name, const V& v, int64_t lo = 0, int64_t hi = 0) const {
    (*this)(name, v, lo, hi);
  }
};

// Reads into a default-constructed struct: a null float keeps the member's default.
struct FieldReader {
  const format::Json& j;
  template <typename V>
  void operator()(const char* name, V& v, int64_t lo = 0, int64_t hi = 0) const {
    const format::Json& f = j.at(name);
    if constexpr (std::is_enum_v<V>) {
      int64_t i = f.get<int64_t>();
      check(lo == hi || (i >= lo && i <= hi), std::string("attribute '") + name + "' is out of range");
      v = static_cast<V>(i);
    } else if constexpr (std::is_floating_point_v<V>) {
      if (!f.is_null()) v = f.get<V>();
    } else if constexpr (std::is_integral_v<V> && !std::is_same_v<V, bool>) {
      v = f.get<V>();
      check(lo == hi || (static_cast<int64_t>(v) >= lo && static_cast<int64_t>(v) <= hi),
            std::string("attribute '") + name + "' is out of range");
    } else {
      v = f.get<V>();
    }
  }
  template <typename V>
  void optional(const char* name, V& v, int64_t lo = 0, int64_t hi = 0) const {
    if (j.contains(name)) (*this)(name, v, lo, hi);
  }
};

}  // namespace detail

template <typename T, auto Describe, auto Validate = nullptr>
AttrsCodec attrs_codec(const char* kind) {
  AttrsCodec c;
  c.kind = kind;
  c.to_json = [](const NodeAttrs& any) {
    const T* a = std::any_cast<T>(&any);
    check(a != nullptr, "attributes of the wrong kind");
    format::Json j = format::Json::object();
    Describe(const_cast<T&>(*a), detail::FieldWriter{j});
    return j;
  };
  c.from_json = [](const format::Json& j) -> NodeAttrs {
    T a{};
    Describe(a, detail::FieldReader{j});
    if constexpr (!std::is_same_v<decltype(Validate), std::nullptr_t>) Validate(a);
    return a;
  };
  return c;
}

}  // namespace tern::ops
