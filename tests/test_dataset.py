"""ReinforcedDataset: stored views and soft targets, view choice, workers, ranks, batch replay, errors."""

from __future__ import annotations

import os
import pickle
import shutil
import zlib

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import _reinforce_util as U
from reinforced_data._datasets import RawImages, image_sample_indices
from reinforced_data.dataset import ReinforcedDataset
from reinforced_data.errors import ConfigError, CorruptFileError, DatasetMismatchError, IncompleteFileError
from reinforced_data.losses import KDLoss, hard_labels
from reinforced_data.policy import Policy
from reinforced_data.generation import reinforce
from reinforced_data._replay import replay
from reinforced_data.store import ReinforcementFile
from reinforced_data.synthetic import SyntheticImages

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N, CLASSES, K, TOPK, SIZE = 24, 5, 4, 3, 16
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def base(**kw) -> SyntheticImages:
    return SyntheticImages(N, CLASSES, 20, 40, seed=1, **kw)


def user_transform():
    """A typical user's train transform, giving what the replayed float views look like."""
    from torchvision.transforms import v2

    return v2.Compose([v2.Resize((SIZE, SIZE)), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("rd")
    out = {}
    for name in ("rrc_ra_re", "rrc_ra_re_mix", "paper_imagenet_mix"):
        out[name] = str(d / f"{name}.h5")
        reinforce(base(), U.TinyTeacher(CLASSES), out[name], policy=Policy.preset(name, output_size=(SIZE, SIZE)),
                  num_views=K, topk=TOPK, seed=5, progress=False, block_size=8)
    return out


@pytest.fixture(scope="module")
def plain(files):
    return files["rrc_ra_re"]


@pytest.fixture(scope="module")
def mixed(files):
    return files["rrc_ra_re_mix"]


def expected_view(path, index, view, out_dtype=torch.float32):
    """The stored view replayed straight from the file and the shared decode path."""
    raw = RawImages(base())
    with ReinforcementFile(path) as f:
        rec = f.read(index, view)
        kw = {}
        if rec.partner is not None and int(rec.params["mix_mode"]):
            kw = {"partners": [raw[rec.partner[0]][0]], "partner_params": f.read(*rec.partner).params}
        return replay([raw[index][0]], rec.params, f.policy, out_dtype=out_dtype, **kw)[0], rec


def dense_of(target, c=CLASSES):
    idx, probs = target
    rest = max(1.0 - float(probs.sum()), 0.0) / (c - len(idx)) if len(idx) < c else 0.0
    t = torch.full((c,), rest)
    t[idx] = probs
    return t


def collect(loader):
    imgs, tgts = [], []
    for x, y in loader:
        imgs.append(x)
        tgts.append(y)
    return torch.cat(imgs), torch.cat(tgts)


# ---------------------------------------------------------------------- items
@pytest.mark.parametrize("which", ["rrc_ra_re", "rrc_ra_re_mix"])
def test_item_is_the_stored_view_and_its_soft_label(files, which):
    path = files[which]
    ds = ReinforcedDataset(base(), path)
    ds.set_epoch(0)
    mixed_seen = 0
    for i in range(N):
        v = ds.choice(i)
        img, target = ds[i]
        want, rec = expected_view(path, i, v)
        assert img.dtype == torch.float32 and img.shape == (3, SIZE, SIZE)
        assert torch.equal(img, want)
        assert target.dtype == torch.float32 and target.shape == (CLASSES,)
        total = float(rec.probs.sum(dtype=np.float64))  # 8-bit log codes: may round to just above 1
        probs = rec.probs / np.float32(total) if total >= 1 else rec.probs
        torch.testing.assert_close(target[torch.from_numpy(rec.indices)], torch.from_numpy(probs))
        rest = max(1 - total, 0.0) / (CLASSES - TOPK)
        others = np.setdiff1d(np.arange(CLASSES), rec.indices)
        torch.testing.assert_close(target[torch.from_numpy(others)], torch.full((len(others),), float(rest)))
        assert abs(float(target.sum()) - 1) < 1e-5
        mixed_seen += rec.partner is not None and int(rec.params["mix_mode"]) != 0 and rec.partner[0] != i
    if which == "rrc_ra_re_mix":
        assert mixed_seen > N // 2  # the partner's own stored view was replayed and mixed in


def test_uint8_and_channels_last(plain):
    ds = ReinforcedDataset(base(), plain, out_dtype=torch.uint8, channels_last=True)
    ds.set_epoch(1)
    img, _ = ds[3]
    want, _ = expected_view(plain, 3, ds.choice(3), torch.uint8)
    assert img.dtype == torch.uint8 and torch.equal(img, want)
    assert img.stride() == (1, 3 * SIZE, 3)


@pytest.mark.parametrize("residual", ["uniform", "renormalize"])
def test_dense_and_sparse_targets_agree(plain, residual):
    b = base(transform=user_transform())
    dense = ReinforcedDataset(b, plain, residual=residual, p=0.6, label_smoothing=0.1)
    sparse = ReinforcedDataset(b, plain, residual=residual, p=0.6, label_smoothing=0.1, target="sparse")
    originals = 0
    for e in range(3):
        dense.set_epoch(e)
        sparse.set_epoch(e)
        for i in range(N):
            (_, d), (_, (idx, probs)) = dense[i], sparse[i]
            assert idx.dtype == torch.int64 and probs.dtype == torch.float32 and idx.shape == (TOPK,)
            assert torch.all(probs[:-1] >= probs[1:])  # most probable first
            torch.testing.assert_close(dense_of((idx, probs)), d)
            assert abs(float(d.sum()) - 1) < 1e-5
            if residual == "renormalize" and dense.choice(i) >= 0:
                assert abs(float(probs.sum()) - 1) < 1e-5
            originals += dense.choice(i) < 0
    assert originals > 0


def test_p_mixes_original_samples_at_the_right_rate(plain):
    ds = ReinforcedDataset(base(transform=user_transform()), plain, p=0.7, label_smoothing=0.2)
    draws = []
    for e in range(20):
        ds.set_epoch(e)
        draws += [ds.choice(i) for i in range(N)]
    rate = np.mean(np.asarray(draws) < 0)
    assert abs(rate - 0.3) < 0.09, rate  # 480 draws: 4 standard deviations
    assert ReinforcedDataset(base(), plain, p=1.0).choice(0) >= 0
    ds0 = ReinforcedDataset(base(), plain, p=0.0)
    assert all(ds0.choice(i) == -1 for i in range(N))
    # an original sample is the user's item through their transform, with a smoothed one-hot target
    ds.set_epoch(0)
    i = next(i for i in range(N) if ds.choice(i) < 0)
    img, target = ds[i]
    raw_img, label = base()[i]
    assert torch.equal(img, user_transform()(raw_img))
    want = torch.full((CLASSES,), 0.2 / CLASSES)
    want[label] = 1 - 0.2 + 0.2 / CLASSES
    torch.testing.assert_close(target, want)


def test_callers_dataset_is_not_mutated(plain):
    t = user_transform()
    b = base(transform=t)
    ds = ReinforcedDataset(b, plain, p=0.5)
    ds.set_epoch(0)
    for i in range(N):
        ds[i]
    assert b.transform is t and ds.dataset is b
    assert torch.equal(b[0][0], t(base()[0][0]))


def test_views_subset(plain):
    ds = ReinforcedDataset(base(), plain, views=2)
    assert {ds.choice(i) for i in range(N) for _ in range(3)} <= {0, 1}
    ds = ReinforcedDataset(base(), plain, views=[3])
    assert {ds.choice(i) for i in range(N)} == {3}
    ds = ReinforcedDataset(base(), plain, views=[1, 2])
    ds.set_epoch(0)
    assert {ds.choice(i) for i in range(N)} == {1, 2}
    for bad in (0, K + 1, [K], [], [1, 1], 2.5, True, "12", [1.0]):
        with pytest.raises(ConfigError, match="views"):
            ReinforcedDataset(base(), plain, views=bad)


# ---------------------------------------------------------------------- batched items
def _same(a, b) -> bool:
    """Two items (or parts of them) equal to the bit: tensors, tuples of them, records, None."""
    if isinstance(a, (tuple, list)):
        return isinstance(b, (tuple, list)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape
                and a.stride() == b.stride() and torch.equal(a, b))
    if isinstance(a, np.void):
        return isinstance(b, np.void) and a.dtype == b.dtype and a.tobytes() == b.tobytes()
    return a is None and b is None


def _random_transform(out_dtype):
    """The user's transform for original samples, drawing from torch's generator (a random flip)."""
    from torchvision.transforms import v2

    if out_dtype == torch.uint8:
        return v2.Compose([v2.Resize((SIZE, SIZE)), v2.RandomHorizontalFlip()])
    return v2.Compose([user_transform(), v2.RandomHorizontalFlip()])


@pytest.mark.parametrize("which,options", [
    ("rrc_ra_re", {}),
    ("rrc_ra_re", {"target": "sparse", "residual": "renormalize", "out_dtype": torch.uint8}),
    ("rrc_ra_re", {"p": 0.5, "label_smoothing": 0.1, "views": [1, 3], "channels_last": True}),
    ("rrc_ra_re", {"p": 0.0, "target": "sparse", "views": 1}),
    ("rrc_ra_re_mix", {"p": 0.5, "target": "sparse"}),
    ("paper_imagenet_mix", {"p": 0.5, "target": "sparse", "out_dtype": torch.uint8}),
    ("paper_imagenet_mix", {"residual": "renormalize", "views": 3}),
])
@pytest.mark.parametrize("batch_replay", [False, True])
@pytest.mark.parametrize("epoch", [None, 3])
def test_batched_items_are_the_per_item_items(files, which, options, batch_replay, epoch):
    """``__getitems__`` (what DataLoader calls for a batch) gives, item for item, what ``ds[i]`` gives
    one at a time, and leaves torch's generator where the per-item calls leave it. Without
    set_epoch the view choice draws from that generator, and so does the originals' transform."""
    b = base(transform=_random_transform(options.get("out_dtype", torch.float32)))
    ds = ReinforcedDataset(b, files[which], batch_replay=batch_replay, **options)
    if epoch is not None:
        ds.set_epoch(epoch)
    order = [int(i) for i in np.random.default_rng(1).permutation(N)] + [5, 5, -1]  # repeats, a negative index
    torch.manual_seed(7)
    want = [ds[i] for i in order]
    want_next = torch.rand(3)
    torch.manual_seed(7)
    got = [item for s in range(0, len(order), 8) for item in ds.__getitems__(order[s:s + 8])]
    assert torch.equal(torch.rand(3), want_next)
    assert len(got) == len(want)
    for j, (g, w) in enumerate(zip(got, want)):
        assert _same(g, w), (j, order[j])
    originals = sum(len(w) == 2 for w in want) if batch_replay else None
    if batch_replay and options.get("p", 1.0) == 0.5:
        assert 0 < originals < len(want)  # both kinds met in the batches
    if batch_replay and which != "rrc_ra_re" and options.get("p", 1.0) > 0:
        assert any(len(w) == 5 and w[2] is not None for w in want)  # a partner's view was mixed in
    if epoch is None:  # the draws move on: another batch gets other views
        assert [ds.choice(i) for i in range(N)] != [ds.choice(i) for i in range(N)] or ds.p == 0


@pytest.mark.parametrize("which", ["rrc_ra_re", "paper_imagenet_mix"])
def test_a_batch_replayed_in_several_calls_gives_the_same_items(files, which, monkeypatch):
    """A batch fetch replays at most REPLAY_CALL_BYTES of output per call: the items are the
    same, mixed views (their partners sliced with them) included."""
    from reinforced_data import dataset as dataset_module

    ds = ReinforcedDataset(base(), files[which], target="sparse")
    ds.set_epoch(1)
    order = [int(i) for i in np.random.default_rng(2).permutation(N)]
    whole = ds.__getitems__(order)
    oh, ow = ds.policy.output_size
    calls = []
    real = ReinforcedDataset._replay

    def counted(self, srcs, *args):
        calls.append(len(srcs))
        return real(self, srcs, *args)

    monkeypatch.setattr(dataset_module, "REPLAY_CALL_BYTES", 3 * (3 * oh * ow * 4))  # 3 float32 views
    monkeypatch.setattr(ReinforcedDataset, "_replay", counted)
    parts = ds.__getitems__(order)
    assert calls == [3] * (N // 3) + ([N % 3] if N % 3 else [])
    for g, w in zip(parts, whole):
        assert _same(g, w)


@pytest.mark.subprocess
def test_a_dataloader_fetches_whole_batches(plain):
    """DataLoader calls ``__getitems__`` once per batch, in its workers too, and the batches hold the items."""
    calls = []

    class Counting(ReinforcedDataset):
        def __getitems__(self, indices):
            calls.append(len(indices))
            return super().__getitems__(indices)

    ds = Counting(base(transform=user_transform()), plain, p=0.5, target="sparse")
    ds.set_epoch(1)
    imgs, (idx, probs) = next(iter(DataLoader(ds, batch_size=N)))
    assert calls == [N]
    want = [ds[i] for i in range(N)]
    assert torch.equal(imgs, torch.stack([w[0] for w in want]))
    assert torch.equal(probs, torch.stack([w[1][1] for w in want]))
    loader = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    assert torch.equal(torch.cat([x for x, _ in loader]), imgs)


# ---------------------------------------------------------------------- view choice
def test_set_epoch_is_deterministic_and_changes_the_views(plain):
    a = ReinforcedDataset(base(), plain, seed=3)
    b = ReinforcedDataset(base(), plain, seed=3)
    c = ReinforcedDataset(base(), plain, seed=4)
    a.set_epoch(0), b.set_epoch(0), c.set_epoch(0)
    e0 = [a.choice(i) for i in range(N)]
    assert e0 == [b.choice(i) for i in range(N)] == [a.choice(i) for i in range(N)]
    assert e0 != [c.choice(i) for i in range(N)]
    a.set_epoch(1)
    e1 = [a.choice(i) for i in range(N)]
    assert sum(x != y for x, y in zip(e0, e1)) >= N // 3
    assert a.epoch == 1
    assert sorted(set(e0 + e1)) == list(range(K))


def test_without_set_epoch_every_call_draws_from_torch(plain):
    ds = ReinforcedDataset(base(), plain)
    torch.manual_seed(0)
    first = [ds.choice(i) for i in range(N)]
    second = [ds.choice(i) for i in range(N)]
    torch.manual_seed(0)
    assert [ds.choice(i) for i in range(N)] == first
    assert first != second and ds.epoch is None
    torch.manual_seed(0)  # the batched choice draws once per index, in order: the same views
    assert ds._choices(np.arange(N)).tolist() == first and ds._choices(np.arange(N)).tolist() == second


def _choice_spec(seed: int, epoch: int, index: int, p: float, views: list[int]) -> int:
    """The documented view choice, written out with plain Python integers (splitmix64's finaliser)."""
    m = (1 << 64) - 1

    def mix(x: int) -> int:
        x = (x + 0x9E3779B97F4A7C15) & m
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
        return x ^ (x >> 31)

    key = mix(mix(mix(seed) ^ epoch) ^ index)
    if p < 1.0 and (mix(key ^ 1) >> 11) * (1.0 / (1 << 53)) >= p:
        return -1
    return views[((mix(key ^ 2) >> 32) * len(views)) >> 32] if len(views) > 1 else views[0]


def test_view_choice_follows_the_spec_after_pickling_copying_and_a_seed_change(plain):
    ds = ReinforcedDataset(base(), plain, p=0.7, seed=5, views=[0, 2, 3])
    ds.set_epoch(2)
    want = [_choice_spec(5, 2, i, 0.7, [0, 2, 3]) for i in range(N)]
    assert [ds.choice(i) for i in range(N)] == want and -1 in want
    assert ds._choices(np.arange(N)).tolist() == want  # the batched choice: the same hash, vectorised
    clone = pickle.loads(pickle.dumps(ds))
    assert [clone.choice(i) for i in range(N)] == want
    ds.set_epoch(7)  # the epoch is shared memory: a copy (as ReinforcedLoader makes) sees it
    import copy
    view = copy.copy(ds)
    assert [view.choice(i) for i in range(N)] == [_choice_spec(5, 7, i, 0.7, [0, 2, 3]) for i in range(N)]
    ds.seed = 9
    assert [ds.choice(i) for i in range(N)] == [_choice_spec(9, 7, i, 0.7, [0, 2, 3]) for i in range(N)]


@pytest.mark.subprocess
@pytest.mark.parametrize("num_workers,persistent", [(0, False), (2, False), (2, True)])
def test_two_epochs_of_a_plain_dataloader_give_new_views(plain, num_workers, persistent):
    ds = ReinforcedDataset(base(), plain, out_dtype=torch.uint8)

    def epochs(n):
        torch.manual_seed(0)
        loader = DataLoader(ds, batch_size=6, num_workers=num_workers, persistent_workers=persistent)
        return [collect(loader)[0] for _ in range(n)]

    a, b = epochs(2)
    differ = sum(not torch.equal(x, y) for x, y in zip(a, b))
    assert differ >= N // 3, differ  # one in K repeats by chance
    a2, b2 = epochs(2)
    assert torch.equal(a, a2) and torch.equal(b, b2)  # torch.manual_seed makes it reproducible


@pytest.mark.slow
@pytest.mark.subprocess
def test_same_batches_for_any_worker_count_and_start_method(mixed):
    """With set_epoch: 0 workers, 2 forked workers, a spawned persistent (pinned) one give the same views;
    set_epoch reaches persistent workers between epochs. (One spawned worker: each costs a torch import.)"""
    ds = ReinforcedDataset(base(), mixed, out_dtype=torch.uint8, target="sparse")
    want = {}
    for e in (2, 5):
        ds.set_epoch(e)
        want[e] = (torch.stack([ds[i][0] for i in range(N)]), torch.stack([ds[i][1][1] for i in range(N)]))
    assert not torch.equal(want[2][0], want[5][0])
    ds.set_epoch(2)
    fork = DataLoader(ds, batch_size=5, num_workers=2, multiprocessing_context="fork")
    spawn = DataLoader(ds, batch_size=5, num_workers=1, multiprocessing_context="spawn", persistent_workers=True,
                       pin_memory=torch.cuda.is_available())
    for loader in (fork, spawn):
        for e in (2, 5):
            ds.set_epoch(e)
            batches = list(loader)
            imgs, probs = torch.cat([x for x, _ in batches]), torch.cat([y[1] for _, y in batches])
            assert torch.equal(imgs, want[e][0]), (loader.multiprocessing_context, e)
            assert torch.equal(probs, want[e][1])


def _ddp_rank(rank, world, init, path, out):
    import torch.distributed as dist
    from torch.utils.data.distributed import DistributedSampler

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ds = ReinforcedDataset(base(), path, out_dtype=torch.uint8)
    sampler = DistributedSampler(ds, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=4, sampler=sampler)
    seen = {}
    for e in (0, 1):
        sampler.set_epoch(e)
        ds.set_epoch(e)
        seen[e] = (list(sampler), torch.cat([x for x, _ in loader]))
    gathered = [None] * world
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.distributed
def test_distributed_sampler_two_ranks_see_every_image_once_per_epoch(plain, tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "seen.pt")
    mp.spawn(_ddp_rank, args=(2, f"file://{tmp_path / 'pg'}", plain, out), nprocs=2, join=True)
    gathered = torch.load(out, weights_only=False)
    ds = ReinforcedDataset(base(), plain, out_dtype=torch.uint8)
    for e in (0, 1):
        indices = [i for g in gathered for i in g[e][0]]
        assert sorted(indices) == list(range(N))
        ds.set_epoch(e)
        for g in gathered:
            idx, imgs = g[e]
            assert torch.equal(imgs, torch.stack([ds[i][0] for i in idx]))
    assert gathered[0][0][0] != gathered[0][1][0]  # the sampler reshuffled


def test_pickles_small_and_reopens_the_file(plain):
    b = base()
    ds = ReinforcedDataset(b, plain)
    ds.set_epoch(4)
    blob = pickle.dumps(ds)
    assert len(blob) - len(pickle.dumps(b)) < 3000, len(blob)
    copy = pickle.loads(blob)
    assert copy._file is None and copy.epoch == 4
    assert torch.equal(copy[7][0], ds[7][0])
    assert copy.file.path == ds.file.path


# ---------------------------------------------------------------------- training
def test_one_line_swap_trains_and_the_loss_decreases(plain):
    torch.manual_seed(0)
    train_set = ReinforcedDataset(base(transform=user_transform()), plain, p=0.9)  # was: base(transform=...)
    loader = DataLoader(train_set, batch_size=8, shuffle=True)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                                torch.nn.Flatten(), torch.nn.Linear(64, CLASSES))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    criterion = KDLoss()
    losses = []
    for _ in range(8):
        total = 0.0
        for images, target in loader:
            loss = criterion(model(images), target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            acc = (model(images).argmax(1) == hard_labels(target)).float().mean()
            assert 0.0 <= acc.item() <= 1.0
        losses.append(total / len(loader))
    assert losses[-1] < 0.8 * losses[0], losses


# ---------------------------------------------------------------------- batch replay
@pytest.mark.subprocess
@pytest.mark.parametrize("which,num_workers,target", [("rrc_ra_re", 0, "dense"), ("rrc_ra_re_mix", 2, "sparse")])
def test_batch_replay_gives_the_per_sample_bytes(files, which, num_workers, target):
    path = files[which]
    for out_dtype in (torch.uint8, torch.float32):
        per = ReinforcedDataset(base(), path, out_dtype=out_dtype, target=target)
        per.set_epoch(1)
        want = [per[i] for i in range(N)]
        ds = ReinforcedDataset(base(), path, out_dtype=out_dtype, target=target, batch_replay=True)
        loader = ds.loader(batch_size=7, num_workers=num_workers)
        loader.set_epoch(1)
        got = list(loader)
        assert len(got) == len(loader) == 4
        imgs = torch.cat([x for x, _ in got])
        assert imgs.dtype == out_dtype and torch.equal(imgs, torch.stack([w[0] for w in want]))
        if target == "dense":
            assert torch.equal(torch.cat([y for _, y in got]), torch.stack([w[1] for w in want]))
        else:
            for j in (0, 1):
                assert torch.equal(torch.cat([y[j] for _, y in got]), torch.stack([w[1][j] for w in want]))


@pytest.mark.parametrize("which", ["rrc_ra_re", "rrc_ra_re_mix", "paper_imagenet_mix"])
@pytest.mark.parametrize("batch_replay", [False, True])
def test_each_record_is_encoded_once_per_fetch(files, which, batch_replay, monkeypatch):
    """A fetch encodes each record it replays once: its own record, its partner's, and the mix row; batch
    replay does not check the records in the worker and encode them again in replay_batch. Counted
    through _args.encode / encode_mix, which replay and the record check call."""
    from reinforced_data import _args

    counts = {"encode": 0, "encode_mix": 0}

    def counting(name):
        real = getattr(_args, name)

        def count(params, *args, **kwargs):
            counts[name] += np.atleast_1d(params).shape[0]
            return real(params, *args, **kwargs)
        return count

    monkeypatch.setattr(_args, "encode", counting("encode"))
    monkeypatch.setattr(_args, "encode_mix", counting("encode_mix"))
    ds = ReinforcedDataset(base(), files[which], batch_replay=batch_replay)
    ds.set_epoch(2)
    indices = list(range(0, N, 2))
    with ReinforcementFile(files[which]) as f:
        params = f.read_many(np.array(indices), np.array([ds.choice(i) for i in indices])).params
    mixed = ds.policy.mixing and bool((params["mix_mode"] != 0).any())
    assert mixed == ds.policy.mixing
    if batch_replay:
        loader = ds.loader(batch_size=len(indices), sampler=indices)
        loader.set_epoch(2)
        (x, _), = list(loader)
    else:
        x = torch.stack([item[0] for item in ds.__getitems__(indices)])
    assert x.shape[0] == len(indices)
    # with a mixed view in the batch, replay takes one partner record per record (an unmixed view is its
    # own partner) and one mix row per record (mode 0 for the unmixed)
    n = len(indices)
    assert counts == {"encode": 2 * n if mixed else n, "encode_mix": n if mixed else 0}, counts


def test_batch_replay_names_a_damaged_record_and_a_damaged_partner(mixed, tmp_path):
    """Batch replay checks the records where the batch replays, not in the worker: a damaged record
    (its own, or the partner record of a mixed view) is still a CorruptFileError naming that record;
    an item collated without its record (made by hand) gives the batch-level mismatch error."""
    from reinforced_data.dataset import collate_sources

    with ReinforcementFile(mixed) as f:
        recs = f.read_many(np.arange(N), np.zeros(N, dtype=np.int64))
    j = int(np.flatnonzero(recs.params["mix_mode"] != 0)[0])
    partner, pview = int(recs.partner_index[j]), int(recs.partner_view[j])
    for image, view in ((j, 0), (partner, pview)):
        path = str(tmp_path / f"damaged_{image}_{view}.h5")
        shutil.copy(mixed, path)
        with ReinforcementFile(path) as f:
            c = f.codec
            rows = np.concatenate([c.from_planes(f._planes(image, g)) for g in range(c.chunks_per_image)])
        rows = rows[:K].copy()
        rows["flip"][view] = 3
        with h5py.File(path, "r+") as h:
            for g, data in enumerate(c.chunks(rows)):
                h["records"].id.write_direct_chunk((image, g, 0), data)
        ds = ReinforcedDataset(base(), path, views=[0])
        name = rf"stored view {view} of image {image} holds an invalid 'flip'"
        with pytest.raises(CorruptFileError, match=name):
            next(iter(ds.loader(batch_size=N)))
        item = ds.loader(batch_size=1).dataset[j]
        assert len(item) == 5 and item.record == (j, 0, partner, pview)
        with pytest.raises(DatasetMismatchError, match="a batch of images does not fit"):
            ds.replay_batch(collate_sources([tuple(item)]))  # a plain tuple: the record is not known


def test_batch_replay_with_original_samples_and_a_sampler(plain):
    b = base(transform=user_transform())
    per = ReinforcedDataset(b, plain, p=0.5, channels_last=True)
    ds = ReinforcedDataset(b, plain, p=0.5, channels_last=True)  # batch_replay=False: loader() still batches
    sampler = torch.utils.data.SubsetRandomSampler(list(range(N)), generator=torch.Generator().manual_seed(0))
    loader = ds.loader(batch_size=5, sampler=sampler)
    assert loader.sampler is sampler and loader.batch_size == 5
    ds.set_epoch(2)
    per.set_epoch(2)
    order = list(sampler)
    sampler.generator.manual_seed(0)
    imgs, targets = collect(loader)
    assert imgs.is_contiguous(memory_format=torch.channels_last)
    assert any(per.choice(i) < 0 for i in order) and any(per.choice(i) >= 0 for i in order)
    assert torch.equal(imgs, torch.stack([per[i][0] for i in order]))
    assert torch.equal(targets, torch.stack([per[i][1] for i in order]))
    only = ReinforcedDataset(b, plain, p=0.0)  # no reinforced sample in a batch: nothing to replay
    imgs, targets = collect(only.loader(batch_size=5))
    assert torch.equal(imgs, torch.stack([only[i][0] for i in range(N)]))
    assert torch.equal(targets.argmax(1), torch.tensor(b.targets))
    # originals whose transform does not give the replayed kind are refused clearly
    bad = ReinforcedDataset(b, plain, p=0.5, out_dtype=torch.uint8)
    with pytest.raises(ConfigError, match="original samples"):
        collect(bad.loader(batch_size=N))
    # ... also per sample, through a plain DataLoader (raw pixels must not join normalised views)
    for transform, what in ((None, "SyntheticImages' uint8 tensor"), (lambda x: x.float()[:, :8, :8], "size"),
                            (lambda x: x[:, :SIZE, :SIZE].contiguous(), "uint8 at the right size"),
                            (lambda x: x.float()[:, :SIZE, :SIZE].double(), "float64")):
        odd = ReinforcedDataset(base(transform=transform), plain, p=0.0)
        with pytest.raises(ConfigError, match="original samples"):
            odd[0]


def test_collate_packs_each_source_in_its_own_memory_order(plain):
    """Sources of one size and memory order are packed in one copy, mixed ones one by one: either
    way each lies at its offset of the flat buffer in its own order (channels-last stays so)."""
    from reinforced_data.dataset import _source_strides, collate_sources

    ds = ReinforcedDataset(base(), plain, batch_replay=True)
    ds.set_epoch(0)
    _, params, _, _, target = ds[0]
    g = torch.Generator().manual_seed(0)
    chw = [torch.randint(0, 256, (3, 8, 10), dtype=torch.uint8, generator=g) for _ in range(3)]
    hwc = [torch.randint(0, 256, (8, 10, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1) for _ in range(3)]
    for srcs in (chw, hwc, chw[:2] + hwc[:1] + [chw[2][:, :5]]):
        batch = collate_sources([(s, params, None, None, target) for s in srcs])
        assert batch["flat"].numel() == sum(s.numel() for s in srcs)
        for (off, h, w, channels_last), s in zip(batch["layout"].tolist(), srcs):
            assert channels_last == (s.stride(0) == 1)
            assert torch.equal(batch["flat"].as_strided((3, h, w), _source_strides(h, w, channels_last), off), s)


@pytest.mark.subprocess
@pytest.mark.cuda
def test_batch_replay_on_cuda_gives_the_cpu_bytes(mixed):
    ds = ReinforcedDataset(base(), mixed, out_dtype=torch.uint8, target="sparse")
    ds.set_epoch(0)
    def batches(device, **kw):
        imgs, idxs, probs = [], [], []
        for x, (i, p) in ds.loader(batch_size=8, device=device, **kw):
            assert x.device.type == i.device.type == p.device.type == device
            imgs.append(x.cpu())
            idxs.append(i.cpu())
            probs.append(p.cpu())
        return torch.cat(imgs), torch.cat(idxs), torch.cat(probs)

    for want, got in zip(batches("cpu"), batches("cuda", num_workers=2)):  # views and sparse targets
        assert torch.equal(got, want)
    f32 = ReinforcedDataset(base(), mixed)
    f32.set_epoch(0)
    assert torch.equal(collect(f32.loader(batch_size=8, device="cuda"))[0].cpu(),
                       torch.stack([f32[i][0] for i in range(N)]))


# ---------------------------------------------------------------------- errors
class _Patched(torch.utils.data.Dataset):
    """``good``'s items at the indices ``keep``, ``bad``'s elsewhere (same labels)."""

    def __init__(self, good, bad, keep):
        self.good, self.bad, self.keep = good, bad, set(keep)
        self.targets, self.classes = good.targets, good.classes

    def __len__(self):
        return len(self.good)

    def __getitem__(self, i):
        return (self.good if i in self.keep else self.bad)[i]


def test_mismatched_datasets_are_refused(plain):
    with pytest.raises(DatasetMismatchError, match=r"24 images, the dataset 23"):
        ReinforcedDataset(SyntheticImages(N - 1, CLASSES, 20, 40, seed=1), plain)
    with pytest.raises(DatasetMismatchError, match="labels differ"):
        ReinforcedDataset(SyntheticImages(N, CLASSES, 20, 40, seed=2), plain)
    # same length and labels, but the images changed (smaller): the image sample hash refuses it at once
    small = SyntheticImages(N, CLASSES, 8, 10, seed=1)
    with pytest.raises(DatasetMismatchError, match="the images differ"):
        ReinforcedDataset(small, plain)
    # images changed outside the hashed sample: the stored crops no longer fit, per sample and per batch
    small = _Patched(base(), small, keep=image_sample_indices(N))
    ds = ReinforcedDataset(small, plain)
    ds.set_epoch(0)
    with pytest.raises(DatasetMismatchError, match=rf"image \d+ does not fit stored view \d of {plain}"):
        [ds[i] for i in range(N)]
    first = next(i for i in range(N) if i not in image_sample_indices(N))
    with pytest.raises(DatasetMismatchError, match=rf"image {first} does not fit stored view \d of {plain}"):
        collect(DataLoader(ds, batch_size=N))  # a whole batch at once names the first image at fault
    with pytest.raises(DatasetMismatchError, match="does not fit its stored views"):
        collect(ds.loader(batch_size=N))
    other = base()
    other.classes = other.classes + ["extra"]
    with pytest.raises(DatasetMismatchError, match="classes"):
        ReinforcedDataset(other, plain)


def test_incomplete_damaged_and_foreign_files_are_refused(plain, tmp_path):
    inc = str(tmp_path / "incomplete.h5")
    shutil.copy(plain, inc)
    with h5py.File(inc, "r+") as f:
        f.attrs["complete"] = np.uint8(0)
    with pytest.raises(IncompleteFileError, match="incomplete"):
        ReinforcedDataset(base(), inc)
    with pytest.raises(IncompleteFileError, match="incomplete"):
        ReinforcedDataset(base(), ReinforcementFile(inc, accept_incomplete=True))
    with pytest.raises(FileNotFoundError):
        ReinforcedDataset(base(), str(tmp_path / "missing.h5"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a reinforcement file"):
        ReinforcedDataset(base(), str(other))
    # a record that fails its checks: the error names the image and the file
    bad = str(tmp_path / "bad.h5")
    shutil.copy(plain, bad)
    with h5py.File(bad, "r+") as f:
        d = f["records"]
        d.id.write_direct_chunk((5, 0, 0), zlib.compress(b"\xff" * d.shape[2]))
    ds = ReinforcedDataset(base(), bad)
    ds.set_epoch(0)
    ds[4]
    with pytest.raises(CorruptFileError, match=rf"\(5, \d\) in {bad}"):
        ds[5]
    with pytest.raises(CorruptFileError, match=rf"\(5, \d\) in {bad}"):
        ds.__getitems__([3, 4, 5, 6])


def test_index_and_arguments_errors(plain):
    ds = ReinforcedDataset(base(), plain)
    with pytest.raises(IndexError, match=rf"index {N} out of range .*{os.path.basename(plain)}"):
        ds[N]
    assert ds[-1][0].shape == (3, SIZE, SIZE)
    fixed = ReinforcedDataset(base(), plain)
    fixed.set_epoch(0)
    assert torch.equal(fixed[np.int64(2)][0], fixed[torch.tensor(2)][0])  # integer kinds are indices
    for bad in (2.7, "2", None):  # anything else is refused, not truncated
        with pytest.raises(TypeError, match="index must be an integer"):
            ds[bad]
    for kw in ({"p": 1.5}, {"target": "soft"}, {"residual": "none"}, {"label_smoothing": 1.0},
               {"out_dtype": torch.int32}, {"backend": "gpu"}, {"seed": -1}, {"p": "0.5"}, {"seed": 1.5},
               {"label_smoothing": "0"}):
        with pytest.raises(ConfigError):
            ReinforcedDataset(base(), plain, **kw)
    with pytest.raises(ConfigError):
        ds.set_epoch(-1)
    with pytest.raises(ConfigError, match="collate_fn"):
        ds.loader(batch_size=2, collate_fn=list)
