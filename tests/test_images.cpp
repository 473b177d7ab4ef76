// Folders of JPEG/PNG images and the preprocessing that makes them model inputs: decoding, class
// sub-folders, resize (PIL's antialiased bilinear), center crop, padding, channel order, layout.
#include <gtest/gtest.h>

#include <cstddef>
#include <cstdio>

#include <jpeglib.h>
#include <png.h>

#include <filesystem>
#include <fstream>

#include "temp_dir.h"
#include "tern/data.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern::testing {
namespace {

namespace fs = std::filesystem;

// pixels: h x w x c, c = 1 or 3.
void write_png(const std::string& path, int64_t h, int64_t w, int64_t c, const std::vector<uint8_t>& pixels) {
  png_image png{};
  png.version = PNG_IMAGE_VERSION;
  png.width = static_cast<png_uint_32>(w);
  png.height = static_cast<png_uint_32>(h);
  png.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
  ASSERT_TRUE(png_image_write_to_file(&png, path.c_str(), 0, pixels.data(), 0, nullptr)) << png.message;
}

void write_jpeg(const std::string& path, int64_t h, int64_t w, const std::vector<uint8_t>& rgb) {
  jpeg_compress_struct info;
  jpeg_error_mgr err;
  info.err = jpeg_std_error(&err);
  jpeg_create_compress(&info);
  FILE* f = std::fopen(path.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  jpeg_stdio_dest(&info, f);
  info.image_width = static_cast<JDIMENSION>(w);
  info.image_height = static_cast<JDIMENSION>(h);
  info.input_components = 3;
  info.in_color_space = JCS_RGB;
  jpeg_set_defaults(&info);
  jpeg_set_quality(&info, 95, TRUE);
  jpeg_start_compress(&info, TRUE);
  while (info.next_scanline < info.image_height) {
    JSAMPROW row = const_cast<uint8_t*>(rgb.data()) + info.next_scanline * w * 3;
    jpeg_write_scanlines(&info, &row, 1);
  }
  jpeg_finish_compress(&info);
  jpeg_destroy_compress(&info);
  std::fclose(f);
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Images, DecodesPngAndJpegByTheirSignature) {
  TempDir dir;
  std::vector<uint8_t> rgb = {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30};  // 2x2
  write_png(dir.file("a.png"), 2, 2, 3, rgb);
  Image png = decode_image(dir.file("a.png"));
  EXPECT_EQ(png.height, 2);
  EXPECT_EQ(png.width, 2);
  EXPECT_EQ(png.channels, 3);
  EXPECT_EQ(png.pixels, rgb);
  write_png(dir.file("g.png"), 1, 3, 1, {0, 128, 255});
  Image grey = decode_image(dir.file("g.png"));
  EXPECT_EQ(grey.channels, 1);
  EXPECT_EQ(grey.pixels, (std::vector<uint8_t>{0, 128, 255}));
  // A flat colour survives JPEG within a few levels; the name does not matter, the signature does.
  std::vector<uint8_t> flat(8 * 8 * 3);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = i % 3 == 0 ? 200 : i % 3 == 1 ? 100 : 50;
  write_jpeg(dir.file("photo.png"), 8, 8, flat);
  Image jpg = decode_image(dir.file("photo.png"));
  ASSERT_EQ(jpg.pixels.size(), flat.size());
  for (size_t i = 0; i < flat.size(); ++i) EXPECT_NEAR(jpg.pixels[i], flat[i], 3) << i;
  // Bad files: one line naming the file.
  std::ofstream(dir.file("text.jpg")) << "not an image";
  EXPECT_NE(error_of([&] { decode_image(dir.file("text.jpg")); }).find("text.jpg: not a JPEG or PNG file"), std::string::npos);
  std::string bytes;
  {
    std::ifstream in(dir.file("photo.png"), std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir.file("cut.jpg"), std::ios::binary) << bytes.substr(0, bytes.size() / 3);
  std::string cut = error_of([&] { decode_image(dir.file("cut.jpg")); });
  // libjpeg pads a truncated stream (with a warning) rather than failing: either is fine, never a crash.
  EXPECT_TRUE(cut == "no error" || cut.find("cut.jpg") != std::string::npos) << cut;
  std::ofstream(dir.file("cut.png"), std::ios::binary) << std::string("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
  EXPECT_NE(error_of([&] { decode_image(dir.file("cut.png")); }).find("cut.png: not a valid PNG file"), std::string::npos);
  EXPECT_NE(error_of([&] { decode_image(dir.file("none.png")); }).find("none.png: cannot open"), std::string::npos);
}

TEST(Images, FoldersAreClassesOrUnlabelledCalibrationSets) {
  TempDir dir;
  fs::create_directories(dir.file("set/dog"));
  fs::create_directories(dir.file("set/cat"));
  fs::create_directories(dir.file("set/empty"));
  write_png(dir.file("set/dog/1.png"), 1, 1, 1, {10});
  write_png(dir.file("set/dog/0.PNG"), 1, 1, 1, {20});
  write_png(dir.file("set/cat/x.png"), 1, 1, 1, {30});
  write_png(dir.file("set/cat/y.png"), 1, 1, 1, {40});
  write_png(dir.file("set/cat/z.png"), 1, 1, 1, {50});
  std::ofstream(dir.file("set/cat/notes.txt")) << "ignored";
  Dataset d = load_dataset(dir.file("set"), "", "test");
  ASSERT_EQ(d.size(), 5);
  EXPECT_EQ(d.classes, (std::vector<std::string>{"cat", "dog"}));  // sorted; the empty folder is no class
  // Classes interleaved, so that the first N images (calibration's) hold every class.
  EXPECT_EQ(d.labels, (std::vector<int64_t>{0, 1, 0, 1, 0}));
  EXPECT_TRUE(d.labelled());
  EXPECT_TRUE(d.pixels());
  Tensor x = make_batch(d, 0, 5, Preprocess{}, {kDynamicDim, 1, 1, 1});
  const float expected[] = {30, 20, 40, 10, 50};  // cat/x, dog/0.PNG (before dog/1.png), cat/y, dog/1, cat/z
  for (int i = 0; i < 5; ++i) EXPECT_FLOAT_EQ(x.data<float>()[i], expected[i] / 255.0f) << i;
  // Images directly in the folder: unlabelled.
  Dataset u = load_dataset(dir.file("set/dog"), "", "test");
  EXPECT_EQ(u.size(), 2);
  EXPECT_FALSE(u.labelled());
  // Both, or neither: refused with the folder named.
  write_png(dir.file("set/stray.png"), 1, 1, 1, {0});
  EXPECT_NE(error_of([&] { load_image_folder(dir.file("set")); }).find("holds both images and sub-folders"), std::string::npos);
  EXPECT_NE(error_of([&] { load_image_folder(dir.file("set/empty")); }).find("no .jpg, .jpeg or .png images"), std::string::npos);
  EXPECT_NE(error_of([&] { load_dataset(dir.file("nothing"), "", "test"); }).find("no such file or directory"), std::string::npos);
}

// A dataset of one in-memory uint8 image [1, c, h, w].
Dataset one_image(int64_t c, int64_t h, int64_t w, const std::vector<uint8_t>& chw) {
  Dataset d;
  d.name = "img";
  d.images = Tensor(DataType::kUInt8, {1, c, h, w});
  std::copy(chw.begin(), chw.end(), d.images.data<uint8_t>());
  return d;
}

std::vector<float> values(const Tensor& t) { return std::vector<float>(t.data<float>(), t.data<float>() + t.size()); }

Preprocess spec(std::initializer_list<std::pair<const char*, const char*>> kv) {
  Preprocess p;
  p.scale = 1.0;  // raw pixel values, to read the geometry
  for (auto [k, v] : kv) p.set(k, v, "--");
  return p;
}

TEST(Images, ResizeIsPilBilinearAntialiasedWhenShrinking) {
  // Upscaling 1x2 -> 1x4 is PyTorch's bilinear (align_corners=False): a, .75a+.25b, .25a+.75b, b.
  Dataset d = one_image(1, 1, 2, {0, 200});
  Tensor up = make_batch(d, 0, 1, spec({{"resize", "1x4"}, {"scale", "1"}}), {1, 1, 1, 4});
  std::vector<float> want = {0, 50, 150, 200};
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(values(up)[i], want[i], 1e-4) << i;
  // Shrinking 1x4 -> 1x2: PIL's triangle filter widened to the scale (support 2 input pixels):
  // out0 = (.75 x0 + .75 x1 + .25 x2) / 1.75, out1 = (.25 x1 + .75 x2 + .75 x3) / 1.75.
  Dataset e = one_image(1, 1, 4, {0, 40, 100, 255});
  Tensor down = make_batch(e, 0, 1, spec({{"resize", "1x2"}, {"scale", "1"}}), {1, 1, 1, 2});
  EXPECT_NEAR(values(down)[0], (0.75 * 0 + 0.75 * 40 + 0.25 * 100) / 1.75, 1e-3);
  EXPECT_NEAR(values(down)[1], (0.25 * 40 + 0.75 * 100 + 0.75 * 255) / 1.75, 1e-3);
  // A constant image stays constant at any size (weights are normalized at the borders).
  Dataset flat = one_image(1, 3, 5, std::vector<uint8_t>(15, 77));
  for (float v : values(make_batch(flat, 0, 1, spec({{"resize", "7x2"}, {"scale", "1"}}), {1, 1, 7, 2}))) EXPECT_NEAR(v, 77, 1e-3);
}

TEST(Images, ShorterSideCenterCropPadChannelsAndLayout) {
  // 2x4 image, values = column index * 10 + row: shorter side 4 makes it 4x8, then crop 4x4.
  std::vector<uint8_t> px(8);
  for (int y = 0; y < 2; ++y)
    for (int x = 0; x < 4; ++x) px[static_cast<size_t>(y * 4 + x)] = static_cast<uint8_t>(x * 10 + y);
  Dataset d = one_image(1, 2, 4, px);
  Tensor s = make_batch(d, 0, 1, spec({{"resize", "4"}}), {1, 1, kDynamicDim, kDynamicDim});
  EXPECT_EQ(s.shape(), (Shape{1, 1, 4, 8}));
  Tensor c = make_batch(d, 0, 1, spec({{"crop", "2x2"}}), {1, 1, 2, 2});
  EXPECT_EQ(values(c), (std::vector<float>{10, 20, 11, 21}));  // columns 1..2 of both rows
  // Height 4, width by aspect (8), padded to 4x10 with zeros after normalization.
  Preprocess p = spec({{"resize", "4x"}, {"pad", "4x10"}, {"mean", "5"}});
  Tensor padded = make_batch(d, 0, 1, p, {1, 1, 4, 10});
  EXPECT_FLOAT_EQ(padded.data<float>()[9], 0.0f);
  EXPECT_FLOAT_EQ(padded.data<float>()[0], 0.0f - 5.0f);  // pixel 0 minus the mean
  // Wider than the pad: squeezed to fit, not cut.
  Tensor squeezed = make_batch(d, 0, 1, spec({{"resize", "4x"}, {"pad", "4x6"}}), {1, 1, 4, 6});
  EXPECT_EQ(squeezed.shape(), (Shape{1, 1, 4, 6}));
  // RGB -> BGR order, NHWC layout, grey replicated for an RGB model, RGB to grey as PIL's "L".
  Dataset rgb = one_image(3, 1, 1, {10, 20, 30});
  EXPECT_EQ(values(make_batch(rgb, 0, 1, spec({{"channels", "bgr"}}), {1, 3, 1, 1})), (std::vector<float>{30, 20, 10}));
  Dataset wide = one_image(3, 1, 2, {1, 2, 3, 4, 5, 6});
  EXPECT_EQ(values(make_batch(wide, 0, 1, spec({{"layout", "nhwc"}}), {1, 1, 2, 3})), (std::vector<float>{1, 3, 5, 2, 4, 6}));
  Dataset grey = one_image(1, 1, 1, {9});
  EXPECT_EQ(values(make_batch(grey, 0, 1, spec({}), {1, 3, 1, 1})), (std::vector<float>{9, 9, 9}));
  EXPECT_NEAR(values(make_batch(rgb, 0, 1, spec({{"channels", "grey"}}), {1, 1, 1, 1}))[0], (10 * 299 + 20 * 587 + 30 * 114) / 1000.0, 1e-3);
  // Colour images for a grey model: refused with the remedy.
  EXPECT_NE(error_of([&] { make_batch(rgb, 0, 1, spec({}), {1, 1, 1, 1}); }).find("--channels grey"), std::string::npos);
  // A size that does not fit the model: refused, naming the flags that fix it.
  EXPECT_NE(error_of([&] { make_batch(d, 0, 1, spec({}), {1, 1, 4, 4}); }).find("give --resize, --crop or --pad"), std::string::npos);
}

// A resize or batch larger than the memory limit is refused before anything is allocated.
TEST(Images, ResizesAndBatchesOverTheMemoryLimitAreRefused) {
  int64_t before = memory_limit();
  set_memory_limit(int64_t{64} << 20);
  Dataset d = one_image(1, 2, 2, {0, 1, 2, 3});
  std::string huge = error_of([&] { make_batch(d, 0, 1, spec({{"resize", "16000x16000"}}), {1, 1, 16000, 16000}); });
  std::string ok = error_of([&] { make_batch(d, 0, 1, spec({{"resize", "64x64"}}), {1, 1, 64, 64}); });
  set_memory_limit(before);
  EXPECT_NE(huge.find("above the memory limit"), std::string::npos) << huge;
  EXPECT_EQ(ok, "no error");
}

// The hot-path form of the check: describes the request only when it fails, and a tensor over the
// limit is refused naming its type and shape.
TEST(Limits, LazyMemoryCheckDescribesOnlyOnFailure) {
  int64_t before = memory_limit();
  set_memory_limit(int64_t{1} << 20);
  int described = 0;
  auto describe = [&] {
    ++described;
    return std::pair<std::string, std::string>{"a test", "its bytes"};
  };
  std::string within = error_of([&] { check_memory(1024.0, describe); });
  std::string over = error_of([&] { check_memory(4.0 * (1 << 20), describe); });
  std::string tensor = error_of([&] { Tensor::uninitialized(DataType::kFloat32, {1024, 1024}); });
  set_memory_limit(before);
  EXPECT_EQ(within, "no error");
  EXPECT_EQ(described, 1);
  EXPECT_NE(over.find("a test needs 4.0 MiB (its bytes), above the memory limit"), std::string::npos) << over;
  EXPECT_NE(tensor.find("float32 tensor of shape [1024,1024] needs 4.0 MiB (its data), above the memory limit"), std::string::npos) << tensor;
}

TEST(Images, SpecsRoundTripThroughMetadataAndBadValuesAreNamed) {
  Preprocess p = spec({{"resize", "256"}, {"crop", "224x224"}, {"channels", "bgr"}, {"mean", "0.485,0.456,0.406"},
                       {"std", "0.229,0.224,0.225"}, {"layout", "nhwc"}});
  Graph g;
  for (const auto& [k, v] : p.metadata()) g.metadata[k] = v;
  Preprocess back = preprocess_from_metadata(g);
  EXPECT_EQ(back.metadata(), p.metadata());
  EXPECT_EQ(back.resize, Preprocess::Resize::kShorterSide);
  EXPECT_TRUE(back.nhwc);
  // The input range is proved from 8-bit pixels: every channel's extremes, 0 when padding adds it.
  Preprocess q = spec({{"scale", "0.00392156862745098"}, {"mean", "0.5"}, {"std", "0.25"}});
  EXPECT_FLOAT_EQ(q.input_range().first, -2.0f);
  EXPECT_FLOAT_EQ(q.input_range().second, 2.0f);
  Preprocess pos = spec({{"scale", "0.00392156862745098"}, {"mean", "-1"}, {"pad", "4x4"}});
  EXPECT_FLOAT_EQ(pos.input_range().first, 0.0f);
  for (auto [k, v] : std::vector<std::pair<const char*, const char*>>{
           {"resize", "0"}, {"resize", "x5"}, {"crop", "5x"}, {"pad", "-3"}, {"channels", "cmyk"}, {"layout", "chw"}, {"std", "0"}, {"scale", "x"}})
    EXPECT_NE(error_of([&] { spec({{k, v}}); }).find(std::string("--") + k), std::string::npos) << k << "=" << v;
  g.metadata["tern.resize"] = "big";
  EXPECT_NE(error_of([&] { preprocess_from_metadata(g); }).find("metadata tern.resize"), std::string::npos);
}

}  // namespace
}  // namespace tern::testing
