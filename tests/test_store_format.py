"""The store's HDF5-free layer (reinforced_data.store.format) and the package's seams.

* ``store.format`` imports neither h5py nor torch, and its codec round trip runs in a
  process where importing h5py is impossible;
* the bytes of records and header attributes are pinned (SHA-256 over deterministic
  input), so a refactoring cannot change what is stored;
* ``reinforced_data.store`` serves every name lazily from the module that owns it, and
  loads no torch;
* ``format_inspect`` (the text of ``reinforced-data inspect``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from reinforced_data import inspection
from reinforced_data import store as S
from reinforced_data.policy import Policy
from reinforced_data.store import format as F

PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(F.__file__)))  # .../reinforced_data

# Run a snippet with ``reinforced_data`` as a bare namespace (its __init__ not run), so what is
# measured is what the store modules themselves import, whatever the top-level package loads.
_BARE_PACKAGE = f"""
import sys, types
pkg = types.ModuleType("reinforced_data")
pkg.__path__ = [{PKG_DIR!r}]
pkg.__version__ = "test"
sys.modules["reinforced_data"] = pkg
"""


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", _BARE_PACKAGE + code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _sample(preset: str, encoding: str, records_per_chunk: int, n: int = 5, views: int = 10, topk: int = 4,
            classes: int = 300):
    """A header and deterministic records for it: raw random parameter bytes, teacher-like top-k."""
    pol = Policy.preset(preset, output_size=(32, 32))
    labels = np.arange(n) % classes
    h = F.Header(n, views, topk, classes, pol, [{"name": "t", "weights_sha256": "x"}],
                 F.Fingerprint.of(labels, ["a/1.jpg"], classes), seed=7, prob_encoding=encoding,
                 records_per_chunk=records_per_chunk, library_version="0.1.0", created="2026-01-01T00:00:00+00:00")
    rng = np.random.default_rng(123)
    pd = pol.param_dtype()
    params = rng.integers(0, 256, (n * views * pd.itemsize,), dtype=np.uint8).view(pd).reshape(n, views)
    p = rng.dirichlet(np.ones(classes) * 0.1, size=(n, views))
    idx = np.argsort(-p, -1)[..., :topk]
    val = np.take_along_axis(p, idx, -1)
    pi, pv = rng.integers(0, n, (n, views)), rng.integers(0, views, (n, views))
    return h, params, idx, val, pi, pv


CASES = [("rrc_ra_re", "log_uint8", 0), ("rrc_ra_re_mix", "log_uint8", 4), ("rrc_ra_re_noise", "float16", 3)]

# SHA-256 of the inflated chunk bytes of _sample's records, and of its header attributes as
# JSON, as written by the single-module store.py before it became a package (checked equal
# then, deflated chunks and whole files included). A change here is a change of file format.
GOLDEN = {
    ("rrc_ra_re", "log_uint8", 0): ("6c00f74e357effeb20d0c2525151636b19646a3ed001c7a71af9e18d19ff2c50",
                                    "9319df1b4ec3acb958ad3b50d0b9a380149b7bb6aa9401142fbdfbf4e2467020"),
    ("rrc_ra_re_mix", "log_uint8", 4): ("95a301cbb907ae7511dcec7306183ae86556b72589d07bcd96068a998c080c0c",
                                        "4702d76338620c2388a641f82cf6d95ec5f7ec336de184dea22fcfb354e36ac7"),
    ("rrc_ra_re_noise", "float16", 3): ("ca8632f2d844384331ad1732ccc7b249c6461c2a4f0b5ac5461473625d348cc1",
                             "39f2591673d98da48715779bdfd88a78dfb1889ee018b0582822aadef5c20db0"),
}


def _attrs_json(h: F.Header) -> str:
    return json.dumps({a: (v.item() if hasattr(v, "item") else v) for a, v in h.to_attrs().items()}, sort_keys=True)


# ---------------------------------------------------------------------- no HDF5, no torch
@pytest.mark.subprocess
def test_format_imports_neither_h5py_nor_torch():
    out = _run("import reinforced_data.store.format\n"
               "print(sorted(m for m in ('h5py', 'torch') if m in sys.modules))")
    assert out.strip() == "[]"


@pytest.mark.subprocess
def test_store_package_loads_no_torch():
    """Every module of the store, and every name it serves, without torch."""
    out = _run("import reinforced_data.store as S\n"
               "for n in S.__all__: getattr(S, n)\n"
               "import reinforced_data.store.reader, reinforced_data.store.writer, reinforced_data.store.shards\n"
               "print('h5py' in sys.modules, 'torch' in sys.modules)")
    assert out.split() == ["True", "False"]


@pytest.mark.subprocess
def test_codec_roundtrip_where_h5py_cannot_be_imported():
    out = _run("""
