"""Generation: stored records replay to what the teachers labelled, determinism, mixing, resume, ranks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import _reinforce_util as U
from reinforced_data import inspection
from reinforced_data._datasets import dataset_fingerprint
from reinforced_data import store as S
from reinforced_data.errors import ConfigError
from reinforced_data.policy import Policy
from reinforced_data.generation import _rank_indices, block_order, image_rng, reinforce
from reinforced_data._replay import replay
from reinforced_data.synthetic import SyntheticImages, write_image_folder
from reinforced_data.teachers import NonFiniteOutputError, TeacherEnsemble


# Tiny models: one intra-op thread is fastest, and immune to a busy shared machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


N, CLASSES, K, TOPK = 20, 4, 6, 3


@pytest.fixture(scope="module")
def ds():
    return SyntheticImages(N, CLASSES, 20, 36, seed=3)


def policy(name="rrc_ra_re"):
    return Policy.preset(name, output_size=(16, 16))


def run(ds, path, pol="rrc_ra_re", teacher=None, **kw):
    kw.setdefault("num_views", K)
    kw.setdefault("topk", TOPK)
    kw.setdefault("seed", 7)
    kw.setdefault("progress", False)
    kw.setdefault("block_size", 8)
    return reinforce(ds, teacher if teacher is not None else U.TinyTeacher(CLASSES), str(path),
                     policy=policy(pol) if isinstance(pol, str) else pol, **kw)


def chunks(path):
    with h5py.File(path, "r") as f:
        d = f["records"]
        return [d.id.read_direct_chunk((i, g, 0))[1] for i in range(d.shape[0]) for g in range(d.shape[1])]


def test_records_replay_to_what_the_teachers_labelled(ds, tmp_path):
    path = tmp_path / "r.h5"
    s = run(ds, path)
    assert s.images == N and s.skipped == 0 and s.seconds["teachers"] > 0
    pol = policy()
    ens = TeacherEnsemble(U.TinyTeacher(CLASSES))
    with S.ReinforcementFile(path) as f:
        assert f.complete and (f.labels == np.asarray(ds.targets)).all()
        assert f.num_views == K and f.topk == TOPK and f.num_classes == CLASSES
        assert f.header.seed == 7 and f.policy == pol
        assert f.teachers[0]["name"] == "TinyTeacher" and f.generation["images"] == N
        for i in (0, 7, N - 1):
            img, _ = ds[i]
            stored = f.read_image(i)
            # parameters: a pure function of (seed, index) and the image size
            expected = pol.sample(image_rng(7, i), K, img.shape[1], img.shape[2])
            assert (stored.params == expected).all()
            # labels: replaying the stored parameters gives the views the teachers saw
            probs = ens(replay([img] * K, stored.params, pol))
            top_p, top_i = probs.topk(TOPK, dim=1)
            assert (stored.indices == top_i.numpy()).all()
            assert np.allclose(stored.probs, top_p.numpy(), rtol=0.035, atol=1e-6)


@pytest.mark.subprocess
def test_same_bytes_whatever_the_batch_size_or_workers(ds, tmp_path):
    run(ds, tmp_path / "a.h5", batch_size=1)
    run(ds, tmp_path / "b.h5", batch_size=7, num_workers=2)
    assert chunks(tmp_path / "a.h5") == chunks(tmp_path / "b.h5")


def test_block_order_and_rank_shards():
    order = block_order(50, 3, mixing=True)
    assert sorted(order) == list(range(50)) and not (order == np.arange(50)).all()
    assert (block_order(50, 3, mixing=False) == np.arange(50)).all()
    for world in (1, 2, 3, 7):
        parts = [_rank_indices(50, 3, True, 8, r, world) for r in range(world)]
        assert (np.concatenate(parts) == order).all()  # whole blocks, in order, whatever the rank count


def test_mixing_partners_are_references_within_the_block(ds, tmp_path):
    path = tmp_path / "m.h5"
    run(ds, path, pol="rrc_ra_re_mix", block_size=8)
    pol = policy("rrc_ra_re_mix")
    order = block_order(N, 7, mixing=True)
    block_of = {int(i): b // 8 for b, i in enumerate(order)}
    ens = TeacherEnsemble(U.TinyTeacher(CLASSES))
    with S.ReinforcementFile(path) as f:
        assert "partner_index" in f.codec.record_dtype.names
        seen = set()
        for i in range(N):
            r = f.read_image(i)
            mixed = r.params["mix_mode"] != 0
            assert mixed.any()
            assert all(block_of[int(p)] == block_of[i] for p in r.partner_index[mixed])
            assert (r.partner_index[mixed] != i).all()
            assert ((r.partner_view >= 0) & (r.partner_view < K)).all()
            seen.update(ds.targets[int(p)] for p in r.partner_index[mixed])
        assert len(seen) > 1  # partners across classes
        # the teachers labelled the mixed view itself
        i = int(order[3])
        r = f.read_image(i)
        imgs = [ds[i][0]] * K
        partners = [ds[int(p)][0] for p in r.partner_index]
        pparams = np.stack([f.read(int(p), int(v)).params for p, v in zip(r.partner_index, r.partner_view)])
        probs = ens(replay(imgs, r.params, pol, partners=partners, partner_params=pparams))
        assert (r.indices == probs.topk(TOPK, dim=1)[1].numpy()).all()


def test_two_ranks_then_merge_equal_one_process(ds, tmp_path):
    out = tmp_path / "m.h5"
    run(ds, tmp_path / "single.h5", pol="rrc_ra_re_mix", batch_size=3)
    for rank in range(2):
        run(ds, out, pol="rrc_ra_re_mix", batch_size=3, rank=rank, world_size=2)
    assert not out.exists()
    S.merge(out)
    assert chunks(out) == chunks(tmp_path / "single.h5")


def Interrupting(after_calls):
    """The TinyTeacher (same name and weights) raising KeyboardInterrupt from its call number after_calls + 1."""
    t = U.TinyTeacher(CLASSES)
    forward = t.forward

    def interrupting(x):
        if t.calls >= after_calls:
            raise KeyboardInterrupt
        return forward(x)

    t.forward = interrupting
    return t


def test_resume_continues_and_recomputes_nothing_stored(ds, tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        run(ds, path, teacher=Interrupting(after_calls=3), batch_size=2)
    with pytest.raises(S.IncompleteFileError):
        S.ReinforcementFile(path)
    with S.ReinforcementFile(path, accept_incomplete=True) as f:
        stored = int(f.written.sum())
    assert stored == 4  # batches 1 and 2 labelled (2 kept on the interrupt); batch 3 interrupted
    with pytest.raises(S.OutputExistsError):
        run(ds, path)
    t = U.TinyTeacher(CLASSES)
    s = run(ds, path, teacher=t, batch_size=2, resume=True)
    assert s.skipped == stored and s.images == N - stored
    assert t.views_seen == (N - stored) * K + 1  # + the one-view probe for the class count
    run(ds, tmp_path / "fresh.h5")
    assert chunks(path) == chunks(tmp_path / "fresh.h5")
    s = run(ds, path, resume=True)  # nothing left to do
    assert s.images == 0 and s.skipped == N


def test_resume_refuses_another_dataset_or_policy(ds, tmp_path):
    path = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        run(ds, path, teacher=Interrupting(after_calls=1))
    with pytest.raises(S.DatasetMismatchError, match="made for another dataset: the labels differ"):
        run(SyntheticImages(N, CLASSES, 20, 36, seed=4), path, resume=True)
    with pytest.raises(S.SettingsMismatchError, match="policy"):
        run(ds, path, pol="rrc", resume=True)
    with pytest.raises(S.SettingsMismatchError, match="teachers"):
        run(ds, path, teacher=U.TinyTeacher(CLASSES, seed=5), resume=True)


def test_non_finite_teacher_output_stops_with_the_image_index(ds, tmp_path):
    t = U.TinyTeacher(CLASSES)
    forward = t.forward

    def nan_on_third_call(x):
        out = forward(x)
        if t.calls == 3:  # probe, batch 1, then batch 2 (images 4..7)
            out[K + 2, 1] = float("nan")  # image 5, view 2
        return out

    t.forward = nan_on_third_call
    path = tmp_path / "r.h5"
    with pytest.raises(NonFiniteOutputError, match=r"teacher 'TinyTeacher' produced NaN or inf for image 5 \(view 2\)"):
        run(ds, path, teacher=t, batch_size=4)
    with S.ReinforcementFile(path, accept_incomplete=True) as f:
        assert f.written.sum() == 4 and not f.written[5]


def test_bad_inputs(ds, tmp_path):
    with pytest.raises(S.DatasetMismatchError, match="labels reach 3 but the teachers predict 3"):
        run(ds, tmp_path / "a.h5", teacher=U.TinyTeacher(3))
    with pytest.raises(ValueError, match="topk=5 exceeds the 4 classes"):
        run(ds, tmp_path / "b.h5", topk=5)
    floats = SyntheticImages(4, CLASSES, 20, 24, transform=lambda x: x.float() / 255)
    with pytest.raises(TypeError, match="image 0 is torch.float32; .*remove the dataset's transform"):
        run(floats, tmp_path / "c.h5")
    with pytest.raises(FileNotFoundError, match="neither an ImageFolder directory nor synthetic"):
        run(str(tmp_path / "nothing"), tmp_path / "d.h5")
    labels = [int(ds[i][1]) for i in range(len(ds))]
    with pytest.raises(ValueError, match="image 2 has -1"):
        run(ds, tmp_path / "e.h5", labels=labels[:2] + [-1] + labels[3:])
    with pytest.raises(ValueError, match=f"holds {len(ds)} items but {len(ds) - 1} labels"):
        run(ds, tmp_path / "f.h5", labels=labels[:-1])


def test_image_folder_input_and_float16(ds, tmp_path):
    root = write_image_folder(SyntheticImages(8, CLASSES, 20, 30, seed=1), tmp_path / "folder")
    path = tmp_path / "r.h5"
    run(root, path, prob_encoding="float16")
    from torchvision.datasets import ImageFolder

    with S.ReinforcementFile(path) as f:
        assert f.fingerprint.files_sha256 is not None and f.header.prob_encoding == "float16"
        f.check_dataset(dataset_fingerprint(ImageFolder(root)))
        r = f.read_image(0)
        assert np.allclose(r.probs.sum(1), np.minimum(1, r.probs.sum(1)), atol=1e-3)


def test_synthetic_spec_dataset(tmp_path):
    s = run("synthetic:num_images=6,num_classes=4,min_size=20,max_size=24", tmp_path / "r.h5")
    assert s.images == 6


def test_pipeline_object_stages_and_defaults(ds, tmp_path):
    import torch

    from reinforced_data.errors import ConfigError
    from reinforced_data.generation import Reinforcement, default_device, default_num_workers

    path = tmp_path / "p.h5"
    r = Reinforcement(ds, U.TinyTeacher(CLASSES), str(path), policy=policy(), num_views=K, topk=TOPK, seed=7,
                      block_size=8, progress=False)
    assert not path.exists()  # construction checks and builds the teachers; nothing is written before run()
    assert r.device == default_device() and r.num_workers == default_num_workers(r.device)
    assert default_num_workers("cpu") == 0 and default_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    plan = r.plan(np.zeros(N, dtype=bool))
    assert [len(b.todo) for b in plan] == [8, 8, 4] and r.summary.skipped == 0
    img, _ = ds[3]
    assert (r.sample(3, img) == policy().sample(image_rng(7, 3), K, img.shape[1], img.shape[2])).all()
    s = r.run()
    assert s.images == N and s.ranks is None and "ranks" not in s.to_dict()
    run(ds, tmp_path / "f.h5")
    assert chunks(path) == chunks(tmp_path / "f.h5")
    with pytest.raises(ConfigError, match="seed=-1 must be an integer in"):
        Reinforcement(ds, U.TinyTeacher(CLASSES), str(tmp_path / "x.h5"), seed=-1)
    with pytest.raises(ConfigError, match="pass resume or overwrite, not both"):
        Reinforcement(ds, U.TinyTeacher(CLASSES), str(tmp_path / "x.h5"), resume=True, overwrite=True)


def test_a_policy_the_images_refuse_leaves_no_file(ds, tmp_path):
    """A configuration error found while sampling (an image too small for a padded crop) removes
    the file this run created before writing any row, so the corrected rerun is not blocked."""
    path = tmp_path / "r.h5"
    big = Policy.preset("paper_cifar", output_size=(64, 64))  # 20-36 px images cannot hold a 64 px crop
    with pytest.raises(ConfigError, match="padded by 4"):
        run(ds, path, pol=big)
    assert not path.exists()
    run(ds, path, pol=Policy.preset("paper_cifar", output_size=(16, 16)))
    assert path.exists()


# ---------------------------------------------------------------------- the teacher sees the student's tensor
FAR_FROM_IMAGENET = dict(mean=(0.8, 0.2, 0.5), std=(0.15, 0.6, 0.3))


def channel_teacher():
    """A bare classifier of the normalised channel means: its output depends strongly on the normalisation."""
    import torch
    from torch import nn

    linear = nn.Linear(3, CLASSES)
    with torch.no_grad():
        linear.weight.copy_(4.0 * torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [-1, -1, -1]]))
        grey = (0.5 - torch.tensor(FAR_FROM_IMAGENET["mean"])) / torch.tensor(FAR_FROM_IMAGENET["std"])
        linear.bias.copy_(-linear.weight @ grey)  # trained, say, on the policy's normalisation: grey is undecided
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear)


def _label_agreement(ds, path, teacher):
    """For a bare ``teacher`` run on the float32 tensor ``ReinforcedDataset`` returns for each
    stored view: the share of views whose stored top-1 is its top-1, and the share whose stored
    top-k probabilities are its own within the log-uint8 quantisation (3.2 %)."""
    import torch

    from reinforced_data.dataset import ReinforcedDataset

    top1 = probs_ok = total = 0
    teacher.eval()
    with S.ReinforcementFile(path) as f:
        for j in range(K):
            views = ReinforcedDataset(ds, f, views=[j], out_dtype=torch.float32)
            for i in range(N):
                x, _ = views[i]
                stored = f.read(i, j)
                with torch.no_grad():
                    p = torch.softmax(teacher(x[None]), 1)[0].numpy()
                top1 += int(p.argmax()) == int(stored.indices[0])
                probs_ok += bool(np.allclose(stored.probs, p[stored.indices], rtol=0.033, atol=1.2e-7))
                total += 1
    return top1 / total, probs_ok / total


def test_a_bare_teacher_labels_the_tensor_the_student_gets(ds, tmp_path):
    """Under a policy normalising far from ImageNet's, a bare module's stored labels are its
    predictions on ReinforcedDataset's own float32 view: same top-1, probabilities within the
    log-uint8 quantisation. Fed ImageNet's normalisation instead (the old default), they are not."""
    import dataclasses

    from reinforced_data.policy import IMAGENET_MEAN, IMAGENET_STD

    pol = dataclasses.replace(policy(), **FAR_FROM_IMAGENET)
    teacher = channel_teacher()
    run(ds, tmp_path / "r.h5", pol=pol, teacher=teacher, device="cpu")  # float32 teachers: no bf16 rounding
    with S.ReinforcementFile(tmp_path / "r.h5") as f:
        stored = f.teachers[0]
        assert (stored["mean"], stored["std"]) == (list(pol.mean), list(pol.std))  # what it was fed
        assert stored["input_size"] is None
    assert ("teacher:          Sequential (input 16x16 = the view's, mean [0.8, 0.2, 0.5], std [0.15, 0.6, 0.3] = "
            "the policy's, as the student's views)") in inspection.format_inspect(inspection.inspect_file(str(tmp_path / "r.h5")))
    top1, probs_ok = _label_agreement(ds, tmp_path / "r.h5", teacher)
    assert top1 >= 0.99 and probs_ok == 1.0, (top1, probs_ok)
    # the test has teeth: a teacher fed ImageNet's normalisation stores labels for other tensors
    old = TeacherEnsemble(teacher, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    run(ds, tmp_path / "imagenet.h5", pol=pol, teacher=old, device="cpu")
    top1, probs_ok = _label_agreement(ds, tmp_path / "imagenet.h5", teacher)
    assert top1 < 0.5 and probs_ok < 0.5, (top1, probs_ok)


def test_reinforce_takes_reinforcements_settings_written_once():
    import inspect

    from reinforced_data.generation import Reinforcement

    run = inspect.signature(Reinforcement).parameters
    sig = inspect.signature(reinforce).parameters
    settings = [n for n, p in run.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert list(sig) == ["dataset", "teachers", "output", "merge", "synchronize", *settings]
    assert all(sig[n].default == run[n].default for n in settings) and "num_views" in settings
    with pytest.raises(TypeError, match="unexpected keyword argument.*num_view\\b"):
        reinforce("synthetic:4", U.TinyTeacher(CLASSES), "unused.h5", num_view=3)
