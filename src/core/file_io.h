// Whole-file reads and safe writes, shared by every reader and writer of model and data files.
//
// Reads take regular files only: a FIFO would block forever and a device such as /dev/zero never
// ends, so both are refused before a byte is read. Writes never follow a link they did not ask for
// and never destroy anything on failure: the bytes go to a new temporary file (exclusive creation,
// random name, same directory), which is synced and then renamed over the output. An output that
// is a character device (/dev/null, /dev/full) is written in place instead of being replaced.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tern {

// Opens PATH for reading and checks that it is a regular file; Error "PATH: ..." otherwise
// (missing, permission, directory, FIFO, device). Never blocks. Closes on destruction.
class InputFile {
 public:
  explicit InputFile(const std::string& path);
  ~InputFile();
  InputFile(const InputFile&) = delete;
  InputFile& operator=(const InputFile&) = delete;
  int fd() const { return fd_; }
  int64_t size() const { return size_; }
  // Hands the descriptor over (e.g. to zlib's gzdopen); the caller closes it.
  int release();

 private:
  int fd_ = -1;
  int64_t size_ = 0;
};

// The file's bytes; Error "PATH: cannot open file (...)", "PATH: not a regular file", "PATH: read error".
std::string read_whole_file(const std::string& path);

// Whether PATH starts with `magic` (false for anything unreadable or not a regular file).
bool file_starts_with(const std::string& path, std::string_view magic);

// Writes the parts, in order, to a new temporary file beside PATH, syncs it, optionally hands the
// finished bytes to `validate` (which throws to refuse them), then renames it over PATH. PATH may be
// a symbolic link (the file it names is replaced) or a character device (written in place). A
// failure (disk full, missing directory, refused by validate) leaves PATH as it was and no
// temporary file behind.
using WriteValidator = std::function<void(std::span<const char> bytes)>;
void write_file_atomically(const std::string& path, std::initializer_list<std::span<const char>> parts,
                           const WriteValidator& validate = {});

// Removes the temporary file of a write in progress, if any. Async-signal-safe: the CLI calls it
// from its SIGINT/SIGTERM handler, so an interrupted write leaves nothing behind.
void remove_pending_temporary() noexcept;

// Refuses (Error "OUTPUT: is the same file as INPUT ...") when an output path names the same file
// as an input or as another output (the same inode, whatever the spelling: ./x, $PWD/x, a link),
// or when an output exists and is neither a regular file nor a character device (a FIFO would
// block, a directory or block device must not be replaced). Outputs that do not exist yet pass.
// Inputs that do not exist are ignored here (their readers report them).
void check_output_paths(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs);

// SHA-256 of the bytes, as 64 lowercase hex digits (provenance of quantized models).
std::string sha256_hex(std::string_view bytes);

}  // namespace tern
