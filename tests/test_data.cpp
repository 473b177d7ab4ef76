// IDX and .npy loaders, datasets and input normalization.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "temp_dir.h"
#include "tern/data.h"
#include "tern/error.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;


std::string idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data) {
  std::string b = {0, 0, 0x08, static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b += static_cast<char>((d >> s) & 0xff);
  b.append(data.begin(), data.end());
  return b;
}

void write_file(const std::string& path, const std::string& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(path, std::ios::binary) << bytes;
  }
}

TEST(Idx, DebianFashionMnistTestSet) {
  Dataset d = load_idx_dataset("fashion-mnist", "test");
  EXPECT_EQ(d.images.shape(), (Shape{10000, 28, 28}));
  EXPECT_EQ(d.images.dtype(), DataType::kUInt8);
  ASSERT_EQ(d.labels.size(), 10000u);
  std::vector<int> per_class(10, 0);
  for (int64_t l : d.labels) {
    ASSERT_GE(l, 0);
    ASSERT_LT(l, 10);
    ++per_class[static_cast<size_t>(l)];
  }
  for (int c : per_class) EXPECT_EQ(c, 1000);  // Fashion-MNIST's test set is balanced
}

TEST(Idx, PlainAndGzipRoundTripAndErrors) {
  TempDir dir;
  std::vector<uint8_t> pixels(2 * 3 * 4);
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = static_cast<uint8_t>(i * 10);
  std::string bytes = idx_bytes({2, 3, 4}, pixels);
  for (bool gz : {false, true}) {
    std::string path = dir.file(gz ? "a.gz" : "a");
    write_file(path, bytes, gz);
    Tensor t = read_idx(path);
    EXPECT_EQ(t.shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(t.data<uint8_t>()[23], 230);
  }
  write_file(dir.file("short"), bytes.substr(0, bytes.size() - 1), false);
  EXPECT_THROW(read_idx(dir.file("short")), Error);
  write_file(dir.file("long"), bytes + "x", false);
  EXPECT_THROW(read_idx(dir.file("long")), Error);
  std::string bad = bytes;
  bad[0] = 1;
  write_file(dir.file("magic"), bad, false);
  EXPECT_THROW(read_idx(dir.file("magic")), Error);
  // A header claiming 2^32-ish elements must fail before allocating.
  write_file(dir.file("huge"), idx_bytes({0xffffffffu, 0xffffffffu}, {1, 2, 3}), false);
  EXPECT_THROW(read_idx(dir.file("huge")), Error);
  // A gzip stream cut in the middle.
  write_file(dir.file("cut.gz"), bytes, true);
  std::string gz;
  {
    std::ifstream in(dir.file("cut.gz"), std::ios::binary);
    gz.assign(std::istreambuf_iterator<char>(in), {});
  }
  write_file(dir.file("cut.gz"), gz.substr(0, gz.size() / 2), false);
  EXPECT_THROW(read_idx(dir.file("cut.gz")), Error);
  EXPECT_THROW(read_idx(dir.file("missing")), Error);
}

TEST(Idx, DatasetDirectoryNeedsBothFiles) {
  TempDir dir;
  write_file(dir.file("t10k-images-idx3-ubyte"), idx_bytes({2, 2, 2}, {1, 2, 3, 4, 5, 6, 7, 8}), false);
  EXPECT_THROW(load_idx_dataset(dir.file("")), Error);  // no labels file
  write_file(dir.file("t10k-labels-idx1-ubyte"), idx_bytes({3}, {0, 1, 2}), false);
  EXPECT_THROW(load_idx_dataset(dir.file("")), Error);  // 2 images, 3 labels
  write_file(dir.file("t10k-labels-idx1-ubyte"), idx_bytes({2}, {0, 1}), false);
  Dataset d = load_idx_dataset(dir.file(""));
  EXPECT_EQ(d.size(), 2);
  EXPECT_THROW(load_idx_dataset(dir.file(""), "validation"), Error);
}

TEST(Npy, RoundTripAtomicWriteAndErrors) {
  TempDir dir;
  Tensor f = Tensor::from_floats({2, 3}, std::vector<float>{1, -2, 3.5f, 4, 5, 6});
  write_npy(dir.file("f.npy"), f);
  EXPECT_FALSE(fs::exists(dir.file("f.npy.tmp")));
  Tensor g = read_npy(dir.file("f.npy"));
  EXPECT_EQ(g.shape(), f.shape());
  EXPECT_EQ(g.data<float>()[2], 3.5f);
  Tensor i = Tensor::from_int64s({4}, std::vector<int64_t>{0, 9, -1, 1LL << 40});
  write_npy(dir.file("i.npy"), i);
  Tensor j = read_npy(dir.file("i.npy"));
  EXPECT_EQ(j.dtype(), DataType::kInt64);
  EXPECT_EQ(j.data<int64_t>()[3], 1LL << 40);
  Tensor scalar = Tensor::from_floats({}, std::vector<float>{2});
  write_npy(dir.file("s.npy"), scalar);
  EXPECT_EQ(read_npy(dir.file("s.npy")).rank(), 0);

  std::string bytes;
  {
    std::ifstream in(dir.file("f.npy"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  for (size_t n = 0; n < bytes.size(); n += 7) {
    write_file(dir.file("t.npy"), bytes.substr(0, n), false);
    EXPECT_THROW(read_npy(dir.file("t.npy")), Error) << "prefix " << n;
  }
  EXPECT_THROW(write_npy(dir.file("no/such/dir/x.npy"), f), Error);
  EXPECT_FALSE(fs::exists(dir.file("no/such/dir/x.npy.tmp")));
}

TEST(Preprocess, MetadataDefaultsAndBatches) {
  Graph g;
  Preprocess plain = preprocess_from_metadata(g);
  EXPECT_DOUBLE_EQ(plain.scale, 1.0 / 255.0);
  g.metadata["tern.mean"] = "0.5";
  g.metadata["tern.std"] = "0.25";
  Preprocess n = preprocess_from_metadata(g);
  Dataset d;
  d.name = "tiny";
  d.images = Tensor(DataType::kUInt8, {2, 2, 2});
  d.images.data<uint8_t>()[0] = 255;
  d.labels = {0, 1};
  Tensor x = make_batch(d, 0, 2, n, {kDynamicDim, 1, 2, 2});
  EXPECT_EQ(x.shape(), (Shape{2, 1, 2, 2}));
  EXPECT_FLOAT_EQ(x.data<float>()[0], 2.0f);   // (1 - 0.5) / 0.25
  EXPECT_FLOAT_EQ(x.data<float>()[1], -2.0f);  // (0 - 0.5) / 0.25
  // pixel / 255 rounds exactly like float32 division
  for (int p = 0; p < 256; ++p)
    EXPECT_EQ(static_cast<float>(p * plain.scale), static_cast<float>(p) / 255.0f) << p;
  // Grey pixels for an RGB model: the channel is replicated. Float arrays are model inputs as they are.
  Tensor rgb = make_batch(d, 0, 2, n, {kDynamicDim, 3, 2, 2});
  EXPECT_EQ(rgb.shape(), (Shape{2, 3, 2, 2}));
  for (int c = 0; c < 3; ++c) EXPECT_FLOAT_EQ(rgb.data<float>()[c * 4], 2.0f);
  Dataset f = d;
  f.images = Tensor(DataType::kFloat32, {2, 2, 2});
  f.images.data<float>()[0] = 7.5f;
  EXPECT_FLOAT_EQ(make_batch(f, 0, 2, n, {kDynamicDim, 1, 2, 2}).data<float>()[0], 7.5f);
  EXPECT_THROW(make_batch(f, 0, 2, n, {kDynamicDim, 3, 2, 2}), Error);
  EXPECT_THROW(make_batch(d, 0, 2, n, {kDynamicDim, 1, 28, 28}), Error);
  g.metadata["tern.std"] = "zero";
  EXPECT_THROW(preprocess_from_metadata(g), Error);
  g.metadata["tern.std"] = "0";
  EXPECT_THROW(preprocess_from_metadata(g), Error);
}

}  // namespace
}  // namespace tern::testing
