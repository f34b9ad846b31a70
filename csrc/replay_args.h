// Layout of the int32 argument rows the replay ops take. Mirrors reinforced_data/_args.py:
// keep the two in step (tests/test_args.py checks the constants agree).
#pragma once

namespace reinforced_data {
namespace args {

// augment(): one row of NUM_ARGS int32 per view
constexpr int CROP_TOP = 0, CROP_LEFT = 1, CROP_H = 2, CROP_W = 3;
constexpr int FLIP = 4;
constexpr int FILL = 5;  // 3 values
constexpr int ERASE_TOP = 8, ERASE_LEFT = 9, ERASE_H = 10, ERASE_W = 11;
constexpr int ERASE_VALUE = 12;  // 3 values; -1 = per-pixel noise from ERASE_SEED
constexpr int ERASE_SEED = 15;
constexpr int NUM_OPS = 16;
constexpr int OPS = 17;  // MAX_OPS slots of OP_STRIDE: op id, 6 parameters, interpolation
constexpr int OP_STRIDE = 8;
constexpr int OP_INTERP = 7;  // offset in an op slot: 0 nearest, 1 bilinear, 2 bicubic (geometric ops)
constexpr int MAX_OPS = 4;
constexpr int RESIZE_FILTER = 49;  // 0 triangle (bilinear, antialiased), 1 bicubic (antialiased)
constexpr int PAD_FILL = 50;       // 3 values: source pixels outside the image (crops may reach outside it)
constexpr int NUM_ARGS = 64;
static_assert(OPS + MAX_OPS * OP_STRIDE <= RESIZE_FILTER, "op slots overlap the resize filter");

// mix(): one row of NUM_MIX_ARGS int32 per view
constexpr int MIX_MODE = 0, MIX_LAM = 1, MIX_BOX = 2;
constexpr int NUM_MIX_ARGS = 6;

// augmix(): one row of NUM_AUGMIX_ARGS int32 per view (format version 5)
constexpr int AM_MODE = 0, AM_CHAINS = 1, AM_ORIG = 2, AM_WEIGHTS = 3;  // AM_WEIGHTS: MAX_AUGMIX_CHAINS values
constexpr int MAX_AUGMIX_CHAINS = 8;
constexpr int NUM_AUGMIX_ARGS = 12;
constexpr int AUGMIX_BITS = 15;  // weights are Q15
enum AugMixMode : int { AUGMIX_TIMM = 1, AUGMIX_TORCHVISION = 2, AUGMIX_BLENDED = 3 };
static_assert(AM_WEIGHTS + MAX_AUGMIX_CHAINS <= NUM_AUGMIX_ARGS, "augmix weights overflow the row");

// GaussianBlur's six parameters hold BLUR_TAPS 16-bit taps (centre first), two per int32
constexpr int BLUR_TAPS = 12;
constexpr int BLUR_BITS = 14;

// Kernel op ids (reinforced_data._reference.KERNEL_OPS order; policy.RA_OPS names them)
enum Op : int {
  IDENTITY = 0, SHEAR_X, SHEAR_Y, TRANSLATE_X, TRANSLATE_Y, ROTATE, BRIGHTNESS, COLOR,
  CONTRAST, SHARPNESS, POSTERIZE, SOLARIZE, AUTOCONTRAST, EQUALIZE, INVERT, SOLARIZE_ADD, HUE,
  GRAYSCALE, GAUSSIAN_BLUR, NUM_OP_IDS
};
// Interpolation of the geometric ops (the OP_INTERP slot) and the resize filters (RESIZE_FILTER)
enum Interp : int { INTERP_NEAREST = 0, INTERP_BILINEAR, INTERP_BICUBIC, NUM_INTERPS };
enum Filter : int { FILTER_TRIANGLE = 0, FILTER_BICUBIC, NUM_FILTERS };

}  // namespace args
}  // namespace reinforced_data
