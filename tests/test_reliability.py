"""Reliability: nothing silent, every advice true.

* a file-size limit (EFBIG) anywhere in a run's life: ``--resume`` gives exactly the rows of
  an uninterrupted run;
* a file replaced at its path under a dataset: a process that reopens it refuses it;
* damaged records met in training: a :class:`CorruptFileError` naming image, view and field;
* a torchrun rank whose launcher died during its imports: it exits within seconds;
* ``inspect`` without ``--verify``: a verdict line that says what was not checked.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import _reinforce_util as U
from reinforced_data.cli import main as cli_main
from reinforced_data.dataset import ReinforcedDataset
from reinforced_data.errors import CorruptFileError, DatasetMismatchError, FileReplacedError
from reinforced_data.policy import Policy
from reinforced_data.generation import reinforce
from reinforced_data.inspection import format_inspect, inspect_file
from reinforced_data.store import ReinforcementFile
from reinforced_data.synthetic import SyntheticImages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE, prctl and /proc")


def same_rows(a: str, b: str) -> None:
    """Both files complete, with the same labels, written flags and, image by image, the same records."""
    with ReinforcementFile(a) as fa, ReinforcementFile(b) as fb:
        assert fa.complete and fb.complete and fb.generation is not None
        assert (fa.labels == fb.labels).all() and (fa.written == fb.written).all()
        for i in range(fa.num_images):
            ra, rb = fa.read_image(i), fb.read_image(i)
            assert (ra.params == rb.params).all() and (ra.indices == rb.indices).all(), f"image {i}"
            assert (ra.probs == rb.probs).all(), f"image {i}"


# ---------------------------------------------------------------------- 1. a file-size limit, anywhere
EFBIG_N = 96
EFBIG_ARGS = ["reinforce", "--data", f"synthetic:num_images={EFBIG_N},num_classes=8,min_size=20,max_size=32,seed=2",
              "--teacher", "_reinforce_util:tiny_teacher", "--output-size", "16", "-K", "8", "-k", "3", "--seed", "5",
              "--block-size", "8", "--batch-size", "4", "--no-progress"]


def _run_under_limit(args: list[str], limit: int, err: str) -> None:
    """In a forked child: the command under ``ulimit -f`` of ``limit`` bytes (SIGXFSZ ignored, so a
    write past it fails with EFBIG, as on a real limit); its stderr goes to ``err``."""
    code = 99
    try:
        sys.stderr = open(err, "w", buffering=1)
        os.dup2(sys.stderr.fileno(), 2)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
        code = cli_main(args)
    finally:
        sys.stderr.flush()
        os._exit(code)


@pytest.mark.slow
@pytest.mark.subprocess
@linux_only
def test_a_file_size_limit_anywhere_in_a_run_resumes_to_the_uninterrupted_rows(tmp_path, capsys):
    """The limit swept over the whole life of a run: creating the file and writing rows. Each time
    the one-line error advises --resume, and --resume then gives the rows of the uninterrupted run,
    row for row. Finishing (the run's statistics, the complete flag) writes in place, into the
    space reserved at creation, so the file no longer grows there and no limit can stop it."""
    ref = str(tmp_path / "ref.h5")
    assert cli_main(EFBIG_ARGS + ["-o", ref]) == 0
    size = os.path.getsize(ref)
    phases = {}
    ctx = multiprocessing.get_context("fork")
    for frac in (0.1, 0.3, 0.45, 0.6, 0.75, 0.9, 0.95, 0.99):
        limit = int(frac * size)
        out, err = str(tmp_path / f"o{limit}.h5"), str(tmp_path / f"o{limit}.err")
        child = ctx.Process(target=_run_under_limit, args=(EFBIG_ARGS + ["-o", out], limit, err))
        child.start()
        child.join(120)
        assert child.exitcode == 2, f"limit {limit}: exit {child.exitcode}\n{open(err).read()}"
        lines = [x for x in open(err).read().splitlines() if x.startswith("reinforced-data: error:")]
        assert len(lines) == 1 and "the file-size limit was reached" in lines[0] and "--resume" in lines[0], lines
        created = os.path.exists(out)
        capsys.readouterr()
        assert cli_main(EFBIG_ARGS + ["-o", out, "--resume"]) == 0, f"limit {limit}"
        m = re.search(r"(\d+) images were already stored", capsys.readouterr().err)
        kept = int(m.group(1)) if m else 0
        phases[limit] = ("creation" if not created else "finish (statistics, seal)" if kept == EFBIG_N else "rows")
        same_rows(ref, out)
        assert sorted(os.listdir(tmp_path)) == sorted(  # no partial or recovery copies left behind
            p for p in os.listdir(tmp_path) if not p.endswith((".creating", ".recovering", ".lock")))
    assert set(phases.values()) == {"creation", "rows"}, phases


def test_a_finished_file_cut_short_is_still_refused_by_resume(tmp_path):
    """Recovering a file cut short is for a writer's own interrupted file: a finished one cut short
    afterwards (a copy stopped half way) is refused, and left as it is."""
    out = str(tmp_path / "done.h5")
    assert cli_main(EFBIG_ARGS + ["-o", out]) == 0
    os.truncate(out, os.path.getsize(out) - 700)
    before = open(out, "rb").read()
    assert cli_main(EFBIG_ARGS + ["-o", out, "--resume"]) == 2
    assert open(out, "rb").read() == before


# ---------------------------------------------------------------------- 2. a file replaced at its path
N, C, K, TOPK, SIZE = 24, 5, 4, 3, 16


def base() -> SyntheticImages:
    return SyntheticImages(N, C, 20, 40, seed=1)


def make_file(path: str, policy: str = "rrc_ra_re", seed: int = 5) -> str:
    reinforce(base(), U.TinyTeacher(C), path, policy=Policy.preset(policy, output_size=(SIZE, SIZE)),
              num_views=K, topk=TOPK, seed=seed, progress=False, block_size=8)
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return make_file(str(d / "seed5.h5"), seed=5), make_file(str(d / "seed6.h5"), seed=6)


@pytest.mark.subprocess
def test_a_file_replaced_under_a_dataset_is_refused_where_it_is_reopened(two_runs, tmp_path):
    path, other = str(tmp_path / "train.h5"), str(tmp_path / "other.h5")
    shutil.copy(two_runs[0], path)
    shutil.copy(two_runs[1], other)
    ds = ReinforcedDataset(base(), path, views=[2])
    before = ds[3]
    same = pickle.loads(pickle.dumps(ds))  # a worker's copy, reopening the file by path: the same file
    assert torch.equal(same[3][0], before[0])
    next(iter(DataLoader(ds, batch_size=4, num_workers=1)))
    os.replace(other, path)  # another run over the same dataset, same layout, other seed
    assert torch.equal(ds[3][0], before[0])  # this process keeps the file it opened
    clone = pickle.loads(pickle.dumps(ds))  # what a spawned DataLoader worker gets
    with pytest.raises(FileReplacedError, match=rf"{re.escape(path)} was replaced after it was first opened"):
        clone[3]
    msg = None
    try:
        clone[3]
    except FileReplacedError as e:
        msg = str(e)
    assert msg is not None and "\n" not in msg
    for loader in (DataLoader(ds, batch_size=4, num_workers=1),  # a forked worker
                   ds.loader(batch_size=4, num_workers=1)):  # batch replay: sources and records from the worker
        with pytest.raises(FileReplacedError, match="was replaced"):
            next(iter(loader))
    reader = ReinforcementFile(path)  # the reader alone, after close or in another process: the same check
    ident = reader.identity
    reader.close()
    reader.read(0, 0)
    shutil.copy(two_runs[0], str(tmp_path / "back.h5"))
    os.replace(str(tmp_path / "back.h5"), path)
    with pytest.raises(FileReplacedError, match="another file now lies at that path"):
        ReinforcementFile(path, identity=ident)
    reader.close()
    with pytest.raises(FileReplacedError):
        reader.read(0, 0)


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_file_changed_in_place_is_refused_where_it_is_reopened(two_runs, tmp_path):
    path = str(tmp_path / "train.h5")
    shutil.copy(two_runs[0], path)
    ds = ReinforcedDataset(base(), path)
    ds.file.close()  # HDF5 opens a file once per process: let this one write it
    with h5py.File(path, "r+") as f:  # same inode, its records rewritten: another size or modification time
        d = f["records"]
        d.id.write_direct_chunk((5, 0, 0), d.id.read_direct_chunk((6, 0, 0))[1])
    with pytest.raises(FileReplacedError, match="it was modified"):
        pickle.loads(pickle.dumps(ds))[0]
    with pytest.raises(FileReplacedError, match="it was modified"):
        ds[0]  # this process too, once it has to open the file again


# ---------------------------------------------------------------------- 3. damaged records in training
def damage(path: str, image: int, view: int, field: str, value, slot: int | None = None) -> None:
    """Rewrite one stored record with ``field`` (or its ``slot``) set to ``value``, as a bit flip might."""
    with ReinforcementFile(path) as f:
        c = f.codec
        recs = np.concatenate([c.from_planes(f._planes(image, g)) for g in range(c.chunks_per_image)])[:f.num_views]
    if slot is None:
        recs[field][view] = value
    else:
        recs[field][view, slot] = value
    with h5py.File(path, "r+") as h:
        for g, data in enumerate(c.chunks(recs)):
            h["records"].id.write_direct_chunk((image, g, 0), data)


OPS = Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)).ra_ops()
DAMAGE = {
    "flip 2": ("flip", 2, None, "flip"),
    "unknown op": ("ra_op", len(OPS) + 3, 1, "ra_op"),
    "magnitude out of range": ("ra_mag", 90, 0, "ra_mag"),
    "negative Posterize": (["ra_op", "ra_mag"], [OPS.index("Posterize"), -3], 1, "ra_mag"),
    "negative Solarize": (["ra_op", "ra_mag"], [OPS.index("Solarize"), -7], 0, "ra_mag"),
    "empty crop": ("crop", [0, 0, 0, 5], None, "crop"),
}


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return make_file(str(tmp_path_factory.mktemp("plain") / "plain.h5"))


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_record_is_reported_as_damage_naming_image_view_and_field(plain, tmp_path, kind):
    fields, values, slot, named = DAMAGE[kind]
    path = str(tmp_path / "d.h5")
    shutil.copy(plain, path)
    image, view = 5, 2
    for field, value in zip(*((fields, values) if isinstance(fields, list) else ([fields], [values]))):
        damage(path, image, view, field, value, slot)
    ds = ReinforcedDataset(base(), path, views=[view])
    ds[4]  # the records around it are fine
    needles = [f"{path} is damaged", f"stored view {view} of image {image}", f"invalid '{named}'",
               f"reinforced-data inspect --verify {path}"]
    for get in (lambda: ds[image],  # one item
                lambda: ds.__getitems__([1, 2, image, 7]),  # a batch: the record at fault is found
                lambda: next(iter(ds.loader(batch_size=8)))):  # batch replay: checked where the batch replays
        with pytest.raises(CorruptFileError) as e:
            get()
        msg = str(e.value)
        assert not isinstance(e.value, DatasetMismatchError) and "\n" not in msg
        assert all(n in msg for n in needles), msg
        assert "view 0" not in msg, msg  # the batch position is not the stored view


def test_a_damaged_partner_record_names_the_partner(tmp_path):
    path = make_file(str(tmp_path / "mix.h5"), policy="rrc_ra_re_mix")
    with ReinforcementFile(path) as f:
        recs = f.read_many(np.arange(N), np.zeros(N, dtype=np.int64))
    j = int(np.flatnonzero(recs.params["mix_mode"] != 0)[0])
    pi, pv = int(recs.partner_index[j]), int(recs.partner_view[j])
    damage(path, pi, pv, "flip", 3)
    ds = ReinforcedDataset(base(), path, views=[0])
    with pytest.raises(CorruptFileError, match=rf"stored view {pv} of image {pi} holds an invalid 'flip'"):
        ds.__getitems__([j])


def test_a_crop_outside_its_image_is_still_a_changed_image_naming_the_stored_view(plain, tmp_path):
    path = str(tmp_path / "c.h5")
    shutil.copy(plain, path)
    damage(path, 5, 3, "crop", [0, 0, 300, 10])  # valid for some image, not for this one
    ds = ReinforcedDataset(base(), path, views=[3])
    with pytest.raises(DatasetMismatchError, match=r"image 5 does not fit stored view 3 .*params\['crop'\] \(top"):
        ds[5]


# ---------------------------------------------------------------------- 4. a launcher gone during the imports
_ORPHAN_HARNESS = r"""
import ctypes, json, os, signal, subprocess, sys, time
# orphans are re-parented to this process (a subreaper), as to a container's init or systemd: the parent
# pid changes but never becomes 1, so only the parent noted at the rank's start tells the launcher is gone
assert ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
launcher = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time\n"
                             "print(subprocess.Popen(sys.argv[1:]).pid, flush=True)\ntime.sleep(600)",
                             *json.loads(sys.argv[1])], stdout=subprocess.PIPE, text=True)
