"""Datasets by identity: a file stores each row's path, and any listing of the same images trains on it.

The folder's names sort differently under torchvision's ImageFolder (lexicographic: img_10 before
img_2) and timm's ImageDataset (natural: img_2 before img_10). The file is reinforced from the
ImageFolder; timm's dataset, a Subset of either, a re-listed folder and DataLoader workers must
give every image the pixels and soft label the ImageFolder gives the same image.
"""

from __future__ import annotations

import os
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset
from torchvision.datasets import DatasetFolder, ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

import _reinforce_util as U
from reinforced_data import _datasets as D
from reinforced_data.dataset import ReinforcedDataset
from reinforced_data.errors import CorruptFileError, DatasetMismatchError
from reinforced_data.policy import Policy
from reinforced_data.generation import reinforce
from reinforced_data.fingerprint import Fingerprint
from reinforced_data.inspection import inspect_file
from reinforced_data.store import ReinforcementFile, merge
from reinforced_data.store.format import IDENTITIES, encode_identities
from reinforced_data.store.writer import ReinforcementWriter
from reinforced_data.synthetic import SyntheticImages

timm_data = pytest.importorskip("timm.data")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16
CLASSES = ("cat", "dog")  # the same order under both sorts: the labels agree
NUMBERS = (1, 2, 3, 10, 11, 20, 100)  # img_10 < img_2 lexicographically, img_2 < img_10 naturally


def _write_folder(root) -> str:
    src = SyntheticImages(len(CLASSES) * len(NUMBERS), 2, 24, 40, seed=5)
    j = 0
    for cls in CLASSES:
        os.makedirs(os.path.join(root, cls), exist_ok=True)
        for n in NUMBERS:
            img = Image.fromarray(src[j][0].permute(1, 2, 0).numpy())
            if n % 2:  # JPEGs (torchvision.io decodes them) and PNGs (PIL)
                img.save(os.path.join(root, cls, f"img_{n}.jpg"), quality=90)
            else:
                img.save(os.path.join(root, cls, f"img_{n}.png"))
            j += 1
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return _write_folder(tmp_path_factory.mktemp("identity"))


@pytest.fixture(scope="module")
def reinforced(folder, tmp_path_factory):
    """Reinforced from the ImageFolder, with a mixing policy: partners are file rows."""
    path = str(tmp_path_factory.mktemp("rf") / "folder.h5")
    reinforce(ImageFolder(folder), U.TinyTeacher(len(CLASSES)), path,
              policy=Policy.preset("rrc_ra_re_mix", output_size=(SIZE, SIZE)), num_views=4, topk=2, seed=3,
              batch_size=4, progress=False)
    return path


class Relisted(DatasetFolder):
    """The same folder listed in reverse order (a re-listed folder: another tool, another sort)."""

    def __init__(self, root, transform=None):
        super().__init__(root, default_loader, IMG_EXTENSIONS, transform=transform)
        self.samples = self.samples[::-1]
        self.targets = [t for _, t in self.samples]


class ReversedClasses(ImageFolder):
    """The same folder with its classes numbered in the other order."""

    def find_classes(self, directory):
        classes, _ = super().find_classes(directory)
        classes = classes[::-1]
        return classes, {c: i for i, c in enumerate(classes)}


def by_path(ds) -> dict[str, int]:
    """file (relative to the root) -> index in ``ds`` (a folder dataset)."""
    return {name: i for i, name in enumerate(D.dataset_files(ds))}


def uint8_transform():
    from torchvision.transforms import v2

    return v2.Compose([v2.PILToTensor(), v2.Resize((SIZE, SIZE))])


def test_the_two_orders_differ_and_the_file_stores_the_imagefolder_paths(folder, reinforced):
    tv, tm = ImageFolder(folder), timm_data.ImageDataset(folder)
    tv_files, tm_files = D.dataset_files(tv), D.dataset_files(tm)
    assert tv_files != tm_files and sorted(tv_files) == sorted(tm_files)
    assert tv_files.index("cat/img_10.png") < tv_files.index("cat/img_2.png")
    assert tm_files.index("cat/img_2.png") < tm_files.index("cat/img_10.png")
    with ReinforcementFile(reinforced) as f:
        assert f.has_identities and f.identities() == tv_files
        assert f.fingerprint.files_sha256 == Fingerprint.of(f.labels, tv_files).files_sha256
        same = D.match_rows(tv, f.identities(), f.labels, f.path)
        assert same is not None and same.rows is None and same.base_index is None
        other = D.match_rows(tm, f.identities(), f.labels, f.path)
        assert other.rows.tolist() == [tv_files.index(p) for p in tm_files]
        assert other.base_index.tolist() == [tm_files.index(p) for p in tv_files]