sys.modules["h5py"] = None  # 'import h5py' now raises ImportError
import zlib
import numpy as np
from reinforced_data.policy import Policy
from reinforced_data.store.format import Fingerprint, Header
pol = Policy.preset("rrc_ra_re_mix", output_size=(32, 32))
h = Header(3, 10, 4, 20, pol, [{"name": "t"}], Fingerprint.of(np.arange(3)), records_per_chunk=4)
c = h.codec()
rng = np.random.default_rng(0)
params = np.stack([pol.sample(rng, 10, 40, 50) for _ in range(3)])
p = rng.dirichlet(np.ones(20), size=(3, 10))
idx = np.argsort(-p, -1)[..., :4]
val = np.take_along_axis(p, idx, -1)
pi, pv = rng.integers(0, 3, (3, 10)), rng.integers(0, 10, (3, 10))
recs = c.pack(params, idx, val, pi, pv)
for row in range(3):
    back = np.concatenate([c.from_planes(np.frombuffer(zlib.decompress(b), np.uint8)) for b in c.chunks(recs[row])])
    out = c.unpack(back[:10])
    assert (out.params == params[row]).all() and (out.indices == idx[row]).all()
    assert (out.partner_index == pi[row]).all() and (out.partner_view == pv[row]).all()
    assert np.allclose(out.probs, val[row], rtol=0.04)
