"""Bad input to the ``reinforced-data`` command: one row per kind, each one line and exit status 2.

Rows run ``main()`` in this process (fast); the file-size limit runs in a subprocess under
``RLIMIT_FSIZE`` (SIGXFSZ ignored, so writes fail with EFBIG as on a real limit).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import _reinforce_util as U
from reinforced_data import store as S
from reinforced_data.cli import main
from reinforced_data.synthetic import SyntheticImages, write_image_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DATA = "synthetic:num_images=24,num_classes=8,min_size=20,max_size=32,seed=2"
TEACHER = "_reinforce_util:tiny_teacher"
FAST = ["--output-size", "16", "-K", "2", "-k", "2", "--no-progress"]


def reinforce_args(tmp, *extra, data="synthetic:num_images=4,num_classes=8,min_size=20,max_size=24",
                   teacher=TEACHER, out="out.h5"):
    return ["reinforce", "--data", data, "--teacher", teacher, *FAST, "-o", os.path.join(tmp, out), *extra]


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("reinforced-data: error: "), err
    return lines[0]


def _truncated_folder(tmp) -> tuple[str, str]:
    root = write_image_folder(SyntheticImages(8, 8, 20, 24, seed=1), os.path.join(tmp, "folder"))
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
    with open(files[2], "r+b") as f:
        f.truncate(os.path.getsize(files[2]) // 2)
    return root, os.path.relpath(files[2], root)


def _binary_policy(tmp) -> str:
    path = os.path.join(tmp, "policy.bin")
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\x00")
    return path


def _a_file(tmp) -> str:
    path = os.path.join(tmp, "file")
    open(path, "w").close()
    return path


# (id, argv maker (tmp -> argv), needles in the one line)
ROWS = [
    ("device-cuda-without-gpu", lambda t: reinforce_args(t, "--device", "cuda"),
     ["device 'cuda' was asked for but torch sees no CUDA GPU", "--device cpu"]),
    ("device-cuda-99", lambda t: reinforce_args(t, "--device", "cuda:99"), ["device 'cuda:99'"]),
    ("device-tpu", lambda t: reinforce_args(t, "--device", "tpu"),
     ["device 'tpu' is not a device name torch knows; use cpu, cuda or cuda:N"]),
    ("device-meta", lambda t: reinforce_args(t, "--device", "meta"),
     ["device 'meta' cannot run the teachers on this machine"]),
    ("seed-beyond-64-bits", lambda t: reinforce_args(t, "--seed", str(2**64)),
     [f"seed={2**64} must be an integer in [0, 2**63 - 1]"]),
    ("seed-beyond-63-bits", lambda t: reinforce_args(t, "--seed", str(2**63)), ["must be an integer in [0, 2**63 - 1]"]),
    ("teacher-json-model-not-text", lambda t: reinforce_args(t, teacher='{"model": 1}'),
     ["teacher spec: 'model' must be text", "not int 1"]),
    ("teacher-empty", lambda t: reinforce_args(t, teacher=""), ["a teacher spec is empty; give a timm model name"]),
    ("policy-binary-file", lambda t: reinforce_args(t, "--policy", _binary_policy(t)),
     ["policy file", "policy.bin is not a text (JSON) file"]),
    ("output-under-a-file", lambda t: reinforce_args(t, out=os.path.join(_a_file(t), "out.h5")),
     ["out.h5:", "file is a file, not a directory"]),
    ("output-directory-missing", lambda t: reinforce_args(t, out=os.path.join("nowhere", "out.h5")),
     ["nowhere does not exist; create it first"]),
    ("dataset-too-many-classes", lambda t: reinforce_args(t, data=DATA.replace("num_classes=8", "num_classes=9")),
     ["teachers predict 8"]),
    ("policy-unknown-preset", lambda t: reinforce_args(t, "--policy", "nope"), ["policy 'nope' is neither a preset"]),
    ("policy-unknown-field", lambda t: reinforce_args(t, "--policy", '{"preset": "rrc", "colour": 1}'),
     ["unknown policy field(s) ['colour']"]),
    ("dataset-spec-not-a-number", lambda t: reinforce_args(t, data="synthetic:abc"),
     ["dataset 'synthetic:abc': invalid literal", "use synthetic:N or synthetic:num_images=N"]),
    ("dataset-spec-unknown-key", lambda t: reinforce_args(t, data="synthetic:foo=3"),
     ["'synthetic:foo=3': use synthetic:num_images=N"]),
    ("dataset-spec-empty", lambda t: reinforce_args(t, data="synthetic:0"),
     ["dataset 'synthetic:0': num_images=0"]),
    ("dataset-missing", lambda t: reinforce_args(t, data=os.path.join(t, "nothing")),
     ["is neither an ImageFolder directory nor synthetic:N"]),
    ("views-zero", lambda t: reinforce_args(t, "-K", "0"), ["num_views=0 must be an integer >= 1"]),
    ("workers-negative", lambda t: reinforce_args(t, "--workers", "-1"), None),
]

# system errors, injected where the operating system reports them (errno as HDF5 and os report it)
def _fail_lock(code):
    def fake_open(path, flags, mode=0o777, *, dir_fd=None, _real=os.open):
        if str(path).endswith(".lock"):
            raise OSError(code, os.strerror(code), path)
        return _real(path, flags, mode, dir_fd=dir_fd)
    return fake_open


def _fail_commit(message):
    def commit(self):
        raise RuntimeError(message)
    return commit


SYSTEM_ROWS = [
    ("read-only-output-directory", "os.open", _fail_lock(errno.EROFS), ["ead-only file system"]),
    ("permission-denied-output-directory", "os.open", _fail_lock(errno.EACCES), ["ermission denied"]),
    ("disk-full", "commit",
     _fail_commit("Can't synchronously write data (file write failed: time = now, filename = 'out.h5', file "
                  "descriptor = 5, errno = 28, error message = 'No space left on device', buf = 0x1, total write "
                  "size = 4096, bytes this sub-write = 4096, offset = 8192)"),
     ["no space is left on the device while writing", "then continue with --resume"]),
]


@pytest.mark.parametrize("make, needles", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line(tmp_path, capsys, make, needles):
    if needles and "cuda" in " ".join(needles) and torch.cuda.is_available():
        pytest.skip("a GPU is present")
    argv = make(str(tmp_path))
    if needles is None:  # refused by the parser: its usage line, then one error line
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("reinforced-data reinforce: error: ")
        return
    assert main(argv) == 2
    line = one_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, line
    assert not os.path.exists(argv[argv.index("-o") + 1])  # refused before any file was touched


@pytest.mark.parametrize("where, fake, needles", [r[1:] for r in SYSTEM_ROWS], ids=[r[0] for r in SYSTEM_ROWS])
def test_system_errors_are_one_line(tmp_path, capsys, monkeypatch, where, fake, needles):
    if where == "os.open":
        import reinforced_data.store.writer as W

        monkeypatch.setattr(W.os, "open", fake)
    else:
        monkeypatch.setattr(S.ReinforcementWriter, "commit", fake)
    assert main(reinforce_args(str(tmp_path))) == 2
    line = one_line(capsys.readouterr().err)
    for needle in needles:
        assert needle in line, line


def test_truncated_image_names_the_file(tmp_path, capsys):
    root, rel = _truncated_folder(str(tmp_path))
    for workers in ("0", "1"):  # also from a DataLoader worker: the sentence, not the worker's traceback
        assert main(reinforce_args(str(tmp_path), "--workers", workers, "--overwrite", data=root)) == 2
        line = one_line(capsys.readouterr().err)
        assert f"image 2: {os.path.join(root, rel)} cannot be decoded" in line and "truncated" in line, line


def test_inspect_negative_max_images(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["inspect", str(tmp_path / "x.h5"), "--max-images", "-5"])
    assert e.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == "reinforced-data inspect: error: argument --max-images: -5 is negative; give a count >= 0 (0: all)"


def test_merge_options_after_positionals(tmp_path, capsys):
    from reinforced_data.policy import Policy
    from reinforced_data.generation import reinforce

    out = tmp_path / "m.h5"
    for rank in range(2):
        reinforce("synthetic:num_images=8,num_classes=8,min_size=20,max_size=24", TEACHER, str(out),
                  policy=Policy.preset("rrc", output_size=(16, 16)), num_views=2, topk=2, block_size=4,
                  progress=False, rank=rank, world_size=2)
    shards = [S.shard_path(out, r, 2) for r in range(2)]
    assert main(["merge", str(out), *shards]) == 0
    assert main(["merge", str(out), "--overwrite", *shards]) == 0  # failed in argparse before
    assert main(["merge", str(out), shards[0], "--overwrite", shards[1]]) == 0
    assert capsys.readouterr().out.count("merged into") == 3


def test_magnitude_minus_128_is_reported_as_itself():
    from reinforced_data import _args
    from reinforced_data.errors import ConfigError
    from reinforced_data.policy import Policy

    pol = Policy.preset("rrc_ra_re", output_size=(16, 16))
    params = pol.sample(np.random.default_rng(0), 2, 20, 20)
    params["ra_mag"][1, 0] = -128
    with pytest.raises(ConfigError, match=r"params\['ra_mag'\] holds -128; magnitudes must lie in"):
        _args.encode(params, pol)


EFBIG_RUNNER = """
import resource, runpy, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.argv = ["reinforced-data"] + sys.argv[2:]
runpy.run_module("reinforced_data", run_name="__main__")
"""


# Cut short while creating the file, --resume starts it again; cut short after some rows (here
# while the run's statistics were written last), --resume recovers the rows and finishes.


def _run_with_file_size_limit(out, limit):
    args = ["reinforce", "--data", DATA, "--teacher", TEACHER, "--output-size", "16", "-K", "4", "-k", "3", "--seed",
            "5", "--block-size", "8", "--batch-size", "2", "--no-progress", "-o", str(out)]
    r = subprocess.run([sys.executable, "-c", EFBIG_RUNNER, str(limit), *args], capture_output=True, text=True,
                       env=U.subprocess_env(), timeout=180)
    assert r.returncode == 2, r.stderr
    line = one_line(r.stderr)
    assert "the file-size limit was reached while writing" in line and "continue with --resume" in line, line
    return args


def _resume(out, args):
    r = subprocess.run([sys.executable, "-m", "reinforced_data", *args, "--resume"], capture_output=True, text=True,
                       env=U.subprocess_env(), timeout=180)
    assert r.returncode == 0, r.stderr
    with S.ReinforcementFile(out) as f:
        assert f.complete and f.num_images == 24


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_file_size_limit_while_creating_then_resume(tmp_path):
    out = tmp_path / "big.h5"
    _resume(out, _run_with_file_size_limit(out, 8000))


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_file_size_limit_while_writing_rows_is_one_line(tmp_path):
    _run_with_file_size_limit(tmp_path / "big.h5", 12000)


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE semantics")
def test_file_size_limit_while_writing_rows_then_resume(tmp_path):
    out = tmp_path / "big.h5"
    _resume(out, _run_with_file_size_limit(out, 12000))
