// Input validation shared by the CPU and CUDA kernels: every check names the argument,
// the view and the field, so a bad row is a clear error and never an out-of-bounds read.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <vector>

#include "replay_args.h"

namespace reinforced_data {

constexpr int64_t MAX_OUTPUT_SIZE = 4096;
constexpr int32_t MAX_CROP = 65535;  // crop height, width, |top| and |left| are at most this

// args_cpu: the rows, already on the CPU (the CUDA wrapper copies them first).
inline void check_augment(const std::vector<at::Tensor>& images, const at::Tensor& args_cpu,
                          int64_t out_h, int64_t out_w) {
  using namespace args;
  TORCH_CHECK(out_h >= 1 && out_h <= MAX_OUTPUT_SIZE && out_w >= 1 && out_w <= MAX_OUTPUT_SIZE,
              "augment: out_h and out_w must lie in [1, ", MAX_OUTPUT_SIZE, "], got ", out_h, "x", out_w);
  TORCH_CHECK(args_cpu.scalar_type() == at::kInt, "augment: args must be int32, got ", args_cpu.scalar_type());
  TORCH_CHECK(args_cpu.dim() == 2 && args_cpu.size(1) == NUM_ARGS, "augment: args must have shape [B, ",
              NUM_ARGS, "], got ", args_cpu.sizes());
  const int64_t B = args_cpu.size(0);
  TORCH_CHECK((int64_t)images.size() == B, "augment: got ", images.size(), " images but ", B, " args rows");
  const auto rows = args_cpu.contiguous();
  const int32_t* a = rows.data_ptr<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    const at::Tensor& img = images[b];
    TORCH_CHECK(img.scalar_type() == at::kByte, "augment: images[", b, "] must be uint8, got ", img.scalar_type());
    TORCH_CHECK(img.dim() == 3 && img.size(0) == 3, "augment: images[", b,
                "] must have shape [3, H, W], got ", img.sizes());
    TORCH_CHECK(img.size(1) >= 1 && img.size(2) >= 1, "augment: images[", b, "] is empty: ", img.sizes());
    TORCH_CHECK(img.device() == images[0].device(), "augment: images[", b, "] is on ", img.device(),
                ", images[0] on ", images[0].device());
    const int32_t* r = a + b * NUM_ARGS;
    // The crop box may reach outside the image (those pixels read PAD_FILL); its size and position
    // are bounded so that every coordinate sum fits int32 comfortably.
    TORCH_CHECK(r[CROP_H] >= 1 && r[CROP_W] >= 1 && r[CROP_H] <= MAX_CROP && r[CROP_W] <= MAX_CROP &&
                    r[CROP_TOP] >= -MAX_CROP && r[CROP_TOP] <= MAX_CROP && r[CROP_LEFT] >= -MAX_CROP &&
                    r[CROP_LEFT] <= MAX_CROP,
                "augment: args[", b, "] crop (top=", r[CROP_TOP], ", left=", r[CROP_LEFT], ", height=", r[CROP_H],
                ", width=", r[CROP_W], ") must have height and width in [1, ", MAX_CROP, "] and top and left in [-",
                MAX_CROP, ", ", MAX_CROP, "]");
    TORCH_CHECK(r[FLIP] == 0 || r[FLIP] == 1, "augment: args[", b, "] flip must be 0 or 1, got ", r[FLIP]);
    TORCH_CHECK(r[RESIZE_FILTER] >= 0 && r[RESIZE_FILTER] < NUM_FILTERS, "augment: args[", b,
                "] resize filter must be 0 (triangle) or 1 (bicubic), got ", r[RESIZE_FILTER]);
    for (int c = 0; c < 3; ++c) {
      TORCH_CHECK(r[FILL + c] >= 0 && r[FILL + c] <= 255, "augment: args[", b, "] fill[", c,
                  "] must lie in [0, 255], got ", r[FILL + c]);
      TORCH_CHECK(r[ERASE_VALUE + c] >= -1 && r[ERASE_VALUE + c] <= 255 &&
                      (r[ERASE_VALUE + c] < 0) == (r[ERASE_VALUE] < 0),
                  "augment: args[", b, "] erase value[", c, "] must lie in [0, 255] (or all three be -1), got ",
                  r[ERASE_VALUE + c]);
      TORCH_CHECK(r[PAD_FILL + c] >= 0 && r[PAD_FILL + c] <= 255, "augment: args[", b, "] pad fill[", c,
                  "] must lie in [0, 255], got ", r[PAD_FILL + c]);
    }
    const bool erase = r[ERASE_H] != 0 || r[ERASE_W] != 0;
    TORCH_CHECK(!erase || (r[ERASE_H] >= 1 && r[ERASE_W] >= 1 && r[ERASE_TOP] >= 0 && r[ERASE_LEFT] >= 0 &&
                           (int64_t)r[ERASE_TOP] + r[ERASE_H] <= out_h &&
                           (int64_t)r[ERASE_LEFT] + r[ERASE_W] <= out_w),
                "augment: args[", b, "] erase box (top=", r[ERASE_TOP], ", left=", r[ERASE_LEFT], ", height=",
                r[ERASE_H], ", width=", r[ERASE_W], ") lies outside the ", out_h, "x", out_w, " output");
    TORCH_CHECK(r[NUM_OPS] >= 0 && r[NUM_OPS] <= MAX_OPS, "augment: args[", b, "] num_ops must lie in [0, ",
                MAX_OPS, "], got ", r[NUM_OPS]);
    for (int s = 0; s < r[NUM_OPS]; ++s) {
      const int32_t* p = r + OPS + s * OP_STRIDE;
      TORCH_CHECK(p[0] >= 0 && p[0] < NUM_OP_IDS, "augment: args[", b, "] op ", s, " has unknown op id ", p[0],
                  " (ids are 0..", NUM_OP_IDS - 1, ")");
      const bool geometric = p[0] >= SHEAR_X && p[0] <= ROTATE;
      if (geometric) {
        TORCH_CHECK(p[OP_INTERP] >= 0 && p[OP_INTERP] < NUM_INTERPS, "augment: args[", b, "] op ", s,
                    " interpolation must be 0 (nearest), 1 (bilinear) or 2 (bicubic), got ", p[OP_INTERP]);
      } else {
        TORCH_CHECK(p[OP_INTERP] == 0, "augment: args[", b, "] op ", s,
                    " interpolation must be 0 for a non-geometric op, got ", p[OP_INTERP]);
      }
      switch (p[0]) {
        case BRIGHTNESS: case COLOR: case CONTRAST: case SHARPNESS:
          TORCH_CHECK(p[1] >= 0, "augment: args[", b, "] op ", s, " factor must be >= 0, got ", p[1]);
          break;
        case POSTERIZE:  // (0xFF << (8 - bits)) & 0xFF <=> 256 - mask is a power of two (1 .. 256)
          TORCH_CHECK(p[1] >= 0 && p[1] <= 255 && ((256 - p[1]) & (255 - p[1])) == 0, "augment: args[", b, "] op ",
                      s, " posterize mask must be (0xFF << (8 - bits)) & 0xFF with bits in 0..8, got ", p[1]);
          break;
        case SOLARIZE:
          TORCH_CHECK(p[1] >= 0 && p[1] <= 256, "augment: args[", b, "] op ", s,
                      " solarize threshold must lie in [0, 256], got ", p[1]);
          break;
        case SOLARIZE_ADD:
          TORCH_CHECK(p[1] >= 0 && p[1] <= 256, "augment: args[", b, "] op ", s,
                      " solarize_add threshold must lie in [0, 256], got ", p[1]);
          TORCH_CHECK(p[2] >= -255 && p[2] <= 255, "augment: args[", b, "] op ", s,
                      " solarize_add addend must lie in [-255, 255], got ", p[2]);
          break;
        case HUE:  // k / 65536 of a turn, torchvision's hue_factor in [-0.5, 0.5]
          TORCH_CHECK(p[1] >= -32768 && p[1] <= 32768, "augment: args[", b, "] op ", s,
                      " hue shift must lie in [-32768, 32768], got ", p[1]);
          break;
        case GRAYSCALE:  // 0 torchvision's formula, 1 PIL's
          TORCH_CHECK(p[1] == 0 || p[1] == 1, "augment: args[", b, "] op ", s,
                      " grayscale formula must be 0 (torchvision) or 1 (PIL), got ", p[1]);
          break;
        case GAUSSIAN_BLUR: {  // taps: non-negative parameters, centre + 2 x the others = 2^14
          bool nonneg = true;
          int64_t sum = 0;
          for (int j = 0; j < 6; ++j) nonneg = nonneg && p[1 + j] >= 0;
          for (int d = 0; d < BLUR_TAPS; ++d)
            sum += (d == 0 ? 1 : 2) * (int64_t)((p[1 + (d >> 1)] >> (16 * (d & 1))) & 0xFFFF);
          TORCH_CHECK(nonneg && sum == (1 << BLUR_BITS), "augment: args[", b, "] op ", s,
                      " blur taps must be non-negative and sum to ", 1 << BLUR_BITS, ", got sum ", sum,
                      nonneg ? "" : " with a negative parameter");
          break;
        }
        default:
          break;  // geometric parameters are any int32: sources outside the image take the fill
      }
    }
  }
}

