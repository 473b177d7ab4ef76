#include "tern/tern_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "core/file_io.h"
#include "tern/error.h"

namespace tern {

namespace {

uint32_t crc(const std::byte* data, size_t n) {
  uLong c = crc32(0L, Z_NULL, 0);
  while (n > 0) {  // zlib takes uInt lengths
    uInt chunk = static_cast<uInt>(std::min<size_t>(n, 1u << 30));
    c = crc32(c, reinterpret_cast<const Bytef*>(data), chunk);
    data += chunk;
    n -= chunk;
  }
  return static_cast<uint32_t>(c);
}

template <typename T>
T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // the format is little-endian, as is every CPU tern targets
  return v;
}

template <typename T>
void store(std::vector<std::byte>& out, size_t at, T v) {
  std::memcpy(out.data() + at, &v, sizeof v);
}

uint64_t align_up(uint64_t x) { return (x + kTernAlignment - 1) / kTernAlignment * kTernAlignment; }

}  // namespace

std::vector<std::byte> serialize_tern_file(const std::vector<std::pair<SectionType, std::vector<std::byte>>>& sections) {
  check(sections.size() <= kTernMaxSections, "too many sections for a .tern file");
  uint64_t offset = 64;
  std::vector<uint64_t> offsets;
  for (const auto& s : sections) {
    offsets.push_back(offset);
    offset = align_up(offset + s.second.size());
  }
  uint64_t table_offset = offset;
  uint64_t file_size = table_offset + 32 * sections.size();
  std::vector<std::byte> out(file_size, std::byte{0});
  for (size_t i = 0; i < sections.size(); ++i) {
    const auto& bytes = sections[i].second;
    if (!bytes.empty()) std::memcpy(out.data() + offsets[i], bytes.data(), bytes.size());
    size_t e = table_offset + 32 * i;
    store<uint32_t>(out, e, static_cast<uint32_t>(sections[i].first));
    store<uint64_t>(out, e + 8, offsets[i]);
    store<uint64_t>(out, e + 16, bytes.size());
    store<uint32_t>(out, e + 24, crc(bytes.data(), bytes.size()));
  }
  std::memcpy(out.data(), kTernMagic, 8);
  store<uint32_t>(out, 8, kTernFormatVersion);
  store<uint32_t>(out, 12, 64);
  store<uint64_t>(out, 16, file_size);
  store<uint64_t>(out, 24, table_offset);
  store<uint32_t>(out, 32, static_cast<uint32_t>(sections.size()));
  store<uint32_t>(out, 36, crc(out.data() + table_offset, 32 * sections.size()));
  store<uint32_t>(out, 60, crc(out.data(), 60));
  return out;
}

void write_tern_file(const std::string& path, const std::vector<std::pair<SectionType, std::vector<std::byte>>>& sections,
                     const std::function<void(const TernFile&)>& validate) {
  std::vector<std::byte> bytes = serialize_tern_file(sections);
  if (validate) {
    try {
      validate(TernFile::from_bytes(bytes, path));
    } catch (const Error& e) {
      std::string m = e.what();
      if (m.rfind(path + ": ", 0) == 0) m = m.substr(path.size() + 2);
      throw Error(path + ": not written: tern could not load the model back (" + m + ")");
    }
  }
  write_file_atomically(path, {{reinterpret_cast<const char*>(bytes.data()), bytes.size()}});
}

TernFile TernFile::open(const std::string& path) {
  InputFile input(path);  // a regular file: a FIFO or a device is refused before any read
  int fd = input.fd();
  TernFile f;
  f.name_ = path;
  f.size_ = static_cast<size_t>(input.size());
  check(f.size_ != 0, path + ": empty file, not a .tern model");
  void* p = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
  check(p != MAP_FAILED, path + ": cannot map file");
  size_t size = f.size_;
  f.storage_ = std::shared_ptr<const std::byte>(static_cast<const std::byte*>(p),
                                                [size](const std::byte* q) { munmap(const_cast<std::byte*>(q), size); });
  f.validate();
  return f;
}

