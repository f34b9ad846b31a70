// CPU kernels of reinforced_data::augment, ::mix, ::augmix and ::normalize.
//
// Every output byte follows the integer formulas of replay_math.h (reinforced_data/
// _reference.py is the specification): the CPU, CUDA and reference backends agree bit for
// bit. Views are independent and run in parallel over the batch (at::parallel_for).
//
// The per-view kernels live in replay_cpu_kernels.h, compiled here twice on x86-64: for
// the baseline ISA (SSE2) and for AVX2 (chosen at run time when the CPU has it), each with
// its vector traits (replay_cpu_isa_base.h, replay_cpu_isa_avx2.h). The data they work on
// is in replay_cpu_types.h, the resampling taps in replay_cpu_taps.h. The
// environment variable REINFORCED_DATA_CPU_ISA=baseline forces the baseline build (for
// testing both; "avx2" or unset: the best the CPU supports). Other architectures get
// the plain C++ version, which the compiler vectorises as it can.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "replay_args.h"
#include "replay_checks.h"
#include "replay_math.h"
#include "replay_cpu_taps.h"
#include "replay_cpu_types.h"

#if (defined(__x86_64__) || defined(_M_X64)) && !defined(RD_NO_SIMD)
#include <immintrin.h>
#define RD_X86 1
#else
#define RD_X86 0
#endif
#if RD_X86 && defined(__GNUC__) && !defined(__clang__)
// a second, AVX2 build of the kernels, picked at run time (GCC's target pragma; clang would
// need `#pragma clang attribute` instead, untested, so clang builds keep the baseline only)
#define RD_AVX2 1
#else
#define RD_AVX2 0
#endif

namespace reinforced_data {
namespace {

// ------------------------------------------------------------------ kernels, per ISA

namespace k_base {
#include "replay_cpu_isa_base.h"
#include "replay_cpu_kernels.h"
}  // namespace k_base

#if RD_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")  // exactly what use_avx2() checks
namespace k_avx2 {
#include "replay_cpu_isa_avx2.h"
#include "replay_cpu_kernels.h"
}  // namespace k_avx2
#pragma GCC pop_options
#endif  // RD_AVX2

// ------------------------------------------------------------------ dispatch

using AugmentViewFn = void (*)(const Source&, const int32_t*, int64_t, int64_t, uint8_t*, Scratch&);

bool use_avx2() {
#if RD_AVX2
  static const bool supported = __builtin_cpu_supports("avx2");
  const char* isa = std::getenv("REINFORCED_DATA_CPU_ISA");
  return supported && !(isa && (std::strcmp(isa, "baseline") == 0 || std::strcmp(isa, "sse2") == 0));
#else
  return false;
#endif
}

AugmentViewFn augment_view_fn() {
#if RD_AVX2
  if (use_avx2()) return &k_avx2::augment_view<>;
#endif
  return &k_base::augment_view<>;
}

// ------------------------------------------------------------------ ops

// How the kernels read images[b] (see Source): straight from its memory when it is planar
// or channels-last interleaved; other layouts (e.g. a column-strided slice) are read from a
// contiguous copy, kept alive in `copy`.
Source describe_source(const at::Tensor& img, at::Tensor& copy) {
  Source s;
  s.H = img.size(1);
  s.W = img.size(2);
  int64_t sc = img.stride(0), sh = img.stride(1), sw = img.stride(2);
  if (s.W == 1) sw = 1;  // only column 0 is read: any stride reads the same bytes
  const bool planar = sw == 1;
  const bool interleaved = sc == 1 && (sw == 3 || sw == 4);
  const at::Tensor& t = planar || interleaved ? img : (copy = img.contiguous());
  if (!(planar || interleaved)) sc = t.stride(0), sh = t.stride(1), sw = 1;
  s.p = t.data_ptr<uint8_t>();
  s.sc = sc;
  s.sh = sh;
  s.px = sw;
  s.end = s.p + 2 * sc + (s.H - 1) * sh + (s.W - 1) * sw + 1;  // strides are >= 0
  return s;
}

at::Tensor augment_cpu(at::TensorList images, const at::Tensor& args, int64_t out_h, int64_t out_w) {
  const at::Tensor rows = args.contiguous();
  check_augment(std::vector<at::Tensor>(images.begin(), images.end()), rows, out_h, out_w);
  const int64_t B = rows.size(0);
  std::vector<at::Tensor> copies(B);
  std::vector<Source> srcs(B);
  for (int64_t b = 0; b < B; ++b) srcs[b] = describe_source(images[b], copies[b]);
  at::Tensor out = at::empty({B, 3, out_h, out_w}, rows.options().dtype(at::kByte));
  if (B == 0) return out;
  const int32_t* a = rows.data_ptr<int32_t>();
  uint8_t* o = out.data_ptr<uint8_t>();
  const int64_t size = 3 * out_h * out_w;
  const AugmentViewFn fn = augment_view_fn();
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    Scratch s;
    for (int64_t b = begin; b < end; ++b) fn(srcs[b], a + b * args::NUM_ARGS, out_h, out_w, o + b * size, s);
  });
  return out;
}

