"""The GPU check without a GPU: benchmarks/gpu_replay.py run end to end on the C++ CPU op.

``gpu_replay.py --device cpu --quick`` runs the very code the GPU run does (every check
section, the sanitizer workload, the op / loader timing), with the CPU op standing in for
the CUDA one and fewer, smaller cases: a policy the presets no longer accept, a renamed
argument or a broken section fails here, in CI, instead of on a scarce GPU machine. The
device-only parts (the second device, GPU JPEG decoding) report SKIP / unavailable; the
comparisons with the pure-PyTorch reference are real checks of the CPU op.

Also: the check harness reports a differing byte, a section past its time limit and a
section that raises as failures; and gpu_check.sh's step limits fit its time budget.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_replay.py"
CHECK_SH = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.fixture(scope="module")
def gr():
    """benchmarks/gpu_replay.py as a module, with benchmarks/ on sys.path as when it runs as a script
    (for its sibling _common); sys.path restored afterwards."""
    saved = list(sys.path)
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gpu_replay_under_test", SCRIPT)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses look their module up there
        spec.loader.exec_module(mod)
    finally:
        sys.path[:] = saved
    return mod


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def _sections(stdout: str) -> dict[str, str]:
    return dict(re.findall(r"^SECTION (\w+): (PASS|FAIL|SKIP)", stdout, flags=re.M))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.compiled
def test_gpu_replay_dry_run_on_the_cpu_op(gr, tmp_path):
    out = tmp_path / "replay_gpu.md"
    # limits x5: a loaded CI machine must not fail a check for time (the limits are tested below)
    r = _run("--device", "cpu", "--quick", "--limit-scale", "5", "--out", str(out))
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    sections = _sections(r.stdout)
    assert list(sections) == [name for name, _, _ in gr.SECTIONS], r.stdout[-3000:]
    assert sections.pop("devices") == "SKIP"  # no second CUDA device in a dry run
    assert set(sections.values()) == {"PASS"}, sections
    checks = sum(int(n) for n in re.findall(r"^SECTION \w+: PASS (\d+) checks", r.stdout, flags=re.M))
    assert checks >= 100, checks
    assert re.search(r"^VERDICT checks: PASS \(\d+ checks in 10 sections; skipped: devices\)", r.stdout, flags=re.M)
    # the reference comparisons ran in every section that has them
    for name in ("presets", "ops", "stat_ops", "mix_normalize", "large", "batch1024"):
        assert re.search(rf"\[{name}\] ok .*== reference", r.stdout), name
    text = out.read_text()
    assert "augment + normalize (float32)" in text and "Target (augment + normalize" in text
    assert "Loader end to end: `ReinforcedDataset.loader(device='cpu')`" in text, text
    assert "GPU JPEG decode + replay: not measured (no GPU decoder in the dry run)" in text


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.compiled
def test_sanitizer_workload_dry_run(gr):
    r = _run("--device", "cpu", "--quick", "--sanitize")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    assert _sections(r.stdout) == {"sanitizer_views": "PASS"}, r.stdout[-3000:]
    # the workload forces the ops with per-view statistics and every mix mode
    assert "forced stat ops" in r.stdout and "mix modes 0-3" in r.stdout and "padded crops" in r.stdout


def test_a_differing_byte_fails_its_check(gr):
    sec = gr.Section("t", 10, gr.Dev("cpu"))
    a = torch.zeros(3, 3, 4, 5, dtype=torch.uint8)
    b = a.clone()
    b[1, 2, 3, 4] = 1
    assert sec.equal("same", a, a.clone())
    assert not sec.equal("one byte", a, b)
    assert not sec.equal("dtype", a, a.float())
    assert sec.checks == 3 and len(sec.failures) == 2 and not sec.ok
    assert "1 of 3 views differ (first [1])" in sec.failures[0]
    sec.finish()
    assert sec.summary().startswith("SECTION t: FAIL 2 of 3 checks failed")
    assert gr.verdict([sec]).startswith("VERDICT checks: FAIL (2 of 3 checks failed; sections t")


def test_sections_past_their_limit_or_raising_fail_and_the_rest_still_run(gr):
    ran = []

    def slow(sec, ctx):
        sec.true("first", True)
        sec.limit_s = 0.0
        sec.tick()  # past the limit: stops here
        ran.append("never")

    def broken(sec, ctx):
        raise KeyError("boom")

    def fine(sec, ctx):
        ran.append("fine")
        sec.true("works", True)

    def skipped(sec, ctx):
        sec.skip("nothing to do here")

    secs = gr.run_checks(gr.Dev("cpu"), gr.QUICK, sections=[("slow", slow, 5), ("broken", broken, 5),
                                                            ("fine", fine, 5), ("skipped", skipped, 5)])
    assert ran == ["fine"]
    summary = {s.name: s.summary() for s in secs}
    assert "FAIL 0 of 1 checks failed; stopped at its time limit" in summary["slow"]
    assert "FAIL 1 of 1 checks failed" in summary["broken"] and "KeyError" in secs[1].failures[0]
    assert summary["fine"].startswith("SECTION fine: PASS 1 checks")
    assert summary["skipped"].startswith("SECTION skipped: SKIP (nothing to do here")
    assert gr.verdict(secs).startswith("VERDICT checks: FAIL (1 of 3 checks failed; sections slow, broken; "
                                       "skipped: skipped)")


@pytest.mark.subprocess
def test_gpu_check_fits_its_budget(gr):
    """bash -n accepts gpu_check.sh; its step limits (the sanitizer step runs twice, memcheck and
    racecheck) fit its budget with room for the environment report; the check sections' own
    limits fit the check step's."""
    sh = CHECK_SH.read_text()
    subprocess.run(["bash", "-n", str(CHECK_SH)], check=True)
    budget = int(re.search(r"BUDGET=\$\{GPU_CHECK_BUDGET:-(\d+)\}", sh).group(1))
    assert budget <= 570  # one device call of at most 600 s, with the machine's own start-up
    limits = {name: int(limit) for name, limit in re.findall(r'^\s*step "([^"]+)" \S+ (\d+)', sh, flags=re.M)}
    assert {"checks", "pytest -m cuda", "benchmark", "compute-sanitizer --tool $tool"} <= set(limits), limits
    build = next(v for k, v in limits.items() if k.startswith("build"))
    worst = (build + limits["pytest -m cuda"] + limits["checks"] + 2 * limits["compute-sanitizer --tool $tool"]
             + limits["benchmark"])
    assert worst + 30 <= budget, (worst, budget)
    assert sum(limit for _, _, limit in gr.SECTIONS) + 15 <= limits["checks"]
