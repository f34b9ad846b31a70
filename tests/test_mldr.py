"""reinforced-data import-mldr: apple/ml-dr sources (built here in ml-dr's structure) into one reinforcement file."""

from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

import _mldr_util as U
from reinforced_data import KDLoss, ReinforcedDataset
from reinforced_data.cli import main
from reinforced_data.errors import ConfigError, DatasetMismatchError
from reinforced_data.mldr import RA_OP_NAMES, MldrSourceError, import_mldr, load_pickle
from reinforced_data.policy import Policy
from reinforced_data import replay
from reinforced_data.store import ReinforcementFile


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mldr")
    U.make_images(str(root / "data"))
    ds = ImageFolder(str(root / "data"))
    images = list(ds.samples)
    srcs = {kind: U.make_source(str(root / kind), kind, images, num_samples=6) for kind in U.CONFIGS}
    outs = {kind: str(root / f"{kind}.h5") for kind in U.CONFIGS}
    for kind in U.CONFIGS:
        import_mldr(srcs[kind], outs[kind], str(root / "data"), progress=False)
    pils = [Image.open(p).convert("RGB") for p, _ in images]
    return {"root": root, "data": str(root / "data"), "images": images, "srcs": srcs, "outs": outs, "pils": pils}


def _tensor(pil):
    return torch.from_numpy(np.array(pil)).permute(2, 0, 1)


def _replayed(f, pils, i, j, backend="auto"):
    r = f.read(i, j)
    kw = {}
    if f.policy.mixing:
        p = np.atleast_1d(r.params)
        kw = {"partners": [_tensor(pils[r.partner[0]])],
              "partner_params": f.policy.partner_params(p) if p["mix_mode"][0] else p}
    return replay([_tensor(pils[i])], np.atleast_1d(r.params), f.policy, out_dtype=torch.float32, backend=backend,
                  **kw)[0], r


def test_ml_drs_randaugment_ops_are_torchvisions_in_order():
    assert list(RA_OP_NAMES) == U.RA_NAMES


@pytest.mark.parametrize("kind", list(U.CONFIGS))
def test_imported_views_match_ml_drs_and_targets_its_topk(world, kind):
    """Each record replays to the view ml-dr's generation labelled (PIL crop vs this package's tensor crop aside)
    and holds the source's top-k (classes exactly, probabilities within the log_uint8 code's 3.2 %)."""
    f = ReinforcementFile(world["outs"][kind])
    assert f.num_views == 6 and f.topk == U.TOPK and f.header.source["format"] == "apple/ml-dr"
    assert f.header.format_version == (4 if "mix" in kind else 1)
    means, big = [], []
    for i in range(len(world["images"])):
        _, samples = torch.load(os.path.join(world["srcs"][kind], f"{i}.pth.tar"), weights_only=False)
        for j, s in enumerate(samples):
            view, r = _replayed(f, world["pils"], i, j)
            ref = U.mldr_reapply(world["pils"], i, s["params"], kind)
            d = ((view - ref) * torch.tensor(U.IMAGENET_STD).view(3, 1, 1) * 255).abs()
            means.append(float(d.mean()))
            big.append(float((d > 1.01).float().mean()))
            values, ids = np.asarray(s["prob"][0]), np.asarray(s["prob"][1])
            order = np.argsort(-values, kind="stable")
            assert r.indices.tolist() == ids[order].tolist()
            np.testing.assert_allclose(r.probs, values[order], rtol=0.033)
            if "mix" in kind and s["params"][0] is not None:
                assert r.partner[0] == s["params"][0]
    # measured here: mean 0.03-0.18 levels; views differ by more than one level on 0-1.4 % of pixels
    assert np.mean(means) < 0.4 and max(means) < 1.5, means
    assert np.mean(big) < 0.03, big


def test_mixed_records_keep_the_partners_own_parameters_inline(world):
    f = ReinforcementFile(world["outs"]["mix_ra_re"])
    names = f.policy.param_dtype().names
    assert {"partner_crop", "partner_flip", "partner_ra_op", "partner_ra_mag", "partner_erase"} <= set(names)
    seen = 0
    for i in range(len(world["images"])):
        _, samples = torch.load(os.path.join(world["srcs"]["mix_ra_re"], f"{i}.pth.tar"), weights_only=False)
        for j, s in enumerate(samples):
            if s["params"][0] is None:
                continue
            r = f.read(i, j)
            assert tuple(r.params["partner_crop"]) == tuple(s["params"][1][1])
            assert bool(r.params["partner_flip"]) == s["params"][2][1]
            seen += 1
    assert seen > 5


