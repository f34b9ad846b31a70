#!/usr/bin/env bash
# One prepared check for a lent GPU machine (an H100/H200 with its own torch and CUDA toolkit,
# no package registry): build the op against that machine's torch, run the `cuda` tests, the
# GPU checks (CUDA == CPU op on every case, == reference on a subset; large sources, a batch
# of 1024, a non-default stream, a second device, no host-device syncs), a short
# compute-sanitizer pass (memcheck, racecheck) and the GPU benchmark. Every step has its own
# time limit and a failed step does not stop the later ones; the whole run stays within
# $GPU_CHECK_BUDGET seconds (default 560: one call of at most 10 minutes, build included).
# It ends with one line per section (PASS / FAIL / SKIP with its number) and one verdict line.
#
#   OUT=/tmp/gpu_out bash benchmarks/gpu_check.sh        # from the repository root
#
# On the lent machine the device tool sets $OUT: run `bash benchmarks/gpu_check.sh` with a
# time limit of 600 s and no carried binaries (the op is built there, against its torch).
#
# Step limits (seconds): build 150, pytest -m cuda 60, checks 120 (its sections' own limits
# add up to less), memcheck 60, racecheck 60, benchmark 80: 530 plus the environment report;
# a step never gets more than what is left of the budget.
#
# Dry run without a GPU, in a copy of the tree (REINFORCED_DATA_CUDA=0: a CPU-only build, and
# every step runs on the CPU op with `--device cpu`; the verdict then says DRY RUN):
#   GPU_CHECK_BUILD=inplace REINFORCED_DATA_CUDA=0 PYTHON=/path/to/venv/python OUT=/tmp/o bash benchmarks/gpu_check.sh
#
# Files written to $OUT (8; names of letters, digits, '.', '_' and '-' only):
#   summary.md        the section lines, the verdict, and the benchmark's own verdict lines
#   0_env.txt         pip list, nvidia-smi, torch / CUDA versions, devices (read first: no registry there)
#   1_build.log       the build of reinforced_data._C (C++ and CUDA kernels, sm_90)
#   2_pytest_cuda.log pytest -m cuda (CUDA vs CPU bytes, opcheck on CUDA inputs, sync-free ops)
#   3_checks.log      benchmarks/gpu_replay.py --checks-only (one line per check, per section)
#   4_sanitizer.log   compute-sanitizer memcheck and racecheck over gpu_replay.py --sanitize
#   5_benchmark.log   benchmarks/gpu_replay.py --no-check (op GPU / host time, loader, GPU decode)
#   replay_gpu.md     the benchmark's table
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
BUDGET=${GPU_CHECK_BUDGET:-560}
DRY=0
[ "$REINFORCED_DATA_CUDA" = 0 ] && DRY=1  # the dry run: a CPU-only build, every step on the CPU op
SUMMARY=$OUT/summary.md
START=$(date +%s)
LINES=()  # one per section: "PASS|FAIL|SKIP  name: detail"

line() {  # line STATUS NAME DETAIL
  LINES+=("$(printf '%-4s  %s: %s' "$1" "$2" "$3")")
  echo "$(printf '%-4s  %s: %s' "$1" "$2" "$3")"
}

left() { echo $(( BUDGET - ($(date +%s) - START) )); }

