// Every input the .tern fuzz target ever crashed on (fuzz/regressions/) and every seed of its
// corpus (fuzz/corpus/) goes through the same loading as the fuzz target (fuzz/load_tern_input.h),
// built with the normal compiler: each must load or be rejected with tern::Error, nothing else.
// The seeds must load. scripts/fuzz.sh runs the fuzzer itself (ASan + UBSan) in CI.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "../fuzz/load_tern_input.h"

namespace {

namespace fs = std::filesystem;

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

// Loads or throws tern::Error: returns whether it loaded; a test failure for anything else.
// TERN_TEST_VERBOSE=1 prints each file's outcome.
bool load_or_error(const fs::path& path) {
  std::vector<uint8_t> bytes = read_bytes(path);
  try {
    std::string error;
    bool loaded = tern::fuzz::load_tern_input(bytes.data(), bytes.size(), &error);
    if (std::getenv("TERN_TEST_VERBOSE"))
      std::printf("%s: %s\n", path.filename().c_str(), loaded ? "loads" : error.c_str());
    return loaded;
  } catch (const std::exception& e) {
    ADD_FAILURE() << path << ": threw a non-tern::Error exception: " << e.what();
  } catch (...) {
    ADD_FAILURE() << path << ": threw a non-exception";
  }
  return false;
}

const fs::path kFuzzDir = fs::path(TERN_SOURCE_DIR) / "fuzz";

TEST(FuzzRegressions, EveryCrashInputLoadsOrIsATernError) {
  for (const fs::path& f : files_in(kFuzzDir / "regressions")) {
    SCOPED_TRACE(f.string());
    load_or_error(f);
  }
}

TEST(FuzzRegressions, EverySeedOfTheCorpusLoads) {
  std::vector<fs::path> seeds = files_in(kFuzzDir / "corpus");
  ASSERT_FALSE(seeds.empty()) << "no seed corpus in " << (kFuzzDir / "corpus");
  for (const fs::path& f : seeds) EXPECT_TRUE(load_or_error(f)) << f << " is a seed but does not load";
}

}  // namespace