@pytest.mark.parametrize("make", ["timm", "relisted", "timm_subset", "imagefolder_subset"])
@pytest.mark.parametrize("p", [1.0, 0.5])
def test_every_item_equals_the_same_image_under_imagefolder(folder, reinforced, make, p):
    """Pixels and soft label of every item (reinforced or original), per item and by batch, equal
    those of the same image in the ImageFolder the file was made from; mixed views included."""
    t = uint8_transform()
    ref = ReinforcedDataset(ImageFolder(folder, transform=t), reinforced, out_dtype=torch.uint8, p=p, seed=4)
    ds = {"timm": lambda: timm_data.ImageDataset(folder, transform=t),
          "relisted": lambda: Relisted(folder, transform=t),
          "timm_subset": lambda: Subset(timm_data.ImageDataset(folder, transform=t), [9, 0, 4, 4, 13, 2]),
          "imagefolder_subset": lambda: Subset(ImageFolder(folder, transform=t), [12, 1, 7])}[make]()
    rd = ReinforcedDataset(ds, reinforced, out_dtype=torch.uint8, p=p, seed=4)
    assert len(rd) == len(ds)
    where = by_path(ImageFolder(folder))
    names = D.dataset_files(ds)  # of each item, Subsets included
    assert names != D.dataset_files(ImageFolder(folder))[:len(ds)]  # another order than the file's rows
    mixed = originals = 0
    with ReinforcementFile(reinforced) as f:
        for epoch in range(3):
            ref.set_epoch(epoch)
            rd.set_epoch(epoch)
            batch = rd.__getitems__(list(range(len(ds))))
            for d in range(len(ds)):
                i = where[names[d]]
                view = rd.choice(d)
                assert view == ref.choice(i)
                img, target = rd[d]
                ref_img, ref_target = ref[i]
                assert torch.equal(img, ref_img) and torch.equal(target, ref_target), (make, d, names[d])
                assert torch.equal(batch[d][0], img) and torch.equal(batch[d][1], target)
                if view < 0:
                    originals += 1
                    assert target.argmax() == f.labels[i]
                    continue
                rec = f.read(i, view)  # the soft label is the stored one of that image's row
                assert torch.equal(target, ref._soft_targets(rec.indices[None], rec.probs[None])[0])
                mixed += int(rec.params["mix_mode"] != 0)
    assert mixed > 0  # partners (file rows) were decoded through the mapping
    assert (originals > 0) == (p < 1.0)


def test_sparse_targets_are_the_rows_records(folder, reinforced):
    rd = ReinforcedDataset(timm_data.ImageDataset(folder), reinforced, out_dtype=torch.uint8, target="sparse")
    rd.set_epoch(1)
    where = by_path(ImageFolder(folder))
    files = D.dataset_files(rd.dataset)
    with ReinforcementFile(reinforced) as f:
        for d in range(len(rd)):
            rec = f.read(where[files[d]], rd.choice(d))  # the record of that image's row
            idx, probs = rd[d][1]
            e_idx, e_probs = rd._soft_targets(rec.indices[None], rec.probs[None])[0]
            assert idx.tolist() == rec.indices.tolist() == e_idx.tolist() and torch.equal(probs, e_probs)


@pytest.mark.subprocess
@pytest.mark.parametrize("context", ["fork", pytest.param("spawn", marks=pytest.mark.slow)])  # spawn: a torch import
def test_workers_and_pickling_go_through_the_mapping(folder, reinforced, context):
    import pickle

    rd = ReinforcedDataset(timm_data.ImageDataset(folder), reinforced, out_dtype=torch.uint8)
    rd.set_epoch(2)
    expected = [rd[d] for d in range(len(rd))]
    clone = pickle.loads(pickle.dumps(rd))
    assert all(torch.equal(clone[d][0], expected[d][0]) for d in range(len(rd)))
    loader = DataLoader(rd, batch_size=3, num_workers=2, multiprocessing_context=context)
    got = [item for images, targets in loader for item in zip(images, targets)]
    assert len(got) == len(expected)
    for (img, target), (e_img, e_target) in zip(got, expected):
        assert torch.equal(img, e_img) and torch.equal(target, e_target)
    batched = [item for images, targets in rd.loader(batch_size=4, num_workers=2) for item in zip(images, targets)]
    for (img, target), (e_img, e_target) in zip(batched, expected):
        assert torch.equal(img, e_img) and torch.equal(target, e_target)


