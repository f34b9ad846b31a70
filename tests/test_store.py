"""The reinforcement file: codec, writer, reader, crash recovery, merge, bad files."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

import _reinforce_util as U
from _store_util import C, K, N, TOPK, make_header, make_rows, write_file
from reinforced_data._datasets import dataset_fingerprint
from reinforced_data.store import format as store_format
from reinforced_data.store import reader as store_reader
from reinforced_data import store as S
from reinforced_data.policy import Policy
from reinforced_data.store import writer as store_writer


# Tiny models: one intra-op thread is fastest, and immune to a busy shared machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------- codec
def test_smallest_uint():
    assert S.smallest_uint(255) == np.uint8 and S.smallest_uint(256) == np.uint16
    assert S.smallest_uint(65535) == np.uint16 and S.smallest_uint(70000) == np.uint32


@pytest.mark.parametrize("classes,dtype", [(200, np.uint8), (1000, np.uint16), (70000, np.uint32)])
def test_index_dtype_is_the_smallest_that_holds_the_classes(classes, dtype):
    h = make_header(c=classes, topk=5)
    assert h.codec().record_dtype["topk_indices"].base == dtype


@pytest.mark.parametrize("policy", ["rrc", "rrc_ra_re", "rrc_ra_re_mix", "timm"])
@pytest.mark.parametrize("encoding", ["log_uint8", "float16"])
def test_codec_roundtrip(policy, encoding):
    h = make_header(policy, prob_encoding=encoding, records_per_chunk=4)  # 10 views: 3 chunks, padded
    c = h.codec()
    params, idx, val, pi, pv = make_rows(h, [3, 7])
    recs = c.pack(params, idx, val, pi, pv)
    assert recs.shape == (2, K) and recs.dtype.itemsize == c.record_size
    for row in range(2):
        chunks = c.chunks(recs[row])
        assert len(chunks) == 3
        back = np.concatenate([c.from_planes(np.frombuffer(__import__("zlib").decompress(b), np.uint8))
                               for b in chunks])[:K]
        out = c.unpack(back)
        assert (out.params == params[row]).all()
        assert (out.indices == idx[row]).all()
        tol = 2e-3 if encoding == "float16" else np.expm1(store_format.LOG_RANGE / 510) + 1e-6
        big = val[row] > np.exp(-store_format.LOG_RANGE)
        assert np.all(np.abs(out.probs[big] / val[row][big] - 1) <= tol)
        if h.policy.mixing:
            assert (out.partner_index == pi[row]).all() and (out.partner_view == pv[row]).all()
        else:
            assert out.partner_index is None


def test_log_codes_are_delta_coded_and_sorted():
    h = make_header()
    c = h.codec()
    p = np.array([0.5, 0.25, 0.125, 0.0625, 1e-9])
    stored = c.encode_probs(p)
    codes = np.round(-np.log(p) * 255 / store_format.LOG_RANGE).clip(0, 255)
    assert stored[0] == codes[0] and (stored[1:] == np.diff(codes)).all()
    assert np.allclose(c.decode_probs(stored)[:4], p[:4], rtol=0.032)
    # unsorted input is sorted (indices follow) before encoding
    params, idx, val, _, _ = make_rows(h, [0])
    rec = c.pack(params, idx[..., ::-1], val[..., ::-1])
    assert (rec["topk_indices"] == idx).all()


def test_pack_rejects_bad_values():
    h = make_header()
    c = h.codec()
    params, idx, val, _, _ = make_rows(h, [0])
    with pytest.raises(ValueError, match="class indices"):
        c.pack(params, idx + C, val)
    with pytest.raises(ValueError, match="finite"):
        c.pack(params, idx, val * np.nan)


# ---------------------------------------------------------------------- writer / reader
def test_write_read_roundtrip_and_attributes(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header("rrc_ra_re_mix", seed=5)
    order = [5, 0, 11, 3, 1, 2, 4, 6, 7, 8, 9, 10]  # any order
    rows = write_file(path, h, order)
    with h5py.File(path, "r") as f:
        a = f.attrs
        # a policy version 1 can express is written as version 1, so older readers still read it
        assert a["format"].decode() == S.FORMAT_NAME and a["format_version"] == 1
        # strings are fixed-length, inside their attribute: nothing in the global heap, where one
        # damaged size field makes reading an attribute loop forever
        assert all(a[k].dtype.kind == "S" for k in a if isinstance(a[k], bytes))
        assert not any(isinstance(a[k], str) for k in a) and b"GCOL" not in open(path, "rb").read()
        assert json.loads(a["generation"]) is None  # finished without statistics: the reserved "null"
        assert (a["num_images"], a["num_views"], a["topk"], a["num_classes"]) == (N, K, TOPK, C)
        assert Policy.from_json(a["policy"]) == h.policy
        assert json.loads(a["teachers"])[0]["name"] == "t"
        fp = json.loads(a["fingerprint"])
        assert fp["num_images"] == N and len(fp["labels_sha256"]) == 64
        for key in ("library_version", "created", "record_dtype", "prob_encoding", "seed", "mix_block_size"):
            assert key in a
        assert int(a["complete"]) == 1
        assert f["labels"].dtype == np.uint8 and f["labels"].shape == (N,)
        assert f["records"].compression == "gzip"
    with S.ReinforcementFile(path) as r:
        assert r.complete and r.written.all() and len(r) == N
        assert (r.labels == np.arange(N) % C).all()
        for i, (params, idx, val, pi, pv) in rows.items():
            img = r.read_image(i)
            assert (img.params == params).all() and (img.indices == idx).all()
            assert np.allclose(img.probs, val, rtol=0.035, atol=np.exp(-store_format.LOG_RANGE))
            for j in (0, 4, K - 1):
                rec = r.read(i, j)
                assert rec.params == params[j] and (rec.indices == idx[j]).all()
                assert rec.partner == (pi[j], pv[j])
        r._file()
        assert r._direct  # chunks are read and inflated directly; HDF5's pipeline gives the same records
        r._direct = False
        for i in range(N):
            for j in (0, K - 1):
                assert r.read(i, j).params == rows[i][0][j]
        with pytest.raises(IndexError):
            r.read(N, 0)
        with pytest.raises(IndexError):
            r.read(0, K)


@pytest.mark.parametrize("policy,k", [("rrc_ra_re_mix", K), ("rrc_ra_re", 45)])  # one chunk / two per image
def test_read_many_gives_what_read_gives_for_each_pair(tmp_path, policy, k):
    path = str(tmp_path / "r.h5")
    h = make_header(policy, k=k)
    write_file(path, h)
    assert h.codec().chunks_per_image == (1 if k == K else 2)
    rng = np.random.default_rng(0)
    images, views = rng.integers(0, N, 60), rng.integers(0, k, 60)
    images[:4], views[:4] = 4, [0, 0, 1, k - 1]  # repeated records, and records sharing a chunk
    with S.ReinforcementFile(path) as r:
        r._file()
        r._all = False  # chunk by chunk
        wanted = {(i, v): r.read(i, v) for i, v in zip(images.tolist(), views.tolist())}
        # inflated directly / through HDF5's pipeline / the whole small file read once
        for direct, whole in ((True, False), (False, False), (True, True)):
            r._direct, r._all = direct, None if whole else False
            for pairs in ((images, views), (images[:1], views[:1]), (images[:0], views[:0])):
                got = r.read_many(*pairs)
                assert (r._all is not False) == whole
                assert got.params.dtype == h.policy.param_dtype() and got.params.shape == (len(pairs[0]),)
                for j, (i, v) in enumerate(zip(*pairs)):
                    want, one = wanted[int(i), int(v)], got.record(j)
                    assert one.params.tobytes() == want.params.tobytes()
                    for a, b in ((one.indices, want.indices), (one.probs, want.probs)):
                        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
                    assert one.partner == want.partner
        with pytest.raises(IndexError, match=f"image index {N} out of range"):
            r.read_many([0, N], [0, 0])
        with pytest.raises(IndexError, match=f"view {k} out of range"):
            r.read_many([0, 1], [0, k])
        with pytest.raises(ValueError, match="one view per image"):
            r.read_many([0, 1], [0])


def test_reader_is_picklable_for_dataloader_workers(tmp_path):
    import pickle

    path = str(tmp_path / "r.h5")
    write_file(path, make_header())
    r = S.ReinforcementFile(path)
    r.read(0, 0)
    r2 = pickle.loads(pickle.dumps(r))
    assert (r2.read(3, 2).indices == r.read(3, 2).indices).all()


def test_incomplete_file_is_refused_unless_accepted(tmp_path):
    path = str(tmp_path / "r.h5")
    write_file(path, make_header(), indices=[0, 1, 2], finish=False)
    with pytest.raises(S.IncompleteFileError, match=r"incomplete \(3 of 12 images written"):
        S.ReinforcementFile(path)
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        assert not r.complete and r.written.sum() == 3
        r.read(1, 0)
        with pytest.raises(S.IncompleteFileError, match="image 5 .* has not been written"):
            r.read(5, 0)
        with pytest.raises(S.IncompleteFileError, match="image 5 .* has not been written"):
            r.read_many([1, 2, 5, 7], [0, 0, 0, 0])


def test_finish_refuses_missing_rows(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header()
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C)
    w.write([0], *make_rows(h, [0])[:3])
    with pytest.raises(S.ReinforcementFileError, match="11 images were not written"):
        w.finish()
    w.close()


def test_existing_output_needs_resume_or_overwrite(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header()
    write_file(path, h, indices=[0, 1], finish=False)
    with pytest.raises(S.OutputExistsError, match="already exists; pass --resume .* or --overwrite"):
        S.ReinforcementWriter.open(path, h, np.arange(N) % C)
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
    assert w.written.sum() == 2
    w.close()
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="overwrite")
    assert w.written.sum() == 0
    w.close()


def test_resume_with_other_settings_is_refused(tmp_path):
    path = str(tmp_path / "r.h5")
    write_file(path, make_header(), indices=[0], finish=False)
    with pytest.raises(S.SettingsMismatchError, match="other settings .*seed"):
        S.ReinforcementWriter.open(path, make_header(seed=1), np.arange(N) % C, mode="resume")
    with pytest.raises(S.SettingsMismatchError, match="num_views"):
        S.ReinforcementWriter.open(path, make_header(k=K + 1), np.arange(N) % C, mode="resume")


def test_second_writer_is_locked_out(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header()
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C)
    try:
        with pytest.raises(S.ReinforcementFileError, match="being written by another process"):
            S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
    finally:
        w.close()


_WRITER_SCRIPT = """
import sys, time, numpy as np
sys.path[:0] = {paths!r}
import _store_util as T
from reinforced_data import store as S
h = T.make_header(n=400)
w = S.ReinforcementWriter.open({path!r}, h, np.arange(400) % T.C)
for i in range(400):
    w.write([i], *T.make_rows(h, [i])[:3])
    w.commit()
    if i == 5:
        print("ready", flush=True)
    time.sleep(0.002)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_kill_9_keeps_committed_rows_and_resumes(tmp_path):
    path = str(tmp_path / "r.h5")
    script = _WRITER_SCRIPT.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=U.subprocess_env())
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # the killed writer left the file marked open; it is still readable, and incomplete
    with pytest.raises(S.IncompleteFileError):
        S.ReinforcementFile(path)
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        done = np.flatnonzero(r.written)
        assert 6 <= done.size < 400 and (done == np.arange(done.size)).all()
    h = make_header(n=400)
    w = S.ReinforcementWriter.open(path, h, np.arange(400) % C, mode="resume")
    assert (np.flatnonzero(w.written) == done).all()
    for i in range(400):
        if not w.written[i]:
            w.write([i], *make_rows(h, [i])[:3])
    w.finish()
    with S.ReinforcementFile(path) as r:
        for i in (0, done.size - 1, done.size, 399):
            params, idx, _, _, _ = make_rows(h, [i])
            img = r.read_image(i)
            assert (img.params == params[0]).all() and (img.indices == idx[0]).all()