def test_uncompressed_params_import_the_same_records(world, tmp_path):
    src = U.make_source(str(tmp_path / "src"), "mix_ra_re", world["images"], num_samples=6, compress=False)
    out = str(tmp_path / "out.h5")
    import_mldr(src, out, world["data"], progress=False)
    a, b = ReinforcementFile(out), ReinforcementFile(world["outs"]["mix_ra_re"])
    for i in range(len(world["images"])):
        x, y = a.read_image(i), b.read_image(i)
        assert x.params.tobytes() == y.params.tobytes() and np.array_equal(x.indices, y.indices)


@pytest.mark.parametrize("kind", ["ra_re", "mix_ra_re"])
def test_trains_through_reinforced_dataset_and_kdloss_on_every_path(world, kind):
    """Single-item and batch fetches, batch replay, and the reference and compiled backends give the same
    bytes on an imported file; a KD step on it runs."""
    ds = ReinforcedDataset(ImageFolder(world["data"]), world["outs"][kind], target="sparse")
    ds.set_epoch(3)
    ref = ReinforcedDataset(ImageFolder(world["data"]), world["outs"][kind], target="sparse", backend="reference")
    ref.set_epoch(3)
    n = len(ds)
    batch = ds.__getitems__(list(range(n)))
    for i in range(n):
        one = ds[i]
        assert torch.equal(one[0], batch[i][0]) and torch.equal(ref[i][0], one[0])
    loader = ds.loader(batch_size=n)
    loader.set_epoch(3)
    images, (idx, probs) = next(iter(loader))
    assert torch.equal(images, torch.stack([b[0] for b in batch]))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * U.SIZE * U.SIZE, U.NUM_CLASSES))
    loss = KDLoss()(model(images), (idx, probs))
    loss.backward()
    assert torch.isfinite(loss)


@pytest.mark.subprocess
def test_workers_and_resume_write_the_same_records(world, tmp_path, monkeypatch):
    import reinforced_data.mldr as M

    src, want = world["srcs"]["mix_ra_re"], ReinforcementFile(world["outs"]["mix_ra_re"])
    out = str(tmp_path / "w.h5")
    import_mldr(src, out, world["data"], num_workers=2, progress=False)
    got = ReinforcementFile(out)
    for i in range(len(world["images"])):
        assert got.read_image(i).params.tobytes() == want.read_image(i).params.tobytes()
    # an import stopped after its first chunk resumes where it stopped
    monkeypatch.setattr(M, "CHUNK_IMAGES", 2)
    real, calls = M._convert_chunk, []

    def failing(task):
        calls.append(task[3])
        if len(calls) == 3:  # the probe, then one chunk written, then stop
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(M, "_convert_chunk", failing)
    part = str(tmp_path / "r.h5")
    with pytest.raises(KeyboardInterrupt):
        import_mldr(src, part, world["data"], progress=False)
    monkeypatch.setattr(M, "_convert_chunk", real)
    with pytest.raises(Exception, match="incomplete"):
        ReinforcementFile(part)
    s = import_mldr(src, part, world["data"], resume=True, progress=False)
    assert s["skipped"] == 2 and s["images"] == len(world["images"]) - 2
    got = ReinforcementFile(part)
    for i in range(len(world["images"])):
        assert got.read_image(i).params.tobytes() == want.read_image(i).params.tobytes()


