// Op schemas of reinforced_data._C. One op, one schema here; the kernels register per
// backend in cpu/ and cuda/. Python-side fake (meta) implementations live in
// reinforced_data/replay.py so that torch.compile can trace through the ops.
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing reinforced_data._C loads this library, whose static initialisers register
// the ops with the dispatcher; the module itself holds nothing.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(reinforced_data, m) {
  // images: B uint8 [3, H_b, W_b] tensors; args: int32 [B, NUM_ARGS] rows from
  // reinforced_data._args.encode, on the CPU or the images' device (they are validated on
  // the host either way). Returns uint8 [B, 3, out_h, out_w].
  m.def("augment(Tensor[] images, Tensor args, int out_h, int out_w) -> Tensor");
  // a, b: uint8 [B, 3, H, W]; args: int32 [B, NUM_MIX_ARGS] (CPU or a's device). Returns the mixed views.
  m.def("mix(Tensor a, Tensor b, Tensor args) -> Tensor");
  // x: uint8 [B, C, H, W]; lut: floating [C, 256]. Returns lut[c, x] in lut's dtype.
  m.def("normalize(Tensor x, Tensor lut, bool channels_last) -> Tensor");
}
