// The preprocessing spec (flags, model metadata, .tern files) and make_batch: images -> model inputs.
#include <cmath>
#include <sstream>

#include "tern/data.h"
#include "tern/error.h"
#include "tern/limits.h"

namespace tern {

namespace {

std::vector<float> parse_floats(const std::string& text, const std::string& who) {
  std::vector<float> values;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) {
    try {
      size_t used = 0;
      float v = std::stof(item, &used);
      check(item.find_first_not_of(" \t", used) == std::string::npos && std::isfinite(v), who + ": not a number: '" + item + "'");
      values.push_back(v);
    } catch (const std::logic_error&) {
      throw Error(who + ": not a number: '" + item + "'");
    }
  }
  check(!values.empty(), who + ": empty list");
  return values;
}

int64_t parse_side(const std::string& text, const std::string& who) {
  check(!text.empty() && text.find_first_not_of("0123456789") == std::string::npos && text.size() <= 5,
        who + ": expected a size in pixels, got '" + text + "'");
  int64_t v = std::stoll(text);
  check(v >= 1 && v <= 16384, who + ": " + text + " is outside 1..16384");
  return v;
}

// "HxW" (both sides), "S" (one number), or "Hx" (height only, when allowed).
struct Sides {
  int64_t h = 0, w = 0;
  bool one = false, height_only = false;
};
Sides parse_sides(const std::string& text, const std::string& who, bool allow_height_only) {
  Sides s;
  size_t x = text.find('x');
  if (x == std::string::npos) {
    s.h = s.w = parse_side(text, who);
    s.one = true;
    return s;
  }
  s.h = parse_side(text.substr(0, x), who);
  if (x + 1 == text.size()) {
    check(allow_height_only, who + ": expected HxW or S, got '" + text + "'");
    s.height_only = true;
    return s;
  }
  s.w = parse_side(text.substr(x + 1), who);
  return s;
}

std::string join(const std::vector<float>& v) {
  std::ostringstream ss;
  ss.precision(9);
  for (size_t i = 0; i < v.size(); ++i) ss << (i ? "," : "") << v[i];
  return ss.str();
}

// ---- bilinear resampling as PIL does it: a triangle filter widened by the scale when shrinking
// (antialiasing), weights normalized at the borders. Upscaling equals PyTorch's bilinear
// interpolation with align_corners=False.

struct Taps {
  std::vector<int64_t> first;  // per output index: first input index
  std::vector<int64_t> count;  // and how many
  std::vector<float> weights;  // count weights each, at stride `width`
  int64_t width = 0;
};

Taps taps_for(int64_t in, int64_t out) {
  double scale = static_cast<double>(in) / static_cast<double>(out);
  double filter_scale = std::max(scale, 1.0), support = filter_scale;
  Taps t;
  t.width = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
  t.first.resize(static_cast<size_t>(out));
  t.count.resize(static_cast<size_t>(out));
  t.weights.assign(static_cast<size_t>(out * t.width), 0.0f);
  for (int64_t i = 0; i < out; ++i) {
    double center = (static_cast<double>(i) + 0.5) * scale;
    int64_t lo = std::max<int64_t>(static_cast<int64_t>(center - support + 0.5), 0);
    int64_t hi = std::min<int64_t>(static_cast<int64_t>(center + support + 0.5), in);
    std::vector<double> w;
    double total = 0;
    for (int64_t j = lo; j < hi && static_cast<int64_t>(w.size()) < t.width; ++j) {
      double v = std::max(0.0, 1.0 - std::abs((static_cast<double>(j) - center + 0.5) / filter_scale));
      w.push_back(v);
      total += v;
    }
    t.first[static_cast<size_t>(i)] = lo;
    t.count[static_cast<size_t>(i)] = static_cast<int64_t>(w.size());
    for (size_t k = 0; k < w.size(); ++k) t.weights[static_cast<size_t>(i * t.width) + k] = static_cast<float>(total > 0 ? w[k] / total : 0);
  }
  return t;
}

// planes: C planes of h x w -> C planes of oh x ow.
std::vector<float> resize_planes(const std::vector<float>& in, int64_t c, int64_t h, int64_t w, int64_t oh, int64_t ow) {
  if (oh == h && ow == w) return in;
  Taps tx = taps_for(w, ow), ty = taps_for(h, oh);
  std::vector<float> mid(static_cast<size_t>(c * h * ow)), out(static_cast<size_t>(c * oh * ow));
  for (int64_t p = 0; p < c * h; ++p) {
    const float* row = in.data() + p * w;
    float* dst = mid.data() + p * ow;
    for (int64_t x = 0; x < ow; ++x) {
      const float* wt = tx.weights.data() + x * tx.width;
      const float* src = row + tx.first[static_cast<size_t>(x)];
      float s = 0;
      for (int64_t k = 0; k < tx.count[static_cast<size_t>(x)]; ++k) s += wt[k] * src[k];
      dst[x] = s;
    }
  }
  for (int64_t ch = 0; ch < c; ++ch)
    for (int64_t y = 0; y < oh; ++y) {
      const float* wt = ty.weights.data() + y * ty.width;
      float* dst = out.data() + (ch * oh + y) * ow;
      for (int64_t x = 0; x < ow; ++x) dst[x] = 0;
      for (int64_t k = 0; k < ty.count[static_cast<size_t>(y)]; ++k) {
        const float* src = mid.data() + (ch * h + ty.first[static_cast<size_t>(y)] + k) * ow;
        for (int64_t x = 0; x < ow; ++x) dst[x] += wt[k] * src[x];
      }
    }
  return out;
}

// One image as planes of raw pixel values, and where it came from (for messages).
struct Planes {
  std::vector<float> v;
  int64_t c = 0, h = 0, w = 0;
  std::string who;
};

Planes image_planes(const Dataset& data, int64_t i) {
  Planes p;
  if (!data.files.empty()) {
    const std::string& path = data.files[static_cast<size_t>(i)];
    Image img = decode_image(path);
    p.c = img.channels;
    p.h = img.height;
    p.w = img.width;
    p.who = path;
    p.v.resize(img.pixels.size());
    for (int64_t ch = 0; ch < p.c; ++ch)
      for (int64_t y = 0; y < p.h * p.w; ++y) p.v[static_cast<size_t>(ch * p.h * p.w + y)] = img.pixels[static_cast<size_t>(y * p.c + ch)];
    return p;
  }
  const Shape& s = data.images.shape();
  check(s.size() == 3 || s.size() == 4, data.name + ": images must be [N,H,W] or [N,C,H,W], got " + to_string(s));
  p.c = s.size() == 4 ? s[1] : 1;
  p.h = s[s.size() - 2];
  p.w = s[s.size() - 1];
  p.who = data.name + " image " + std::to_string(i);
  int64_t n = p.c * p.h * p.w;
  p.v.resize(static_cast<size_t>(n));
  for (int64_t k = 0; k < n; ++k)
    p.v[static_cast<size_t>(k)] = data.images.dtype() == DataType::kUInt8 ? data.images.data<uint8_t>()[i * n + k]
                                                                         : data.images.data<float>()[i * n + k];
  return p;
}

// The geometry: channels reduced to grey if asked, resized, center-cropped. Returns the planes
// (1 or 3 channels) and the size they end at.
void geometry(Planes& p, const Preprocess& pre) {
  if (pre.channels == Preprocess::Channels::kGrey && p.c == 3) {  // ITU-R 601 luma, as PIL's "L"
    int64_t n = p.h * p.w;
    std::vector<float> g(static_cast<size_t>(n));
    for (int64_t k = 0; k < n; ++k)
      g[static_cast<size_t>(k)] = (p.v[static_cast<size_t>(k)] * 299.0f + p.v[static_cast<size_t>(n + k)] * 587.0f +
                                   p.v[static_cast<size_t>(2 * n + k)] * 114.0f) / 1000.0f;
    p.v = std::move(g);
    p.c = 1;
  }
  int64_t oh = p.h, ow = p.w;
  switch (pre.resize) {
    case Preprocess::Resize::kNone: break;
    case Preprocess::Resize::kExact: oh = pre.resize_h; ow = pre.resize_w; break;
    case Preprocess::Resize::kShorterSide:  // torchvision's Resize(int): the longer side truncated
      if (p.w <= p.h) {
        ow = pre.resize_w;
        oh = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(pre.resize_w) * p.h / p.w));
      } else {
        oh = pre.resize_h;
        ow = std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(pre.resize_h) * p.w / p.h));
      }
      break;
    case Preprocess::Resize::kHeight:  // width by the aspect ratio, rounded up (OCR recognisers)
      oh = pre.resize_h;
      ow = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(static_cast<double>(pre.resize_h) * p.w / p.h)));
      break;
  }
  if (pre.pad_h > 0) oh = std::min(oh, pre.pad_h);  // larger than the padded size: squeezed to fit
  if (pre.pad_w > 0) ow = std::min(ow, pre.pad_w);
  check_memory(4.0 * p.c * (static_cast<double>(p.h) * ow + static_cast<double>(oh) * ow), p.who, "the resized image");
  p.v = resize_planes(p.v, p.c, p.h, p.w, oh, ow);
  p.h = oh;
  p.w = ow;
  if (pre.crop_h > 0) {  // torchvision's CenterCrop: zero-padded when the crop is larger
    int64_t ch = pre.crop_h, cw = pre.crop_w;
    int64_t top = static_cast<int64_t>(std::nearbyint(static_cast<double>(p.h - ch) / 2.0));
    int64_t left = static_cast<int64_t>(std::nearbyint(static_cast<double>(p.w - cw) / 2.0));
    if (ch > p.h) top = -((ch - p.h) / 2);
    if (cw > p.w) left = -((cw - p.w) / 2);
    std::vector<float> out(static_cast<size_t>(p.c * ch * cw), 0.0f);
    for (int64_t c = 0; c < p.c; ++c)
      for (int64_t y = 0; y < ch; ++y)
        for (int64_t x = 0; x < cw; ++x) {
          int64_t sy = y + top, sx = x + left;
          if (sy >= 0 && sy < p.h && sx >= 0 && sx < p.w)
            out[static_cast<size_t>((c * ch + y) * cw + x)] = p.v[static_cast<size_t>((c * p.h + sy) * p.w + sx)];
        }
    p.v = std::move(out);
    p.h = ch;
    p.w = cw;
  }
}

