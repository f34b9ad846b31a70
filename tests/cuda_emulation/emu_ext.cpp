// Python extension exposing the CUDA kernels of csrc/cuda/replay_cuda.cu, compiled for
// the host with RD_EMULATE and the shims of emu_shim.h, so they run on CPU tensors.
// Built by tests/test_cuda_emulation.py with torch.utils.cpp_extension.load; the include
// path must contain the repository's csrc/ directory and this directory. The macro
// RD_SRC (a quoted path) may name another copy of replay_cuda.cu to compile instead.
#include <torch/extension.h>
#define RD_EMULATE
#include "emu_shim.h"
#ifndef RD_SRC
#define RD_SRC "cuda/replay_cuda.cu"
#endif
#include RD_SRC

namespace rdc = reinforced_data::cuda;

at::Tensor emu_augment(std::vector<at::Tensor> images, at::Tensor args, int64_t oh, int64_t ow) {
  const at::Tensor args_cpu = args.contiguous();
  reinforced_data::check_augment(images, args_cpu, oh, ow);
  return rdc::augment_impl(images, args_cpu, oh, ow, at::Device(at::kCPU));
}
at::Tensor emu_mix(at::Tensor a, at::Tensor b, at::Tensor args) {
  reinforced_data::check_mix(a, b, args.contiguous());
  return rdc::mix_impl(a, b, args);
}
at::Tensor emu_augmix(at::Tensor orig, at::Tensor chains, at::Tensor args) {
  reinforced_data::check_augmix(orig, chains, args.contiguous());
  return rdc::augmix_impl(orig, chains, args.contiguous());
}
at::Tensor emu_normalize(at::Tensor x, at::Tensor lut, bool cl) {
  reinforced_data::check_normalize(x, lut);
  return rdc::normalize_impl(x, lut, cl);
}
long divergent() { return emu::g_divergent.load(); }
long launches() { return emu::g_launches.load(); }
int32_t max_taps(int64_t n, int64_t m, int64_t filter) { return rdc::max_taps(n, m, (int)filter); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("augment", &emu_augment, "augment kernels, emulated on the host");
  m.def("mix", &emu_mix, "mix kernel, emulated on the host");
  m.def("augmix", &emu_augmix, "augmix kernel, emulated on the host");
  m.def("normalize", &emu_normalize, "normalize kernel, emulated on the host");
  m.def("divergent", &divergent, "threads that left a kernel while others waited at __syncthreads");
  m.def("launches", &launches, "kernel launches so far");
  m.def("max_taps", &max_taps, "bound on resampling taps per output pixel");
}