# step NAME LOG LIMIT_S COMMAND...: runs COMMAND with a time limit (never past the budget), its
# output appended to LOG; sets STEP_RC, STEP_S (seconds), STEP_LIMIT and STEP_STATUS (ok,
# "TIMED OUT", "exit N").
step() {
  local name=$1 log=$2 limit=$3
  shift 3
  local rest t0
  rest=$(( $(left) - 5 ))
  [ "$limit" -gt "$rest" ] && limit=$rest
  STEP_LIMIT=$limit
  if [ "$limit" -lt 5 ]; then
    echo "== $name: not run, the ${BUDGET} s budget is spent" | tee -a "$OUT/$log"
    STEP_RC=124; STEP_S=0; STEP_STATUS="not run (budget spent)"
    return 124
  fi
  t0=$(date +%s)
  echo "== $name (limit ${limit}s): $*" >> "$OUT/$log"
  timeout --kill-after=5 "$limit" "$@" >> "$OUT/$log" 2>&1
  STEP_RC=$?
  STEP_S=$(( $(date +%s) - t0 ))
  if [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then STEP_STATUS="TIMED OUT"
  elif [ "$STEP_RC" -ne 0 ]; then STEP_STATUS="exit $STEP_RC"
  else STEP_STATUS=ok; fi
  tail -n 15 "$OUT/$log"
  echo "== $name: $STEP_STATUS (${STEP_S} s)"
  return "$STEP_RC"
}

took() { echo "${STEP_S} s of ${STEP_LIMIT} s"; }

# "VERDICT checks: PASS (123 checks in 9 sections; ...)" of a log -> "123 checks in 9 sections; ..."
checks_verdict() { grep -E '^VERDICT checks' "$OUT/$1" | tail -n 1 | sed 's/^VERDICT checks: [A-Z]* (//; s/)$//'; }

# 0. what the machine has (it reaches no registry: nothing can be installed there)
{
  echo "## uname / python"; uname -a; command -v "$PY"; "$PY" --version
  echo; echo "## nvidia-smi"; timeout 20 nvidia-smi 2>&1 || echo "nvidia-smi unavailable"
  echo; echo "## nvcc"; command -v nvcc && timeout 20 nvcc --version 2>&1 | tail -n 2 || echo "nvcc not on PATH"
  echo; echo "## torch"
  timeout 60 "$PY" -c "import torch; n = torch.cuda.device_count() if torch.cuda.is_available() else 0; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available(), 'devices', n, [torch.cuda.get_device_name(i) for i in range(n)])" 2>&1
  echo; echo "## needed packages (torch torchvision timm h5py numpy pytest scikit-image Pillow ninja setuptools tqdm)"
  timeout 60 "$PY" -m pip list 2>/dev/null | grep -i -E '^(torch|torchvision|timm|h5py|numpy|pytest|scikit-image|pillow|ninja|setuptools|tqdm) ' || true
  echo; echo "## pip list"; timeout 60 "$PY" -m pip list 2>&1
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
: > "$OUT/1_build.log"
step "build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)" 1_build.log 150 bash -c "$BUILD"
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}  # the in-place build, whichever way it was made
if [ "$DRY" = 1 ]; then
  KERNELS="import torch, reinforced_data._C; print('compiled op: yes (CPU-only build: dry run)')"
else
  KERNELS="import torch, reinforced_data._C; assert torch._C._dispatch_has_kernel_for_dispatch_key('reinforced_data::augment', 'CUDA'), 'the op has no CUDA kernels'; print('compiled op with CUDA kernels: yes')"
fi
timeout 60 "$PY" -c "$KERNELS" >> "$OUT/1_build.log" 2>&1
KERNELS_RC=$?
tail -n 1 "$OUT/1_build.log"
if [ "$STEP_RC" -eq 0 ] && [ "$KERNELS_RC" -eq 0 ]; then
  line PASS build "$(tail -n 1 "$OUT/1_build.log") ($(took))"
else
  line FAIL build "$STEP_STATUS; $(tail -n 1 "$OUT/1_build.log") ($(took); see 1_build.log)"
fi

# 2. the cuda tests: CUDA vs CPU op bytes, opcheck on CUDA inputs, errors on CUDA, sync-free ops
: > "$OUT/2_pytest_cuda.log"
step "pytest -m cuda" 2_pytest_cuda.log 60 "$PY" -m pytest -q -m cuda -p no:cacheprovider -rs --continue-on-collection-errors tests/
RESULT=$(grep -E " in [0-9.]+s" "$OUT/2_pytest_cuda.log" | tail -n 1 | sed 's/^=* *//; s/ *=*$//')
if [ "$STEP_RC" -eq 0 ] && [ "$DRY" = 0 ] && ! echo "$RESULT" | grep -q passed; then
  line FAIL "pytest -m cuda" "no test ran on the GPU: ${RESULT:-no result line} ($(took); see 2_pytest_cuda.log)"
elif [ "$STEP_RC" -eq 0 ]; then
  line PASS "pytest -m cuda" "${RESULT:-no result line} ($(took); skip reasons in 2_pytest_cuda.log)"
else
  line FAIL "pytest -m cuda" "$STEP_STATUS: ${RESULT:-no result line} ($(took); see 2_pytest_cuda.log)"
fi

DRY_ARGS=()
[ "$DRY" = 1 ] && DRY_ARGS=(--device cpu --quick)  # the dry run: the same steps, fewer cases, on the CPU op

# 3. the checks, section by section (each with its own limit inside the step's)
: > "$OUT/3_checks.log"
step "checks" 3_checks.log 120 "$PY" benchmarks/gpu_replay.py --checks-only ${DRY_ARGS[@]+"${DRY_ARGS[@]}"}
while IFS= read -r s; do  # "SECTION name: PASS 26 checks (3.4 s of 12 s)"
  name=${s#SECTION }; name=${name%%:*}
  rest=${s#*: }; status=${rest%% *}; detail=${rest#* }
  line "$status" "checks/$name" "$detail"
done < <(grep -E "^SECTION [a-z0-9_]+: (PASS|FAIL|SKIP)" "$OUT/3_checks.log")
RESULT=$(checks_verdict 3_checks.log)
if [ "$STEP_RC" -eq 0 ]; then
  line PASS checks "$RESULT ($(took))"
else
  line FAIL checks "$STEP_STATUS: ${RESULT:-no verdict line} ($(took); see 3_checks.log)"
fi

# 4. compute-sanitizer over a handful of views (Contrast, AutoContrast, Equalize, Sharpness,
# a padded crop, every mix mode): memcheck with the caching allocator off (so an access past
# a tensor is outside any allocation), racecheck on the shared-memory reductions.
find_sanitizer() {
  local c d
  c=$(command -v compute-sanitizer 2>/dev/null) && { echo "$c"; return; }
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" \
           "$(command -v nvcc >/dev/null 2>&1 && timeout 20 nvcc --dryrun x.cu 2>&1 | sed -n 's/.*_HERE_=//p' | head -n 1 | xargs -r dirname)" \
           /usr/local/cuda /usr/local/cuda-*; do
    [ -n "$d" ] || continue
    for c in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
      [ -x "$c" ] && { echo "$c"; return; }
    done
  done
  c=$(find "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)/nvidia" \
        -name compute-sanitizer -type f -perm -u+x 2>/dev/null | head -n 1)
  [ -n "$c" ] && echo "$c"
}
: > "$OUT/4_sanitizer.log"
CS=$( [ "$DRY" = 0 ] && find_sanitizer )
if [ -z "$CS" ]; then
  why=$([ "$DRY" = 1 ] && echo "dry run" || echo "compute-sanitizer not found (PATH, CUDA_HOME, nvcc's folder, /usr/local/cuda*, pip's nvidia packages)")
  line SKIP "memcheck" "$why"
  line SKIP "racecheck" "$why"
  # the same workload without a sanitizer, so its code still runs
  step "sanitizer workload (no sanitizer)" 4_sanitizer.log 60 "$PY" benchmarks/gpu_replay.py --sanitize ${DRY_ARGS[@]+"${DRY_ARGS[@]}"}
  RESULT=$(checks_verdict 4_sanitizer.log)
  [ "$STEP_RC" -eq 0 ] && line PASS "sanitizer workload" "$RESULT, no sanitizer ($(took))" \
                       || line FAIL "sanitizer workload" "$STEP_STATUS: $RESULT ($(took); see 4_sanitizer.log)"
else
  echo "compute-sanitizer: $CS ($(timeout 20 "$CS" --version 2>&1 | tail -n 1))" >> "$OUT/4_sanitizer.log"
  CS_ARGS=(--error-exitcode 3)
  # errors the CUDA runtime returns to torch's own probing are not kernel errors; kernel
  # launch failures still raise in Python (the launches are checked) and fail the step
  timeout 20 "$CS" --help 2>&1 | grep -q -- "--report-api-errors" && CS_ARGS+=(--report-api-errors no)
  for tool in memcheck racecheck; do
    extra=()
    [ "$tool" = memcheck ] && extra=(env PYTORCH_NO_CUDA_MEMORY_CACHING=1)
    FROM=$(( $(wc -l < "$OUT/4_sanitizer.log") + 1 ))  # this tool's lines of the shared log
    step "compute-sanitizer --tool $tool" 4_sanitizer.log 60 \
      ${extra[@]+"${extra[@]}"} "$CS" --tool "$tool" "${CS_ARGS[@]}" "$PY" benchmarks/gpu_replay.py --sanitize
    tail -n +"$FROM" "$OUT/4_sanitizer.log" > "$OUT/.sanitizer_part"
    if [ "$tool" = memcheck ]; then
      RESULT=$(grep -E "ERROR SUMMARY: [0-9]+ error" "$OUT/.sanitizer_part" | tail -n 1 | sed 's/^=* *//')
    else
      RESULT=$(grep -E "RACECHECK SUMMARY: [0-9]+ hazard" "$OUT/.sanitizer_part" | tail -n 1 | sed 's/^=* *//')
      [ -n "$RESULT" ] || RESULT=$(grep -E "ERROR SUMMARY: [0-9]+ error" "$OUT/.sanitizer_part" | tail -n 1 | sed 's/^=* *//')
    fi
    FOUND=$(echo "$RESULT" | sed -n 's/.*SUMMARY: \([0-9]*\).*/\1/p')
    CHECKS=$(grep -E '^VERDICT checks' "$OUT/.sanitizer_part" | tail -n 1 | sed 's/^VERDICT checks: [A-Z]* (//; s/)$//')
    rm -f "$OUT/.sanitizer_part"
    if [ "$STEP_RC" -eq 0 ] && [ "${FOUND:-x}" = 0 ]; then
      line PASS "$tool" "$RESULT; workload $CHECKS ($(took))"
    else
      why=$STEP_STATUS
      [ "$STEP_RC" -eq 0 ] && [ -z "$FOUND" ] && why="no sanitizer summary line"
      { [ "$STEP_RC" -eq 3 ] || [ "${FOUND:-0}" != 0 ]; } && why="the sanitizer reported errors or hazards"
      line FAIL "$tool" "$why: ${RESULT:-no summary line}; workload ${CHECKS:-did not finish} ($(took); see 4_sanitizer.log)"
    fi
  done
fi

# 5. GPU benchmark: the op's GPU and host time, the loader end to end, GPU JPEG decode + replay
: > "$OUT/5_benchmark.log"
step "benchmark" 5_benchmark.log 80 "$PY" benchmarks/gpu_replay.py --no-check --out "$OUT/replay_gpu.md" \
  ${DRY_ARGS[@]+"${DRY_ARGS[@]}"}
if [ "$STEP_RC" -eq 0 ] && [ -f "$OUT/replay_gpu.md" ]; then
  line PASS benchmark "$(grep -c '^| ' "$OUT/replay_gpu.md") table rows, replay_gpu.md ($(took))"
else
  line FAIL benchmark "$STEP_STATUS ($(took); see 5_benchmark.log)"
fi

TOTAL=$(( $(date +%s) - START ))
FAILS=0; SKIPS=0; NAMES=""
for l in ${LINES[@]+"${LINES[@]}"}; do
  case "$l" in
    FAIL*) FAILS=$((FAILS + 1)); n=${l#FAIL  }; NAMES="$NAMES${NAMES:+, }${n%%:*}";;
    SKIP*) SKIPS=$((SKIPS + 1));;
  esac
done
if [ "$FAILS" -eq 0 ]; then VERDICT="PASS"; else VERDICT="FAIL ($FAILS of ${#LINES[@]} sections failed: $NAMES)"; fi
[ "$SKIPS" -gt 0 ] && VERDICT="$VERDICT; $SKIPS skipped"
if [ "$DRY" = 1 ]; then
  VERDICT="DRY RUN on the CPU op (no GPU verdict): $VERDICT"
else
  DEVICES=$(grep -m1 -oE "\[.*\]" <(sed -n '/## torch/,/## needed/p' "$OUT/0_env.txt"))
  [ -n "$DEVICES" ] && [ "$DEVICES" != "[]" ] || DEVICES="no CUDA device"
  VERDICT="$VERDICT on $DEVICES"
fi
{
  echo "# GPU check: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo ""
  echo '```'
  printf '%s\n' ${LINES[@]+"${LINES[@]}"}
  echo "VERDICT: $VERDICT (${TOTAL} s of the ${BUDGET} s budget)"
  echo '```'
  echo ""
  if [ -f "$OUT/replay_gpu.md" ]; then
    echo "## Benchmark (replay_gpu.md)"
    echo ""
    grep -E "^GPU:|^Target|^Loader|^GPU JPEG" "$OUT/replay_gpu.md"
  else
    echo "No benchmark table (see 5_benchmark.log)."
  fi
} > "$SUMMARY"
echo
cat "$SUMMARY"
[ "$FAILS" -eq 0 ]