std::string chw(int64_t c, int64_t h, int64_t w) { return std::to_string(c) + "x" + std::to_string(h) + "x" + std::to_string(w); }

}  // namespace

void Preprocess::set(const std::string& key, const std::string& value, const std::string& who) {
  std::string w = who + key;
  if (key == "resize") {
    Sides s = parse_sides(value, w, true);
    resize = s.height_only ? Resize::kHeight : s.one ? Resize::kShorterSide : Resize::kExact;
    resize_h = s.h;
    resize_w = s.w;
  } else if (key == "crop") {
    Sides s = parse_sides(value, w, false);
    crop_h = s.h;
    crop_w = s.w;
  } else if (key == "pad") {
    Sides s = parse_sides(value, w, false);
    pad_h = s.h;
    pad_w = s.w;
  } else if (key == "channels") {
    if (value == "rgb") channels = Channels::kRgb;
    else if (value == "bgr") channels = Channels::kBgr;
    else if (value == "grey" || value == "gray") channels = Channels::kGrey;
    else throw Error(w + ": expected rgb, bgr or grey, got '" + value + "'");
  } else if (key == "layout") {
    check(value == "nchw" || value == "nhwc", w + ": expected nchw or nhwc, got '" + value + "'");
    nhwc = value == "nhwc";
  } else if (key == "scale") {
    std::vector<float> v = parse_floats(value, w);
    check(v.size() == 1, w + ": expected one number");
    scale = std::stod(value);
    check(scale > 0 && std::isfinite(scale), w + ": must be positive");
  } else if (key == "mean") {
    mean = parse_floats(value, w);
  } else if (key == "std") {
    std = parse_floats(value, w);
    for (float s : std) check(s > 0, w + ": values must be positive");
  } else {
    throw Error(w + ": unknown preprocessing key");
  }
  given = true;
}

