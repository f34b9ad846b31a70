"""File integrity: the header digest (every attribute and the labels sealed when written,
checked on open) and ``inspect --verify`` (every chunk and record checked)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import h5py
import numpy as np
import pytest

from reinforced_data import inspection
from reinforced_data.store import format as store_format
from reinforced_data import store as S
from reinforced_data.errors import CorruptFileError, ReinforcedDataError
from _store_util import make_header, write_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sealed(tmp_path_factory):
    """A small complete file (mixing policy, so every attribute kind is there)."""
    p = str(tmp_path_factory.mktemp("sealed") / "f.h5")
    write_file(p, make_header("rrc_ra_re_mix", n=6, k=4, topk=3, c=7))
    return p


def _attrs(path):
    with h5py.File(path, "r") as f:
        return dict(f.attrs)


def _changed(value):
    """A value one byte/digit away from ``value``, of the same kind."""
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, str):
        i = len(value) // 2
        return value[:i] + chr(ord(value[i]) ^ 1) + value[i + 1:]  # flip the lowest bit of one (ASCII) byte
    if isinstance(value, (float, np.floating)):
        return type(value)(value * 2 + 1)
    return type(value)(value + 1)


def test_file_is_sealed_with_a_digest_over_attributes_and_labels(sealed):
    attrs = _attrs(sealed)
    assert store_format.DIGEST_ATTR in attrs
    with h5py.File(sealed, "r") as f:
        assert attrs[store_format.DIGEST_ATTR].decode() == store_format.header_digest(f.attrs, f["labels"][:])
    with S.ReinforcementFile(sealed) as r:
        assert r.has_digest
    # the digest leaves out exactly the attributes a writer changes later
    assert set(store_format.DIGEST_EXCLUDES) == {"complete", "generation", store_format.DIGEST_ATTR}


def test_digest_is_canonical():
    a = {"x": "s", "n": np.int64(3), "f": 16.0}
    assert store_format.header_digest(a, np.arange(3)) == store_format.header_digest(dict(reversed(list(a.items()))), np.arange(3, dtype=np.uint8))
    assert store_format.header_digest(a, np.arange(3)) != store_format.header_digest({**a, "n": np.int64(4)}, np.arange(3))
    assert store_format.header_digest(a, np.arange(3)) != store_format.header_digest({**a, "n": "3"}, np.arange(3))  # type counts
    assert store_format.header_digest(a, np.arange(3)) != store_format.header_digest(a, np.array([0, 1, 3]))
    # the mutable attributes do not count
    assert store_format.header_digest(a, np.arange(3)) == store_format.header_digest({**a, "complete": np.uint8(1), "generation": "{}"},
                                                                 np.arange(3))


def _every_sealed_attribute():
    h = make_header("rrc_ra_re_mix", n=6, k=4, topk=3, c=7)
    return sorted(k for k in h.to_attrs() if k not in store_format.DIGEST_EXCLUDES)


@pytest.mark.parametrize("name", _every_sealed_attribute())
def test_each_changed_attribute_is_caught_on_open(sealed, tmp_path, name):
    p = str(tmp_path / "changed.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        f.attrs[name] = _changed(f.attrs[name])
    if name in ("format", "format_version"):  # refused earlier, as a foreign or newer file
        with pytest.raises(ReinforcedDataError):
            S.ReinforcementFile(p)
        return
    for open_it in (S.ReinforcementFile, S.read_header, inspection.inspect_file):
        with pytest.raises(CorruptFileError, match=r"header was changed after it was written \(digest mismatch"):
            open_it(p)


def test_a_changed_policy_digit_is_caught(sealed, tmp_path):
    """The drill of the issue: one digit of the policy's output size (32 -> 33)."""
    p = str(tmp_path / "policy.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        pol = f.attrs["policy"].decode()
        assert "32" in pol
        f.attrs["policy"] = pol.replace("32", "33", 1)
    with pytest.raises(CorruptFileError, match="digest mismatch"):
        S.ReinforcementFile(p)


@pytest.mark.parametrize("where", ["value", "added", "removed"])
def test_changed_labels_or_added_attribute_are_caught(sealed, tmp_path, where):
    p = str(tmp_path / "labels.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        if where == "value":
            f["labels"][2] = (int(f["labels"][2]) + 1) % 7
        elif where == "added":
            f.attrs["note"] = "edited"
        else:
            del f.attrs["created"]
    with pytest.raises(CorruptFileError, match="digest mismatch"):
        S.ReinforcementFile(p)


def test_mutable_attributes_may_change(sealed, tmp_path):
    p = str(tmp_path / "mutable.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        f.attrs["generation"] = '{"images": 1}'
    with S.ReinforcementFile(p) as r:
        assert r.generation == {"images": 1}


def test_resume_refuses_a_changed_header(sealed, tmp_path):
    p = str(tmp_path / "resume.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        f.attrs["seed"] = f.attrs["seed"] + 1
    h = make_header("rrc_ra_re_mix", n=6, k=4, topk=3, c=7)
    with pytest.raises(CorruptFileError, match="digest mismatch"):
        S.ReinforcementWriter.open(p, h, np.arange(6) % 7, mode="resume")


def test_version_1_file_without_digest_is_read_with_a_warning(sealed, tmp_path, caplog):
    p = str(tmp_path / "old.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        del f.attrs[store_format.DIGEST_ATTR]
    with caplog.at_level(logging.WARNING):
        with S.ReinforcementFile(p) as r:
            assert not r.has_digest and r.num_images == 6
    assert "carries no header digest" in caplog.text
    info = inspection.inspect_file(p)
    assert info["header_digest"] is False
    assert "header digest:    none" in inspection.format_inspect(info)


def test_merged_file_is_sealed_anew(tmp_path):
    h = dict(n=8, k=4, topk=3, c=7)
    shards = []
    for r in range(2):
        s = str(tmp_path / f"o-{r:05d}-of-00002.h5")
        write_file(s, make_header(shard_rank=r, shard_world_size=2, **h), indices=range(r, 8, 2))
        shards.append(s)
    out = S.merge(str(tmp_path / "o.h5"), shards)
    with S.ReinforcementFile(out) as m:
        assert m.has_digest and m.header.extra == {"merged_from": 2}
    for path in shards + [out]:  # a complete shard holds only its own images: not a complete-flag problem
        assert inspection.verify_file(path)["ok"] and inspection.inspect_file(path)["complete"]


# ---------------------------------------------------------------------- inspect --verify
import zlib  # noqa: E402

from reinforced_data.cli import main as cli_main  # noqa: E402
from reinforced_data.synthetic import SyntheticImages  # noqa: E402
from _store_util import make_rows  # noqa: E402

NV, KV, CV = 6, 4, 7


def write_custom(path, policy="rrc_ra_re", labels=None, edit=None, header_labels=None):
    """A complete file whose records (or labels) ``edit`` may spoil before they go through the codec."""
    labels = np.arange(NV) % CV if labels is None else np.asarray(labels)
    h = make_header(policy, n=NV, k=KV, topk=3, c=CV, labels=labels if header_labels is None else header_labels)
    params, idx, val, pi, pv = make_rows(h, range(NV))
    if edit is not None:
        edit(params)
    w = S.ReinforcementWriter.open(path, h, labels)
    mix = h.policy.mixing
    w.write(list(range(NV)), params, idx, val, pi if mix else None, pv if mix else None)
    w.finish()
    return path


def run_verify(capsys, *args):
    rc = cli_main(["inspect", "--verify", *args])
    out = capsys.readouterr()
    return rc, out.out


@pytest.mark.parametrize("policy", ["rrc_ra_re", "rrc_ra_re_mix"])
def test_verify_passes_a_good_file(tmp_path, capsys, policy):
    p = write_custom(str(tmp_path / "good.h5"), policy)
    v = inspection.verify_file(p)
    assert v["ok"] and v["problem_count"] == 0 and v["records_checked"] == NV * KV and v["images_checked"] == NV
    assert v["us_per_record"] > 0
    rc, out = run_verify(capsys, p)
    assert rc == 0 and "verify:           ok: 6 images, 24 records checked" in out
    assert "problem:" not in out
    info = inspection.inspect_file(p, verify=True)
    assert info["verify"]["ok"]


def _expect_problem(capsys, path, needle, *args):
    v = inspection.verify_file(path, *args)
    assert not v["ok"] and v["problem_count"] >= 1
    assert any(needle in p for p in v["problems"]), v["problems"]
    assert all("\n" not in p for p in v["problems"])  # one line each
    cli = ["--data", args[0]] if args and isinstance(args[0], str) else []
    rc, out = run_verify(capsys, path, *cli)
    assert rc == 1 and "verify:           FAILED" in out and needle in out, out
    return v


def test_verify_catches_a_damaged_chunk(tmp_path, capsys):
    p = write_custom(str(tmp_path / "chunk.h5"))
    with h5py.File(p, "r+") as f:
        d = f["records"]
        mask, data = d.id.read_direct_chunk((3, 0, 0))
        d.id.write_direct_chunk((3, 0, 0), data[:len(data) // 2] + bytes(len(data) - len(data) // 2), mask)
    _expect_problem(capsys, p, "records of image 3")
    # a chunk that inflates but to the wrong size
    with h5py.File(p, "r+") as f:
        f["records"].id.write_direct_chunk((4, 0, 0), zlib.compress(b"\0" * 5))
    v = inspection.verify_file(p)
    assert v["problem_count"] == 2 and any("image 4" in x for x in v["problems"])


def test_verify_catches_a_complete_flag_with_an_unwritten_row(tmp_path, capsys):
    p = str(tmp_path / "flag.h5")
    h = make_header(n=NV, k=KV, topk=3, c=CV)
    write_file(p, h, indices=[0, 1, 2, 4, 5], finish=False)
    with h5py.File(p, "r+") as f:
        f.attrs["complete"] = np.uint8(1)
    info = inspection.inspect_file(p)
    assert info["complete"] is False and info["complete_flag"] is True
    assert "complete:         NO: its complete flag is set, but only 5 of 6" in inspection.format_inspect(info)
    assert cli_main(["inspect", p]) == 1  # plain inspect's DAMAGED verdict fails too
    assert "complete:         yes" not in capsys.readouterr().out
    _expect_problem(capsys, p, "complete flag is set but 1 of 6 images are not written (first: image 3)")


def test_verify_catches_labels_beyond_the_class_count(tmp_path, capsys):
    labels = np.arange(NV) % CV
    labels[2] = CV + 3
    p = write_custom(str(tmp_path / "labels.h5"), labels=labels)
    _expect_problem(capsys, p, f"1 labels lie outside [0, {CV}) (first: image 2 has label {CV + 3})")


def test_verify_catches_labels_that_are_not_the_fingerprinted_ones(tmp_path, capsys):
    labels = np.arange(NV) % CV
    p = write_custom(str(tmp_path / "fp.h5"), labels=labels, header_labels=(labels + 1) % CV)
    _expect_problem(capsys, p, "labels differ from those its dataset fingerprint")


def _set(field, value, image=1, view=2, slot=None):
    def edit(params):
        if slot is None:
            params[field][image, view] = value
        else:
            params[field][image, view, slot] = value
    return edit


@pytest.mark.parametrize("edit,needle", [
    (_set("flip", 2), "params['flip'] must be 0 or 1"),
    (_set("ra_op", 200, slot=0), "op id 200"),
    (_set("ra_mag", 100, slot=1), "params['ra_mag'] holds 100"),
    (_set("crop", [0, 0, 0, 5]), "height and width must be >= 1"),
    (_set("erase", [30, 30, 10, 10]), "params['erase'] of view 2"),
])
def test_verify_catches_records_that_replay_would_refuse(tmp_path, capsys, edit, needle):
    p = write_custom(str(tmp_path / "rec.h5"), edit=edit)
    v = _expect_problem(capsys, p, needle)
    assert v["problems"][0].startswith("image 1: ")


def test_verify_catches_a_bad_mix_record(tmp_path, capsys):
    p = write_custom(str(tmp_path / "mix.h5"), "rrc_ra_re_mix", edit=_set("mix_mode", 7))
    _expect_problem(capsys, p, "params['mix_mode'] holds 7")


def test_verify_with_data_checks_crops_against_the_real_image_sizes(tmp_path, capsys):
    ds = SyntheticImages(num_images=NV, num_classes=CV, min_size=56, max_size=64, seed=0)
    labels = np.asarray([ds[i][1] for i in range(NV)])
    p = write_custom(str(tmp_path / "crop.h5"), labels=labels, edit=_set("crop", [0, 0, 200, 40], image=4))
    assert inspection.verify_file(p)["ok"]  # without the images the box cannot be judged
    v = inspection.verify_file(p, ds)
    assert not v["ok"] and v["problem_count"] == 1
    assert "image 4: params['crop'] of view 2" in v["problems"][0] and "source image" in v["problems"][0]


def test_verify_reports_a_changed_header_as_its_problem(sealed, tmp_path, capsys):
    p = str(tmp_path / "hdr.h5")
    shutil.copy(sealed, p)
    with h5py.File(p, "r+") as f:
        f.attrs["num_views"] = f.attrs["num_views"] + 1
    v = inspection.verify_file(p)
    assert not v["opened"] and v["problem_count"] == 1 and "digest mismatch" in v["problems"][0]
    rc, out = run_verify(capsys, p)
    assert rc == 1 and "digest mismatch" in out


# ---------------------------------------------------------------------- dataset identity: a sample of images
import torch  # noqa: E402

from reinforced_data._datasets import dataset_fingerprint, image_sample_indices  # noqa: E402
from reinforced_data.errors import DatasetMismatchError  # noqa: E402


class Counting(torch.utils.data.Dataset):
    """An in-memory dataset: fixed labels, images drawn from ``seed``; counts the items read."""

    def __init__(self, n=20, seed=0, classes=5):
        g = torch.Generator().manual_seed(seed)
        self.images = [torch.randint(0, 256, (3, 12, 10), generator=g, dtype=torch.uint8) for _ in range(n)]
        self.targets = [i % classes for i in range(n)]
        self.reads = 0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        self.reads += 1
        return self.images[i], self.targets[i]


def test_image_sample_is_a_fixed_handful():
    assert image_sample_indices(1000) == [0, 143, 285, 428, 571, 714, 856, 999]
    assert image_sample_indices(3) == [0, 1, 2] and image_sample_indices(0) == []
    ds = Counting(1000)
    fp = dataset_fingerprint(ds)
    assert ds.reads == 8 and fp.images_sha256 is not None  # labels come from .targets: 8 decodes in all
    assert dataset_fingerprint(Counting(1000)).images_sha256 == fp.images_sha256


def test_same_labels_other_images_do_not_match():
    a, b = dataset_fingerprint(Counting(seed=0)), dataset_fingerprint(Counting(seed=1))
    assert a.labels_sha256 == b.labels_sha256
    assert a.differences(b) == ["the images differ (a fixed sample of 8 decoded images hashes differently)"]
    assert a.differences(b, images=False) == []
    # a file written before the image hash matches on the rest
    old = dataclasses.replace(a, images_sha256=None)
    assert old.differences(b) == [] and "images_sha256" not in old.to_dict()
    assert S.Fingerprint.from_dict(old.to_dict()) == old


def _header_for(ds, **kw):
    from reinforced_data.policy import Policy

    return S.Header(len(ds), 3, 2, 5, Policy.preset("rrc", output_size=(8, 8)), [{"name": "t"}],
                    dataset_fingerprint(ds), **kw)


def test_resume_with_other_images_is_refused(tmp_path):
    ds = Counting(seed=0)
    p = str(tmp_path / "r.h5")
    labels = np.asarray(ds.targets)
    w = S.ReinforcementWriter.open(p, _header_for(ds), labels)
    w.close()
    with pytest.raises(DatasetMismatchError, match="cannot resume .* the images differ"):
        S.ReinforcementWriter.open(p, _header_for(Counting(seed=1)), labels, mode="resume")
    S.ReinforcementWriter.open(p, _header_for(Counting(seed=0)), labels, mode="resume").close()
    with S.ReinforcementFile(p, accept_incomplete=True) as f:
        with pytest.raises(DatasetMismatchError, match="the images differ"):
            f.check_dataset(dataset_fingerprint(Counting(seed=1)), images=True)
        f.check_dataset(dataset_fingerprint(Counting(seed=0)), images=True)
        assert inspection.inspect_file(p, data=Counting(seed=1))["dataset_matches"] is False


def test_file_without_the_image_hash_still_resumes(tmp_path):
    ds = Counting(seed=0)
    p = str(tmp_path / "old.h5")
    labels = np.asarray(ds.targets)
    h = _header_for(ds)
    old = dataclasses.replace(h, fingerprint=dataclasses.replace(h.fingerprint, images_sha256=None))
    S.ReinforcementWriter.open(p, old, labels).close()
    with h5py.File(p, "r") as f:
        assert "images_sha256" not in json.loads(f.attrs["fingerprint"])
    assert old.mismatches(h) == [] and h.mismatches(old) == []
    S.ReinforcementWriter.open(p, _header_for(Counting(seed=1)), labels, mode="resume").close()


def test_a_complete_flag_with_an_unwritten_row_is_refused_on_open_and_resume_repairs_it(tmp_path):
    p = str(tmp_path / "flag.h5")
    h = make_header(n=NV, k=KV, topk=3, c=CV)
    rows = write_file(p, h, indices=[0, 1, 2, 4, 5], finish=False)
    with h5py.File(p, "r+") as f:
        f.attrs["complete"] = np.uint8(1)
    with pytest.raises(CorruptFileError, match=r"marked complete but 1 of 6 images are not written \(first: image 3\)"):
        S.ReinforcementFile(p)
    with S.ReinforcementFile(p, accept_incomplete=True) as f:
        assert f.complete and not f.written[3]
    from _store_util import make_rows as rows_of

    w = S.ReinforcementWriter.open(p, h, np.arange(NV) % CV, mode="resume")
    params, idx, val, _, _ = rows_of(h, [3])
    w.write([3], params, idx, val)
    w.finish()
    with S.ReinforcementFile(p) as f:
        assert f.written.all()
        np.testing.assert_array_equal(f.read_image(0).params, rows[0][0])
    assert inspection.verify_file(p)["ok"]


def test_verify_json_and_progress_bar(tmp_path, capsys):
    import json

    p = write_custom(str(tmp_path / "j.h5"), edit=_set("flip", 2))
    assert cli_main(["inspect", "--verify", "--json", p]) == 1
    out = capsys.readouterr()
    v = json.loads(out.out)["verify"]
    assert v["problem_count"] == 1 and v["records_checked"] == NV * KV
    assert "verify" in out.err  # the tqdm bar, on stderr
    assert cli_main(["inspect", "--verify", "--no-progress", p]) == 1
    assert "verify" not in capsys.readouterr().err


def test_verify_catches_a_top_k_naming_a_class_twice(tmp_path, capsys):
    """A view whose top-k repeats a class (an imported source can hold one) would give a target that is not a
    distribution, stopping KDLoss in the middle of an epoch: --verify names it."""
    p = str(tmp_path / "dup.h5")
    h = make_header("rrc", n=NV, k=KV, topk=3, c=CV)
    params, idx, val, _, _ = make_rows(h, range(NV))
    idx[2, 1, 1] = idx[2, 1, 0]  # image 2, view 1: its second class is its first again
    w = S.ReinforcementWriter.open(p, h, np.arange(NV) % CV)
    w.write(list(range(NV)), params, idx, val)
    w.finish()
    _expect_problem(capsys, p, "image 2: a view's top-k names a class twice")