at::Tensor mix_cpu(const at::Tensor& a_in, const at::Tensor& b_in, const at::Tensor& args) {
  const at::Tensor rows = args.contiguous();
  check_mix(a_in, b_in, rows);
  const at::Tensor a = a_in.contiguous(), b = b_in.contiguous();
  at::Tensor out = at::empty(a.sizes(), a.options());
  if (out.numel() == 0) return out;
  const int32_t* r = rows.data_ptr<int32_t>();
  const uint8_t* pa = a.data_ptr<uint8_t>();
  const uint8_t* pb = b.data_ptr<uint8_t>();
  uint8_t* po = out.data_ptr<uint8_t>();
  const int64_t C = a.size(1), H = a.size(2), W = a.size(3), size = C * H * W;
  const bool avx2 = use_avx2();
  at::parallel_for(0, a.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
#if RD_AVX2
      if (avx2) {
        k_avx2::mix_view(pa + i * size, pb + i * size, po + i * size, C, H, W, r + i * args::NUM_MIX_ARGS);
        continue;
      }
#endif
      (void)avx2;
      k_base::mix_view(pa + i * size, pb + i * size, po + i * size, C, H, W, r + i * args::NUM_MIX_ARGS);
    }
  });
  return out;
}

at::Tensor augmix_cpu(const at::Tensor& orig_in, const at::Tensor& chains_in, const at::Tensor& args) {
  const at::Tensor rows = args.contiguous();
  check_augmix(orig_in, chains_in, rows);
  const at::Tensor orig = orig_in.contiguous(), chains = chains_in.contiguous();
  at::Tensor out = at::empty(orig.sizes(), orig.options());
  if (out.numel() == 0) return out;
  const int32_t* r = rows.data_ptr<int32_t>();
  const uint8_t* po = orig.data_ptr<uint8_t>();
  const uint8_t* pc = chains.data_ptr<uint8_t>();
  uint8_t* pout = out.data_ptr<uint8_t>();
  const int64_t size = orig.size(1) * orig.size(2) * orig.size(3), K = chains.size(1);
  const bool avx2 = use_avx2();
  at::parallel_for(0, orig.size(0), 1, [&](int64_t begin, int64_t end) {
    std::vector<uint32_t> acc(k_base::kAugMixBlock);
    for (int64_t i = begin; i < end; ++i) {
#if RD_AVX2
      if (avx2) {
        k_avx2::augmix_view(po + i * size, pc + i * K * size, pout + i * size, size, r + i * args::NUM_AUGMIX_ARGS,
                            acc.data());
        continue;
      }
#endif
      (void)avx2;
      k_base::augmix_view(po + i * size, pc + i * K * size, pout + i * size, size, r + i * args::NUM_AUGMIX_ARGS,
                          acc.data());
    }
  });
  return out;
}

// out[b, c, y, x] = lut[c, x[b, c, y, x]]: a copy of table entries, so the element type only
// matters through its size (any floating dtype, bit-exact).
template <typename T>
void normalize_plane(const uint8_t* src, const T* l, T* o, int64_t HW) {
  int64_t i = 0;
  for (; i + 8 <= HW; i += 8) {
    uint64_t v;
    std::memcpy(&v, src + i, 8);
    for (int k = 0; k < 8; ++k) o[i + k] = l[(v >> (8 * k)) & 255];
  }
  for (; i < HW; ++i) o[i] = l[src[i]];
}