inline void check_mix(const at::Tensor& a, const at::Tensor& b, const at::Tensor& args_cpu) {
  using namespace args;
  TORCH_CHECK(a.scalar_type() == at::kByte && b.scalar_type() == at::kByte, "mix: a and b must be uint8, got ",
              a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK(a.dim() == 4 && a.sizes() == b.sizes(), "mix: a and b must have one shape [B, C, H, W], got ",
              a.sizes(), " and ", b.sizes());
  TORCH_CHECK(a.device() == b.device(), "mix: a is on ", a.device(), ", b on ", b.device());
  TORCH_CHECK(args_cpu.scalar_type() == at::kInt && args_cpu.dim() == 2 && args_cpu.size(0) == a.size(0) &&
                  args_cpu.size(1) == NUM_MIX_ARGS,
              "mix: args must be int32 of shape [", a.size(0), ", ", NUM_MIX_ARGS, "], got ", args_cpu.scalar_type(),
              " ", args_cpu.sizes());
  const auto rows = args_cpu.contiguous();
  const int32_t* p = rows.data_ptr<int32_t>();
  const int64_t H = a.size(2), W = a.size(3);
  for (int64_t i = 0; i < a.size(0); ++i) {
    const int32_t* r = p + i * NUM_MIX_ARGS;
    TORCH_CHECK(r[MIX_MODE] >= 0 && r[MIX_MODE] <= 3, "mix: args[", i, "] mode must be 0, 1, 2 or 3, got ",
                r[MIX_MODE]);
    TORCH_CHECK(r[MIX_LAM] >= 0 && r[MIX_LAM] <= 255, "mix: args[", i, "] lambda must lie in [0, 255], got ",
                r[MIX_LAM]);
    if (r[MIX_MODE] == 2 || r[MIX_MODE] == 3) {  // CutMix, or MixUp then CutMix
      const int32_t* box = r + MIX_BOX;
      TORCH_CHECK(box[0] >= 0 && box[1] >= 0 && box[2] >= 0 && box[3] >= 0 && (int64_t)box[0] + box[2] <= H &&
                      (int64_t)box[1] + box[3] <= W,
                  "mix: args[", i, "] CutMix box (top=", box[0], ", left=", box[1], ", height=", box[2],
                  ", width=", box[3], ") lies outside the ", H, "x", W, " views");
    }
  }
}

inline void check_augmix(const at::Tensor& orig, const at::Tensor& chains, const at::Tensor& args_cpu) {
  using namespace args;
  TORCH_CHECK(orig.scalar_type() == at::kByte && chains.scalar_type() == at::kByte,
              "augmix: orig and chains must be uint8, got ", orig.scalar_type(), " and ", chains.scalar_type());
  TORCH_CHECK(orig.dim() == 4 && chains.dim() == 5 && chains.size(0) == orig.size(0) &&
                  chains.size(2) == orig.size(1) && chains.size(3) == orig.size(2) && chains.size(4) == orig.size(3),
              "augmix: orig must be [B, C, H, W] and chains [B, K, C, H, W], got ", orig.sizes(), " and ",
              chains.sizes());
  TORCH_CHECK(chains.size(1) >= 1 && chains.size(1) <= MAX_AUGMIX_CHAINS, "augmix: chains must hold 1 to ",
              MAX_AUGMIX_CHAINS, " chains, got ", chains.size(1));
  TORCH_CHECK(orig.device() == chains.device(), "augmix: orig is on ", orig.device(), ", chains on ", chains.device());
  TORCH_CHECK(args_cpu.scalar_type() == at::kInt && args_cpu.dim() == 2 && args_cpu.size(0) == orig.size(0) &&
                  args_cpu.size(1) == NUM_AUGMIX_ARGS,
              "augmix: args must be int32 of shape [", orig.size(0), ", ", NUM_AUGMIX_ARGS, "], got ",
              args_cpu.scalar_type(), " ", args_cpu.sizes());
  const auto rows = args_cpu.contiguous();
  const int32_t* p = rows.data_ptr<int32_t>();
  const int64_t one = 1 << AUGMIX_BITS, K = chains.size(1);
  for (int64_t i = 0; i < orig.size(0); ++i) {
    const int32_t* r = p + i * NUM_AUGMIX_ARGS;
    const int mode = r[AM_MODE];
    TORCH_CHECK(mode >= 1 && mode <= 3, "augmix: args[", i,
                "] mode must be 1 (timm), 2 (torchvision) or 3 (timm blended), got ", mode);
    TORCH_CHECK(r[AM_CHAINS] == K, "augmix: args[", i, "] holds ", r[AM_CHAINS], " chains, the chains tensor ", K);
    bool ok = r[AM_ORIG] >= 0 && r[AM_ORIG] <= one;
    int64_t total = 0;
    for (int k = 0; k < MAX_AUGMIX_CHAINS; ++k) {
      const int32_t w = r[AM_WEIGHTS + k];
      ok = ok && (k < K ? (w >= 0 && w <= one) : w == 0);
      if (k < K) total += w;
    }
    TORCH_CHECK(ok, "augmix: args[", i, "] weights must lie in [0, ", one, "] (0 beyond the chains)");
    TORCH_CHECK((mode == 1 && total == one) || (mode == 2 && total + r[AM_ORIG] == one) || (mode == 3 && r[AM_ORIG] == 0),
                "augmix: args[", i, "] weights do not sum as mode ", mode, " needs (chains ", total, ", original ",
                r[AM_ORIG], ", one ", one, ")");
  }
}

inline void check_normalize(const at::Tensor& x, const at::Tensor& lut) {
  TORCH_CHECK(x.scalar_type() == at::kByte && x.dim() == 4, "normalize: x must be uint8 [B, C, H, W], got ",
              x.scalar_type(), " ", x.sizes());
  TORCH_CHECK(at::isFloatingType(lut.scalar_type()) && lut.dim() == 2 && lut.size(0) == x.size(1) &&
                  lut.size(1) == 256,
              "normalize: lut must be floating [", x.size(1), ", 256], got ", lut.scalar_type(), " ", lut.sizes());
  TORCH_CHECK(lut.device() == x.device(), "normalize: lut is on ", lut.device(), ", x on ", x.device());
}

}  // namespace reinforced_data
