// The libtorch halves of the operator records, in OpType order.
#include <array>

#include "train/torch_op.h"

namespace tern::train {

const TorchRecord& torch_record(OpType op) {
  static const std::array table = {
#define TERN_OP(name) &torch_record_##name(),
#include "tern/ops.def"
#undef TERN_OP
  };
  size_t i = static_cast<size_t>(op);
  check(i < table.size(), "unknown operator " + std::to_string(i));
  return *table[i];
}

}  // namespace tern::train