#if RD_AVX2
#pragma GCC push_options
#pragma GCC target("avx2")
// 4-byte elements with AVX2 gathers; streaming (non-temporal) stores when the output is much
// larger than the caches, so that the stores do not first read the lines they overwrite.
void normalize_plane_avx2(const uint8_t* src, const uint32_t* l, uint32_t* o, int64_t HW, bool stream) {
  int64_t i = 0;
  if (stream)
    for (; i < HW && ((uintptr_t)(o + i) & 31) != 0; ++i) o[i] = l[src[i]];
  for (; i + 32 <= HW; i += 32) {
    const __m256i v = _mm256_loadu_si256((const __m256i*)(src + i));
    const __m128i lo = _mm256_castsi256_si128(v), hi = _mm256_extracti128_si256(v, 1);
    const __m256i idx[4] = {_mm256_cvtepu8_epi32(lo), _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8)),
                            _mm256_cvtepu8_epi32(hi), _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8))};
    for (int k = 0; k < 4; ++k) {
      const __m256i g = _mm256_i32gather_epi32((const int*)l, idx[k], 4);
      if (stream) _mm256_stream_si256((__m256i*)(o + i + 8 * k), g);
      else _mm256_storeu_si256((__m256i*)(o + i + 8 * k), g);
    }
  }
  for (; i < HW; ++i) o[i] = l[src[i]];
}
#pragma GCC pop_options
#endif

template <typename T>
void normalize_impl(const uint8_t* x, const T* lut, T* out, int64_t B, int64_t C, int64_t HW, bool cl) {
  if (!cl) {
#if RD_AVX2
    const bool avx2 = sizeof(T) == 4 && use_avx2();
    const bool stream = avx2 && B * C * HW * (int64_t)sizeof(T) >= (int64_t(16) << 20);
#endif
    at::parallel_for(0, B * C, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bc = begin; bc < end; ++bc) {
#if RD_AVX2
        if (avx2) {
          normalize_plane_avx2(x + bc * HW, (const uint32_t*)lut + (bc % C) * 256, (uint32_t*)out + bc * HW, HW,
                               stream);
          continue;
        }
#endif
        normalize_plane(x + bc * HW, lut + (bc % C) * 256, out + bc * HW, HW);
      }
#if RD_AVX2
      if (stream) _mm_sfence();  // streaming stores are weakly ordered: each thread drains its own
#endif
    });
    return;
  }
  // channels last: out[b, y, x, c], written in order
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const uint8_t* src = x + b * C * HW;
      T* o = out + b * C * HW;
      if (C == 3) {
        for (int64_t i = 0; i < HW; ++i) {
          o[3 * i] = lut[src[i]];
          o[3 * i + 1] = lut[256 + src[HW + i]];
          o[3 * i + 2] = lut[512 + src[2 * HW + i]];
        }
      } else {
        for (int64_t i = 0; i < HW; ++i)
          for (int64_t c = 0; c < C; ++c) o[i * C + c] = lut[c * 256 + src[c * HW + i]];
      }
    }
  });
}

at::Tensor normalize_cpu(const at::Tensor& x_in, const at::Tensor& lut_in, bool channels_last) {
  check_normalize(x_in, lut_in);
  const at::Tensor x = x_in.contiguous(), lut = lut_in.contiguous();
  const int64_t B = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  at::Tensor out = at::empty(x.sizes(), lut.options(),
                             channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  const uint8_t* px = x.data_ptr<uint8_t>();
  switch (lut.element_size()) {
    case 1: normalize_impl(px, (const uint8_t*)lut.const_data_ptr(), (uint8_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 2: normalize_impl(px, (const uint16_t*)lut.const_data_ptr(), (uint16_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 4: normalize_impl(px, (const uint32_t*)lut.const_data_ptr(), (uint32_t*)out.data_ptr(), B, C, HW, channels_last); break;
    case 8: normalize_impl(px, (const uint64_t*)lut.const_data_ptr(), (uint64_t*)out.data_ptr(), B, C, HW, channels_last); break;
    default: TORCH_CHECK(false, "normalize: unsupported lut dtype ", lut.scalar_type());
  }
  return out;
}

}  // namespace
}  // namespace reinforced_data

TORCH_LIBRARY_IMPL(reinforced_data, CPU, m) {
  m.impl("augment", &reinforced_data::augment_cpu);
  m.impl("mix", &reinforced_data::mix_cpu);
  m.impl("augmix", &reinforced_data::augmix_cpu);
  m.impl("normalize", &reinforced_data::normalize_cpu);
}