std::vector<std::pair<std::string, std::string>> Preprocess::metadata() const {
  std::vector<std::pair<std::string, std::string>> m;
  auto sides = [](int64_t h, int64_t w) { return std::to_string(h) + "x" + std::to_string(w); };
  if (resize == Resize::kExact) m.emplace_back("tern.resize", sides(resize_h, resize_w));
  if (resize == Resize::kShorterSide) m.emplace_back("tern.resize", std::to_string(resize_h));
  if (resize == Resize::kHeight) m.emplace_back("tern.resize", std::to_string(resize_h) + "x");
  if (crop_h > 0) m.emplace_back("tern.crop", sides(crop_h, crop_w));
  if (pad_h > 0) m.emplace_back("tern.pad", sides(pad_h, pad_w));
  if (channels != Channels::kModel)
    m.emplace_back("tern.channels", channels == Channels::kRgb ? "rgb" : channels == Channels::kBgr ? "bgr" : "grey");
  if (nhwc) m.emplace_back("tern.layout", "nhwc");
  std::ostringstream ss;
  ss.precision(17);
  ss << scale;
  m.emplace_back("tern.scale", ss.str());
  m.emplace_back("tern.mean", join(mean));
  m.emplace_back("tern.std", join(std));
  return m;
}

std::string Preprocess::describe() const {
  std::ostringstream ss;
  for (const auto& [key, value] : metadata())
    if (key != "tern.scale" && key != "tern.mean" && key != "tern.std") ss << key.substr(5) << " " << value << ", ";
  ss << "x * " << scale << ", mean";
  for (float m : mean) ss << " " << m;
  ss << ", std";
  for (float s : std) ss << " " << s;
  return ss.str();
}

