#include "core/file_io.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "tern/error.h"

namespace tern {

namespace {

std::string errno_text(int err) { return std::strerror(err); }

// What a non-regular file is, for messages.
std::string file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Writes all of `data` to fd; false with errno set on failure.
bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = ::write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {
      errno = ENOSPC;
      return false;
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

std::string write_error(const std::string& path, int err) {
  if (err == ENOSPC || err == EDQUOT) return path + ": write failed: no space left on device";
  return path + ": write failed (" + errno_text(err) + ")";
}

// The file an output path names: PATH itself, or for a symbolic link the file it points to.
std::string resolve_output(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) return path;
  char resolved[PATH_MAX];
  if (::realpath(path.c_str(), resolved) == nullptr)
    throw Error(path + ": is a symbolic link to a missing file or directory (" + errno_text(errno) + ")");
  return resolved;
}

// The temporary file being written now (one write at a time per process), for signal handlers.
char pending_temporary[PATH_MAX + 1];
std::atomic<bool> pending{false};

void set_pending(const std::string& path) {
  if (path.size() > PATH_MAX) return;
  std::memcpy(pending_temporary, path.c_str(), path.size() + 1);
  pending.store(true);
}

mode_t current_umask() {
  mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

}  // namespace

InputFile::InputFile(const std::string& path) {
  // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever.
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) throw Error(path + ": cannot open file (" + errno_text(errno) + ")");
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    int err = errno;
    ::close(fd_);
    throw Error(path + ": cannot open file (" + errno_text(err) + ")");
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd_);
    throw Error(path + ": not a regular file (" + file_kind(st.st_mode) + ")");
  }
  size_ = static_cast<int64_t>(st.st_size);
  int flags = ::fcntl(fd_, F_GETFL);
  if (flags >= 0) ::fcntl(fd_, F_SETFL, flags & ~O_NONBLOCK);
}

InputFile::~InputFile() {
  if (fd_ >= 0) ::close(fd_);
}

void remove_pending_temporary() noexcept {
  if (pending.exchange(false)) ::unlink(pending_temporary);
}

int InputFile::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

std::string read_whole_file(const std::string& path) {
  InputFile file(path);
  std::string bytes;
  bytes.resize(static_cast<size_t>(file.size()));
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = ::read(file.fd(), bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw Error(path + ": read error (" + errno_text(errno) + ")");
    if (n == 0) break;  // shrank while we read
    got += static_cast<size_t>(n);
  }
  bytes.resize(got);
  return bytes;
}

bool file_starts_with(const std::string& path, std::string_view magic) {
  try {
    InputFile file(path);
    std::string head(magic.size(), '\0');
    ssize_t n = ::pread(file.fd(), head.data(), head.size(), 0);
    return n == static_cast<ssize_t>(magic.size()) && head == magic;
  } catch (const Error&) {
    return false;
  }
}

void write_file_atomically(const std::string& path, std::initializer_list<std::span<const char>> parts,
                           const WriteValidator& validate) {
  check(!path.empty(), "output path is empty");
  if (validate) {
    if (parts.size() == 1) {
      validate(*parts.begin());
    } else {
      std::string all;
      for (const auto& part : parts) all.append(part.data(), part.size());
      validate(all);
    }
  }
  const std::string target = resolve_output(path);
  struct stat st;
  bool exists = ::stat(target.c_str(), &st) == 0;
  if (exists && S_ISCHR(st.st_mode)) {  // /dev/null, /dev/full, a terminal: write in place
    int fd = ::open(target.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) throw Error(path + ": cannot write file (" + errno_text(errno) + ")");
    for (const auto& part : parts)
      if (!write_all(fd, part.data(), part.size())) {
        int err = errno;
        ::close(fd);
        throw Error(write_error(path, err));
      }
    if (::close(fd) != 0 && errno != EINTR) throw Error(write_error(path, errno));
    return;
  }
  if (exists && !S_ISREG(st.st_mode))
    throw Error(path + ": will not replace " + file_kind(st.st_mode) + " with a file");

  std::filesystem::path target_path(target);
  std::string dir = target_path.has_parent_path() ? target_path.parent_path().string() : ".";
  std::string tmp = dir + "/." + target_path.filename().string() + ".XXXXXX";
  int fd = ::mkstemp(tmp.data());  // O_CREAT | O_EXCL: never an existing file, never through a link
  if (fd < 0) throw Error(path + ": cannot write file (" + errno_text(errno) + ")");
  set_pending(tmp);
  auto fail = [&](const std::string& message) {
    ::close(fd);
    pending.store(false);
    ::unlink(tmp.c_str());
    throw Error(message);
  };
  ::fchmod(fd, exists ? (st.st_mode & 07777) : (0666 & ~current_umask()));
  for (const auto& part : parts)
    if (!write_all(fd, part.data(), part.size())) fail(write_error(path, errno));
  if (::fsync(fd) != 0 && errno != EINVAL) fail(write_error(path, errno));
  if (::close(fd) != 0) {
    int err = errno;
    pending.store(false);
    ::unlink(tmp.c_str());
    throw Error(write_error(path, err));
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    int err = errno;
    pending.store(false);
    ::unlink(tmp.c_str());
    throw Error(path + ": cannot move the finished file into place (" + errno_text(err) + ")");
  }
  pending.store(false);
}

void check_output_paths(const std::vector<std::string>& inputs, const std::vector<std::string>& outputs) {
  namespace fs = std::filesystem;
  auto canonical = [](const std::string& p) {
    std::error_code ec;
    fs::path c = fs::weakly_canonical(fs::absolute(p, ec), ec);
    return ec ? fs::path(p).lexically_normal().string() : c.string();
  };
  struct Seen {
    std::string path, canonical;
    bool exists;
    dev_t dev;
    ino_t ino;
    bool input;
  };
  std::vector<Seen> seen;
  for (const std::string& p : inputs) {
    if (p.empty()) continue;
    struct stat st;
    bool exists = ::stat(p.c_str(), &st) == 0;
    seen.push_back({p, canonical(p), exists, exists ? st.st_dev : 0, exists ? st.st_ino : 0, true});
  }
  for (const std::string& p : outputs) {
    if (p.empty()) continue;
    struct stat st;
    bool exists = ::stat(p.c_str(), &st) == 0;
    if (exists && !S_ISREG(st.st_mode) && !S_ISCHR(st.st_mode))
      throw Error(p + ": will not replace " + file_kind(st.st_mode) + " with a file");
    if (exists && S_ISCHR(st.st_mode)) continue;  // /dev/null may take several outputs
    if (!exists) {  // its folder must exist and take files now, not after the work
      fs::path dir = fs::path(p).parent_path();
      if (dir.empty()) dir = ".";
      struct stat ds;
      if (::stat(dir.c_str(), &ds) != 0 || !S_ISDIR(ds.st_mode))
        throw Error(p + ": cannot write file (folder " + dir.string() + " does not exist)");
      if (::access(dir.c_str(), W_OK | X_OK) != 0)
        throw Error(p + ": cannot write file (folder " + dir.string() + " is not writable)");
    }
    std::string c = canonical(p);
    for (const Seen& s : seen) {
      bool same = (exists && s.exists && s.dev == st.st_dev && s.ino == st.st_ino) || c == s.canonical;
      if (same)
        throw Error(p + ": is the same file as the " + (s.input ? "input " : "output ") + s.path +
                    (s.input ? " (writing it would destroy the input)" : " (two outputs would overwrite each other)"));
    }
    seen.push_back({p, c, exists, exists ? st.st_dev : 0, exists ? st.st_ino : 0, false});
  }
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest);
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : digest) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

}  // namespace tern
