#!/usr/bin/env bash
# Opt-in, not run by CI: build the C++ kernels with -fsanitize=address,undefined into a
# temporary directory and run a larger fuzz (tests/test_fuzz.py's driver) under them.
#
#   scripts/fuzz_asan.sh [CASES] [SEED]      (defaults: 2000 cases, seed 1)
#
# Any sanitizer report aborts the run (halt_on_error) and the script exits non-zero; a
# compiled-vs-reference difference does too. The build takes a few minutes on one core.
set -euo pipefail
CASES=${1:-2000}
SEED=${2:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/rd_asan.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
cd "$ROOT"
ASAN_RT=$(g++ -print-file-name=libasan.so)
UBSAN_RT=$(g++ -print-file-name=libubsan.so)
# detect_leaks=0: CPython and torch keep allocations alive until exit by design. The build
# step loads the new library too, so it runs under the preloaded runtime as well.
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1

LIB=$(LD_PRELOAD="$ASAN_RT $UBSAN_RT" python - "$BUILD" <<'PY'
import glob, os, sys
from torch.utils.cpp_extension import load
build = sys.argv[1]
flags = ["-O1", "-g", "-std=c++20", "-fopenmp", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=undefined", "-I" + os.path.abspath("csrc")]
sources = [os.path.join("csrc", "ops.cpp")] + sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
load(name="rd_asan", sources=sources, extra_cflags=flags, extra_ldflags=["-fsanitize=address,undefined", "-fopenmp"],
     build_directory=build, is_python_module=False, verbose=False)
print(os.path.join(build, "rd_asan.so"))
PY
)
echo "built $LIB; running $CASES cases (seed $SEED) under ASan+UBSan"
LD_PRELOAD="$ASAN_RT $UBSAN_RT" python tests/test_fuzz.py --cases "$CASES" --seed "$SEED" --asan-lib "$LIB"
