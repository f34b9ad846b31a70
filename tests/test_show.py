"""`reinforced-data show`: one image's stored views and top-3 labels as a PNG grid."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from _reinforce_util import TinyTeacher
from reinforced_data.errors import (ConfigError, CorruptFileError, DatasetMismatchError,
                                    NotReinforcementFileError, ReinforcedDataError)
from reinforced_data.policy import Policy
from reinforced_data.generation import reinforce
from reinforced_data._replay import replay
from reinforced_data.show import Panel, grid_pixels, main, render_grid, show, view_panels
from reinforced_data.store import ReinforcementFile
from reinforced_data.synthetic import SyntheticImages

SPEC = "synthetic:num_images=12,num_classes=8,min_size=20,max_size=32,seed=1"
K = 5


def _data() -> SyntheticImages:
    return SyntheticImages(12, 8, 20, 32, seed=1)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("show")
    out = {}
    for name, preset in (("plain", "rrc_ra_re"), ("mix", "rrc_ra_re_mix"), ("seq", "paper_imagenet_mix")):
        out[name] = str(d / f"{name}.h5")
        reinforce(_data(), TinyTeacher(8), out[name], policy=Policy.preset(preset, output_size=(24, 24)),
                  num_views=K, topk=3, block_size=6, progress=False)
    return out


def _png_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def test_show_writes_one_row_of_views_with_labels(files, tmp_path):
    out = show(files["plain"], SPEC, 3, views=4, out=tmp_path / "g.png")
    assert os.path.isfile(out)
    # the source and 4 views, each with three caption lines, and a title
    assert _png_size(out) == grid_pixels(1, 1 + 4, 3)
    rows = view_panels(files["plain"], _data(), 3, views=4)
    assert len(rows) == 1 and len(rows[0]) == 5
    src = rows[0][0].image
    assert torch.equal(src, _data()[3][0])
    with ReinforcementFile(files["plain"]) as f:
        recs = f.read_image(3)
        want = replay([src] * 4, recs.params[:4], f.policy)
        for v in range(4):
            assert torch.equal(rows[0][1 + v].image, want[v])  # the pixels the teacher labelled
            caption = rows[0][1 + v].caption
            assert len(caption) == 3
            top = int(recs.indices[v, 0])
            assert caption[0].startswith(f"class_{top:03d}")  # class names from the dataset
            assert caption[0].rstrip().endswith(f"{100 * recs.probs[v, 0]:3.0f}%")


def test_views_capped_at_stored_views(files, tmp_path):
    out = show(files["plain"], SPEC, 0, views=50, out=tmp_path / "g.png")
    assert _png_size(out) == grid_pixels(1, 1 + K, 3)


def test_mixed_views_show_their_partners(files, tmp_path):
    rows = view_panels(files["mix"], _data(), 2, views=K)
    with ReinforcementFile(files["mix"]) as f:
        recs = f.read_image(2)
    mixed = recs.params["mix_mode"] != 0
    assert mixed.any()
    assert len(rows) == 2 and len(rows[1]) == 1 + K
    for v in range(K):
        partner = rows[1][1 + v]
        if mixed[v]:
            assert partner.image is not None
            assert partner.caption[0] == f"image {recs.partner_index[v]} view {recs.partner_view[v]}"
        else:
            assert partner.image is None
    out = show(files["mix"], SPEC, 2, views=K, out=tmp_path / "m.png")
    assert _png_size(out) == grid_pixels(2, 1 + K, 3)


def test_sequential_mixing_captions_name_both_and_the_partner_share(files):
    """The paper's mixing: mode 3 (MixUp, then the partner's CutMix box) is captioned as both, with
    the partner's share of the view: the box plus (1 - λ) of the rest."""
    found = 0
    for index in range(12):
        rows = view_panels(files["seq"], _data(), index, views=K)
        with ReinforcementFile(files["seq"]) as f:
            recs = f.read_image(index)
        for v in range(K):
            mode = int(recs.params["mix_mode"][v])
            if mode == 0:
                continue
            kind, share = rows[1][1 + v].caption[1].split()
            assert kind == {1: "mixup", 2: "cutmix", 3: "mixup+cutmix"}[mode]
            lam = recs.params["mix_lam"][v] / 255.0
            cut = recs.params["mix_box"][v][2] * recs.params["mix_box"][v][3] / (24 * 24) if mode == 3 else 0.0
            assert float(share) == pytest.approx(cut + (1 - lam) * (1 - cut), abs=0.006)
            found += mode == 3
    assert found > 0


def test_bad_index(files, tmp_path):
    for index in (12, -1):
        with pytest.raises(ConfigError, match="out of range"):
            show(files["plain"], SPEC, index, out=tmp_path / "g.png")
    assert not (tmp_path / "g.png").exists()