_RESUME_AND_DIE = """
import os, sys, numpy as np
sys.path[:0] = {paths!r}
import _store_util as T
from reinforced_data import store as S
h = T.make_header()
w = S.ReinforcementWriter.open({path!r}, h, np.arange(T.N) % T.C, mode="resume")
w.write([5], *T.make_rows(h, [5])[:3])
w.commit()
os._exit(0)  # like kill -9: no close, no flush beyond the commit
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_writer_killed_after_resuming_loses_nothing(tmp_path):
    """A resume reopens the file read-write and SWMR at once, so a kill right after still leaves it readable."""
    path = str(tmp_path / "r.h5")
    h = make_header()
    write_file(path, h, indices=[0, 1, 2], finish=False)
    script = _RESUME_AND_DIE.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)
    subprocess.run([sys.executable, "-c", script], check=True, env=U.subprocess_env(), timeout=120)
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        assert np.flatnonzero(r.written).tolist() == [0, 1, 2, 5]
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
    assert np.flatnonzero(w.written).tolist() == [0, 1, 2, 5]
    w.close()


def test_output_made_while_waiting_for_the_lock_is_not_replaced(tmp_path, monkeypatch):
    path = str(tmp_path / "r.h5")
    h = make_header()
    real_lock = store_writer._Lock
    raced = []

    def lock_after_another_writer_finished(p):
        if not raced:  # another process finishes the file just before we get the lock
            raced.append(True)
            write_file(path, h, indices=range(N))
        return real_lock(p)

    monkeypatch.setattr(store_writer, "_Lock", lock_after_another_writer_finished)
    with pytest.raises(S.OutputExistsError, match="already exists"):
        S.ReinforcementWriter.open(path, h, np.arange(N) % C)
    with S.ReinforcementFile(path) as r:
        assert r.complete and r.written.all()


def test_lock_on_a_lock_file_unlinked_meanwhile_is_not_a_lock(tmp_path, monkeypatch):
    """B opens the lock file; A releases (unlinks) it; C creates and locks a new one; B locks the old one.
    B must notice that its file is no longer the one the path names, and meet C's lock."""
    import fcntl

    path = str(tmp_path / "r.h5")
    a = store_writer._Lock(path)
    real_flock = fcntl.flock
    held = []

    def flock_after_a_released_and_c_locked(fd, op):
        if not held:
            held.append("racing")
            a.release()
            monkeypatch.setattr(fcntl, "flock", real_flock)
            held.append(store_writer._Lock(path))  # C
            monkeypatch.setattr(fcntl, "flock", flock_after_a_released_and_c_locked)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock_after_a_released_and_c_locked)
    try:
        with pytest.raises(S.ReinforcementFileError, match="being written by another process"):
            store_writer._Lock(path)  # B
    finally:
        monkeypatch.setattr(fcntl, "flock", real_flock)
        for lock in held[1:]:
            lock.release()