def test_wrapping_timm_decodes_at_most_the_fingerprint_sample(folder, reinforced, monkeypatch):
    """Labels and paths come from timm's reader; only the 8 images of the fingerprint sample are decoded."""
    ds = timm_data.ImageDataset(folder, transform=uint8_transform())
    calls = {"torchvision.io": 0, "Image.open": 0, "item": 0}
    decode_file, image_open = D.decode_file, Image.open

    def counted_decode(path):
        img = decode_file(path)
        calls["torchvision.io"] += img is not None  # None: left to PIL (a PNG), counted there
        return img

    def counted_open(*args, **kwargs):
        calls["Image.open"] += 1
        return image_open(*args, **kwargs)

    def no_items(self, index):
        calls["item"] += 1
        raise AssertionError("timm's ImageDataset decoded an item")

    monkeypatch.setattr(D, "decode_file", counted_decode)
    monkeypatch.setattr(Image, "open", counted_open)
    monkeypatch.setattr(type(ds), "__getitem__", no_items)
    rd = ReinforcedDataset(ds, reinforced, out_dtype=torch.uint8)
    assert calls["item"] == 0 and len(rd) == len(ds)
    # the fingerprint sample, each image once: JPEGs by torchvision.io, PNGs by PIL
    assert calls["torchvision.io"] > 0 and calls["Image.open"] > 0
    assert calls["torchvision.io"] + calls["Image.open"] == D.IMAGE_SAMPLE_SIZE


def _copy(folder: str, dest) -> str:
    shutil.copytree(folder, dest)
    return str(dest)


def test_a_removed_or_added_file_is_named(folder, reinforced, tmp_path):
    removed = _copy(folder, tmp_path / "removed")
    os.remove(os.path.join(removed, "dog", "img_20.png"))
    with pytest.raises(DatasetMismatchError, match=r"1 of the file's images is missing from the dataset "
                                                   r"\(first: dog/img_20\.png\)") as e:
        ReinforcedDataset(timm_data.ImageDataset(removed), reinforced)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetMismatchError, match=r"missing from the dataset \(first: dog/img_20\.png\)"):
        ReinforcedDataset(ImageFolder(removed), reinforced)
    added = _copy(folder, tmp_path / "added")
    for name in ("img_5.png", "img_50.png"):
        shutil.copy(os.path.join(added, "cat", "img_1.jpg"), os.path.join(added, "cat", name))
    with pytest.raises(DatasetMismatchError, match=r"2 of the dataset's images are not in the file "
                                                   r"\(first: cat/img_5\.png\)"):
        ReinforcedDataset(timm_data.ImageDataset(added), reinforced)
    both = _copy(removed, tmp_path / "both")
    shutil.copy(os.path.join(both, "cat", "img_1.jpg"), os.path.join(both, "cat", "img_7.png"))
    with pytest.raises(DatasetMismatchError, match=r"1 of the dataset's images is not in the file \(first: "
                                                   r"cat/img_7\.png\); 1 of the file's images is missing"):
        ReinforcedDataset(ImageFolder(both), reinforced)


def test_a_subset_may_leave_images_out_but_not_bring_others(folder, reinforced, tmp_path):
    added = _copy(folder, tmp_path / "added")
    shutil.copy(os.path.join(added, "cat", "img_1.jpg"), os.path.join(added, "cat", "img_9.png"))
    ds = ImageFolder(added)
    new = D.dataset_files(ds).index("cat/img_9.png")
    others = [i for i in range(len(ds)) if i != new]
    rd = ReinforcedDataset(Subset(ds, others), reinforced, out_dtype=torch.uint8)  # the file's images only
    assert len(rd) == len(others)
    with pytest.raises(DatasetMismatchError, match=r"1 of the dataset's images is not in the file "
                                                   r"\(first: cat/img_9\.png\)"):
        ReinforcedDataset(Subset(ds, [0, new]), reinforced)


def test_labels_must_agree_per_image(folder, reinforced):
    with pytest.raises(DatasetMismatchError, match=r"14 images have other labels \(first: cat/img_1\.jpg is class 0 "
                                                   r"in the file, 1 in the dataset"):
        ReinforcedDataset(ReversedClasses(folder), reinforced)