def test_bad_file(files, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        show(tmp_path / "missing.h5", SPEC, 0, out=tmp_path / "g.png")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all")
    with pytest.raises(NotReinforcementFileError):
        show(bad, SPEC, 0, out=tmp_path / "g.png")


def test_bad_dataset(files, tmp_path):
    with pytest.raises(ConfigError, match="12"):  # another length
        show(files["plain"], "synthetic:num_images=13,num_classes=8,min_size=20,max_size=32,seed=1", 0,
             out=tmp_path / "g.png")
    with pytest.raises(DatasetMismatchError):  # same length, other labels
        show(files["plain"], "synthetic:num_images=12,num_classes=8,min_size=20,max_size=32,seed=7", 0,
             out=tmp_path / "g.png")
    with pytest.raises(ConfigError, match="not a directory"):
        show(files["plain"], tmp_path / "nowhere", 0, out=tmp_path / "g.png")


def test_main_prints_one_line_errors(files, tmp_path, capsys):
    assert main([files["plain"], "--data", SPEC, "--index", "1", "--views", "2", "--out",
                 str(tmp_path / "ok.png")]) == 0
    assert _png_size(str(tmp_path / "ok.png")) == grid_pixels(1, 3, 3)
    capsys.readouterr()
    assert main([files["plain"], "--data", SPEC, "--index", "99", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("reinforced-data: error:") and "99" in err[0]


def _damage(path: str, image: int, view: int, field: str, value) -> None:
    """Rewrite stored view ``view`` of ``image`` with ``field`` set to ``value``, as a bit flip might."""
    with ReinforcementFile(path) as f:
        c = f.codec
        recs = np.concatenate([c.from_planes(f._planes(image, g)) for g in range(c.chunks_per_image)])[:f.num_views]
    recs[field][view] = value
    with h5py.File(path, "r+") as h:
        for g, data in enumerate(c.chunks(recs)):
            h["records"].id.write_direct_chunk((image, g, 0), data)


def test_a_damaged_record_is_named_as_damage(files, tmp_path, capsys):
    """A record replay refuses is the file's damage: CorruptFileError naming the file, image, view and
    field, one line from the command (not a bare ConfigError about 'view 0')."""
    path = str(tmp_path / "d.h5")
    with open(files["plain"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    _damage(path, 3, 2, "flip", 2)
    with pytest.raises(CorruptFileError) as e:
        show(path, SPEC, 3, views=4, out=tmp_path / "g.png")
    msg = str(e.value)
    for needle in (f"{path} is damaged", "stored view 2 of image 3", "invalid 'flip'",
                   f"reinforced-data inspect --verify {path}"):
        assert needle in msg, msg
    assert "view 0" not in msg and not (tmp_path / "g.png").exists()
    show(path, SPEC, 4, views=4, out=tmp_path / "ok.png")  # the other images still show
    capsys.readouterr()
    assert main([path, "--data", SPEC, "--index", "3", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stored view 2 of image 3" in err[0], err


def test_a_damaged_partner_record_is_named(files, tmp_path):
    path = str(tmp_path / "m.h5")
    with open(files["mix"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    with ReinforcementFile(path) as f:
        for index in range(f.num_images):
            recs = f.read_image(index)
            mixed = np.flatnonzero(recs.params["mix_mode"][:K] != 0)
            if mixed.size:
                v = int(mixed[0])
                pi, pv = int(recs.partner_index[v]), int(recs.partner_view[v])
                if pi != index:
                    break
        else:
            pytest.fail("no view mixed with another image")
    _damage(path, pi, pv, "flip", 3)
    with pytest.raises(CorruptFileError, match=rf"stored view {pv} of image {pi} holds an invalid 'flip'"):
        show(path, SPEC, index, views=K, out=tmp_path / "g.png")


def test_output_must_be_a_png(files, tmp_path):
    with pytest.raises(ConfigError, match=r"\.png"):
        show(files["plain"], SPEC, 0, out=tmp_path / "g.jpg")
    assert not (tmp_path / "g.jpg").exists()


def test_render_grid_checks_panels(tmp_path):
    img = torch.zeros(3, 8, 8, dtype=torch.uint8)
    path = render_grid([[Panel(img, ["a"]), Panel(img, ["b"])], [Panel(None, [])]], tmp_path / "r.png", title=None)
    assert _png_size(path) == grid_pixels(2, 2, 1, title=False)
    with pytest.raises(ConfigError, match="uint8"):
        render_grid([[Panel(img.float(), [])]], tmp_path / "f.png")
    with pytest.raises(ReinforcedDataError):
        render_grid([], tmp_path / "e.png")
    assert np.asarray(Image.open(path)).ndim == 3
