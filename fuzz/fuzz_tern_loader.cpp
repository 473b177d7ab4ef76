// libFuzzer target for the .tern loaders: TernFile::from_bytes, then load_graph or
// load_quantized_model, then what a loaded quantized model offers (simulation_graph, model_size,
// levels). Only tern::Error may come out; see load_tern_input.h. Run it with scripts/fuzz.sh.
//
// The container checksums every byte (header, table, sections), so plain byte mutations almost
// never get past TernFile's checks, and byte mutations of JSON text rarely get past the parser. A
// custom mutator therefore works on the structure and re-checksums what it makes:
//   - mostly, the graph or quantization JSON is parsed and edited as a tree, keeping it well
//     typed: numbers replaced by boundary values or nudged, lists of numbers (shapes, pads...)
//     overwritten, elements repeated or dropped, subtrees, names and operator names copied from
//     elsewhere, booleans flipped, optional keys added;
//   - sometimes the tensor payload (in place, so that offsets stay valid) or the provenance;
//   - rarely, the section list (a section dropped, repeated, retyped or moved), or the whole
//     file's bytes, with the checksums and size then fixed (to reach the bounds, overlap and
//     padding checks) or left alone (to exercise the checksums themselves).
// Crash inputs are plain files: the regression test (tests/test_fuzz_regressions.cpp) loads them as they are.
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "load_tern_input.h"
#include "tern/graph.h"
#include "tern/tern_file.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using json = nlohmann::json;
using Sections = std::vector<std::pair<tern::SectionType, std::vector<std::byte>>>;
using Rng = std::minstd_rand;

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

uint32_t crc(const uint8_t* data, size_t n) {
  return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), data, static_cast<uInt>(n)));
}

size_t pick(Rng& rng, size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; }

// The sections of a file, read without any check but bounds (the mutator's view of its input).
bool split(const uint8_t* d, size_t n, Sections& out) {
  if (n < 64 || std::memcmp(d, tern::kTernMagic, 8) != 0) return false;
  uint64_t table = load<uint64_t>(d + 24);
  uint32_t count = load<uint32_t>(d + 32);
  if (count > tern::kTernMaxSections || table > n || 32ull * count > n - table) return false;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = d + table + 32ull * i;
    uint64_t offset = load<uint64_t>(e + 8), size = load<uint64_t>(e + 16);
    if (offset > n || size > n - offset) return false;
    std::vector<std::byte> bytes(size);
    if (size) std::memcpy(bytes.data(), d + offset, size);
    out.emplace_back(static_cast<tern::SectionType>(load<uint32_t>(e)), std::move(bytes));
  }
  return true;
}

// Makes the size field and every checksum that can be computed agree with the bytes.
void fix_checksums(uint8_t* d, size_t n) {
  if (n < 64) return;
  store<uint64_t>(d + 16, n);
  uint64_t table = load<uint64_t>(d + 24);
  uint32_t count = load<uint32_t>(d + 32);
  if (count <= tern::kTernMaxSections && table <= n && 32ull * count <= n - table) {
    for (uint32_t i = 0; i < count; ++i) {
      uint8_t* e = d + table + 32ull * i;
      uint64_t offset = load<uint64_t>(e + 8), size = load<uint64_t>(e + 16);
      if (offset <= n && size <= n - offset) store<uint32_t>(e + 24, crc(d + offset, size));
    }
    store<uint32_t>(d + 36, crc(d + table, 32ull * count));
  }
  store<uint32_t>(d + 60, crc(d, 60));
}

bool is_json_section(tern::SectionType t) { return t != tern::SectionType::kTensors; }

const std::vector<std::string>& op_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (int i = 0; tern::to_string(static_cast<tern::OpType>(i)) != "?"; ++i)
      v.push_back(tern::to_string(static_cast<tern::OpType>(i)));
    v.push_back("NoSuchOp");
    return v;
  }();
  return names;
}

json interesting_number(Rng& rng) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max(), kMin = std::numeric_limits<int64_t>::min();
  static const int64_t extremes[] = {kMax,          kMax - 1,          kMin,          kMin + 1,      int64_t{1} << 62,
                                     -(int64_t{1} << 62), int64_t{1} << 40, int64_t{1} << 34, int64_t{1} << 32,
                                     (int64_t{1} << 31) - 1, int64_t{1} << 31, -(int64_t{1} << 31), int64_t{1} << 24,
                                     int64_t{1} << 16, int64_t{1} << 50};
  static const int64_t small[] = {0, 1, -1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 31, 32, 63, 64, 65, 127, 128, 255, 256, -2, -3, 1024};
  static const double floats[] = {0.5, -0.5, 1e-45, 1e-30, 3.4e38, 3.5e38, 1e300, -1e300, 2147483648.0,
                                  9.3e18, -9.3e18, 1.8446744073709552e19, 0.1, 1e10, -0.0};
  unsigned what = rng() % 100;
  if (what < 40) return json(extremes[pick(rng, std::size(extremes))]);
  if (what < 80) return json(small[pick(rng, std::size(small))]);
  if (what < 95) return json(floats[pick(rng, std::size(floats))]);
  return json(static_cast<uint64_t>(std::numeric_limits<uint64_t>::max() - rng() % 3));
}