def test_changed_pixels_are_still_refused(folder, reinforced, tmp_path):
    changed = _copy(folder, tmp_path / "changed")
    first = D.dataset_files(ImageFolder(folder))[0]
    Image.new("RGB", (30, 30), (9, 9, 9)).save(os.path.join(changed, first))
    with pytest.raises(DatasetMismatchError, match="the images differ"):
        ReinforcedDataset(timm_data.ImageDataset(changed), reinforced)


def _without_identities(src: str, dst) -> str:
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h:
        del h[IDENTITIES]  # what a writer from before identities wrote (the digest does not cover datasets)
    return str(dst)


def test_a_file_without_identities_keeps_the_positional_rule(folder, reinforced, tmp_path):
    old = _without_identities(reinforced, tmp_path / "old.h5")
    with ReinforcementFile(old) as f:
        assert not f.has_identities and f.identities() is None
        assert D.match_rows(ImageFolder(folder), f.identities(), f.labels, f.path) is None
    a = ReinforcedDataset(ImageFolder(folder), old, out_dtype=torch.uint8)
    b = ReinforcedDataset(ImageFolder(folder), reinforced, out_dtype=torch.uint8)
    a.set_epoch(0), b.set_epoch(0)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    with pytest.raises(DatasetMismatchError, match=r"the file lists differ.*stores no identities.*by position") as e:
        ReinforcedDataset(timm_data.ImageDataset(folder), old)
    assert "\n" not in str(e.value)
    with pytest.raises(DatasetMismatchError, match="the file holds 14 images, the dataset 3"):
        ReinforcedDataset(Subset(ImageFolder(folder), [0, 1, 2]), old)


def test_edited_identities_are_refused(reinforced, tmp_path):
    path = str(tmp_path / "edited.h5")
    shutil.copy(reinforced, path)
    with h5py.File(path, "r+") as h:
        blob = h[IDENTITIES][()]
        blob[blob == ord("1")] = ord("4")
        del h[IDENTITIES]
        h.create_dataset(IDENTITIES, data=blob)
    with ReinforcementFile(path) as f, pytest.raises(CorruptFileError, match="does not hash to its fingerprint"):
        f.identities()


def test_inspect_data_resume_and_merge_keep_identities(folder, reinforced, tmp_path):
    tm = timm_data.ImageDataset(folder)
    info = inspect_file(reinforced, data=tm, verify=True)
    assert info["dataset_matches"] and info["verify"]["ok"], info
    # resume a finished file: it keeps its identities
    resumed = str(tmp_path / "resumed.h5")
    shutil.copy(reinforced, resumed)
    reinforce(ImageFolder(folder), U.TinyTeacher(len(CLASSES)), resumed,
              policy=Policy.preset("rrc_ra_re_mix", output_size=(SIZE, SIZE)), num_views=4, topk=2, seed=3,
              batch_size=4, progress=False, resume=True)
    with ReinforcementFile(resumed) as f:
        files = f.identities()
    assert files == D.dataset_files(ImageFolder(folder))
    # two ranks, then merge: every shard and the merged file store them
    out = tmp_path / "sharded.h5"
    for rank in range(2):
        reinforce(ImageFolder(folder), U.TinyTeacher(len(CLASSES)), str(out),
                  policy=Policy.preset("rrc_ra_re_mix", output_size=(SIZE, SIZE)), num_views=4, topk=2, seed=3,
                  batch_size=4, progress=False, rank=rank, world_size=2)
        with ReinforcementFile(str(tmp_path / f"sharded-0000{rank}-of-00002.h5"), accept_incomplete=True) as f:
            assert f.identities() == files
    merge(str(out))
    with ReinforcementFile(str(out)) as f:
        assert f.identities() == files
    a = ReinforcedDataset(timm_data.ImageDataset(folder), str(out), out_dtype=torch.uint8)
    b = ReinforcedDataset(timm_data.ImageDataset(folder), reinforced, out_dtype=torch.uint8)
    a.set_epoch(0), b.set_epoch(0)
    assert all(torch.equal(a[d][0], b[d][0]) for d in range(len(a)))


def test_a_dataset_without_a_file_list_stores_no_identities(tmp_path):
    ds = SyntheticImages(6, 2, 20, 24, seed=1)
    path = str(tmp_path / "synthetic.h5")
    reinforce(ds, U.TinyTeacher(2), path, policy=Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)), num_views=2,
              topk=2, progress=False)
    with ReinforcementFile(path) as f:
        assert not f.has_identities and D.match_rows(ds, f.identities(), f.labels, f.path) is None
    assert encode_identities(["a", "a"]) is None and encode_identities(["a\nb"]) is None


