"""The one decode path (_datasets): generation and training see the same pixels, on every kind of file."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

import _reinforce_util as U
from reinforced_data import _datasets as D
from reinforced_data.dataset import ReinforcedDataset
from reinforced_data.errors import ConfigError, DatasetMismatchError
from reinforced_data.policy import Policy
from reinforced_data.generation import _Decoded, reinforce
from reinforced_data._replay import replay
from reinforced_data.store import ReinforcementFile
from reinforced_data.synthetic import SyntheticImages
from reinforced_data.teachers import TeacherEnsemble

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = 16
# (class, file name, PIL mode, format): JPEG and PNG, RGB, grayscale, RGBA and palette
KINDS = [
    ("a", "rgb.jpg", "RGB", "JPEG"), ("a", "gray.jpg", "L", "JPEG"), ("a", "rgb2.jpg", "RGB", "JPEG"),
    ("b", "rgb.png", "RGB", "PNG"), ("b", "gray.png", "L", "PNG"), ("b", "rgba.png", "RGBA", "PNG"),
    ("c", "palette.png", "P", "PNG"), ("c", "cmyk.jpg", "CMYK", "JPEG"), ("c", "la.png", "LA", "PNG"),
]


def train_transform():
    from torchvision.transforms import v2

    return v2.Compose([v2.PILToTensor(), v2.Resize((SIZE, SIZE)), v2.ToDtype(torch.float32, scale=True)])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    src = SyntheticImages(len(KINDS), 3, 20, 40, seed=9)
    rng = np.random.default_rng(0)
    for j, (cls, name, mode, fmt) in enumerate(KINDS):
        os.makedirs(root / cls, exist_ok=True)
        rgb = Image.fromarray(src[j][0].permute(1, 2, 0).numpy())
        if mode == "RGBA" or mode == "LA":
            img = rgb.convert(mode)
            alpha = Image.fromarray(rng.integers(0, 256, size=(rgb.height, rgb.width), dtype=np.uint8))
            img.putalpha(alpha)
        elif mode == "P":
            img = rgb.convert("P", palette=Image.ADAPTIVE, colors=32)
        else:
            img = rgb.convert(mode)
        img.save(root / cls / name, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return str(root)


@pytest.fixture(scope="module")
def reinforced(folder, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("rf") / "folder.h5")
    reinforce(ImageFolder(folder), U.TinyTeacher(3), path, policy=Policy.preset("rrc_ra_re", output_size=(SIZE, SIZE)),
              num_views=3, topk=2, seed=1, progress=False)
    return path


def pil_pixels(path: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def test_generation_and_training_decode_the_same_pixels(folder):
    plain = ImageFolder(folder)
    user = ImageFolder(folder, transform=train_transform())
    gen = _Decoded(plain)
    train = D.RawImages(user, strip=True)
    assert train.files and len(train) == len(KINDS)
    modes = set()
    for i, (path, label) in enumerate(plain.samples):
        _, g, glabel, _ = gen[i]
        t, tlabel = train[i]
        assert g.dtype == t.dtype == torch.uint8 and g.shape[0] == 3
        assert torch.equal(g, t) and glabel == tlabel == label
        assert torch.equal(t, pil_pixels(path))
        assert t.stride() == (1, 3 * t.shape[2], 3)  # a channels-last view of the decoded array, no copy
        modes.add(Image.open(path).mode)
    assert {"RGB", "L", "RGBA", "P", "CMYK", "LA"} <= modes
    assert user.transform is not None  # never mutated


def test_the_tensor_decoder_gives_the_pil_loaders_pixels_on_every_mode(folder):
    """JPEG (RGB, gray) goes through torchvision.io; CMYK JPEGs and every PNG stay with PIL; on
    every file the two decoders give the same bytes."""
    plain = ImageFolder(folder)
    tensor, pil = D.RawImages(plain, decoder="tensor"), D.RawImages(plain, decoder="pil")
    decoded = set()
    for i, (path, _) in enumerate(plain.samples):
        mode = Image.open(path).mode
        fast = D.decode_file(path)
        assert (fast is None) == (mode == "CMYK" or path.endswith(".png")), (path, mode)
        if fast is not None:
            decoded.add(mode)
            assert torch.equal(fast, pil_pixels(path))
        assert torch.equal(tensor[i][0], pil[i][0])
    assert decoded == {"RGB", "L"}
    with pytest.raises(ValueError, match="decoder='png'"):
        D.RawImages(plain, decoder="png")


def test_the_tensor_decoder_leaves_other_files_and_loaders_to_pil(folder, tmp_path):
    path = str(tmp_path / "deep.png")
    Image.fromarray(np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).save(path)  # 16-bit gray
    assert D.decode_file(path) is None
    cut = str(tmp_path / "cut.jpg")
    with open(ImageFolder(folder).samples[0][0], "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read()[:40])  # the frame header is missing
    assert D.decode_file(cut) is None and D.decode_file(str(tmp_path / "missing.jpg")) is None
    # a damaged PNG (libpng inside torchvision.io would crash the process) is PIL's to refuse
    png = str(tmp_path / "bad.png")
    Image.fromarray(np.arange(40 * 50 * 3, dtype=np.uint8).reshape(40, 50, 3)).save(png)
    data = bytearray(open(png, "rb").read())
    data[len(data) // 2] ^= 4
    open(png, "wb").write(bytes(data))
    assert D.decode_file(png) is None
    # a JPEG whose header claims more pixels than PIL's bomb limit is left to PIL, which refuses it
    bomb = str(tmp_path / "bomb.jpg")
    Image.new("L", (8, 8)).save(bomb)
    data = bytearray(open(bomb, "rb").read())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    open(bomb, "wb").write(bytes(data))
    assert D.decode_file(bomb) is None
    os.makedirs(tmp_path / "bombs" / "a")
    os.replace(bomb, tmp_path / "bombs" / "a" / "bomb.jpg")
    with pytest.raises(ValueError, match=r"image 0: .*bomb.jpg cannot be decoded .*exceeds limit"):
        D.RawImages(ImageFolder(str(tmp_path / "bombs")))[0]
    calls = []

    def loader(p):
        calls.append(p)
        return Image.open(p).convert("RGB")

    own = D.RawImages(ImageFolder(folder, loader=loader))
    own[0]
    assert calls == [ImageFolder(folder).samples[0][0]]  # a loader of the user's own is always called


def test_replayed_views_are_the_views_the_teacher_labelled(folder, reinforced):
    ds = ReinforcedDataset(ImageFolder(folder, transform=train_transform()), reinforced, out_dtype=torch.uint8)
    raw = D.RawImages(ImageFolder(folder))
    ens = TeacherEnsemble(U.TinyTeacher(3))
    f = ReinforcementFile(reinforced)
    for e in (0, 1):
        ds.set_epoch(e)
        for i in range(len(ds)):
            v = ds.choice(i)
            img, target = ds[i]
            rec = f.read(i, v)
            assert torch.equal(img, replay([raw[i][0]], rec.params, f.policy)[0])
            probs = ens(img[None])[0]
            top_p, top_i = probs.topk(2)
            assert (top_i.numpy() == rec.indices).all()
            assert np.allclose(top_p.numpy(), rec.probs, rtol=0.035, atol=1e-6)
            assert int(target.argmax()) == int(rec.indices[0])


def test_missing_and_broken_image_files_name_the_index_and_path(folder, reinforced, tmp_path):
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(folder, copy)
    ds = ReinforcedDataset(ImageFolder(copy), reinforced)
    path, _ = ds.dataset.samples[4]
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=rf"image 4: {path} does not exist"):
        ds[4]
    path2, _ = ds.dataset.samples[2]
    with open(path2, "wb") as fh:
        fh.write(b"not an image")
    with pytest.raises(ValueError, match=rf"image 2: {path2} cannot be decoded"):
        ds[2]
    ds[0]  # the others still read


# ---------------------------------------------------------------------- to_uint8_image
def test_to_uint8_image_accepts_every_layout():
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    chw = torch.from_numpy(hwc).permute(2, 0, 1)
    out = D.to_uint8_image(Image.fromarray(hwc), 0)
    assert torch.equal(out, chw) and out.stride() == (1, 21, 3)
    out = D.to_uint8_image(hwc, 0)
    assert torch.equal(out, chw) and out.data_ptr() == torch.from_numpy(hwc).data_ptr()  # a view, no copy
    assert torch.equal(D.to_uint8_image(chw.contiguous(), 0), chw)
    gray = hwc[..., 0]
    assert torch.equal(D.to_uint8_image(gray, 0), torch.from_numpy(gray).expand(3, -1, -1))
    assert torch.equal(D.to_uint8_image(torch.from_numpy(gray)[None], 0), torch.from_numpy(gray).expand(3, -1, -1))
    assert torch.equal(D.to_uint8_image(hwc[..., :1], 0), torch.from_numpy(gray).expand(3, -1, -1))
    rgba = np.concatenate([hwc, hwc[..., :1]], axis=2)
    assert torch.equal(D.to_uint8_image(rgba, 0), chw)
    assert torch.equal(D.to_uint8_image(Image.fromarray(rgba, "RGBA"), 0), chw)
    assert torch.equal(D.to_uint8_image(Image.fromarray(gray, "L"), 0), torch.from_numpy(gray).expand(3, -1, -1))
    odd = torch.from_numpy(hwc).permute(2, 1, 0).transpose(1, 2)  # strided neither CHW nor channels-last
    assert torch.equal(D.to_uint8_image(odd, 0), chw)


def test_to_uint8_image_refuses_what_it_cannot_replay():
    with pytest.raises(TypeError, match="image 3 is torch.float32"):
        D.to_uint8_image(torch.zeros(3, 4, 4), 3)
    with pytest.raises(TypeError, match="image 5"):
        D.to_uint8_image("a string", 5)
    with pytest.raises(ValueError, match=r"image 2 has shape \(2, 4, 4\)"):
        D.to_uint8_image(torch.zeros(2, 4, 4, dtype=torch.uint8), 2)


# ---------------------------------------------------------------------- RawImages
class _Items(torch.utils.data.Dataset):
    """A map-style dataset with a transform and a target_transform, not file-backed."""

    def __init__(self, transform=None, target_transform=None):
        self.src = SyntheticImages(4, 2, 10, 12, seed=0)
        self.transform, self.target_transform = transform, target_transform

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        img, label = self.src[i]
        if self.transform is not None:
            img = self.transform(img)
        return img, (self.target_transform(label) if self.target_transform else label)


def test_raw_images_bypass_the_users_transform_without_mutating_it():
    t = lambda x: x.float()  # noqa: E731
    items = _Items(transform=t)
    raw = D.RawImages(items, strip=True)
    assert not raw.files and raw.path(0) is None
    img, label = raw[1]
    want, wlabel = items.src[1]
    assert torch.equal(img, want) and label == wlabel
    assert items.transform is t and items[1][0].dtype == torch.float32
    # generation refuses a transformed dataset: training would bypass what the teacher saw
    with pytest.raises(TypeError, match="image 0 is torch.float32; .*remove the dataset's transform"):
        D.RawImages(items)[0]
    with pytest.raises(TypeError, match="image 0: the dataset applies its own transform"):
        D.RawImages(_Items(transform=lambda x: x.flip(2)))[0]  # uint8 out, but not the raw image
    assert torch.equal(D.RawImages(_Items())[2][0], items.src[2][0])


def test_raw_images_keep_a_torchvision_target_transform(folder):
    from torchvision.datasets import DatasetFolder

    ds = ImageFolder(folder, transform=train_transform(), target_transform=lambda y: y + 10)
    assert D.RawImages(ds, strip=True)[0][1] == ds.samples[0][1]  # file-backed: labels from samples
    clone = D._without_transform(ds)
    assert clone is not ds and clone.transform is None and ds.transform is not None
    assert clone.transforms.target_transform is ds.target_transform
    assert isinstance(ds, DatasetFolder)


# ---------------------------------------------------------------------- labels and identity
def test_labels_files_classes_and_fingerprint(folder, tmp_path):
    import shutil

    ds = ImageFolder(folder)
    labels = D.dataset_labels(ds)
    assert labels.dtype == np.int64 and labels.tolist() == [s[1] for s in ds.samples]
    files = D.dataset_files(ds)
    assert files[0] == "a/gray.jpg" and all("/" in p and not os.path.isabs(p) for p in files)
    assert D.class_names(ds) == ["a", "b", "c"] and D.dataset_num_classes(ds) == 3
    moved = str(tmp_path / "moved")
    shutil.copytree(folder, moved)
    assert D.dataset_fingerprint(ImageFolder(moved)) == D.dataset_fingerprint(ds)  # the root does not matter
    assert D.dataset_labels(_Items()).tolist() == _Items().src.targets  # read item by item without .targets
    assert D.dataset_files(_Items()) is None and D.class_names(_Items()) is None
    with pytest.raises(ValueError, match="4 items but 3 labels"):
        D.as_labels([0, 1, 1], 4)
    with pytest.raises(ValueError, match="image 1 has -2"):
        D.as_labels([0, -2, 1], 3)


def test_resolve_dataset(folder):
    assert isinstance(D.resolve_dataset(folder), ImageFolder)
    s = D.resolve_dataset("synthetic:num_images=6,num_classes=3,min_size=10,max_size=12")
    assert isinstance(s, SyntheticImages) and len(s) == 6 and s.num_classes == 3
    assert len(D.resolve_dataset("synthetic:5")) == 5
    items = _Items()
    assert D.resolve_dataset(items) is items
    with pytest.raises(ValueError, match="synthetic:num_images"):
        D.resolve_dataset("synthetic:bogus=3")
    with pytest.raises(FileNotFoundError):
        D.resolve_dataset(os.path.join(folder, "nope"))
    with pytest.raises(TypeError, match="map-style"):
        D.resolve_dataset(3)


@pytest.mark.parametrize("kwargs, needle", [({"num_images": 0}, "num_images=0 and num_classes=8 must be >= 1"),
                                             ({"num_classes": 0}, "must be >= 1"),
                                             ({"min_size": 4}, "need 8 <= min_size <= max_size, got 4, 96"),
                                             ({"min_size": 40, "max_size": 20}, "got 40, 20")])
def test_synthetic_settings_refused_with_a_config_error(kwargs, needle):
    with pytest.raises(ConfigError, match=needle) as e:
        SyntheticImages(**kwargs)
    assert isinstance(e.value, ValueError)  # callers catching ValueError still catch it
    spec = "synthetic:" + ",".join(f"{k}={v}" for k, v in kwargs.items())
    with pytest.raises(ConfigError, match=f"dataset '{spec}': .*{needle}.*; use synthetic:N or synthetic:num_images="):
        D.resolve_dataset(spec)


def test_a_subset_of_a_transformed_dataset_reads_its_raw_images():
    from torch.utils.data import Subset

    items = _Items(transform=lambda x: x.float())
    sub = Subset(items, [3, 1])
    raw = D.RawImages(sub, strip=True)
    assert torch.equal(raw[0][0], items.src[3][0]) and raw[1][1] == items.src.targets[1]
    assert sub.dataset is items and items.transform is not None  # the caller's objects are untouched
    assert D.dataset_labels(sub).tolist() == [items.src.targets[3], items.src.targets[1]]
    plain = Subset(_Items(), [0])
    assert D._without_transform(plain) is plain


def test_timms_image_dataset_is_read_by_path_with_labels_from_its_reader(folder, monkeypatch):
    """timm's ImageDataset: labels, files and classes from its reader without decoding, pixels and
    labels equal to its own items, and an item read by path through the one decode path."""
    timm_data = pytest.importorskip("timm.data")
    ds = timm_data.ImageDataset(folder, transform=train_transform())
    plain = timm_data.ImageDataset(folder)

    def no_items(self, index):
        raise AssertionError("an item was decoded")

    monkeypatch.setattr(type(ds), "__getitem__", no_items)
    labels = D.dataset_labels(ds)
    files = D.dataset_files(ds)
    assert D.class_names(ds) == ["a", "b", "c"] and D.dataset_num_classes(ds) == 3
    monkeypatch.undo()
    assert labels.tolist() == [t for _, t in plain.reader.samples]
    assert files == [os.path.relpath(p, folder) for p, _ in plain.reader.samples]
    raw = D.RawImages(ds, strip=True)
    assert raw.files and raw.path(0) == plain.reader.samples[0][0]
    for i in range(len(plain)):
        img, label = plain[i]
        assert torch.equal(raw[i][0], torch.from_numpy(np.array(img)).permute(2, 0, 1)) and raw[i][1] == label
    assert ds.transform is not None  # never mutated


def test_a_file_whose_pixels_torchvision_io_does_not_reproduce_is_read_with_pil(folder, reinforced, monkeypatch,
                                                                                   caplog, tmp_path):
    """Where torchvision.io decodes other pixels than the file was made from (another library build,
    simulated), the wrapper reads every image with PIL, says so once, and replays the file's views."""
    real = D.decode_file

    def other_build(path):
        img = real(path)
        return None if img is None else img ^ 1  # every value off by one bit

    expected = ReinforcedDataset(ImageFolder(folder), reinforced, out_dtype=torch.uint8)
    expected.set_epoch(0)
    views = [expected[i][0] for i in range(len(expected))]
    monkeypatch.setattr(D, "decode_file", other_build)
    with caplog.at_level("WARNING"):
        ds = ReinforcedDataset(ImageFolder(folder), reinforced, out_dtype=torch.uint8)
    assert ds._raw.decoder == "pil" and "reading every image with the dataset's PIL loader" in caplog.text
    assert ReinforcementFile(reinforced).fingerprint.images_decoder == "torchvision.io"
    ds.set_epoch(0)
    for i in range(len(ds)):
        assert torch.equal(ds[i][0], views[i])
    # neither decoder gives the file's pixels (an image changed): one error
    import shutil

    copy = str(tmp_path / "copy")
    shutil.copytree(folder, copy)
    first = ImageFolder(copy).samples[0][0]  # the fingerprint sample holds the first image
    Image.open(first).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(first, quality=85)
    with pytest.raises(DatasetMismatchError, match="was made for another dataset"):
        ReinforcedDataset(ImageFolder(copy), reinforced)


def test_both_decoders_give_the_same_bytes_on_imagenet_sized_photos(tmp_path):
    """The loader's photo set (ImageNet-sized JPEGs of scikit-image's photos, quality 90): the
    tensor decoder's pixels are the PIL loader's, byte for byte, on every photo."""
    pytest.importorskip("skimage")
    import sys

    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import _photos

    root = str(tmp_path / "photos")
    _photos.write_image_folder(_photos.make_photos(24, seed=5), root)
    ds = ImageFolder(root)
    tensor, pil = D.RawImages(ds, decoder="tensor"), D.RawImages(ds, decoder="pil")
    assert tensor._tensor_decode and not pil._tensor_decode
    for i in range(len(ds)):
        assert torch.equal(tensor[i][0], pil[i][0]), ds.samples[i][0]
