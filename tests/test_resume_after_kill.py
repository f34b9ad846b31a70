"""Drills: ``reinforce`` killed with SIGKILL at several random moments, then resumed, stores
exactly what an uninterrupted run stores, record for record."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest

import _reinforce_util as U
from reinforced_data import inspection
from reinforced_data import store as S
from _cli_util import COMMON, api_run, chunks

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow, pytest.mark.subprocess]

KILLS = 3
SEED = 20261130  # the kill moments are drawn from it: a failure reproduces


def _stored(path) -> int:
    """Rows committed so far (0 while the file does not exist or cannot be opened yet)."""
    if not os.path.exists(path):
        return 0
    try:
        with S.ReinforcementFile(path, accept_incomplete=True) as f:
            return int(f.written.sum())
    except (S.ReinforcementFileError, OSError):
        return 0


def _start(out, resume):
    args = [sys.executable, "-m", "reinforced_data", "reinforce", *COMMON, "-o", str(out), "--batch-size", "2",
            "--no-progress"] + (["--resume"] if resume else [])
    return subprocess.Popen(args, env=U.subprocess_env(TINY_TEACHER_DELAY="0.2"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path):
    rng = random.Random(SEED)
    out = tmp_path / "drill.h5"
    history = []
    for round_ in range(KILLS):
        before = _stored(out)
        proc = _start(out, resume=round_ > 0)
        deadline = time.time() + 90
        # wait until this run has committed a row of its own, then kill it a random moment later
        while time.time() < deadline and proc.poll() is None and _stored(out) <= before:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.6))
        finished = proc.poll() is not None
        if not finished:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        err = proc.stderr.read().decode()
        proc.stderr.close()
        if finished:
            assert proc.returncode == 0, err
        now = _stored(out)
        assert now >= before, "a kill lost committed rows"
        history.append(now)
        if finished:
            break
        with S.ReinforcementFile(out, accept_incomplete=True) as f:  # every committed row reads back
            for i in range(f.num_images):
                if f.written[i]:
                    f.read_image(i)
    print(f"rows stored after each kill: {history}")
    assert history[0] < 24, "the first kill came after the run had finished: no drill"
    r = subprocess.run(_start_args(out), capture_output=True, text=True, env=U.subprocess_env(), timeout=180)
    assert r.returncode == 0, r.stderr
    with S.ReinforcementFile(out) as f:
        assert f.complete and f.written.all()
    api_run(tmp_path / "fresh.h5", 2)
    assert chunks(out) == chunks(tmp_path / "fresh.h5"), f"rows stored after each kill: {history}"
    assert inspection.verify_file(out)["ok"]


def _start_args(out):
    return [sys.executable, "-m", "reinforced_data", "reinforce", *COMMON, "-o", str(out), "--batch-size", "2",
            "--no-progress", "--resume"]