def test_identities_cost_about_3_bytes_per_imagenet_like_name(tmp_path):
    """The stored identities of ImageNet-like names (class wnid / wnid_number.JPEG, sorted as
    ImageFolder lists them): the bytes per image docs/format.md quotes."""
    rng = np.random.default_rng(0)
    wnids = sorted({f"n{int(w):08d}" for w in rng.integers(1_000_000, 15_000_000, 120)})[:100]
    files = sorted(f"{w}/{w}_{n}.JPEG" for w in wnids for n in rng.choice(np.arange(1, 50000), 1300, replace=False))
    labels = np.repeat(np.arange(len(wnids)), 1300)
    from reinforced_data.store import Header

    header = Header(num_images=len(files), num_views=1, topk=1, num_classes=len(wnids),
                    policy=Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)), teachers=[],
                    fingerprint=Fingerprint.of(labels, files, len(wnids)))
    path = str(tmp_path / "names.h5")
    with ReinforcementWriter.open(path, header, labels, identities=files):
        pass
    with h5py.File(path, "r") as h:
        stored = h[IDENTITIES].id.get_storage_size()
        raw = h[IDENTITIES].size
    per_image = stored / len(files)
    print(f"identities: {raw / len(files):.2f} B/image raw, {per_image:.2f} B/image stored ({len(files)} names)")
    assert 2.0 < per_image < 4.0


def test_show_finds_the_rows_image_in_another_listing(folder, reinforced):
    """`show` draws file row i: the same panels (source, views, partners) from timm's listing as from
    the ImageFolder."""
    from reinforced_data.show import view_panels

    for row in (1, 9):
        ref = view_panels(reinforced, ImageFolder(folder), row, views=4)
        got = view_panels(reinforced, timm_data.ImageDataset(folder), row, views=4)
        assert len(got) == len(ref) == 2  # the mixing policy adds a row of partners
        for ref_row, got_row in zip(ref, got):
            for a, b in zip(ref_row, got_row):
                assert a.caption == b.caption
                assert (a.image is None) == (b.image is None) and (a.image is None or torch.equal(a.image, b.image))


def test_relative_paths_are_os_path_relpaths():
    """The fast relative path gives os.path.relpath's answer (files_sha256 hashes it: old files must match)."""
    cases = [("/d/root/a/b.jpg", "/d/root"), ("/d/root/a/b.jpg", "/d/root/"), ("root/a/b.jpg", "root"),
             ("./root/a/b.jpg", "./root"), ("/d/root//a/b.jpg", "/d/root"), ("/d/root/./a/b.jpg", "/d/root"),
             ("/d/root/../x/b.jpg", "/d/root"), ("/d/other/b.jpg", "/d/root"), ("/d/rootx/b.jpg", "/d/root"),
             ("root/a/b.jpg", os.path.abspath("root")), ("/b.jpg", "/")]
    for path, root in cases:
        assert D._relpath(path, root) == os.path.relpath(path, root), (path, root)


def test_a_file_reinforced_from_a_subset_trains_that_subset_in_another_listing(folder, tmp_path):
    """Rows of a Subset's file map into the whole folder: the same images through timm's listing, in
    another order, give the items the positional rule gives the Subset it was made from."""
    tv = ImageFolder(folder)
    picked = [12, 3, 0, 7, 9]
    path = str(tmp_path / "subset.h5")
    reinforce(Subset(tv, picked), U.TinyTeacher(len(CLASSES)), path,
              policy=Policy.preset("rrc_ra_re_mix", output_size=(SIZE, SIZE)), num_views=3, topk=2, seed=8,
              progress=False)
    files = [D.dataset_files(tv)[i] for i in picked]
    with ReinforcementFile(path) as f:
        assert f.identities() == files
    positional = ReinforcedDataset(Subset(tv, picked), _without_identities(path, tmp_path / "old.h5"),
                                   out_dtype=torch.uint8)
    tm = timm_data.ImageDataset(folder)
    where = by_path(tm)
    listed = [where[name] for name in files[::-1]]  # the same images, last first
    mapped = ReinforcedDataset(Subset(tm, listed), path, out_dtype=torch.uint8)
    with pytest.raises(DatasetMismatchError, match="9 of the dataset's images are not in the file"):
        ReinforcedDataset(tm, path)
    for ds in (positional, mapped):
        ds.set_epoch(5)
    for d in range(len(picked)):
        img, target = mapped[d]
        e_img, e_target = positional[len(picked) - 1 - d]
        assert torch.equal(img, e_img) and torch.equal(target, e_target)


