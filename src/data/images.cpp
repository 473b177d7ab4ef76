// JPEG (libjpeg-turbo) and PNG (libpng) decoding, and folders of images as datasets.
#include <cstddef>
#include <cstdio>  // before jpeglib.h, which uses size_t and FILE without including them

#include <jpeglib.h>
#include <png.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstring>
#include <filesystem>
#include <memory>

#include "tern/data.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

namespace {

constexpr int64_t kMaxSide = int64_t{1} << 14;

struct FileCloser {
  void operator()(FILE* f) const { std::fclose(f); }
};

// libjpeg reports errors through error_exit, which must not return: jump back to decode_jpeg.
struct JpegError {
  jpeg_error_mgr base;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX] = {};
};

void jpeg_error_exit(j_common_ptr info) {
  auto* err = reinterpret_cast<JpegError*>(info->err);
  (*info->err->format_message)(info, err->message);
  std::longjmp(err->jump, 1);
}

void jpeg_quiet(j_common_ptr, int) {}  // warnings (corrupt but decodable data) are not printed

// Everything that must survive the longjmp lives outside the function that calls setjmp.
struct JpegState {
  jpeg_decompress_struct info;
  JpegError err;
  Image image;
  std::string failure;  // set before the jump: what was wrong
};

bool decode_jpeg_into(JpegState& s, FILE* f) {
  s.info.err = jpeg_std_error(&s.err.base);
  s.err.base.error_exit = jpeg_error_exit;
  s.err.base.emit_message = jpeg_quiet;
  if (setjmp(s.err.jump)) {
    jpeg_destroy_decompress(&s.info);
    return false;
  }
  jpeg_create_decompress(&s.info);
  jpeg_stdio_src(&s.info, f);
  jpeg_read_header(&s.info, TRUE);
  if (s.info.num_components != 1 && s.info.num_components != 3) {
    s.failure = std::to_string(s.info.num_components) + "-component (CMYK?) JPEG images are not supported";
    jpeg_destroy_decompress(&s.info);
    return false;
  }
  if (s.info.image_width > kMaxSide || s.info.image_height > kMaxSide) {
    s.failure = "image of " + std::to_string(s.info.image_width) + "x" + std::to_string(s.info.image_height) +
                " pixels is larger than " + std::to_string(kMaxSide) + " on a side";
    jpeg_destroy_decompress(&s.info);
    return false;
  }
  s.info.out_color_space = s.info.num_components == 1 ? JCS_GRAYSCALE : JCS_RGB;
  try {  // the pixels, and the float planes make_batch makes of them
    check_memory(5.0 * s.info.image_width * s.info.image_height * s.info.num_components, "image", "the decoded image");
  } catch (const Error& e) {
    s.failure = e.what();
    jpeg_destroy_decompress(&s.info);
    return false;
  }
  jpeg_start_decompress(&s.info);
  s.image.height = s.info.output_height;
  s.image.width = s.info.output_width;
  s.image.channels = s.info.output_components;
  s.image.pixels.resize(static_cast<size_t>(s.image.height * s.image.width * s.image.channels));
  while (s.info.output_scanline < s.info.output_height) {
    JSAMPROW row = s.image.pixels.data() + static_cast<size_t>(s.info.output_scanline) * s.image.width * s.image.channels;
    jpeg_read_scanlines(&s.info, &row, 1);
  }
  jpeg_finish_decompress(&s.info);
  jpeg_destroy_decompress(&s.info);
  return true;
}

Image decode_jpeg(const std::string& path, FILE* f) {
  auto s = std::make_unique<JpegState>();
  if (!decode_jpeg_into(*s, f))
    throw Error(path + ": " + (s->failure.empty() ? "not a valid JPEG file (" + std::string(s->err.message) + ")" : s->failure));
  return std::move(s->image);
}

Image decode_png(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&png, path.c_str()))
    throw Error(path + ": not a valid PNG file (" + png.message + ")");
  if (png.width > kMaxSide || png.height > kMaxSide) {
    png_image_free(&png);
    throw Error(path + ": image of " + std::to_string(png.width) + "x" + std::to_string(png.height) +
                " pixels is larger than " + std::to_string(kMaxSide) + " on a side");
  }
  bool colour = (png.format & PNG_FORMAT_FLAG_COLOR) != 0;
  try {  // the pixels, and the float planes make_batch makes of them
    check_memory(5.0 * png.width * png.height * (colour ? 3 : 1), path, "the decoded image");
  } catch (const Error&) {
    png_image_free(&png);
    throw;
  }
  png.format = colour ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;  // alpha composited onto black, 16 bits to 8
  Image image;
  image.height = png.height;
  image.width = png.width;
  image.channels = colour ? 3 : 1;
  image.pixels.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, image.pixels.data(), 0, nullptr)) {
    std::string message = png.message;
    png_image_free(&png);
    throw Error(path + ": not a valid PNG file (" + message + ")");
  }
  return image;
}

bool is_image_name(const std::filesystem::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

std::vector<std::string> images_in(const std::filesystem::path& dir) {
  std::vector<std::string> files;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    if (e.is_regular_file() && is_image_name(e.path())) files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Image decode_image(const std::string& path) {
  std::unique_ptr<FILE, FileCloser> f(std::fopen(path.c_str(), "rb"));
  check(f != nullptr, path + ": cannot open: " + std::strerror(errno));
  unsigned char magic[8] = {};
  size_t got = std::fread(magic, 1, sizeof magic, f.get());
  if (got >= 3 && magic[0] == 0xFF && magic[1] == 0xD8 && magic[2] == 0xFF) {
    std::rewind(f.get());
    return decode_jpeg(path, f.get());
  }
  if (got == 8 && png_sig_cmp(magic, 0, 8) == 0) {
    f.reset();
    return decode_png(path);
  }
  throw Error(path + ": not a JPEG or PNG file");
}

Dataset load_image_folder(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  check(fs::is_directory(dir, ec), dir + ": not a directory");
  Dataset d;
  d.name = dir;
  try {
    std::vector<fs::path> sub;
    for (const auto& e : fs::directory_iterator(dir))
      if (e.is_directory()) sub.push_back(e.path());
    std::sort(sub.begin(), sub.end());
    d.files = images_in(dir);
    if (!sub.empty()) {
      check(d.files.empty(), dir + ": holds both images and sub-folders; expected one sub-folder per class, or images only");
      // Classes are interleaved (the first image of every class, then the second, ...), so the
      // first N images - calibration takes those - hold every class, not the first one alone.
      std::vector<std::vector<std::string>> by_class;
      for (const fs::path& s : sub) {
        std::vector<std::string> files = images_in(s);
        if (files.empty()) continue;  // not a class (hidden or unrelated folders)
        d.classes.push_back(s.filename().string());
        by_class.push_back(std::move(files));
      }
      for (size_t i = 0, left = 1; left > 0; ++i) {
        left = 0;
        for (size_t c = 0; c < by_class.size(); ++c) {
          if (i >= by_class[c].size()) continue;
          d.files.push_back(std::move(by_class[c][i]));
          d.labels.push_back(static_cast<int64_t>(c));
          left += i + 1 < by_class[c].size();
        }
      }
    }
  } catch (const fs::filesystem_error& e) {
    throw Error(dir + ": cannot list: " + e.code().message());
  }
  check(!d.files.empty(), dir + ": no .jpg, .jpeg or .png images (directly or in class sub-folders)");
  return d;
}

}  // namespace tern