void collect(json& j, std::vector<json*>& nodes, std::vector<std::string>& strings) {
  nodes.push_back(&j);
  if (j.is_string()) strings.push_back(j.get<std::string>());
  if (j.is_structured())
    for (json& c : j) collect(c, nodes, strings);
}

// One edit of the tree somewhere. Mostly edits that keep the JSON well-typed (a different number,
// a list with other numbers, another name or operator, a subtree of the same type from elsewhere),
// so that inputs get past the field checks into shape inference and the quantized layers.
void mutate_tree(json& root, Rng& rng) {
  std::vector<json*> nodes;
  std::vector<std::string> strings;
  collect(root, nodes, strings);
  json& t = *nodes[pick(rng, nodes.size())];
  unsigned what = rng() % 100;
  if (what < 30) {  // a boundary number, or a nudge of the number that is there
    if (t.is_number_integer() && rng() % 2) {
      int64_t v = t.get<int64_t>();
      const int64_t deltas[] = {1, -1, 2, -2, 3};
      int64_t dv = deltas[pick(rng, std::size(deltas))];
      if ((dv > 0 && v <= std::numeric_limits<int64_t>::max() - dv) || (dv < 0 && v >= std::numeric_limits<int64_t>::min() - dv))
        t = v + dv;
    } else if (t.is_number() || rng() % 8 == 0) {
      t = interesting_number(rng);
    }
  } else if (what < 40) {  // every number of a list (a shape, pads, strides...), or one more number
    if (t.is_array() && (t.empty() || t[0].is_number())) {
      json v = interesting_number(rng);
      if (t.empty() || rng() % 3 == 0) t.push_back(v);
      else
        for (json& e : t) e = rng() % 2 ? v : e;
    }
  } else if (what < 52) {  // repeat an element of a list (a value, node, layer, dimension...)
    if (t.is_array() && !t.empty()) {
      json copy = t[pick(rng, t.size())];
      t.insert(t.begin() + static_cast<std::ptrdiff_t>(pick(rng, t.size() + 1)), std::move(copy));
    }
  } else if (what < 58) {  // drop an element, rarely a key
    if (t.is_array() && !t.empty()) {
      t.erase(pick(rng, t.size()));
    } else if (t.is_object() && !t.empty() && rng() % 3 == 0) {
      auto it = t.begin();
      std::advance(it, static_cast<std::ptrdiff_t>(pick(rng, t.size())));
      t.erase(it);
    }
  } else if (what < 72) {  // a subtree of the same shape from elsewhere (objects: the same keys)
    auto keys = [](const json& o) {
      std::vector<std::string> k;
      for (auto it = o.begin(); it != o.end(); ++it) k.push_back(it.key());
      return k;
    };
    std::vector<json*> same;
    for (json* n : nodes)
      if (n != &t && n->type() == t.type() && (!t.is_object() || keys(*n) == keys(t))) same.push_back(n);
    if (!same.empty()) {
      json copy = *same[pick(rng, same.size())];
      t = std::move(copy);
    }
  } else if (what < 82) {  // another name (names refer to each other), or an operator name
    if (t.is_string()) {
      if (rng() % 2 && !strings.empty()) t = strings[pick(rng, strings.size())];
      else t = op_names()[pick(rng, op_names().size())];
    }
  } else if (what < 90) {  // booleans flip, numbers change sign
    if (t.is_boolean()) t = !t.get<bool>();
    else if (t.is_number_float()) t = -t.get<double>();
    else if (t.is_number_integer() && t.get<int64_t>() != std::numeric_limits<int64_t>::min()) t = -t.get<int64_t>();
  } else if (what < 95) {  // a key from elsewhere with its value (optional fields: "external", "tensor", "bias"...)
    if (t.is_object()) {
      std::vector<std::pair<std::string, json*>> keyed;
      for (json* n : nodes)
        if (n->is_object())
          for (auto it = n->begin(); it != n->end(); ++it) keyed.emplace_back(it.key(), &it.value());
      if (!keyed.empty()) {
        auto [key, value] = keyed[pick(rng, keyed.size())];
        json copy = *value;
        t[key] = std::move(copy);
      }
    }
  } else if (what < 98) {  // another type
    static const json others[] = {nullptr, true, false, "", "x", json::array(), json::object(), 0, -1, 1.5};
    t = others[pick(rng, std::size(others))];
  } else {  // any subtree from elsewhere
    json copy = *nodes[pick(rng, nodes.size())];
    t = std::move(copy);
  }
}

// Byte mutations of one buffer, through libFuzzer's mutator.
void mutate_bytes(std::vector<std::byte>& b, size_t grow) {
  if (b.empty()) b.push_back(std::byte{0});  // libFuzzer's mutator wants at least one byte
  size_t size = b.size();
  b.resize(size + grow);
  size = LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(b.data()), size, b.size());
  b.resize(size);
}

