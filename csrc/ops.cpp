// Op schemas of reinforced_data._C. One op, one schema here; the kernels register per
// backend in cpu/ and cuda/. Python-side fake (meta) implementations live in
// reinforced_data/_ops.py so that torch.compile can trace through the ops; the library
// names that module (set_python_module: torch checks the fakes are registered there and
// names it when they are missing), and importing _C imports it (exec_module below).
#include <Python.h>
#include <torch/library.h>

namespace {
// Runs once the module is in sys.modules (multi-phase initialisation, PEP 489), so that
// `import reinforced_data._C` alone also registers the fake kernels: torch does not import
// the module named by set_python_module below by itself. reinforced_data._ops imports _C in
// turn and finds it in sys.modules; importing _ops first works the same way round.
int exec_module(PyObject* /*module*/) {
  PyObject* ops = PyImport_ImportModule("reinforced_data._ops");
  if (ops == nullptr) {
    return -1;
  }
  Py_DECREF(ops);
  return 0;
}

PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, reinterpret_cast<void*>(exec_module)},
    {0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_C", nullptr, 0, nullptr, module_slots, nullptr, nullptr, nullptr,
};
}  // namespace

extern "C" {
// Importing reinforced_data._C loads this library, whose static initialisers register
// the ops with the dispatcher; the module itself holds nothing.
PyObject* PyInit__C(void) {
  return PyModuleDef_Init(&module_def);
}
}

TORCH_LIBRARY(reinforced_data, m) {
  m.set_python_module("reinforced_data._ops");
  // images: B uint8 [3, H_b, W_b] tensors; args: int32 [B, NUM_ARGS] rows from
  // reinforced_data._args.encode, on the CPU or the images' device (they are validated on
  // the host either way). Returns uint8 [B, 3, out_h, out_w].
  m.def("augment(Tensor[] images, Tensor args, int out_h, int out_w) -> Tensor");
  // a, b: uint8 [B, 3, H, W]; args: int32 [B, NUM_MIX_ARGS] (CPU or a's device). Returns the mixed views.
  m.def("mix(Tensor a, Tensor b, Tensor args) -> Tensor");
  // orig: uint8 [B, 3, H, W] crops; chains: uint8 [B, K, 3, H, W] (K <= MAX_AUGMIX_CHAINS); args: int32
  // [B, NUM_AUGMIX_ARGS] (CPU or orig's device). Returns the AugMix blend, uint8 [B, 3, H, W].
  m.def("augmix(Tensor orig, Tensor chains, Tensor args) -> Tensor");
  // x: uint8 [B, C, H, W]; lut: floating [C, 256]. Returns lut[c, x] in lut's dtype.
  m.def("normalize(Tensor x, Tensor lut, bool channels_last) -> Tensor");
}