def test_output_that_is_a_directory(tmp_path):
    d = tmp_path / "x.h5"
    d.mkdir()
    for mode in ("create", "overwrite", "resume"):
        with pytest.raises(S.OutputExistsError, match="is a directory"):
            S.ReinforcementWriter.open(str(d), make_header(), np.arange(N) % C, mode=mode)


# ---------------------------------------------------------------------- bad files
def test_not_hdf5(tmp_path):
    p = tmp_path / "x.h5"
    p.write_text("hello")
    with pytest.raises(S.NotReinforcementFileError, match="is not an HDF5 file"):
        S.ReinforcementFile(p)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        S.ReinforcementFile(tmp_path / "missing.h5")
    with pytest.raises(S.NotReinforcementFileError, match="is a directory"):
        S.ReinforcementFile(tmp_path)


def test_other_hdf5_format(tmp_path):
    p = str(tmp_path / "x.h5")
    with h5py.File(p, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(S.NotReinforcementFileError, match="HDF5 file but not a reinforcement file .*no 'format'"):
        S.ReinforcementFile(p)
    with h5py.File(p, "a") as f:
        f.attrs["format"] = "something.else"
    with pytest.raises(S.NotReinforcementFileError, match="format 'something.else'"):
        S.ReinforcementFile(p)


@pytest.mark.parametrize("policy", ["timm", "paper_imagenet_mix", "paper_cifar_ra_re", "rrc_ra_re_noise",
                                    "timm_train_default"])
def test_format_version_follows_the_policy(tmp_path, policy):
    """Policies with a field release 1 did not know are written as version 2 (an older reader
    refuses them as newer), those with colour jitter (version 3's fields) as version 3; the others
    stay version 1. All read back record for record."""
    p = str(tmp_path / "r.h5")
    h = make_header(policy, seed=3)
    rows = write_file(p, h)
    with h5py.File(p, "r") as f:
        assert f.attrs["format_version"] == {"rrc_ra_re_noise": 1, "timm_train_default": 3}.get(policy, 2)
    f = S.ReinforcementFile(p)
    assert f.header.policy == h.policy
    for i, (params, idx, _, pi, pv) in rows.items():
        r = f.read(i, 1)
        assert r.params.tobytes() == params[1].tobytes() and np.array_equal(r.indices, idx[1])


def test_newer_format_version(tmp_path):
    p = str(tmp_path / "r.h5")
    write_file(p, make_header())
    with h5py.File(p, "a") as f:
        f.attrs["format_version"] = S.FORMAT_VERSION + 1
    with pytest.raises(S.UnsupportedVersionError, match="newer than .* upgrade reinforced_data"):
        S.ReinforcementFile(p)


def test_truncated_file(tmp_path):
    p = str(tmp_path / "r.h5")
    write_file(p, make_header())
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(S.CorruptFileError, match="truncated"):
        r = S.ReinforcementFile(p)
        for i in range(N):  # if the header survived, reading must fail cleanly
            r.read_image(i)


@pytest.mark.parametrize("where", [(b"OHDR", 0), (b"OHDR", 1), (b"OHDR", 3), (b"OCHK", 0), (b"OCHK", 2)])
def test_damaged_metadata_is_a_clear_error(tmp_path, where):
    """64 zeroed bytes inside the file's metadata (the root group's object header, which holds every
    attribute, and the datasets' headers and their continuation chunks): a CorruptFileError, for
    reading and for resuming, never 'not a reinforcement file' or a traceback."""
    p = str(tmp_path / "r.h5")
    h = make_header()
    write_file(p, h, indices=range(6), finish=False)
    data = open(p, "rb").read()
    signature, nth = where
    starts = [m.start() for m in re.finditer(re.escape(signature), data)]
    # the attributes are compact (in the root group's header): no heap of their own, none global
    assert not re.search(b"FRHP|FHIB|FHDB|GCOL", data)
    with open(p, "r+b") as f:
        f.seek(starts[nth] + 6)  # past the signature and version: inside the checked structure
        f.write(bytes(64))
    with pytest.raises(S.CorruptFileError, match="is damaged"):
        S.ReinforcementFile(p, accept_incomplete=True)
    with pytest.raises(S.CorruptFileError, match="is damaged"):
        S.ReinforcementWriter.open(p, h, np.arange(N) % C, mode="resume")


def test_damaged_record_is_an_error_not_a_wrong_label(tmp_path):
    p = str(tmp_path / "r.h5")
    h = make_header(c=200, topk=5)
    write_file(p, h)
    with h5py.File(p, "a") as f:  # a syntactically valid chunk whose class indices exceed the class count
        c = h.codec()
        recs = np.zeros(c.per_chunk, c.record_dtype)
        recs["crop"] = [0, 0, 8, 8]
        recs["topk_indices"] = 250
        raw = np.ascontiguousarray(recs.view(np.uint8).reshape(c.per_chunk, -1).T).tobytes()
        f["records"].id.write_direct_chunk((2, 0, 0), __import__("zlib").compress(raw))
    with S.ReinforcementFile(p) as r:
        with pytest.raises(S.CorruptFileError, match=r"record \(2, 0\) .* out of range .*index is 250"):
            r.read(2, 0)
        with pytest.raises(S.CorruptFileError, match=r"record \(2, 0\) .* out of range .*index is 250"):
            r.read_many([1, 3, 2, 2], [0, 0, 0, 1])  # the first record at fault is named
        with pytest.raises(S.CorruptFileError, match="image 2 .* out of range"):
            r.read_image(2)


def test_damaged_chunk_index_is_a_corrupt_file_error(tmp_path):
    """h5py reports a damaged chunk index (a failed metadata checksum) as RuntimeError, not OSError."""
    p = str(tmp_path / "r.h5")
    write_file(p, make_header())

    class Broken:  # the records dataset of a file whose chunk index fails its checksum
        size = 1  # small: the reader first tries to read it whole, which fails as every read does

        class id:  # noqa: N801 - h5py's attribute name
            @staticmethod
            def read_direct_chunk(key):
                raise RuntimeError("Can't get storage size of chunk (incorrect metadata checksum after all read "
                                   "attempts)")

        def __getitem__(self, key):
            self.id.read_direct_chunk(key)

    with S.ReinforcementFile(p) as r:
        r._records = Broken()
        for direct in (True, False):
            r._direct, r._all = direct, None
            with pytest.raises(S.CorruptFileError, match="records of image 3 .*incorrect metadata checksum"):
                r.read_image(3)
            with pytest.raises(S.CorruptFileError, match="records of image 3 .* damaged"):
                r.read(3, 1)
            with pytest.raises(S.CorruptFileError, match="records of image 3 .* damaged"):
                r.read_many([3, 3, 5], [1, 2, 0])


# ---------------------------------------------------------------------- dataset identity
def test_fingerprint_differences():
    labels = np.arange(10) % 3
    fp = S.Fingerprint.of(labels, ["a/1.png", "b/2.png"], 3)
    assert fp.differences(S.Fingerprint.of(labels, ["a/1.png", "b/2.png"], 3)) == []
    assert "holds 10 images, the dataset 9" in fp.differences(S.Fingerprint.of(labels[:9]))[0]
    assert fp.differences(S.Fingerprint.of(labels[::-1].copy())) == ["the labels differ"]
    assert fp.differences(S.Fingerprint.of(labels, ["a/1.png", "c/2.png"])) == ["the file lists differ"]
    assert "has 3 classes, this one 4" in fp.differences(S.Fingerprint.of(labels, None, 4))[0]


def test_check_dataset(tmp_path):
    from reinforced_data.synthetic import SyntheticImages

    ds = SyntheticImages(N, 4, 16, 20, seed=0)
    labels = np.asarray(ds.targets)
    p = str(tmp_path / "r.h5")
    h = S.Header(N, K, 3, 4, Policy.preset("rrc", output_size=(16, 16)), [], dataset_fingerprint(ds))
    w = S.ReinforcementWriter.open(p, h, labels)
    for i in range(N):
        params, _, _, _, _ = make_rows(make_header("rrc", c=4, topk=3), [i])
        w.write([i], params, np.tile([0, 1, 2], (1, K, 1)), np.tile([0.5, 0.3, 0.2], (1, K, 1)))
    w.finish()
    with S.ReinforcementFile(p) as r:
        r.check_dataset(dataset_fingerprint(ds))
        with pytest.raises(S.DatasetMismatchError, match="another dataset: the file holds 12 images, the dataset 11"):
            r.check_dataset(dataset_fingerprint(SyntheticImages(N - 1, 4, 16, 20, seed=0)))
        with pytest.raises(S.DatasetMismatchError, match="the labels differ"):
            r.check_dataset(dataset_fingerprint(SyntheticImages(N, 4, 16, 20, seed=1)))
        with pytest.raises(S.DatasetMismatchError, match="4 classes, this one 6"):
            r.check_dataset(dataset_fingerprint(SyntheticImages(N, 6, 16, 20, seed=0)))


# ---------------------------------------------------------------------- shards and merge
def test_merge_shards(tmp_path):
    out = str(tmp_path / "m.h5")
    single = str(tmp_path / "single.h5")
    write_file(single, make_header())
    for rank, rows in enumerate([range(0, 5), range(5, 12)]):
        write_file(S.shard_path(out, rank, 2), make_header(shard_rank=rank, shard_world_size=2), rows)
    assert sorted(S.find_shards(out)) == [S.shard_path(out, 0, 2), S.shard_path(out, 1, 2)]
    S.merge(out)
    with S.ReinforcementFile(out) as m, S.ReinforcementFile(single) as s, h5py.File(out) as fm, h5py.File(single) as fs:
        assert m.complete and m.header.extra == {"merged_from": 2}
        for i in range(N):
            for g in range(fs["records"].shape[1]):  # chunks byte for byte
                assert fm["records"].id.read_direct_chunk((i, g, 0)) == fs["records"].id.read_direct_chunk((i, g, 0))
            assert (m.read_image(i).indices == s.read_image(i).indices).all()
    with pytest.raises(S.OutputExistsError):
        S.merge(out)


def test_merge_refuses_bad_shard_sets(tmp_path):
    out = str(tmp_path / "m.h5")
    a, b = S.shard_path(out, 0, 2), S.shard_path(out, 1, 2)
    write_file(a, make_header(shard_rank=0, shard_world_size=2), range(0, 6))
    with pytest.raises(S.ReinforcementFileError, match=r"cover ranks \[0\]"):
        S.merge(out, [a])
    write_file(b, make_header(shard_rank=1, shard_world_size=2), range(6, 11), finish=False)
    with pytest.raises(S.IncompleteFileError):
        S.merge(out, [a, b])
    os.remove(b)
    write_file(b, make_header(shard_rank=1, shard_world_size=2), range(6, 11))
    with pytest.raises(S.ReinforcementFileError, match=r"hold 11 of 12 images \(first missing: 11\)"):
        S.merge(out, [a, b])
    os.remove(b)
    write_file(b, make_header(shard_rank=1, shard_world_size=2), range(5, 12))
    with pytest.raises(S.ReinforcementFileError, match="image 5 is stored in both"):
        S.merge(out, [a, b])
    os.remove(b)
    write_file(b, make_header(shard_rank=1, shard_world_size=2, seed=3), range(6, 12))
    with pytest.raises(S.SettingsMismatchError, match="seed"):
        S.merge(out, [a, b])
    assert not os.path.exists(out)


def test_storage_target_on_imagenet_like_records(tmp_path):
    """<= 37 bytes per record for rrc_ra_re, k = 10, 1000 classes (teacher-like peaked distributions)."""
    sys.path.insert(0, os.path.join(U.REPO_DIR, "benchmarks"))
    try:
        import storage
    finally:
        sys.path.pop(0)
    recs = storage.simulate_records(num_images=24, num_views=128, seed=0)
    path = str(tmp_path / "s.h5")
    storage.write_ours(path, recs)
    with h5py.File(path) as f:
        per_record = f["records"].id.get_storage_size() / (24 * 128)
    assert per_record <= 37, per_record


# ---------------------------------------------------------------------- honest open errors, files cut short
@pytest.mark.parametrize("code,needle", [
    (errno.EAGAIN, "is in use by another process"),
    (errno.EACCES, "permission denied"),
    (errno.EPERM, "permission denied"),
    (errno.EROFS, "read-only file system"),
    (errno.ENOSPC, "no space is left"),
])
@pytest.mark.parametrize("errno_attribute", [True, False])  # h5py sets e.errno for some; the message names it
def test_open_errors_say_what_is_wrong_without_calling_the_file_damaged(code, needle, errno_attribute):
    msg = f"Unable to synchronously open file (unable to lock file, errno = {code}, error message = 'x')"
    e = OSError(code, msg) if errno_attribute else OSError(msg)
    with pytest.raises(S.FileAccessError, match=needle) as info:
        store_reader._raise_open_error("r.h5", e, writing=True)
    text = str(info.value)
    assert "overwrite" not in text and "damaged" not in text and "regenerate" not in text


def test_open_errors_of_the_file_itself_are_damage():
    with pytest.raises(S.CorruptFileError, match=r"is truncated .*--overwrite"):
        store_reader._raise_open_error("r.h5", OSError("Unable to open file (truncated file: eof = 5, stored_eof = 9)"))
    with pytest.raises(S.CorruptFileError, match="it is damaged, regenerate it"):
        store_reader._raise_open_error("r.h5", OSError("Unable to open file (bad object header version number)"))


_HOLD_OPEN = """
import sys, time
sys.path[:0] = {paths!r}
from reinforced_data import store as S
f = S.ReinforcementFile({path!r}, accept_incomplete=True)
f.read_image(0)
print("reading", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_resume_while_a_reader_holds_the_file_says_busy_and_keeps_it(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header()
    rows = write_file(path, h, indices=range(6), finish=False)
    before = open(path, "rb").read()
    script = _HOLD_OPEN.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=U.subprocess_env())
    try:
        assert proc.stdout.readline().strip() == b"reading"
        with pytest.raises(S.FileAccessError, match="in use by another process") as info:
            S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
        assert "overwrite" not in str(info.value) and "damaged" not in str(info.value)
    finally:
        proc.kill()
        proc.wait()
    assert open(path, "rb").read() == before and not os.path.exists(path + ".lock")
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")  # the reader gone: it resumes
    assert np.flatnonzero(w.written).tolist() == sorted(rows)
    w.close()


def test_lock_that_cannot_be_created_is_one_clear_error(tmp_path, monkeypatch):
    real_open = os.open

    def read_only_fs(p, *a, **kw):
        if str(p).endswith(".lock"):
            raise OSError(errno.EROFS, "Read-only file system", p)
        return real_open(p, *a, **kw)

    monkeypatch.setattr(os, "open", read_only_fs)
    with pytest.raises(S.FileAccessError, match=r"cannot create .*r\.h5\.lock.*Read-only file system"):
        S.ReinforcementWriter.open(str(tmp_path / "r.h5"), make_header(), np.arange(N) % C)


@pytest.mark.slow
@pytest.mark.subprocess
def test_file_is_read_while_its_writer_runs(tmp_path):
    """Every open of a file another process is writing succeeds (SWMR reading), and what it reads is what was
    committed."""
    path = str(tmp_path / "r.h5")
    script = _WRITER_SCRIPT.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=U.subprocess_env())
    h = make_header(n=400)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        seen = set()
        for _ in range(40):
            with S.ReinforcementFile(path, accept_incomplete=True) as r:
                done = np.flatnonzero(r.written)
                i = int(done[-1])
                params, idx, _, _, _ = make_rows(h, [i])
                img = r.read_image(i)
                assert (img.params == params[0]).all() and (img.indices == idx[0]).all()
                seen.add(i)
        assert len(seen) > 1  # the writer was writing meanwhile
    finally:
        proc.kill()
        proc.wait()


def _cut_short(path: str) -> None:
    """Make ``path`` shorter on disk than its recorded length, its rows whole: append a 64 KiB dataset (data
    last in the file), then cut half of that data off. HDF5 calls this "truncated"."""
    with h5py.File(path, "r+") as f:
        f.create_dataset("pad", data=np.ones(1 << 16, np.uint8))
    os.truncate(path, os.path.getsize(path) - (1 << 15))
    with pytest.raises(OSError, match="truncated"):
        h5py.File(path, "r")


_WRITE_UNTIL_FILE_SIZE_LIMIT = """
import os, resource, signal, sys, numpy as np
sys.path[:0] = {paths!r}
import _store_util as T
from reinforced_data import store as S
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writing past the limit fails with EFBIG instead of killing
h = T.make_header(n=400)
w = S.ReinforcementWriter.open({path!r}, h, np.arange(400) % T.C)
resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))
try:
    for i in range(400):
        w.write([i], *T.make_rows(h, [i])[:3])
        w.commit()
