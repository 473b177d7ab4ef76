// tern-train: the commands that need libtorch (finetune, train). A separate executable so that
// every other tern command starts without loading libtorch and MPI; `tern finetune|train` runs it.
#include <cstring>

#include "cli/entry.h"

int main(int argc, char** argv) {
  using namespace tern::cli;
  if (argc < 2) {
    std::fputs("usage: tern finetune|train ... (see 'tern --help')\n", stderr);
    return kExitUsage;
  }
  return run_command(argc, argv, [](const std::string& command, int n, char** args) {
    if (command == "finetune") return cmd_finetune(n, args);
    if (command == "train") return cmd_train(n, args);
    throw UsageError("tern-train runs 'finetune' and 'train' only, not '" + command + "'");
  });
}