TernFile TernFile::from_bytes(std::vector<std::byte> bytes, const std::string& name) {
  TernFile f;
  f.name_ = name;
  f.size_ = bytes.size();
  auto holder = std::make_shared<std::vector<std::byte>>(std::move(bytes));
  f.storage_ = std::shared_ptr<const std::byte>(holder, holder->data());
  f.validate();
  return f;
}

void TernFile::validate() {
  const std::byte* p = storage_.get();
  const std::string& n = name_;
  check(size_ >= 64 && std::memcmp(p, kTernMagic, 8) == 0, n + ": not a .tern model (bad magic)");
  uint32_t version = load<uint32_t>(p + 8);
  check(version == kTernFormatVersion, n + ": .tern format version " + std::to_string(version) +
                                           " is not supported (this tern reads version " +
                                           std::to_string(kTernFormatVersion) + ")");
  check(load<uint32_t>(p + 60) == crc(p, 60), n + ": header checksum mismatch (corrupt file)");
  check(load<uint32_t>(p + 12) == 64, n + ": unexpected header size");
  uint64_t file_size = load<uint64_t>(p + 16);
  check(file_size == size_, n + ": file is " + std::to_string(size_) + " bytes, header says " +
                                std::to_string(file_size) + " (truncated?)");
  uint64_t table = load<uint64_t>(p + 24);
  uint32_t count = load<uint32_t>(p + 32);
  check(count <= kTernMaxSections, n + ": implausible section count " + std::to_string(count));
  check(table % kTernAlignment == 0 && table >= 64 && table <= size_ && 32ull * count <= size_ - table,
        n + ": section table out of bounds");
  check(load<uint32_t>(p + 36) == crc(p + table, 32ull * count), n + ": section table checksum mismatch (corrupt file)");
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (uint32_t i = 0; i < count; ++i) {
    const std::byte* e = p + table + 32ull * i;
    uint32_t type = load<uint32_t>(e);
    uint64_t offset = load<uint64_t>(e + 8), size = load<uint64_t>(e + 16);
    std::string who = n + ": section " + std::to_string(i);
    check(offset % kTernAlignment == 0 && offset >= 64 && offset <= table && size <= table - offset,
          who + " out of bounds");
    check(load<uint32_t>(e + 24) == crc(p + offset, size), who + " checksum mismatch (corrupt file)");
    for (const auto& [o, s] : spans) check(offset + size <= o || o + s <= offset, who + " overlaps another section");
    spans.emplace_back(offset, size);
    sections_.push_back({static_cast<SectionType>(type), {p + offset, static_cast<size_t>(size)}});
  }
  // Padding and reserved fields must be zero, so that no byte of the file goes unchecked.
  std::vector<std::pair<uint64_t, uint64_t>> used = spans;
  used.emplace_back(0, 64);
  used.emplace_back(table, 32ull * count);
  std::sort(used.begin(), used.end());
  uint64_t at = 0;
  auto zeros = [&](uint64_t from, uint64_t to) {
    for (uint64_t i = from; i < to; ++i) check(p[i] == std::byte{0}, n + ": non-zero padding at byte " + std::to_string(i));
  };
  for (const auto& [o, s] : used) {
    if (o > at) zeros(at, o);
    at = std::max(at, o + s);
  }
  zeros(at, size_);
  zeros(40, 60);
  for (uint32_t i = 0; i < count; ++i) {
    zeros(table + 32ull * i + 4, table + 32ull * i + 8);
    zeros(table + 32ull * i + 28, table + 32ull * i + 32);
  }
}

bool TernFile::has_section(SectionType type) const {
  for (const auto& s : sections_)
    if (s.type == type) return true;
  return false;
}

std::span<const std::byte> TernFile::section(SectionType type) const {
  const TernSection* found = nullptr;
  for (const auto& s : sections_) {
    if (s.type != type) continue;
    check(found == nullptr, name_ + ": section type " + std::to_string(static_cast<uint32_t>(type)) + " repeated");
    found = &s;
  }
  check(found != nullptr, name_ + ": missing section type " + std::to_string(static_cast<uint32_t>(type)));
  return found->bytes;
}

}  // namespace tern