// A float32 or int32 in the tensor payload replaced by a boundary value (scales, steps, biases).
void poke_word(std::vector<std::byte>& b, Rng& rng) {
  if (b.size() < 4) return;
  static const float floats[] = {0.0f, -0.0f, -1.0f, 1.0f, INFINITY, -INFINITY, NAN, 3.4e38f, 1e-45f, 65536.0f, 1e20f};
  static const int32_t ints[] = {0, -1, 1, 0x7fffffff, INT32_MIN, 0x01010101, 0x55555555, -0x55555556};
  size_t at = pick(rng, b.size() / 4) * 4;
  if (rng() % 2) std::memcpy(b.data() + at, &floats[pick(rng, std::size(floats))], 4);
  else std::memcpy(b.data() + at, &ints[pick(rng, std::size(ints))], 4);
}

size_t emit(const Sections& sections, uint8_t* data, size_t max_size) {
  std::vector<std::byte> bytes;
  try {
    bytes = tern::serialize_tern_file(sections);
  } catch (const tern::Error&) {  // too many sections
    return 0;
  }
  if (bytes.size() > max_size) return 0;
  std::memcpy(data, bytes.data(), bytes.size());
  return bytes.size();
}

size_t raw_mutation(uint8_t* data, size_t size, size_t max_size, Rng& rng) {
  size = LLVMFuzzerMutate(data, size, max_size);
  if (rng() % 4) fix_checksums(data, size);
  return size;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::load_tern_input(data, size);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed ? seed : 1);
  Sections sections;
  unsigned what = rng() % 100;
  if (what < 6 || !split(data, size, sections) || sections.empty()) return raw_mutation(data, size, max_size, rng);
  if (what < 9) {  // the section list: one dropped, repeated, retyped or moved
    size_t i = pick(rng, sections.size());
    switch (rng() % 4) {
      case 0: sections.erase(sections.begin() + static_cast<std::ptrdiff_t>(i)); break;
      case 1: {
        auto copy = sections[i];
        sections.insert(sections.begin() + static_cast<std::ptrdiff_t>(pick(rng, sections.size() + 1)), std::move(copy));
        break;
      }
      case 2: sections[i].first = static_cast<tern::SectionType>(rng() % 6); break;
      default: std::swap(sections[i], sections[pick(rng, sections.size())]); break;
    }
  } else {
    // One section's content: mostly the graph or the quantization JSON, sometimes the tensors.
    std::vector<size_t> main_json, other;
    for (size_t i = 0; i < sections.size(); ++i)
      (sections[i].first == tern::SectionType::kGraph || sections[i].first == tern::SectionType::kQuantization ? main_json
                                                                                                                : other)
          .push_back(i);
    bool structured = !main_json.empty() && (other.empty() || rng() % 100 < 85);
    size_t i = structured ? main_json[pick(rng, main_json.size())] : other[pick(rng, other.size())];
    auto& [type, bytes] = sections[i];
    json j = is_json_section(type) ? json::parse(reinterpret_cast<const char*>(bytes.data()),
                                                 reinterpret_cast<const char*>(bytes.data()) + bytes.size(), nullptr, false)
                                   : json(json::value_t::discarded);
    if (!j.is_discarded() && rng() % 100 != 0) {  // rarely the JSON text's bytes: the parser is not tern's
      for (int k = rng() % 4 == 0 ? 2 : 1; k > 0; --k) mutate_tree(j, rng);
      std::string text = j.dump(-1, ' ', false, json::error_handler_t::replace);
      bytes.assign(reinterpret_cast<const std::byte*>(text.data()), reinterpret_cast<const std::byte*>(text.data()) + text.size());
    } else if (type == tern::SectionType::kTensors && rng() % 8) {  // payload bytes in place: offsets stay valid
      if (rng() % 2) {
        poke_word(bytes, rng);
      } else {
        size_t n = bytes.size();
        mutate_bytes(bytes, 0);
        bytes.resize(n, std::byte{0});
      }
    } else {
      mutate_bytes(bytes, 64);
    }
  }
  size_t n = emit(sections, data, max_size);
  return n ? n : raw_mutation(data, size, max_size, rng);
}

// Crossover: the sections of one file with one section (of the same type when there is one) from another.
extern "C" size_t LLVMFuzzerCustomCrossOver(const uint8_t* data1, size_t size1, const uint8_t* data2, size_t size2,
                                            uint8_t* out, size_t max_out_size, unsigned int seed) {
  Rng rng(seed ? seed : 1);
  Sections a, b;
  if (!split(data1, size1, a) || !split(data2, size2, b) || a.empty() || b.empty()) return 0;
  size_t i = pick(rng, a.size());
  size_t j = pick(rng, b.size());
  for (size_t k = 0; k < b.size(); ++k)
    if (b[k].first == a[i].first && rng() % 4) j = k;
  a[i].second = b[j].second;
  return emit(a, out, max_out_size);
}