std::pair<float, float> Preprocess::input_range() const {
  float lo = INFINITY, hi = -INFINITY;
  for (size_t c = 0; c < std::max(mean.size(), std.size()); ++c) {
    float m = mean[std::min(c, mean.size() - 1)], s = std[std::min(c, std.size() - 1)];
    lo = std::min(lo, static_cast<float>((0.0 * scale - m) / s));
    hi = std::max(hi, static_cast<float>((255.0 * scale - m) / s));
  }
  if (pad_h > 0 || crop_h > 0) {  // padding (and a crop larger than the image) adds zeros
    lo = std::min(lo, 0.0f);
    hi = std::max(hi, 0.0f);
  }
  return {lo, hi};
}

Preprocess preprocess_from_metadata(const Graph& graph) {
  Preprocess p;
  std::string who = (graph.source.empty() ? std::string() : graph.source + ": ") + "metadata tern.";
  for (const std::string& key : kPreprocessKeys)
    if (auto it = graph.metadata.find("tern." + key); it != graph.metadata.end()) p.set(key, it->second, who);
  return p;
}

Tensor make_batch(const Dataset& data, int64_t begin, int64_t count, const Preprocess& pre, const Shape& input_shape) {
  check(input_shape.size() == 4, data.name + ": the model input " + to_string(input_shape) + " is not an image batch [N,C,H,W]" +
                                     (pre.nhwc ? " or [N,H,W,C]" : ""));
  check(begin >= 0 && count >= 0 && begin + count <= data.size(), data.name + ": batch out of range");
  int64_t want_c = input_shape[pre.nhwc ? 3 : 1], want_h = input_shape[pre.nhwc ? 1 : 2], want_w = input_shape[pre.nhwc ? 2 : 3];
  if (count == 0) {
    int64_t c = std::max<int64_t>(want_c, 0), h = std::max<int64_t>(want_h, 0), w = std::max<int64_t>(want_w, 0);
    return Tensor(DataType::kFloat32, pre.nhwc ? Shape{0, h, w, c} : Shape{0, c, h, w});
  }
  Tensor batch;
  int64_t c = 0, h = 0, w = 0;
  for (int64_t n = 0; n < count; ++n) {
    Planes p = image_planes(data, begin + n);
    if (data.pixels()) {
      geometry(p, pre);
    } else {
      check(pre.resize == Preprocess::Resize::kNone && pre.crop_h == 0 && pre.pad_h == 0,
            data.name + ": float arrays are model inputs as they are; resize, crop and pad apply to pixels (uint8 or image files)");
    }
    int64_t out_c = want_c > 0 ? want_c : p.c;
    if (data.pixels() && pre.channels == Preprocess::Channels::kGrey) out_c = want_c > 0 ? want_c : 1;
    check(p.c == out_c || (p.c == 1 && out_c == 3 && data.pixels()),
          p.who + ": " + std::to_string(p.c) + "-channel images for a model that takes " + std::to_string(out_c) +
              (p.c == 3 && out_c == 1 ? " (give --channels grey)" : ""));
    check(pre.channels != Preprocess::Channels::kGrey || out_c == 1, p.who + ": --channels grey for a model that takes " +
                                                                        std::to_string(out_c) + " channels");
    int64_t oh = pre.pad_h > 0 && data.pixels() ? pre.pad_h : p.h, ow = pre.pad_w > 0 && data.pixels() ? pre.pad_w : p.w;
    if (n == 0) {
      c = out_c;
      h = oh;
      w = ow;
      check((want_h < 0 || want_h == h) && (want_w < 0 || want_w == w),
            p.who + ": " + chw(p.c, p.h, p.w) + " (CxHxW) after preprocessing (" + pre.describe() +
                ") does not fit the model input " + to_string(input_shape) + "; give --resize, --crop or --pad");
      check_memory(4.0 * static_cast<double>(count) * c * h * w, data.name, "a batch of model inputs");
      batch = Tensor(DataType::kFloat32, pre.nhwc ? Shape{count, h, w, c} : Shape{count, c, h, w});
    }
    check(oh == h && ow == w, p.who + ": " + std::to_string(oh) + "x" + std::to_string(ow) + " after preprocessing, but the batch's first image is " +
                                  std::to_string(h) + "x" + std::to_string(w) + "; give --resize, --crop or --pad (or --batch 1)");
    float* dst = batch.data<float>() + n * c * h * w;
    for (int64_t ch = 0; ch < c; ++ch) {
      int64_t src_c = p.c == 1 ? 0 : pre.channels == Preprocess::Channels::kBgr ? 2 - ch : ch;
      float mean = 0, sd = 1;
      double scale = 1;
      if (data.pixels()) {
        check(pre.mean.size() == 1 || static_cast<int64_t>(pre.mean.size()) == c,
              data.name + ": " + std::to_string(pre.mean.size()) + " mean values for " + std::to_string(c) + " channels");
        check(pre.std.size() == 1 || static_cast<int64_t>(pre.std.size()) == c,
              data.name + ": " + std::to_string(pre.std.size()) + " std values for " + std::to_string(c) + " channels");
        mean = pre.mean.size() == 1 ? pre.mean[0] : pre.mean[static_cast<size_t>(ch)];
        sd = pre.std.size() == 1 ? pre.std[0] : pre.std[static_cast<size_t>(ch)];
        scale = pre.scale;
      }
      for (int64_t y = 0; y < h; ++y)
        for (int64_t x = 0; x < w; ++x) {
          float v = 0;  // padding: 0 after normalization
          if (y < p.h && x < p.w) {
            double pixel = p.v[static_cast<size_t>((src_c * p.h + y) * p.w + x)];
            // Rounding the double product once matches PyTorch's float32 pixels / 255.
            v = data.pixels() ? (static_cast<float>(pixel * scale) - mean) / sd : static_cast<float>(pixel);
            if (!std::isfinite(v))  // NaN in, NaN out: a run would score nothing honestly
              throw Error(p.who + " holds " + std::to_string(pixel) +
                          (std::isfinite(pixel) ? " which the normalization (scale, mean, std) makes non-finite"
                                                : ", not a finite value"));
          }
          dst[pre.nhwc ? (y * w + x) * c + ch : (ch * h + y) * w + x] = v;
        }
    }
  }
  return batch;
}

}  // namespace tern
