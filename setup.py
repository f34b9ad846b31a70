"""Build the compiled replay op of reinforced_data, reinforced_data._C (the metadata is in pyproject.toml).

The C++ CPU kernels are always built. The CUDA kernels are built as well whenever the
installed torch is a CUDA build and a CUDA toolkit is found (no GPU is needed to compile).
Set REINFORCED_DATA_CUDA=0 to skip them, =1 to insist on them. Install with
``pip install --no-build-isolation .`` into an environment that already has torch.
"""

import glob
import os
import shutil
import subprocess

from setuptools import setup


def _find_cuda_home():
    """CUDA_HOME if set; else the folder of the real nvcc (PATH may hold a wrapper script)."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        dry = subprocess.run([nvcc, "--dryrun", "x.cu"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (dry.stdout + dry.stderr).splitlines():
        if "_HERE_=" in line:  # e.g. "#$ _HERE_=/usr/local/cuda-13.0/bin"
            return os.path.dirname(line.split("_HERE_=", 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


want_cuda = os.environ.get("REINFORCED_DATA_CUDA", "auto")
if want_cuda != "0":
    cuda_home = _find_cuda_home()
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import

import torch  # noqa: E402
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402

here = os.path.dirname(os.path.abspath(__file__))
sources = [os.path.join("csrc", "ops.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
cuda_sources = sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
build_cuda = want_cuda != "0" and torch.version.cuda is not None and CUDA_HOME is not None
if want_cuda == "1" and not build_cuda:
    raise RuntimeError(
        "REINFORCED_DATA_CUDA=1 but the CUDA kernels cannot be built: "
        f"torch.version.cuda={torch.version.cuda}, CUDA toolkit={CUDA_HOME}"
    )
if build_cuda:
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")

cxx_flags = ["-O3", "-std=c++20", "-fopenmp"]
extra = {"cxx": cxx_flags}
Extension = CppExtension
if build_cuda:
    Extension = CUDAExtension
    sources += cuda_sources
    extra["nvcc"] = ["-O3", "-std=c++20", "--fmad=false", "-lineinfo"]

ext = Extension(
    name="reinforced_data._C",
    sources=sources,
    include_dirs=[os.path.join(here, "csrc")],
    depends=sorted(glob.glob(os.path.join("csrc", "**", "*.h"), recursive=True)),
    extra_compile_args=extra,
    extra_link_args=["-fopenmp"],
    define_macros=[("WITH_CUDA", None)] if build_cuda else [],
)

setup(
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
