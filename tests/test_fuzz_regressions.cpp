// Every input a fuzz target ever crashed on (fuzz/regressions/<kind>/) and every seed of its corpus
// (fuzz/corpus/<kind>/) goes through the same entry as the fuzz target (fuzz/load_*_input.h,
// fuzz/parse_cli_input.h), built with the normal compiler: each must be accepted or rejected with
// tern::Error, nothing else. The seeds must be accepted. scripts/fuzz.sh runs the fuzzers
// themselves (ASan + UBSan) in CI.
#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include "../fuzz/load_idx_input.h"
#include "../fuzz/load_npy_input.h"
#include "../fuzz/load_onnx_input.h"
#include "../fuzz/load_tern_input.h"
#include "../fuzz/parse_cli_input.h"

namespace {

namespace fs = std::filesystem;

using Entry = bool (*)(const uint8_t*, size_t, std::string*);

// An input kind: its folder under fuzz/corpus and fuzz/regressions, and the fuzz targets' entry.
struct Kind {
  const char* name;
  Entry entry;
};
const Kind kKinds[] = {
    {"tern_loader", tern::fuzz::load_tern_input},  // fuzz_tern_loader
    {"onnx", tern::fuzz::load_onnx_input},         // fuzz_onnx_import, fuzz_onnx_structured
    {"npy", tern::fuzz::load_npy_input},           // fuzz_npy
    {"idx", tern::fuzz::load_idx_input},           // fuzz_idx
    {"cli_args", tern::fuzz::parse_cli_input},     // fuzz_cli_args
};
void PrintTo(const Kind& kind, std::ostream* os) { *os << kind.name; }  // test names in ctest's list

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  if (!fs::is_directory(dir)) return files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.is_regular_file() && e.path().filename().string().front() != '.') files.push_back(e.path());
  std::sort(files.begin(), files.end());
  return files;
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Small inputs must not make the library allocate gigabytes (under the fuzzers, libFuzzer's
// malloc limit reports it). Here the address space is capped a few GiB above what the test uses,
// so that such an allocation fails (tern's allocator then throws "out of memory", which counts as
// a failure below) instead of taking the machine's memory. Not under ASan, whose shadow memory
// needs the address space.
#if defined(__SANITIZE_ADDRESS__)
#define TERN_TEST_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TERN_TEST_UNDER_ASAN 1
#endif
#endif
class AddressSpaceCap {
 public:
  AddressSpaceCap() {
#ifndef TERN_TEST_UNDER_ASAN
    long pages = 0;
    if (FILE* f = std::fopen("/proc/self/statm", "r")) {
      if (std::fscanf(f, "%ld", &pages) != 1) pages = 0;
      std::fclose(f);
    }
    if (pages > 0 && getrlimit(RLIMIT_AS, &old_) == 0) {
      rlimit cap = old_;
      cap.rlim_cur = static_cast<rlim_t>(pages) * 4096 + (rlim_t{3} << 30);
      if (old_.rlim_max != RLIM_INFINITY && cap.rlim_cur > old_.rlim_max) cap.rlim_cur = old_.rlim_max;
      set_ = setrlimit(RLIMIT_AS, &cap) == 0;
    }
#endif
  }
  ~AddressSpaceCap() {
    if (set_) setrlimit(RLIMIT_AS, &old_);
  }

 private:
  rlimit old_{};
  bool set_ = false;
};

// Accepted or tern::Error: returns whether it was accepted; a test failure for anything else (an
// error that is an allocation failure included). TERN_TEST_VERBOSE=1 prints each file's outcome.
bool accepted(const Kind& kind, const fs::path& path) {
  std::vector<uint8_t> bytes = read_bytes(path);
  AddressSpaceCap cap;
  try {
    std::string error;
    bool ok = kind.entry(bytes.data(), bytes.size(), &error);
    if (std::getenv("TERN_TEST_VERBOSE"))
      std::printf("%s/%s: %s\n", kind.name, path.filename().c_str(), ok ? "accepted" : error.c_str());
    if (!ok && error.find("out of memory") != std::string::npos)
      ADD_FAILURE() << path << ": the input made the library allocate before checking sizes: " << error;
    return ok;
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": threw a non-tern::Error exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << path << ": threw a non-exception";
  }
  return false;
}

const fs::path kFuzzDir = fs::path(TERN_SOURCE_DIR) / "fuzz";

class FuzzInputs : public ::testing::TestWithParam<Kind> {};

TEST_P(FuzzInputs, EveryCrashInputIsAcceptedOrATernError) {
  for (const fs::path& f : files_in(kFuzzDir / "regressions" / GetParam().name)) {
    SCOPED_TRACE(f.string());
    accepted(GetParam(), f);
  }
}

TEST_P(FuzzInputs, EverySeedOfTheCorpusIsAccepted) {
  std::vector<fs::path> seeds = files_in(kFuzzDir / "corpus" / GetParam().name);
  ASSERT_FALSE(seeds.empty()) << "no seed corpus in " << (kFuzzDir / "corpus" / GetParam().name);
  for (const fs::path& f : seeds) EXPECT_TRUE(accepted(GetParam(), f)) << f << " is a seed but is rejected";
}

INSTANTIATE_TEST_SUITE_P(FuzzRegressions, FuzzInputs, ::testing::ValuesIn(kKinds),
                         [](const ::testing::TestParamInfo<Kind>& info) { return std::string(info.param.name); });

// Every file under fuzz/corpus and fuzz/regressions is in a known kind's folder (a file elsewhere
// would never be tested).
TEST(FuzzRegressions, EveryInputIsInAKindsFolder) {
  for (const char* top : {"corpus", "regressions"}) {
    for (const auto& e : fs::recursive_directory_iterator(kFuzzDir / top)) {
      if (!e.is_regular_file()) continue;
      fs::path parent = e.path().parent_path();
      bool known = parent.parent_path() == kFuzzDir / top &&
                   std::any_of(std::begin(kKinds), std::end(kKinds),
                               [&](const Kind& k) { return parent.filename() == k.name; });
      EXPECT_TRUE(known) << e.path() << " is not in fuzz/" << top << "/<kind>/ of a known kind";
    }
  }
}

}  // namespace