assert Header.from_attrs(h.to_attrs()).settings() == h.settings()
print("ok")
""")
    assert out.strip() == "ok"


# ---------------------------------------------------------------------- pinned bytes
@pytest.mark.parametrize("case", CASES, ids=["/".join(map(str, c)) for c in CASES])
def test_stored_bytes_are_pinned(case):
    h, params, idx, val, pi, pv = _sample(*case)
    c = h.codec()
    recs = c.pack(params, idx, val, pi, pv)
    planes = b"".join(zlib.decompress(b) for row in recs for b in c.chunks(row))
    assert len(planes) == h.num_images * c.chunks_per_image * c.chunk_bytes
    assert (hashlib.sha256(planes).hexdigest(), hashlib.sha256(_attrs_json(h).encode()).hexdigest()) == GOLDEN[case]


@pytest.mark.parametrize("case", CASES, ids=["/".join(map(str, c)) for c in CASES])
def test_codec_roundtrip_without_hdf5(case):
    h, params, idx, val, pi, pv = _sample(*case)
    c = h.codec()
    recs = c.pack(params, idx, val, pi, pv)
    for row in range(h.num_images):
        chunks = c.chunks(recs[row])
        assert len(chunks) == c.chunks_per_image
        flat = np.concatenate([c.from_planes(np.frombuffer(zlib.decompress(b), np.uint8)) for b in chunks])
        assert not flat[h.num_views:].view(np.uint8).any()  # the end of the last chunk is zero padding
        out = c.unpack(flat[:h.num_views])
        assert out.params.tobytes() == params[row].tobytes()
        assert (out.indices == idx[row]).all()
        tol = 2e-3 if h.prob_encoding == "float16" else np.expm1(F.LOG_RANGE / 510) + 1e-6
        big = val[row] > np.exp(-F.LOG_RANGE)
        assert np.all(np.abs(out.probs[big] / val[row][big] - 1) <= tol)
        for view in range(h.num_views):  # one record from its bytes = the same record of the whole row
            g, j = divmod(view, c.per_chunk)
            planes = np.frombuffer(zlib.decompress(chunks[g]), np.uint8)
            one_params, one_idx, one_probs, partner = c.unpack_one(planes[j::c.per_chunk].tobytes())
            rec = out.record(view)
            assert one_params.tobytes() == rec.params.tobytes()
            assert (one_idx == rec.indices).all() and (one_probs == rec.probs).all() and partner == rec.partner


def test_header_attrs_roundtrip_and_damage_without_hdf5():
    h, *_ = _sample("rrc_ra_re_mix", "log_uint8", 4)
    attrs = h.to_attrs()
    back = F.Header.from_attrs(attrs, "x.h5")
    assert back.settings() == h.settings() and _attrs_json(back) == _attrs_json(h)
    with pytest.raises(S.CorruptFileError, match="header is damaged"):
        F.Header.from_attrs({k: v for k, v in attrs.items() if k != "seed"}, "x.h5")
    with pytest.raises(S.CorruptFileError, match="record layout does not match"):
        F.Header.from_attrs({**attrs, "topk": 5}, "x.h5")


def test_bad_header_arguments_are_config_errors():
    from reinforced_data.errors import ConfigError

    pol = Policy.preset("rrc", output_size=(32, 32))
    with pytest.raises(ConfigError, match="exceeds the 3 classes"):
        F.Header(2, 4, 5, 3, pol, [], F.Fingerprint.of(np.arange(2)))
    with pytest.raises(ValueError, match="prob_encoding"):  # still a ValueError for existing callers
        F.Header(2, 4, 2, 3, pol, [], F.Fingerprint.of(np.arange(2)), prob_encoding="bf16")


# ---------------------------------------------------------------------- the package's names
def test_every_name_is_served_by_the_module_that_owns_it():
    from reinforced_data.store import format, reader, shards, writer

    homes = {"Header": format, "RecordCodec": format, "Fingerprint": format, "FORMAT_VERSION": format,
             "ReinforcementFile": reader, "read_header": reader, "ReinforcementWriter": writer,
             "merge": shards, "shard_path": shards, "find_shards": shards}
    for name, module in homes.items():
        assert getattr(S, name) is getattr(module, name), name
    assert set(S.__all__) <= set(dir(S))
    from reinforced_data import errors

    assert S.CorruptFileError is errors.CorruptFileError and S.OutputExistsError is errors.OutputExistsError
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        S.nope  # noqa: B018


# ---------------------------------------------------------------------- inspect text
def _info(**kw) -> dict:
    info = {"file": "r.h5", "complete": True, "images_written": 4, "num_images": 4, "num_views": 10, "topk": 5,
            "num_classes": 20, "prob_encoding": "log_uint8", "policy": {"preset": "rrc"},
            "teachers": [{"name": "resnet", "checkpoint": "t.pth", "input_size": [3, 32, 32], "mean": [0.5],
                          "std": [0.25]}],
            "seed": 3, "mix_block_size": 64, "shard": {"rank": 0, "world_size": 1}, "library_version": "0.1.0",
            "created": "2026-01-01", "file_bytes": 1000, "bytes_per_record": 25.0, "record_bytes_uncompressed": 30,
            "stats_images": 4, "teacher_top1_agreement": 0.5, "mean_entropy_nats": 1.25,
            "generation": {"images": 4, "seconds": {"total": 2.0}, "device": "cpu"}}
    info.update(kw)
    return info


def test_format_inspect_text():
    lines = inspection.format_inspect(_info()).splitlines()
    assert lines[0] == "file:             r.h5"
    assert "complete:         yes" in lines
    assert "teacher:          resnet from t.pth (input 3x32x32, mean [0.5], std [0.25])" in lines
    assert "shard:            single" in lines
    assert "size:             1000 bytes, 25.0 bytes/record (30 uncompressed)" in lines
    assert "teacher top-1 = label: 50.0% of views (over 4 images)" in lines
    assert "mean entropy:     1.250 nats (top-k renormalised)" in lines
    assert "generation:       4 images in 2.0 s on cpu" in lines
    assert not any(line.startswith("dataset:") for line in lines)


def test_format_inspect_says_what_each_teacher_was_fed():
    policy = {"output_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    teachers = [{"name": "bare", "checkpoint": None, "input_size": None, "mean": [0.5, 0.5, 0.5],
                 "std": [0.25, 0.25, 0.25]},
                {"name": "resnet", "checkpoint": None, "input_size": [224, 224], "mean": [0.485, 0.456, 0.406],
                 "std": [0.229, 0.224, 0.225]}]
    lines = inspection.format_inspect(_info(policy=policy, teachers=teachers)).splitlines()
    assert ("teacher:          bare (input 32x32 = the view's, mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25] = "
            "the policy's, as the student's views)") in lines
    assert ("teacher:          resnet (input 224x224, mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225])"
            in lines)


def test_format_inspect_incomplete_shard_and_mismatch():
    text = inspection.format_inspect(_info(complete=False, images_written=1, shard={"rank": 1, "world_size": 2},
                                  teacher_top1_agreement=None, generation=None, dataset_matches=False,
                                  dataset_mismatch="the labels differ"))
    assert "complete:         NO (1 of 4 images written)" in text
    assert "shard:            rank 1 of 2" in text
    assert "teacher top-1" not in text and "generation:" not in text
    # the verdict ends the text
    assert text.endswith("dataset:          DOES NOT MATCH: the labels differ\n"
                         "verdict:          WRONG DATASET: the file was made for another dataset (see above)")
    merged = inspection.format_inspect(_info(shard={"rank": 0, "world_size": 1, "merged_from": 4}, dataset_matches=True))
    assert "shard:            merged from 4 ranks" in merged and "\ndataset:          matches\n" in merged
    assert merged.splitlines()[-1].startswith("verdict:          readable, but only the header and")