def test_cli_imports_and_refuses_an_existing_output(world, tmp_path, capsys):
    out = str(tmp_path / "c.h5")
    assert main(["import-mldr", world["srcs"]["rrc"], "--data", world["data"], "-o", out, "--no-progress"]) == 0
    assert ReinforcementFile(out).num_images == len(world["images"])
    assert main(["import-mldr", world["srcs"]["rrc"], "--data", world["data"], "-o", out, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("reinforced-data: error:") and "already exists" in err[-1]


def test_a_dataset_in_another_order_is_refused(world, tmp_path):
    wrong = ImageFolder(world["data"])  # the same images, each label L read as L + 2 (mod 3)
    wrong.samples = [(p, (label + 2) % 3) for p, label in wrong.samples]
    wrong.targets = [label for _, label in wrong.samples]
    with pytest.raises(DatasetMismatchError, match="top-2 on only 0%"):
        import_mldr(world["srcs"]["rrc"], str(tmp_path / "o.h5"), wrong, progress=False)
    fewer = tmp_path / "fewer"
    shutil.copytree(world["data"], fewer)
    os.remove(fewer / "class2" / "img2.png")
    with pytest.raises(DatasetMismatchError, match="index files"):
        import_mldr(world["srcs"]["rrc"], str(tmp_path / "o2.h5"), str(fewer), progress=False)


def _copy(world, tmp_path, kind="ra_re"):
    src = tmp_path / "src"
    shutil.copytree(world["srcs"][kind], src)
    return src


def _one_line_naming(e, path):
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg


def test_bad_sources_are_one_line_naming_the_file(world, tmp_path):
    out = str(tmp_path / "o.h5")
    # not ml-dr's: a folder without config.pth.tar
    with pytest.raises(MldrSourceError) as e:
        import_mldr(world["data"], out, world["data"], progress=False)
    _one_line_naming(e, world["data"])
    # a missing index file
    src = _copy(world, tmp_path)
    os.remove(src / "4.pth.tar")
    with pytest.raises(MldrSourceError) as e:
        import_mldr(str(src), out, world["data"], progress=False)
    _one_line_naming(e, src / "4.pth.tar")
    shutil.rmtree(src)
    # a sample count that varies
    src = _copy(world, tmp_path)
    idx, samples = torch.load(src / "5.pth.tar", weights_only=False)
    torch.save((idx, samples[:-1]), src / "5.pth.tar", pickle_protocol=4)
    with pytest.raises(MldrSourceError, match="holds 5 samples") as e:
        import_mldr(str(src), out, world["data"], progress=False)
    _one_line_naming(e, src / "5.pth.tar")
    shutil.rmtree(src)
    # a truncated pickle
    src = _copy(world, tmp_path)
    data = (src / "7.pth.tar").read_bytes()
    (src / "7.pth.tar").write_bytes(data[:len(data) // 2])
    with pytest.raises(MldrSourceError, match="truncated") as e:
        import_mldr(str(src), out, world["data"], progress=False)
    _one_line_naming(e, src / "7.pth.tar")
    shutil.rmtree(src)
    # an unknown transform in the config
    src = _copy(world, tmp_path)
    cfg = U.config("ra_re", 6)
    cfg["reinforce"]["image_augmentation"]["gaussian_blur"] = {"enable": True}
    torch.save(cfg, src / "config.pth.tar")
    with pytest.raises(MldrSourceError, match="unknown transform") as e:
        import_mldr(str(src), out, world["data"], progress=False)
    _one_line_naming(e, src / "config.pth.tar")
    shutil.rmtree(src)
    # the same source named twice (its views would pass for twice as many)
    with pytest.raises(MldrSourceError, match="named twice") as e:
        import_mldr([world["srcs"]["ra_re"], world["srcs"]["ra_re"] + "/"], out, world["data"], progress=False)
    _one_line_naming(e, world["srcs"]["ra_re"])
    # a top-k naming a class twice (its target would not be a distribution), a class id beyond any integer
    for ids, needle in (([1, 1], "names a class twice"), ([10**30, 0], "not numbers")):
        src = _copy(world, tmp_path)
        idx, samples = torch.load(src / "3.pth.tar", weights_only=False)
        samples[0]["prob"] = (samples[0]["prob"][0][:2], ids)
        torch.save((idx, samples), src / "3.pth.tar", pickle_protocol=4)
        with pytest.raises(MldrSourceError, match=needle) as e:
            import_mldr(str(src), out, world["data"], progress=False)
        _one_line_naming(e, src / "3.pth.tar")
        shutil.rmtree(src)
    assert not os.path.exists(out)


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch " + _Boom.marker,))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(world, tmp_path):
    src = _copy(world, tmp_path)
    _Boom.marker = str(tmp_path / "ran")
    torch.save((3, [_Boom()]), src / "3.pth.tar")
    with pytest.raises(MldrSourceError, match="posix.system|os.system") as e:
        import_mldr(str(src), str(tmp_path / "o.h5"), world["data"], progress=False)
    _one_line_naming(e, src / "3.pth.tar")
    assert not os.path.exists(_Boom.marker)
    with pytest.raises(MldrSourceError):
        load_pickle(str(src / "3.pth.tar"))
    assert pickle.loads(pickle.dumps(1)) == 1


def test_inline_partner_policies_are_imported_not_sampled():
    p = Policy.preset("paper_imagenet_mix", mix_partner="inline")
    assert Policy.from_json(p.to_json()) == p and "mix_partner" in p.to_dict()
    assert "mix_partner" not in Policy.preset("paper_imagenet_mix").to_dict()
    with pytest.raises(ConfigError, match="imported"):
        p.sample(np.random.default_rng(0), 2, 64, 64)
    with pytest.raises(ConfigError, match="mixing"):
        Policy(mix_partner="inline")


@pytest.mark.subprocess
def test_a_published_tar_gz_imports_as_a_stream_like_its_folder(world, tmp_path):
    import tarfile

    src = world["srcs"]["mix_ra_re"]
    archive = str(tmp_path / "reinforced_data.tar.gz")
    with tarfile.open(archive, "w:gz") as t:  # as ml-dr's reinforce.py packs it: one folder inside
        t.add(src, arcname="reinforced_data")
    out = str(tmp_path / "t.h5")
    import_mldr(archive, out, world["data"], num_workers=1, progress=False)
    got, want = ReinforcementFile(out), ReinforcementFile(world["outs"]["mix_ra_re"])
    for i in range(len(world["images"])):
        assert got.read_image(i).params.tobytes() == want.read_image(i).params.tobytes()
    # an archive without one image file: one line naming the member, the other rows kept for --resume
    partial = str(tmp_path / "partial.tar")
    with tarfile.open(partial, "w") as t:
        for name in sorted(os.listdir(src)):
            if name != "6.pth.tar":
                t.add(os.path.join(src, name), arcname=f"reinforced_data/{name}")
    with pytest.raises(MldrSourceError) as e:
        import_mldr(partial, str(tmp_path / "p.h5"), world["data"], progress=False)
    _one_line_naming(e, f"{partial}:reinforced_data/6.pth.tar")
    assert int(ReinforcementFile(str(tmp_path / "p.h5"), accept_incomplete=True).written.sum()) == 8
    # an archive of several ml-dr folders is refused, not imported in part
    two = str(tmp_path / "two.tar")
    with tarfile.open(two, "w") as t:
        t.add(src, arcname="run0")
        t.add(world["srcs"]["mix"], arcname="run1")
    with pytest.raises(MldrSourceError, match="more than one ml-dr folder") as e:
        import_mldr(two, str(tmp_path / "two.h5"), world["data"], progress=False)
    _one_line_naming(e, two)


def test_show_draws_an_imported_files_inline_partners(world, tmp_path):
    from reinforced_data.show import show, view_panels

    f = ReinforcementFile(world["outs"]["mix_ra_re"])
    index = next(i for i in range(f.num_images) if (f.read_image(i).params["mix_mode"] != 0).any())
    rows = view_panels(f, ImageFolder(world["data"]), index, views=6)
    recs = f.read_image(index)
    for v in range(6):
        panel = rows[1][1 + v]
        if recs.params["mix_mode"][v]:
            j = int(recs.partner_index[v])
            assert panel.caption[0] == f"image {j} (inline)"
            p = f.policy.partner_params(recs.params[v:v + 1])
            p["mix_mode"] = 0
            want = replay([_tensor(world["pils"][j])], p, f.policy)[0]
            assert torch.equal(panel.image, want)
    assert os.path.getsize(show(f.path, world["data"], index, views=6, out=str(tmp_path / "g.png"))) > 0


def test_several_sources_concatenate_their_views_in_order(world, tmp_path):
    second = U.make_source(str(tmp_path / "second"), "ra_re", world["images"], num_samples=3, seed=5)
    out = str(tmp_path / "two.h5")
    import_mldr([world["srcs"]["ra_re"], second], out, world["data"], progress=False)
    f, a = ReinforcementFile(out), ReinforcementFile(world["outs"]["ra_re"])
    assert f.num_views == 9 and f.header.source["num_samples"] == [6, 3]
    b_path = str(tmp_path / "b.h5")
    import_mldr(second, b_path, world["data"], progress=False)
    b = ReinforcementFile(b_path)
    for i in range(len(world["images"])):
        got = f.read_image(i).params
        assert got[:6].tobytes() == a.read_image(i).params.tobytes()
        assert got[6:].tobytes() == b.read_image(i).params.tobytes()
    other = U.make_source(str(tmp_path / "other"), "rrc", world["images"], num_samples=3)
    with pytest.raises(MldrSourceError, match="another image_augmentation"):
        import_mldr([world["srcs"]["ra_re"], other], str(tmp_path / "x.h5"), world["data"], progress=False)


def test_configs_the_importer_cannot_express_are_refused_naming_the_transform(world, tmp_path):
    src = _copy(world, tmp_path)
    cfg = U.config("ra_re", 6)
    cfg["reinforce"]["image_augmentation"]["random_crop"] = {"size": 32, "padding": 4}
    torch.save(cfg, src / "config.pth.tar")
    with pytest.raises(MldrSourceError, match=r"\['random_crop'\] cannot be imported") as e:
        import_mldr(str(src), str(tmp_path / "o.h5"), world["data"], progress=False)
    _one_line_naming(e, src / "config.pth.tar")
    torch.save(U.config("ra_re", 6), src / "config.pth.tar")  # a RandAugment magnitude no table bin holds
    idx, samples = torch.load(src / "2.pth.tar", weights_only=False)
    samples[1]["params"][2] = [(1, 0.123), (0, 0.0)]
    torch.save((idx, samples), src / "2.pth.tar")
    with pytest.raises(MldrSourceError, match="ShearX magnitude 0.123 is not a bin") as e:
        import_mldr(str(src), str(tmp_path / "o.h5"), world["data"], progress=False)
    _one_line_naming(e, src / "2.pth.tar")
    assert "sample 1" in str(e.value)


def test_ml_drs_truncating_uint8_conversion_is_exact_on_uint8_crops():
    """ToUint8 after the PIL crop: (v / 255 in float32) * 255, truncated, gives v back for every v, so the
    truncation needs no field (docs/mldr.md)."""
    v = torch.arange(256, dtype=torch.uint8)
    assert torch.equal((v.to(torch.float32).div(255) * 255).to(torch.uint8), v)


@pytest.mark.slow
def test_the_fidelity_benchmark_measures_every_transform_row():
    """benchmarks/mldr.py's fidelity table on one photo: every row measured, the crop row small."""
    import importlib.util
    import sys

    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    sys.path.insert(0, here)
    try:
        spec = importlib.util.spec_from_file_location("bench_mldr", os.path.join(here, "mldr.py"))
        bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench)
        from _photos import make_photos
    finally:
        sys.path.remove(here)
    rows = bench.fidelity([make_photos(1, seed=0)[0].pil], 1)
    labels = [r[0] for r in rows]
    assert len(rows) == 1 + 13 + 5 and all(f"RandAugment {n}" in labels for n in U.RA_NAMES[1:])
    crop = rows[0]
    assert crop[2] < 0.2 and crop[4] <= 3, crop
    assert all(np.isfinite(r[2]) and r[4] < 256 for r in rows)


def test_verify_with_data_checks_inline_partner_crops_against_the_partner_image(world, tmp_path):
    from reinforced_data.inspection import verify_file

    src = _copy(world, tmp_path, "mix_ra_re")
    for i in range(len(world["images"])):
        idx, samples = torch.load(src / f"{i}.pth.tar", weights_only=False)
        j = next((j for j, s in enumerate(samples) if s["params"][0] is not None), None)
        if j is not None:
            samples[j]["params"][1][1] = (0, 0, 500, 500)  # the partner's crop: beyond any of these images
            torch.save((idx, samples), src / f"{i}.pth.tar")
            break
    out = str(tmp_path / "o.h5")
    import_mldr(str(src), out, world["data"], progress=False)  # the importer decodes no image
    assert verify_file(out)["ok"]
    report = verify_file(out, data=ImageFolder(world["data"]))
    assert not report["ok"] and any(f"image {i}: its inline partner parameters" in p and "lies outside" in p
                                    for p in report["problems"]), report["problems"]


def test_resume_finds_a_source_that_moved(world, tmp_path, monkeypatch):
    import reinforced_data.mldr as M

    src = _copy(world, tmp_path, "rrc")
    monkeypatch.setattr(M, "CHUNK_IMAGES", 4)
    real, calls = M._convert_chunk, []

    def failing(task):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(M, "_convert_chunk", failing)
    out = str(tmp_path / "o.h5")
    with pytest.raises(KeyboardInterrupt):
        import_mldr(str(src), out, world["data"], progress=False)
    monkeypatch.setattr(M, "_convert_chunk", real)
    moved = tmp_path / "moved"
    os.rename(src, moved)
    s = import_mldr(str(moved), out, world["data"], resume=True, progress=False)
    assert s["skipped"] == 4
    want = ReinforcementFile(world["outs"]["rrc"])
    got = ReinforcementFile(out)
    for i in range(len(world["images"])):
        assert got.read_image(i).params.tobytes() == want.read_image(i).params.tobytes()


def test_an_imported_file_trains_on_another_listing_of_the_same_images(world):
    """The file stores each row's image path, as generated files do: a Subset listing the images in
    another order gets each image's own stored views and targets."""
    f = ReinforcementFile(world["outs"]["mix_ra_re"])
    assert f.identities() == [os.path.relpath(p, world["data"]).replace(os.sep, "/") for p, _ in world["images"]]
    order = list(range(len(world["images"])))[::-1]
    sub = ReinforcedDataset(torch.utils.data.Subset(ImageFolder(world["data"]), order), f.path, target="sparse")
    sub.set_epoch(1)
    assert sub._rows is not None and list(sub._rows) == order
    for k, i in enumerate(order):
        _, (idx, probs) = sub[k]
        stored = f.read_image(i)
        assert any(np.array_equal(idx.numpy(), stored.indices[v]) for v in range(f.num_views))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")
def test_torchs_weights_only_loader_refuses_ml_drs_protocol_4_files(world):
    """Why the importer has its own restricted unpickler (docs/mldr.md): torch.load(weights_only=True)
    cannot read what ml-dr writes with torch.save(..., pickle_protocol=4); the importer reads it."""
    path = os.path.join(world["srcs"]["rrc"], "0.pth.tar")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert load_pickle(path)[0] == 0


def test_a_bad_file_found_before_any_row_is_written_leaves_no_output(world, tmp_path, monkeypatch):
    import reinforced_data.mldr as M

    real, calls = M._convert_chunk, []

    def failing(task):
        calls.append(1)
        if len(calls) == 2:  # after the label probe: the first chunk's conversion
            raise MldrSourceError("SRC/3.pth.tar is truncated")
        return real(task)

    monkeypatch.setattr(M, "_convert_chunk", failing)
    out = tmp_path / "o.h5"
    with pytest.raises(MldrSourceError, match="truncated"):
        import_mldr(world["srcs"]["rrc"], str(out), world["data"], progress=False)
    assert not out.exists()
    monkeypatch.setattr(M, "_convert_chunk", real)
    import_mldr(world["srcs"]["rrc"], str(out), world["data"], progress=False)  # the rerun needs no --overwrite
    assert ReinforcementFile(str(out)).complete


def test_inline_partners_refuse_the_other_version_4_ops():
    """The partner_* fields hold crop, flip, RandAugment and erasing only: a policy with grayscale, blur or
    solarize (whose per-view fields a partner would not have) cannot take inline partners."""
    with pytest.raises(ConfigError, match="grayscale, blur"):
        Policy.preset("paper_imagenet_mix", mix_partner="inline", grayscale_prob=0.2)


@pytest.mark.slow
@pytest.mark.subprocess
def test_an_import_worker_ends_when_the_importer_is_killed(tmp_path):
    """import-mldr's pool workers (spawned, with _end_with_parent) exit once the importer is gone: a killed
    importer's workers used to wait on the pool's queue for ever (holding the writer's lock, when forked)."""
    import signal
    import subprocess
    import sys
    import time

    code = ("import multiprocessing, os, time\n"
            "from concurrent.futures import ProcessPoolExecutor\n"
            "from reinforced_data.mldr import _end_with_parent\n"
            "pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context('spawn'), "
            "initializer=_end_with_parent, initargs=(os.getpid(),))\n"
            "print(pool.submit(os.getpid).result(), flush=True)\n"
            "time.sleep(120)\n")
    importer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    worker = int(importer.stdout.readline())
    os.kill(importer.pid, signal.SIGKILL)
    importer.wait()
    deadline = time.monotonic() + 20
    while os.path.exists(f"/proc/{worker}") and time.monotonic() < deadline:
        with open(f"/proc/{worker}/stat") as f:  # a zombie has ended (its new parent reaps it)
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.2)
    alive = os.path.exists(f"/proc/{worker}") and open(f"/proc/{worker}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    if alive:
        os.kill(worker, signal.SIGKILL)
    assert not alive, "the pool worker outlived its importer"