def test_resuming_a_subset_file_written_before_identities_is_not_a_settings_mismatch(folder, tmp_path):
    """Before identities a Subset had no file list: its file's fingerprint holds files_sha256 null."""
    import json

    from reinforced_data.store.writer import seal_header

    tv = ImageFolder(folder)
    path = str(tmp_path / "old-subset.h5")
    kwargs = dict(policy=Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)), num_views=2, topk=2, seed=1,
                  progress=False)
    reinforce(Subset(tv, [1, 2, 3, 4]), U.TinyTeacher(len(CLASSES)), path, **kwargs)
    with h5py.File(path, "r+") as h:  # as the writer before identities wrote it, unfinished
        fp = json.loads(h.attrs["fingerprint"])
        fp["files_sha256"] = None
        h.attrs["fingerprint"] = json.dumps(fp, sort_keys=True)
        del h[IDENTITIES]
        h["written"][2:] = 0
        h.attrs["complete"] = np.uint8(0)
        seal_header(h)
    reinforce(Subset(tv, [1, 2, 3, 4]), U.TinyTeacher(len(CLASSES)), path, resume=True, **kwargs)
    with ReinforcementFile(path) as f:
        assert f.complete and f.written.all() and not f.has_identities


def _killed_writer(path: str, header, labels, files) -> None:
    """Create the file, commit one row, and die without closing it (as kill -9 would)."""
    w = ReinforcementWriter.open(path, header, labels, identities=files)
    params = np.zeros((1, header.num_views), dtype=header.policy.param_dtype())
    top = np.zeros((1, header.num_views, header.topk), dtype=np.int64)
    probs = np.full((1, header.num_views, header.topk), 0.5)
    w.write([0], params, top, probs)
    w.commit()
    os._exit(0)


@pytest.mark.subprocess
def test_recovering_a_killed_writers_file_keeps_its_identities(tmp_path, caplog):
    import multiprocessing as mp

    from reinforced_data.store import Header

    files = [f"c/img_{i}.png" for i in range(5)]
    labels = np.zeros(5, dtype=np.int64)
    header = Header(num_images=5, num_views=2, topk=1, num_classes=2,
                    policy=Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)), teachers=[],
                    fingerprint=Fingerprint.of(labels, files, 2))
    path = str(tmp_path / "killed.h5")
    p = mp.get_context("fork").Process(target=_killed_writer, args=(path, header, labels, files))
    p.start()
    p.join()
    assert p.exitcode == 0
    with h5py.File(path, "r", swmr=True) as h:  # still marked open for writing
        assert IDENTITIES in h
    w = ReinforcementWriter.open(path, header, labels, mode="resume", identities=files)
    assert "recovering its committed rows" in caplog.text  # copied into a clean file
    assert w.written.tolist() == [True, False, False, False, False]
    w.close()
    with ReinforcementFile(path, accept_incomplete=True) as f:
        assert f.identities() == files


def test_damaged_identities_are_damage_and_another_folder_is_the_wrong_dataset(folder, reinforced, tmp_path, capsys):
    """--verify reads the identities (a damaged chunk there is DAMAGED, and training refuses the file with a
    CorruptFileError, not h5py's error); --verify --data with another folder is WRONG DATASET, not damage."""
    from reinforced_data.cli import main as cli_main

    path = str(tmp_path / "damaged.h5")
    shutil.copy(reinforced, path)
    with h5py.File(path, "r") as f:
        at = f[IDENTITIES].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(at.byte_offset + at.size // 2)
        fh.write(bytes(8))
    with pytest.raises(CorruptFileError, match="is damaged"):
        ReinforcedDataset(ImageFolder(folder), path)
    capsys.readouterr()
    assert cli_main(["inspect", "--verify", "--no-progress", path]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("verdict:          DAMAGED")
    other = tmp_path / "other"
    shutil.copytree(folder, other)
    os.remove(next(str(p) for p in sorted(other.rglob("*.png"))))
    assert cli_main(["inspect", "--verify", "--no-progress", "--data", str(other), reinforced]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("verdict:          WRONG DATASET")
