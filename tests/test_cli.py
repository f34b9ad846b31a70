"""The ``reinforced-data`` command: reinforce (progress, kill -9 and resume, torchrun), merge, inspect, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import _reinforce_util as U
from _cli_util import COMMON, DATA, TEACHER, api_run, chunks
from reinforced_data import store as S
from reinforced_data.cli import main
from reinforced_data.generation import reinforce


# Tiny models: one intra-op thread is fastest, and immune to a busy shared machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*args, env=None, timeout=180, **kw):
    return subprocess.run([sys.executable, "-m", "reinforced_data", *args], capture_output=True, text=True,
                          env=env or U.subprocess_env(), timeout=timeout, **kw)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("reinforced-data: error: ")
    return lines[0]


@pytest.mark.slow
@pytest.mark.subprocess
def test_reinforce_with_progress_then_inspect(tmp_path, capsys):
    out = tmp_path / "demo.h5"
    r = cli("reinforce", *COMMON, "-o", str(out), "--batch-size", "3")
    assert r.returncode == 0, r.stderr
    assert "img/s" in r.stderr and "24/24" in r.stderr  # tqdm progress with images/s
    assert "| teachers |" in r.stderr and "| replay |" in r.stderr  # the time split
    assert f"wrote {out}" in r.stderr
    assert main(["inspect", str(out), "--data", DATA]) == 0
    text = capsys.readouterr().out
    for needle in ("complete:         yes", "images (N):       24", "views (K):        4", "top-k (k):        3",
                   "classes:          8", "bytes/record", "teacher top-1 = label:", "mean entropy:",
                   "teacher:          _reinforce_util:tiny_teacher", '"output_size": [16, 16]',
                   "dataset:          matches"):
        assert needle in text, needle
    assert main(["inspect", str(out), "--data", DATA.replace("seed=2", "seed=3")]) == 1
    assert "DOES NOT MATCH: " in capsys.readouterr().out
    assert main(["inspect", str(out), "--json"]) == 0
    assert '"num_views": 4' in capsys.readouterr().out
    # show, through the same command: a PNG of image 5's stored views; a bad index is one line
    assert main(["show", str(out), "--data", DATA, "--index", "5", "--views", "3", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    assert main(["show", str(out), "--data", DATA, "--index", "24", "--out", str(tmp_path / "h.png")]) == 2
    assert "24" in one_error_line(capsys.readouterr().err)
    # the output exists: refused without --resume or --overwrite
    assert main(["reinforce", *COMMON, "-o", str(out), "--no-progress"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "already exists; pass --resume to continue it or --overwrite to replace it" in line
    assert main(["reinforce", *COMMON, "-o", str(out), "--no-progress", "--overwrite"]) == 0
    capsys.readouterr()
    assert main(["reinforce", *COMMON, "-o", str(out), "--no-progress", "--resume"]) == 0
    assert "24 images were already stored" in capsys.readouterr().err


def test_bad_files_give_one_line_errors(tmp_path, capsys):
    good = str(tmp_path / "good.h5")
    api_run(good, 4)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    newer = str(tmp_path / "newer.h5")
    truncated = str(tmp_path / "truncated.h5")
    for p in (newer, truncated):
        with open(good, "rb") as src, open(p, "wb") as dst:
            dst.write(src.read())
    with h5py.File(newer, "a") as f:
        f.attrs["format_version"] = S.FORMAT_VERSION + 1
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(good) // 2)
    cases = {
        str(text): "is not an HDF5 file",
        other: "is an HDF5 file but not a reinforcement file",
        newer: f"has format version {S.FORMAT_VERSION + 1}, newer than",
        truncated: "is truncated",
    }
    for path, needle in cases.items():  # inspect judges the file: the problem, then the verdict, exit 1
        assert main(["inspect", path]) == 1, path
        out = capsys.readouterr().out.splitlines()
        assert needle in out[1] and out[-1].startswith("verdict:          UNREADABLE"), (path, out)
    missing = str(tmp_path / "missing.h5")  # no file to judge: the command's one-line error
    assert main(["inspect", missing]) == 2
    assert "does not exist" in one_error_line(capsys.readouterr().err)
    # a file for another dataset, resumed: refused
    assert main(["reinforce", *[a.replace("num_images=24", "num_images=23") for a in COMMON], "-o", good,
                 "--resume", "--no-progress"]) == 2
    assert "made for another dataset: the file holds 24 images, the dataset 23" in one_error_line(
        capsys.readouterr().err)
    # a dataset whose classes exceed the teacher's
    assert main(["reinforce", *[a.replace("num_classes=8", "num_classes=9") for a in COMMON], "-o",
                 str(tmp_path / "x.h5"), "--no-progress"]) == 2
    assert "teachers predict 8" in one_error_line(capsys.readouterr().err)


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_then_resume(tmp_path):
    out = tmp_path / "r.h5"
    proc = subprocess.Popen([sys.executable, "-m", "reinforced_data", "reinforce", *COMMON, "-o", str(out),
                             "--batch-size", "2", "--no-progress"],
                            env=U.subprocess_env(TINY_TEACHER_DELAY="0.3"), stderr=subprocess.PIPE)
    stored = 0
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if out.exists():
            try:
                with S.ReinforcementFile(out, accept_incomplete=True) as f:
                    stored = int(f.written.sum())
            except S.ReinforcementFileError:
                continue
            if stored >= 4:
                break
    assert proc.poll() is None, proc.stderr.read().decode()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with S.ReinforcementFile(out, accept_incomplete=True) as f:
        stored = int(f.written.sum())
        assert 4 <= stored < 24 and not f.complete
    r = cli("reinforce", *COMMON, "-o", str(out), "--batch-size", "2", "--no-progress", "--resume")
    assert r.returncode == 0, r.stderr
    assert f"{stored} images were already stored" in r.stderr
    with S.ReinforcementFile(out) as f:
        assert f.complete and f.generation["images"] == 24 - stored
    api_run(tmp_path / "fresh.h5", 2)
    assert chunks(out) == chunks(tmp_path / "fresh.h5")


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.distributed
def test_torchrun_two_gloo_ranks_merge_to_the_single_process_file(tmp_path):
    out = tmp_path / "dist.h5"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
           "reinforced_data", "reinforce", *COMMON, "--policy", "rrc_ra_re_mix", "-o", str(out), "--batch-size", "3",
           "--no-progress", "--merge"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=U.subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "merged 2 shards into" in r.stderr
    for rank in range(2):
        with S.ReinforcementFile(S.shard_path(out, rank, 2)) as f:
            assert f.header.shard_world_size == 2 and 0 < f.written.sum() < 24
    api_run(tmp_path / "single.h5", 3, policy="rrc_ra_re_mix")
    assert chunks(out) == chunks(tmp_path / "single.h5")
    with S.ReinforcementFile(out) as f:
        assert f.header.extra == {"merged_from": 2}
    # run again with --resume: nothing left to compute, the merge is redone, no rank hangs
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=U.subprocess_env(), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "merged 2 shards into" in r.stderr
    assert chunks(out) == chunks(tmp_path / "single.h5")


def test_merge_command(tmp_path, capsys):
    from reinforced_data.policy import Policy

    out = tmp_path / "m.h5"
    for rank in range(2):
        reinforce(DATA, TEACHER, str(out), policy=Policy.preset("rrc", output_size=(16, 16)), num_views=4, topk=3,
                  block_size=8, progress=False, rank=rank, world_size=2)
    assert main(["merge", str(out)]) == 0
    assert "merged into" in capsys.readouterr().out
    assert main(["merge", str(out)]) == 2
    assert "already exists" in one_error_line(capsys.readouterr().err)
    os.remove(S.shard_path(out, 1, 2))
    assert main(["merge", str(out), "--overwrite"]) == 2
    assert "cover ranks [0]" in one_error_line(capsys.readouterr().err)
