#!/usr/bin/env bash
# One prepared check for a lent GPU machine (an H100/H200 with its own torch and CUDA
# toolkit, no package registry): build the op against that machine's torch, run the
# `cuda` tests (CUDA vs CPU bytes included) and the GPU benchmark, and leave every log,
# the benchmark table and a summary under $OUT. Meant to finish within 8 minutes; every
# step has its own time limit, and a failed step does not stop the later ones.
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh        # from the repository root
#
# On the lent machine the device tool sets $OUT: run `bash benchmarks/gpu_check.sh` with a
# time limit of about 540 s (the steps' limits add up to 450 s plus a few seconds), and no
# carried binaries (the op is built there). Dry run here, without a GPU, in a copy of the tree:
#   GPU_CHECK_BUILD=inplace REINFORCED_DATA_CUDA=0 PYTHON=/path/to/venv/python OUT=/tmp/o bash benchmarks/gpu_check.sh
#
# Files written to $OUT (at most 8; names of letters, digits, '.', '_' and '-' only):
#   summary.md        one line per step (status, seconds) and the benchmark's verdicts
#   0_env.txt         pip list, nvidia-smi, torch / CUDA versions (read first: no registry there)
#   1_build.log       the build of reinforced_data._C (C++ and CUDA kernels, sm_90)
#   2_pytest_cuda.log pytest -m cuda (CUDA vs CPU bytes, opcheck on CUDA inputs)
#   3_gpu_replay.log  benchmarks/gpu_replay.py (checks, then timing)
#   replay_gpu.md     the benchmark's table (B=256 views at 224 px, sources on the GPU,
#                     contiguous and channels-last)
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
OUT=${OUT:-$ROOT/benchmarks/.data/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || echo 4)}
export REINFORCED_DATA_CUDA=${REINFORCED_DATA_CUDA:-1}  # insist on the CUDA kernels: a CPU-only build fails here
export REINFORCED_DATA_REQUIRE_COMPILED=1
SUMMARY=$OUT/summary.md
START=$(date +%s)

echo "# GPU check: $(date -u '+%Y-%m-%d %H:%M UTC')" > "$SUMMARY"
echo "" >> "$SUMMARY"
echo "| step | status | seconds | log |" >> "$SUMMARY"
echo "|---|---|---:|---|" >> "$SUMMARY"

# step NAME LOG LIMIT_S COMMAND...: runs COMMAND with a time limit, its output to LOG (and
# stdout), and adds a row to the summary. Returns the command's status.
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local t0 rc
  t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" > "$OUT/$log"
  timeout --kill-after=10 "$limit" "$@" >> "$OUT/$log" 2>&1
  rc=$?
  tail -n 25 "$OUT/$log"
  local status="ok"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then status="TIMED OUT (${limit}s)"; elif [ "$rc" -ne 0 ]; then status="FAILED (exit $rc)"; fi
  echo "| $name | $status | $(( $(date +%s) - t0 )) | $log |" >> "$SUMMARY"
  echo "== $name: $status"
  return "$rc"
}

# 0. what the machine has (it reaches no registry: nothing can be installed there)
{
  echo "## uname / python"; uname -a; command -v "$PY"; "$PY" --version
  echo; echo "## nvidia-smi"; nvidia-smi 2>&1 || echo "nvidia-smi unavailable"
  echo; echo "## nvcc"; command -v nvcc && nvcc --version 2>&1 | tail -n 2 || echo "nvcc not on PATH"
  echo; echo "## torch"
  "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else '')" 2>&1
  echo; echo "## needed packages (torch torchvision timm h5py numpy pytest scikit-image Pillow ninja setuptools tqdm)"
  "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|timm|h5py|numpy|pytest|scikit-image|pillow|ninja|setuptools|tqdm) ' || true
  echo; echo "## pip list"; "$PY" -m pip list 2>&1
} > "$OUT/0_env.txt" 2>&1
sed -n '/## torch/,/## pip list/p' "$OUT/0_env.txt"

# 1. build against this machine's torch. The op built elsewhere is never used: an old
# reinforced_data/_C*.so is removed first (this script is meant for the device machine's
# copy of the tree; it rebuilds the op wherever it runs). --no-deps: the machine reaches no
# registry, and its own torch, numpy, h5py and timm are used as they are.
# GPU_CHECK_BUILD=inplace skips the pip step (for a dry run in a copy of the tree, where
# `pip install -e` would repoint the environment's editable install at that copy).
rm -f reinforced_data/_C*.so
if [ "${GPU_CHECK_BUILD:-pip}" = inplace ]; then
  BUILD="'$PY' setup.py build_ext --inplace"
else
  BUILD="'$PY' -m pip install --no-build-isolation --no-deps -e . || { echo 'pip install -e failed: building in place (setup.py build_ext --inplace)'; '$PY' setup.py build_ext --inplace; }"
fi
step "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)" 1_build.log 200 bash -c "$BUILD"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # the in-place build, whichever way it was made
"$PY" -c "import torch, reinforced_data._C; assert torch._C._dispatch_has_kernel_for_dispatch_key('reinforced_data::augment', 'CUDA'), 'no CUDA kernels'; print('CUDA kernels: yes')" \
  >> "$OUT/1_build.log" 2>&1
CUDA_OK=$?
tail -n 1 "$OUT/1_build.log"
echo "| compiled op has CUDA kernels | $([ $CUDA_OK -eq 0 ] && echo yes || echo NO) | | 1_build.log |" >> "$SUMMARY"

# 2. the cuda tests: CUDA vs CPU op bytes, opcheck on CUDA inputs, error messages on CUDA
step "pytest -m cuda" 2_pytest_cuda.log 120 "$PY" -m pytest -q -m cuda -p no:cacheprovider -rs --continue-on-collection-errors tests/
PYTEST_LINE=$(grep -E " in [0-9.]+s" "$OUT/2_pytest_cuda.log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')

# 3. GPU benchmark: checks, then B=256 views at 224 px from sources already on the GPU
step "benchmarks/gpu_replay.py" 3_gpu_replay.log 130 "$PY" benchmarks/gpu_replay.py --out "$OUT/replay_gpu.md"

{
  echo ""
  echo "pytest -m cuda: ${PYTEST_LINE:-no result line (see 2_pytest_cuda.log)}"
  echo ""
  if [ -f "$OUT/replay_gpu.md" ]; then
    echo "## Benchmark verdicts (replay_gpu.md)"
    grep -E "^GPU:|^Target|^Bit-exactness" "$OUT/replay_gpu.md"
  else
    echo "No benchmark table (see 3_gpu_replay.log)."
  fi
  echo ""
  echo "Total: $(( $(date +%s) - START )) s."
} >> "$SUMMARY"
echo
cat "$SUMMARY"
