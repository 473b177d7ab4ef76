// The .tern container and graph serialization: round trips, and hostile files (every truncation,
// byte flips with and without repaired checksums) give a clean error, never a crash.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>

#include "onnx_builder.h"
#include "tern/error.h"
#include "tern/executor.h"
#include "tern/model_io.h"
#include "tern/onnx_import.h"

namespace tern::testing {
namespace {

std::string small_model() {
  OnnxBuilder b;
  b.input("x", {-1, 2, 5, 5});
  b.floats("w", {3, 2, 3, 3}, random_floats(54, 1));
  b.floats("b", {3}, {0.1f, 0.2f, 0.3f});
  b.floats("fc", {4, 27}, random_floats(108, 2));
  auto& conv = b.node("Conv", {"x", "w", "b"}, {"c"}, "conv");
  OnnxBuilder::attr(conv, "pads", std::vector<int64_t>{1, 1, 1, 1});
  OnnxBuilder::attr(conv, "strides", std::vector<int64_t>{2, 2});
  b.node("Relu", {"c"}, {"r"}, "relu");
  auto& flat = b.node("Flatten", {"r"}, {"f"}, "flatten");
  OnnxBuilder::attr(flat, "axis", int64_t{1});
  auto& gemm = b.node("Gemm", {"f", "fc"}, {"y"}, "fc");
  OnnxBuilder::attr(gemm, "transB", int64_t{1});
  b.output("y");
  b.metadata("tern.mean", "0.25");
  return b.bytes();
}

Tensor input() {
  auto v = random_floats(2 * 2 * 5 * 5, 5);
  return Tensor::from_floats({2, 2, 5, 5}, v);
}

std::vector<std::byte> serialized(const Graph& g) { return serialize_tern_file(graph_sections(g, R"({"tool":"test"})")); }

TEST(TernFile, GraphRoundTripIsIdentical) {
  Graph g = import_onnx_bytes(small_model(), "small.onnx");
  std::vector<std::byte> bytes = serialized(g);
  Graph h = load_graph(TernFile::from_bytes(bytes, "small.tern"));
  ASSERT_EQ(h.nodes.size(), g.nodes.size());
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    EXPECT_EQ(h.nodes[i].name, g.nodes[i].name);
    EXPECT_EQ(h.nodes[i].op, g.nodes[i].op);
    EXPECT_EQ(h.nodes[i].inputs, g.nodes[i].inputs);
  }
  EXPECT_EQ(h.metadata, g.metadata);
  // Writing what was read gives the same bytes (the source path aside), and the same outputs bit for bit.
  EXPECT_EQ(h.source, "small.tern");
  h.source = g.source;
  EXPECT_EQ(serialized(h), bytes);
  Tensor a = Executor(g).run(input()), b = Executor(h).run(input());
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.raw(), b.raw(), a.bytes()), 0);
}

TEST(TernFile, SavedFileIsMappedAndAtomic) {
  Graph g = import_onnx_bytes(small_model(), "small.onnx");
  std::string path = (std::filesystem::temp_directory_path() / "tern_test_small.tern").string();
  save_graph(path, g);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_TRUE(is_tern_file(path));
  Graph h = load_graph(path);
  EXPECT_EQ(h.nodes.size(), g.nodes.size());
  std::filesystem::remove(path);
  EXPECT_THROW(save_graph("/no/such/dir/x.tern", g), Error);
  EXPECT_THROW(load_graph("/no/such/file.tern"), Error);
}

TEST(TernFile, EveryTruncationIsAnError) {
  std::vector<std::byte> bytes = serialized(import_onnx_bytes(small_model(), "small.onnx"));
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<long>(n));
    EXPECT_THROW(load_graph(TernFile::from_bytes(cut, "cut.tern")), Error) << "prefix " << n;
  }
}

TEST(TernFile, ByteFlipsAreCaughtByChecksums) {
  std::vector<std::byte> bytes = serialized(import_onnx_bytes(small_model(), "small.onnx"));
  for (size_t i = 0; i < bytes.size(); i += 3) {
    std::vector<std::byte> bad = bytes;
    bad[i] ^= std::byte{0x41};
    EXPECT_THROW(load_graph(TernFile::from_bytes(bad, "flip.tern")), Error) << "byte " << i;
  }
}

// Corrupts the graph JSON and repairs every checksum, so the loader's own validation is what stands
// between a hostile file and the executor.
TEST(TernFile, CorruptGraphWithValidChecksumsIsACleanError) {
  Graph g = import_onnx_bytes(small_model(), "small.onnx");
  auto sections = graph_sections(g, "{}");
  std::vector<std::byte>& text = sections[0].second;
  uint32_t seed = 99;
  int rejected = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    auto mutated = sections;
    auto& t = mutated[0].second;
    for (int k = 0; k < 1 + trial % 3; ++k) {
      seed = seed * 1664525u + 1013904223u;
      size_t at = (seed >> 8) % t.size();
      const char digits[] = "0123456789-[]{}\",:e";
      t[at] = static_cast<std::byte>(digits[(seed >> 3) % (sizeof digits - 1)]);
    }
    try {
      Graph h = load_graph(TernFile::from_bytes(serialize_tern_file(mutated), "mutated.tern"));
      Executor(h).run(input());
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 2000);
  (void)text;
}

}  // namespace
}  // namespace tern::testing