except OSError as e:
    print(e.errno, flush=True)
os._exit(0)
"""


@pytest.mark.slow
@pytest.mark.subprocess
def test_writer_stopped_by_a_file_size_limit_keeps_its_rows_readable_and_resumable(tmp_path):
    path = str(tmp_path / "r.h5")
    out = subprocess.run([sys.executable, "-c", _WRITE_UNTIL_FILE_SIZE_LIMIT.format(
        paths=[U.REPO_DIR, U.TESTS_DIR], path=path)], check=True, env=U.subprocess_env(), timeout=120,
        capture_output=True, text=True).stdout
    assert out.strip() == str(errno.EFBIG)
    h = make_header(n=400)
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        done = np.flatnonzero(r.written)
        assert 10 < done.size < 400 and (done == np.arange(done.size)).all()
        for i in (0, done.size - 1):
            params, idx, _, _, _ = make_rows(h, [i])
            assert (r.read_image(i).params == params[0]).all() and (r.read_image(i).indices == idx[0]).all()
    w = S.ReinforcementWriter.open(path, h, np.arange(400) % C, mode="resume")
    assert (np.flatnonzero(w.written) == done).all()
    for i in range(done.size, 400):
        w.write([i], *make_rows(h, [i])[:3])
    w.finish()
    with S.ReinforcementFile(path) as r:
        assert (r.read_image(399).indices == make_rows(h, [399])[1][0]).all()


def test_finished_file_cut_short_is_refused_and_left_alone(tmp_path):
    path = str(tmp_path / "r.h5")
    h = make_header()
    write_file(path, h)
    _cut_short(path)
    before = open(path, "rb").read()
    with pytest.raises(S.CorruptFileError, match="is truncated"):
        S.ReinforcementFile(path)
    with pytest.raises(S.CorruptFileError, match="is truncated"):
        S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
    assert open(path, "rb").read() == before


@pytest.mark.slow
@pytest.mark.subprocess
def test_recovery_regenerates_rows_whose_chunks_are_not_whole(tmp_path):
    """A file left open by a killed writer, one committed row's chunk zeroed on disk: the resume keeps the
    other rows and marks that one for generating again, and the file stops claiming to be complete."""
    path = str(tmp_path / "r.h5")
    h = make_header()
    write_file(path, h, indices=range(6), finish=False)
    subprocess.run([sys.executable, "-c", _RESUME_AND_DIE.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)],
                   check=True, env=U.subprocess_env(), timeout=120)  # killed: the file stays marked open
    with h5py.File(path, "r", swmr=True) as f:
        info = f["records"].id.get_chunk_info_by_coord((2, 0, 0))
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes(info.size))
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C, mode="resume")
    assert np.flatnonzero(w.written).tolist() == [0, 1, 3, 4, 5]
    w.close()
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        assert not r.complete and np.flatnonzero(r.written).tolist() == [0, 1, 3, 4, 5]


def test_merge_refuses_a_file_that_is_not_a_shard(tmp_path):
    out = str(tmp_path / "m.h5")
    single = str(tmp_path / "single.h5")
    write_file(single, make_header())
    with pytest.raises(S.ReinforcementFileError, match="single.h5 is not a shard but a file written by a single"):
        S.merge(out, [single])
    for rank, rows in enumerate([range(0, 5), range(5, 12)]):
        write_file(S.shard_path(out, rank, 2), make_header(shard_rank=rank, shard_world_size=2), rows)
    S.merge(out)
    with pytest.raises(S.ReinforcementFileError, match="m.h5 is not a shard but a file merged from 2 shards"):
        S.merge(str(tmp_path / "again.h5"), [out, S.shard_path(out, 1, 2)])
    assert not os.path.exists(str(tmp_path / "again.h5"))


def test_flags_caught_half_rewritten_are_read_again_only_while_a_writer_holds_the_file():
    """SWMR keeps HDF5's metadata consistent, not data rewritten in place: a reader can catch the `written`
    chunk of a running writer half rewritten (measured: 1 of ~13,700 opens). It fails to inflate; read again."""
    from reinforced_data.store import reader

    class Dataset:
        def __init__(self, owner):
            self.owner = owner

        def __getitem__(self, sel):
            if self.owner.failures:
                self.owner.failures -= 1
                raise OSError("Can't synchronously read data (filter returned failure during read)")
            return np.ones(3, np.uint8)[sel]

    class File:
        def __init__(self, swmr_mode, failures):
            self.swmr_mode, self.failures = swmr_mode, failures

        def __getitem__(self, name):
            return Dataset(self)

    assert reader._read_small(File(True, 2), "written").tolist() == [1, 1, 1]
    with pytest.raises(OSError, match="filter returned failure"):
        reader._read_small(File(False, 1), "written")  # no writer: a failure is damage, at once
    with pytest.raises(OSError, match="filter returned failure"):
        reader._read_small(File(True, 5), "written")  # a writer, but it keeps failing


@pytest.mark.slow
@pytest.mark.subprocess
def test_superblock_flags_tell_a_file_a_writer_holds(tmp_path):
    """Readers open SWMR exactly when the superblock says a writer has the file open (or died so)."""
    from reinforced_data.store import reader

    path = str(tmp_path / "r.h5")
    h = make_header()
    w = S.ReinforcementWriter.open(path, h, np.arange(N) % C)
    assert reader._marked_open_for_writing(path)  # a writer holds it
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        assert r._file().swmr_mode
    w.close()
    assert not reader._marked_open_for_writing(path)  # closed cleanly
    with S.ReinforcementFile(path, accept_incomplete=True) as r:
        assert not r._file().swmr_mode
    subprocess.run([sys.executable, "-c", _RESUME_AND_DIE.format(paths=[U.REPO_DIR, U.TESTS_DIR], path=path)],
                   check=True, env=U.subprocess_env(), timeout=120)
    assert reader._marked_open_for_writing(path)  # its writer died
    other = str(tmp_path / "other.h5")
    with h5py.File(other, "w") as f:  # superblock version 0: never SWMR
        f["x"] = np.arange(3)
    text = tmp_path / "t.h5"
    text.write_bytes(b"\x89HDF\r\n\x1a\n")
    assert not reader._marked_open_for_writing(other) and not reader._marked_open_for_writing(str(text))
