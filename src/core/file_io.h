// Whole-file reads and atomic writes, shared by every reader and writer of model and data files.
#pragma once

#include <span>
#include <string>
#include <string_view>

namespace tern {

// The file's bytes; Error "PATH: cannot open file" / "PATH: read error".
std::string read_whole_file(const std::string& path);

// Writes the parts, in order, to PATH.tmp, then renames it over PATH: a failure (disk full, missing
// directory) leaves neither a partial PATH nor the temporary behind.
void write_file_atomically(const std::string& path, std::initializer_list<std::span<const char>> parts);

// SHA-256 of the bytes, as 64 lowercase hex digits (provenance of quantized models).
std::string sha256_hex(std::string_view bytes);

}  // namespace tern
