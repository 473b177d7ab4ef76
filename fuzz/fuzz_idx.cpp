// libFuzzer target for the IDX reader (read_idx, gzip or plain) and the IDX dataset loader; see
// load_idx_input.h. Inputs are IDX files as they lie on disk, plain or gzip-compressed (Debian
// ships Fashion-MNIST as .gz). Byte mutations of a gzip stream almost only reach zlib's checks, so
// a custom mutator works on what the stream holds:
//   - a gzip input is mostly decompressed, mutated and compressed again (sometimes with its
//     stream then cut short, its checksum broken, trailing bytes or a second member added, to
//     reach read_idx's gzip error paths);
//   - a plain input is mutated as it is, and sometimes compressed afterwards, so that both paths
//     see every kind of header.
// Crash inputs are plain files: the regression test loads them as they are.
#include <zlib.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "load_idx_input.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace {

using Rng = std::minstd_rand;
using Bytes = std::vector<uint8_t>;

constexpr size_t kMaxPlain = size_t{1} << 20;  // the mutator never inflates more than this

bool is_gzip(const uint8_t* d, size_t n) { return n >= 2 && d[0] == 0x1f && d[1] == 0x8b; }

// The decompressed bytes of a gzip stream (every member), or false when it does not decompress.
bool gunzip(const uint8_t* d, size_t n, Bytes& out) {
  z_stream s{};
  if (inflateInit2(&s, 16 + MAX_WBITS) != Z_OK) return false;
  s.next_in = const_cast<Bytes::value_type*>(d);
  s.avail_in = static_cast<uInt>(n);
  uint8_t chunk[1 << 14];
  int rc = Z_OK;
  while (rc != Z_STREAM_END || s.avail_in > 0) {
    if (rc == Z_STREAM_END && inflateReset(&s) != Z_OK) break;  // a further member
    s.next_out = chunk;
    s.avail_out = sizeof chunk;
    rc = inflate(&s, Z_NO_FLUSH);
    out.insert(out.end(), chunk, chunk + (sizeof chunk - s.avail_out));
    if ((rc != Z_OK && rc != Z_STREAM_END) || out.size() > kMaxPlain) break;
  }
  inflateEnd(&s);
  return rc == Z_STREAM_END && s.avail_in == 0;
}

Bytes gzip(const Bytes& plain, int level) {
  z_stream s{};
  Bytes out;
  if (deflateInit2(&s, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK) return out;
  out.resize(deflateBound(&s, static_cast<uLong>(plain.size())));
  s.next_in = const_cast<Bytes::value_type*>(plain.data());
  s.avail_in = static_cast<uInt>(plain.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&s, Z_FINISH);
  out.resize(rc == Z_STREAM_END ? s.total_out : 0);
  deflateEnd(&s);
  return out;
}

// A valid stream made subtly invalid: cut short, its CRC or length trailer broken, garbage or a
// second member after it.
void damage_gzip(Bytes& z, Rng& rng) {
  if (z.size() < 18) return;
  switch (rng() % 4) {
    case 0: z.resize(10 + rng() % (z.size() - 10)); break;  // truncated inside the deflate data or trailer
    case 1: z[z.size() - 8 + rng() % 8] ^= static_cast<uint8_t>(1 + rng() % 255); break;  // CRC32 / ISIZE
    case 2:
      for (int i = 0, n = 1 + static_cast<int>(rng() % 16); i < n; ++i) z.push_back(static_cast<uint8_t>(rng()));
      break;
    default: {
      Bytes copy = z;
      z.insert(z.end(), copy.begin(), copy.end());
      break;
    }
  }
}

size_t emit(const Bytes& b, uint8_t* data, size_t max_size) {
  if (b.empty() || b.size() > max_size) return 0;
  std::memcpy(data, b.data(), b.size());
  return b.size();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tern::fuzz::load_idx_input(data, size);
  return 0;
}

extern "C" size_t LLVMFuzzerCustomMutator(uint8_t* data, size_t size, size_t max_size, unsigned int seed) {
  Rng rng(seed ? seed : 1);
  Bytes plain;
  if (is_gzip(data, size) && rng() % 8 != 0 && gunzip(data, size, plain)) {
    size_t n = plain.size();
    plain.resize(std::max<size_t>(n, 1) + 64);
    plain.resize(LLVMFuzzerMutate(plain.data(), std::max<size_t>(n, 1), plain.size()));
    Bytes z = gzip(plain, static_cast<int>(rng() % 10));
    if (rng() % 8 == 0) damage_gzip(z, rng);
    if (size_t out = emit(z, data, max_size)) return out;
    return LLVMFuzzerMutate(data, size, max_size);
  }
  size = LLVMFuzzerMutate(data, size, max_size);
  if (rng() % 8 == 0 && !is_gzip(data, size)) {
    Bytes z = gzip(Bytes(data, data + size), static_cast<int>(rng() % 10));
    if (size_t out = emit(z, data, max_size)) return out;
  }
  return size;
}
