// The .tern container: one little-endian file holding a model's graph, its tensors (weights and,
// once quantized, packed codes and scales) and provenance, laid out so a runtime can memory-map it
// and use tensors in place.
//
// Format version 1:
//
//   offset  size  field
//   0       8     magic "TERN\0\r\n\x1a" (catches text-mode and truncating transfers)
//   8       4     format version (1)
//   12      4     header size (64)
//   16      8     file size in bytes
//   24      8     section table offset (a multiple of 64)
//   32      4     section count (<= 1024)
//   36      4     CRC-32 of the section table
//   40      20    reserved, zero
//   60      4     CRC-32 of bytes [0, 60)
//
//   section table: section count entries of 32 bytes:
//   0 u32 type (SectionType)   4 u32 reserved (0)   8 u64 offset (a multiple of 64)
//   16 u64 size                24 u32 CRC-32 of the section's bytes     28 u32 reserved (0)
//
// Sections never overlap and lie inside the file. A reader checks the magic, version, sizes, both
// checksums and every section's bounds and checksum before it returns anything.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tern {

inline constexpr char kTernMagic[8] = {'T', 'E', 'R', 'N', '\0', '\r', '\n', '\x1a'};
inline constexpr uint32_t kTernFormatVersion = 1;
inline constexpr uint64_t kTernAlignment = 64;
inline constexpr uint32_t kTernMaxSections = 1024;

// Stored in files: append only, never renumber.
enum class SectionType : uint32_t {
  kGraph = 1,       // the graph IR as JSON (UTF-8), tensors referenced by index into kTensors
  kTensors = 2,     // tensor payloads, each 64-byte aligned; the table of contents is in kGraph
  kProvenance = 3,  // JSON: source model and its SHA-256, options, tern version
  kQuantization = 4,  // JSON: per quantized layer, its codes, scales, bias and activation parameters
                      // (payloads in kTensors); see quantized_model.h
  kCheckpoint = 5,    // JSON: a training run's state (step, options, tensor table; payloads in kTensors);
                      // see finetune.h
};

struct TernSection {
  SectionType type;
  std::span<const std::byte> bytes;
};

// A validated, read-only view of a .tern file (memory-mapped where possible).
class TernFile {
 public:
  static TernFile open(const std::string& path);                                   // maps the file
  static TernFile from_bytes(std::vector<std::byte> bytes, const std::string& name);  // takes a copy

  const std::string& name() const { return name_; }
  const std::vector<TernSection>& sections() const { return sections_; }
  // The one section of that type; throws naming the file if absent or repeated.
  std::span<const std::byte> section(SectionType type) const;
  bool has_section(SectionType type) const;

 private:
  void validate();
  std::string name_;
  std::shared_ptr<const std::byte> storage_;  // mmap or heap
  size_t size_ = 0;
  std::vector<TernSection> sections_;
};

// Writes sections in order with the header and table; atomically (temporary file, then rename).
// `validate`, when given, reads the finished bytes back as a TernFile before anything is written and
// throws to refuse them: a writer never leaves a file that its own reader would reject.
void write_tern_file(const std::string& path, const std::vector<std::pair<SectionType, std::vector<std::byte>>>& sections,
                     const std::function<void(const TernFile&)>& validate = {});
// The same bytes, in memory (tests).
std::vector<std::byte> serialize_tern_file(const std::vector<std::pair<SectionType, std::vector<std::byte>>>& sections);

}  // namespace tern
