// The entry point both tern executables share: environment checks, options every command takes,
// and the one place that turns an exception into a one-line message and an exit code.
#pragma once

#include <csignal>
#include <cstdio>
#include <functional>
#include <new>
#include <string>

#include "cli/args.h"
#include "core/file_io.h"
#include "kernels/cpu_features.h"
#include "tern/limits.h"

namespace tern::cli {

constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

// Options every command takes, removed from argv before the command parses its own:
// --max-memory SIZE (the memory limit, like TERN_MAX_MEMORY). Returns the new argc.
inline int take_global_options(int argc, char** argv) {
  int out = 2;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    if (a == "--max-memory") {
      if (i + 1 >= argc) throw UsageError("option '--max-memory' needs a value");
      value = argv[++i];
    } else if (a.rfind("--max-memory=", 0) == 0) {
      value = a.substr(13);
    } else {
      argv[out++] = argv[i];
      continue;
    }
    try {
      tern::set_memory_limit(tern::parse_byte_size(value, "--max-memory"));
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
  }
  argv[out] = nullptr;
  return out;
}

// Runs command(argc, argv) for argv[1]; every failure is one line on stderr ("tern: ...") and exit
// code 1, or 2 for a usage error.
inline int run_command(int argc, char** argv, const std::function<int(const std::string&, int, char**)>& command) {
  // Interrupted (Ctrl-C, kill): remove a half-written temporary, then die of the same signal.
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    struct sigaction action {};
    action.sa_handler = [](int s) {
      tern::remove_pending_temporary();
      ::signal(s, SIG_DFL);
      ::raise(s);
    };
    ::sigaction(sig, &action, nullptr);
  }
  try {
    try {
      tern::check_environment();
      tern::kernels::active_isa();  // parses TERN_ISA
    } catch (const Error& e) {
      throw UsageError(e.what());
    }
    argc = take_global_options(argc, argv);
    return command(argv[1], argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tern: %s\n", e.what());
    return kExitUsage;
  } catch (const Error& e) {
    std::fprintf(stderr, "tern: %s\n", e.what());
    return kExitError;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tern: out of memory\n");
    return kExitError;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tern: internal error: %s\n", e.what());
    return kExitError;
  }
}

}  // namespace tern::cli