spawned = time.monotonic()
rank = int(launcher.stdout.readline())
time.sleep(max(0.0, 0.5 - (time.monotonic() - spawned)))
launcher.kill()  # the launcher dies 0.5 s after it started the rank, while the rank still imports
launcher.wait()
killed = time.monotonic()
while time.monotonic() - killed < float(sys.argv[2]):
    pid, status = os.waitpid(rank, os.WNOHANG)
    if pid:
        print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "seconds": time.monotonic() - killed}))
        break
    time.sleep(0.05)
else:
    os.kill(rank, signal.SIGKILL)
    os.waitpid(rank, 0)
    print(json.dumps({"exit": None, "seconds": None}))
"""


@pytest.mark.slow
@pytest.mark.subprocess
@linux_only
def test_a_rank_whose_launcher_died_during_its_imports_exits_within_seconds(tmp_path):
    with socket.socket() as s:  # a port nobody serves: the rank would wait the whole rendezvous timeout
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = U.subprocess_env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                           TORCHELASTIC_RUN_ID="orphan-drill", REINFORCED_DATA_DIST_TIMEOUT="600")
    rank = [sys.executable, "-m", "reinforced_data", "reinforce", "--data",
            "synthetic:num_images=8,num_classes=4,min_size=20,max_size=24", "--teacher",
            "_reinforce_util:tiny_teacher", "--output-size", "16", "-K", "2", "-k", "2", "--no-progress",
            "-o", str(tmp_path / "o.h5")]
    r = subprocess.run([sys.executable, "-c", _ORPHAN_HARNESS, json.dumps(rank), "20"], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["exit"] == 1, (result, r.stderr)  # the parent watch's exit, not the rendezvous timeout
    assert result["seconds"] < 15, result


def test_the_parent_watch_takes_the_parent_the_process_started_under(monkeypatch):
    import reinforced_data
    from reinforced_data import distributed

    assert reinforced_data.STARTED_UNDER == (os.getpid(), os.getppid())
    assert distributed.launcher_pid() == os.getppid()
    monkeypatch.setattr(distributed, "STARTED_UNDER", (os.getpid(), 424242))  # a parent gone since
    assert distributed.ParentWatch().parent == 424242
    monkeypatch.setattr(distributed, "STARTED_UNDER", (-1, 424242))  # noted in another process (forked since)
    assert distributed.ParentWatch().parent == os.getppid()


# ---------------------------------------------------------------------- 5. inspect's verdict
def inspect_text(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = cli_main(["inspect", *args])
    return rc, capsys.readouterr().out.rstrip("\n").splitlines()


def test_inspect_ends_with_a_verdict_and_asks_for_verify(plain, tmp_path, capsys):
    rc, lines = inspect_text(capsys, plain)
    assert rc == 0 and lines[-1].startswith("verdict:          readable, but only the header and")
    assert f"run `reinforced-data inspect --verify {plain}` to check every record" in lines[-1]
    assert sum(x.startswith("verdict:") for x in lines) == 1
    rc, lines = inspect_text(capsys, "--verify", "--no-progress", plain)
    assert rc == 0 and lines[-1] == f"verdict:          OK: every record of its {N} images checked"


@pytest.mark.parametrize("kind", ["flip 2", "unknown op", "negative Solarize"])
def test_inspect_without_verify_flags_parameter_damage(plain, tmp_path, capsys, kind):
    fields, values, slot, named = DAMAGE[kind]
    path = str(tmp_path / "p.h5")
    shutil.copy(plain, path)
    for field, value in zip(*((fields, values) if isinstance(fields, list) else ([fields], [values]))):
        damage(path, 9, 1, field, value, slot)
    info = inspect_file(path)
    assert info["stats_invalid_param_images"] == 1 and info["stats_first_invalid_params"].startswith("image 9: ")
    rc, lines = inspect_text(capsys, path)
    assert rc == 1  # a DAMAGED verdict fails, with or without --verify
    assert lines[-1].startswith("verdict:          DAMAGED: 1 sampled images hold parameters replay refuses (image 9")
    assert lines[-1].endswith(f"run `reinforced-data inspect --verify {path}` to list every problem")
    assert f"params['{named}']" in lines[-1]
    rc, lines = inspect_text(capsys, "--verify", "--no-progress", path)
    assert rc == 1 and lines[-1].startswith("verdict:          DAMAGED:") and lines[-1].endswith("regenerate it")


def test_inspect_verdict_for_an_incomplete_and_an_unreadable_file(tmp_path, capsys):
    from _store_util import make_header, write_file

    part = str(tmp_path / "part.h5")
    write_file(part, make_header(), indices=range(4), finish=False)
    assert format_inspect(inspect_file(part)).splitlines()[-1].startswith(
        "verdict:          INCOMPLETE: 4 of 12 images written; continue it with")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    rc, lines = inspect_text(capsys, "--verify", "--no-progress", str(junk))
    assert rc == 1 and lines[-1].startswith("verdict:          UNREADABLE")
    rc, lines = inspect_text(capsys, str(junk))  # without --verify: the same verdict, not an error line
    assert rc == 1 and lines[0] == f"file:             {junk}" and lines[1].startswith("problem:          ")
    assert lines[-1].startswith("verdict:          UNREADABLE") and len(lines) == 3
