// Pieces of the graph <-> JSON codec shared by the FP32 and the quantized model files.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "tern/error.h"
#include "tern/graph.h"

namespace tern::format {

// nlohmann's conversions, except that reading an integer takes only a JSON integer that fits the
// target type: nlohmann itself casts any number (a float such as 1e300 into an int is undefined
// behavior; an integer too large wraps), and .tern files are untrusted input.
template <typename T, typename = void>
struct CheckedSerializer : nlohmann::adl_serializer<T> {};

template <typename T>
struct CheckedSerializer<T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>>> {
  template <typename Json>
  static void to_json(Json& j, T v) {
    nlohmann::adl_serializer<T>::to_json(j, v);
  }
  template <typename Json>
  static void from_json(const Json& j, T& v) {
    if (j.is_number()) {  // anything else: nlohmann's type error below
      bool fits = false;
      if (j.is_number_unsigned()) {
        fits = j.template get_ref<const typename Json::number_unsigned_t&>() <=
               static_cast<std::make_unsigned_t<T>>(std::numeric_limits<T>::max());
      } else if (j.is_number_integer()) {
        int64_t i = j.template get_ref<const typename Json::number_integer_t&>();
        if constexpr (std::is_signed_v<T>) fits = i >= std::numeric_limits<T>::min() && i <= std::numeric_limits<T>::max();
        else fits = i >= 0 && static_cast<uint64_t>(i) <= std::numeric_limits<T>::max();
      }
      check(fits, "number " + j.dump() + " is not an integer in [" + std::to_string(std::numeric_limits<T>::min()) + ", " +
                      std::to_string(std::numeric_limits<T>::max()) + "]");
    }
    nlohmann::adl_serializer<T>::from_json(j, v);
  }
};

// The JSON of .tern sections.
using Json = nlohmann::basic_json<std::map, std::vector, std::string, bool, std::int64_t, std::uint64_t, double,
                                  std::allocator, CheckedSerializer>;

std::vector<std::byte> to_bytes(const std::string& s);
// Appends bytes at the next 64-byte aligned offset of the payload; returns that offset.
uint64_t append_aligned(std::vector<std::byte>& payload, const void* data, size_t bytes);
// The bytes a {"offset", "bytes"} reference names, after checking alignment and bounds.
std::span<const std::byte> payload_range(std::span<const std::byte> payload, const Json& ref,
                                         const std::string& what);
Json parse_json_section(std::span<const std::byte> text, const std::string& what);
Json parse_provenance(const std::string& provenance_json);

// Constants named in `external` are written without data (flagged "external"): another section
// holds them (a quantized layer's packed weights).
Json graph_to_json(const Graph& graph, std::vector<std::byte>& payload, const std::set<std::string>& external);
// The graph as stored, not yet validated; ids of external values (left without a constant) go to
// `external`. Throws Error or Json::exception.
Graph graph_from_json(const Json& j, std::span<const std::byte> payload, const std::string& name,
                      std::set<ValueId>& external);
// validate() and shape inference: a graph that does not type-check is rejected.
void finish_graph(Graph& g);

}  // namespace tern::format
