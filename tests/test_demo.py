"""`reinforced-data demo` end to end at a tiny size, and its generated dataset."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import torch
from PIL import Image

from collections.abc import Sequence

from reinforced_data.demo import (DemoResult, DemoSettings, Estimate, RunResult, StepResult, add_demo_parser,
                                   chosen_k, conclusions, main, paired, run_demo)
from reinforced_data.errors import ConfigError, ReinforcedDataError
from reinforced_data.shapes import SHAPE_CLASSES, ShapesDataset, draw_shape_image

# smaller than --quick: seconds, not minutes
TINY = dict(quick=True, epochs=(1, 2), seeds=2, views=4, train_images=192, test_images=96, teacher_epochs=1,
            teacher_images=64, batch_size=32, grid_images=2, grid_views=3, progress=False, threads=1)


def test_shapes_dataset_is_deterministic_and_balanced():
    a = ShapesDataset("train", 48, seed=3)
    b = ShapesDataset("train", 48, seed=3)
    t = ShapesDataset("test", 48, seed=3)
    assert len(a.classes) == len(SHAPE_CLASSES) >= 10
    assert np.array_equal(a.images, b.images) and a.targets == b.targets
    assert not np.array_equal(a.images, t.images)
    img, label = a[5]
    assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 40, 40) and label == a.targets[5]
    assert np.bincount(a.targets).tolist() == [4] * len(SHAPE_CLASSES)
    assert a.images.std() > 30  # cluttered, not flat
    # the committed demo results (docs/demo/) were measured on exactly these pixels
    assert hashlib.sha256(ShapesDataset("train", 8, seed=0).images.tobytes()).hexdigest()[:16] == "05a03a27856445e2"
    assert hashlib.sha256(ShapesDataset("extra", 8, seed=0).images.tobytes()).hexdigest()[:16] == "77be15f23bcbcae9"
    # the label decides the object: the same draws with another class give another image
    for i in range(6):
        one, other = (draw_shape_image(np.random.default_rng([0, 0, i]), c) for c in ("disc", "cross"))
        assert not np.array_equal(one, other), i
    # a subset of classes draws the named shapes (label i is classes[i])
    sub = ShapesDataset("train", 6, seed=3, classes=("star", "disc"))
    assert sub.classes == ["star", "disc"]
    for i in range(6):
        want = draw_shape_image(np.random.default_rng([3, 0, i]), sub.classes[sub.targets[i]])
        assert np.array_equal(sub.images[i], want.transpose(2, 0, 1))
        assert np.array_equal(want, draw_shape_image(np.random.default_rng([3, 0, i]),
                                                     SHAPE_CLASSES.index(sub.classes[sub.targets[i]])))
    # the teacher's extra images and the K sweep's held-out images come from splits of their own: none of them
    # is a training, test or other split's image
    extra, held = ShapesDataset("extra", 48, seed=3), ShapesDataset("held_out", 48, seed=3)
    for new, others in ((extra, (a, t)), (held, (a, t, extra))):
        for other in others:
            assert not any((new.images[i] == other.images).all(axis=(1, 2, 3)).any() for i in range(48))
    with pytest.raises(ConfigError):
        ShapesDataset("validation", 4)
    with pytest.raises(ConfigError):
        ShapesDataset("train", 4, num_classes=13)


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.split("\n\n| epochs")[0].splitlines():
        if line.startswith("| ") and not line.startswith("| model") and not line.startswith("|---"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_outputs_and_determinism(tmp_path):
    r1 = run_demo(tmp_path / "a", seed=1, jobs=2, **TINY)
    files = r1.files
    for key in ("results.md", "results.json", "cost.png", "accuracy.png", "views.png", "reinforcement"):
        assert os.path.isfile(files[key]), key
        assert os.path.dirname(os.path.abspath(files[key])) == os.path.abspath(tmp_path / "a")
    for key in ("cost.png", "accuracy.png", "views.png"):
        with Image.open(files[key]) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    text = open(files["results.md"]).read()
    rows = _table_rows(text)
    assert list(rows) == ["teacher (AdaptiveEnsembleHead, 2 weak learners; once)", "student: plain",
                          "student: online KD", "student: reinforced"]
    for name in ("student: plain", "student: online KD", "student: reinforced"):
        acc, per_seed, seconds, rel = rows[name]
        mean, std = (float(v) for v in acc.split("±"))
        per = [float(v) for v in per_seed.split(",")]
        assert len(per) == 2 and mean == pytest.approx(np.mean(per), abs=0.01)
        assert std == pytest.approx(np.std(per, ddof=1), abs=0.01)
        assert float(seconds) > 0 and rel.endswith("x"), name
    assert rows["student: plain"][3] == "1.00x"
    assert "reinforced − plain" in text and "Conclusions (computed" in text
    data = json.load(open(files["results.json"]))
    runs = data["runs"]
    # every arm, seed and budget was trained once, with one accuracy per epoch
    assert sorted((r["arm"], r["seed"], r["epochs"]) for r in runs) == sorted(
        (a, sd, e) for a in ("plain", "online KD", "reinforced") for sd in (1, 2) for e in (1, 2))
    for r in runs:
        assert len(r["history"]) == r["epochs"] and r["history"][-1] == r["accuracy"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["cpu_seconds"] > 0 and r["images"] > 0
    assert set(data["paired"]) == {"reinforced - plain", "reinforced - online KD"}
    assert 0.0 <= r1.teacher.accuracy <= 1.0 and r1.reinforcement.cpu_seconds > 0
    # the teacher's bags hold the training images outside the held-out tenth and the 64 extra ones;
    # the students and the reinforcement file hold the 192 training images alone
    bags = re.search(r"disjoint bags of (\d+)/(\d+) images", r1.teacher.note)
    assert int(bags[1]) + int(bags[2]) == 192 - 18 + 64, r1.teacher.note
    assert "and 64 more the teacher alone trains on" in r1.dataset
    assert {r["images"] for r in runs if r["epochs"] == 1} == {192 // 32 * 32}

    # same seed, same accuracies, whatever the number of processes (times differ); a K sweep beside them
    # changes none of them
    r2 = run_demo(tmp_path / "b", seed=1, jobs=1, k_sweep=(2, 4), **TINY)
    assert r2.teacher.accuracy == r1.teacher.accuracy
    key = lambda r: (r.arm, r.seed, r.epochs)  # noqa: E731
    assert {key(r): r.history for r in r2.runs} == {key(r): r.history for r in r1.runs}
    # on generated data the sweep's students train on the whole training set, as the reinforced arm does, and
    # are scored on a generated split of their own
    assert sorted((r.views, r.seed) for r in r2.k_sweep) == [(2, 1), (2, 2), (4, 1), (4, 2)]
    assert all(r.evaluated_on == "held-out" and r.images == 192 // 32 * 32 * 2 for r in r2.k_sweep)
    assert "scored on 96 more generated images" in open(r2.files["results.md"]).read()


def _run(arm: str, seed: int, acc: float, cpu: float, epochs: int = 4) -> RunResult:
    return RunResult(arm, seed, epochs, acc, cpu, cpu, 100, [acc] * epochs)


def _result(runs: list[RunResult], reinforce_cpu: float = 10.0) -> DemoResult:
    s = DemoSettings(epochs=(2, 4), seeds=3)
    return DemoResult(s, "data", "cpu", StepResult(0.9, 1.0, 1.0), StepResult(None, reinforce_cpu, 1.0), 1, runs,
                      "out", {})


def test_estimates_and_paired_differences():
    e = Estimate.of([0.1, 0.2, 0.3])
    assert e.mean == pytest.approx(0.2) and e.std == pytest.approx(0.1)
    assert e.high - e.mean == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-4)  # t(0.975, 2 df)
    assert Estimate.of([0.5]).low == Estimate.of([0.5]).high == 0.5
    assert "no interval" in Estimate.of([0.5]).interval()
    runs = [_run("plain", sd, a, 1.0) for sd, a in enumerate((0.50, 0.60, 0.70))]
    runs += [_run("reinforced", sd, a, 1.1) for sd, a in enumerate((0.55, 0.66, 0.74))]
    d = paired(runs, "reinforced", "plain", 4)
    assert d.n == 3 and d.mean == pytest.approx(0.05) and d.std == pytest.approx(np.std([.05, .06, .04], ddof=1))


def test_conclusions_follow_the_numbers():
    def runs(gain: Sequence[float], kd_cost: float) -> list[RunResult]:
        out = []
        for e in (2, 4):
            for sd in range(3):
                out.append(_run("plain", sd, 0.6 + 0.01 * sd, 1.0 * e, e))
                out.append(_run("online KD", sd, 0.65 + 0.01 * sd, kd_cost * e, e))
                out.append(_run("reinforced", sd, 0.6 + 0.01 * sd + gain[sd], 1.2 * e, e))
        return out

    clear = conclusions(_result(runs((0.06, 0.07, 0.065), kd_cost=2.0)))
    assert "above plain: the whole interval is above 0" in clear[0]
    assert "within 1 point of online KD or above it" in clear[1]
    assert any("paid back against online KD after 3.1 trainings" in c for c in clear)  # 10 / (8 - 4.8)
    assert any("reaches 67.50 %, above online KD's 66.00 %" in c for c in clear)  # reinforced at 4 epochs vs KD at 4
    # reinforced's longest run costs 0.6x online KD's longest: the sentence says no reinforced run costs as much
    assert any("KD's 4 epochs (8.0 s)" in c and "at 0.60× the cost: no reinforced run here costs as much" in c
               for c in clear)
    assert not any("KD's 2 epochs" in c and "costs as much" in c for c in clear)
    noisy = conclusions(_result(runs((0.08, -0.06, 0.01), kd_cost=1.0)))
    assert "the interval contains 0" in noisy[0]
    assert "the mean is more than 1 point below online KD, but the interval reaches above −1" in noisy[1]
    level = conclusions(_result(runs((0.06, 0.02, 0.07), kd_cost=2.0)))  # reinforced − KD +0.01, −0.03, +0.02
    assert "the mean is within 1 point of online KD or above it, but the interval reaches below −1" in level[1]
    assert any("never paid back" in c for c in noisy)
    worse = conclusions(_result(runs((-0.05, -0.06, -0.05), kd_cost=2.0)))
    assert "below plain" in worse[0] and "below online KD by more than 1 point" in worse[1]


@pytest.mark.slow
@pytest.mark.subprocess
def test_demo_on_an_image_folder(tmp_path, capsys):
    root = tmp_path / "data"
    ShapesDataset("train", 96, seed=2, num_classes=4).write_image_folder(root / "train")
    ShapesDataset("test", 48, seed=2, num_classes=4).write_image_folder(root / "val")
    tiny = {k: v for k, v in TINY.items() if k not in ("train_images", "test_images", "quick")}
    result = run_demo(tmp_path / "out", data=str(root), quick=True, jobs=1, k_sweep=(4,), **tiny)
    assert "ImageFolder" in result.dataset and {r.arm for r in result.runs} == {"plain", "online KD", "reinforced"}
    # the sweep trains on the 96 - 8 images outside the held-out tenth (2 of each class's 24) and scores on those 8
    assert [(r.views, r.images) for r in result.k_sweep] == [(4, 88 // 32 * 32 * 2)] * 2
    assert "outside the held-out tenth" in open(result.files["results.md"]).read()
    assert os.path.isfile(result.files["views.png"])
    assert str(tmp_path / "out") in capsys.readouterr().err  # the folder is named at the end


def test_command_line(tmp_path, capsys, monkeypatch):
    import argparse

    import reinforced_data.demo as demo

    parser = argparse.ArgumentParser()
    add_demo_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["demo", "--quick", "--out", "x", "--seed", "3", "--views", "7", "--epochs", "2,4",
                              "--seeds", "5", "--jobs", "1", "--k-sweep", "4,8", "--teacher-images", "0",
                              "--teacher-epochs", "9"])
    assert (args.quick, args.out, args.seed, args.views, args.epochs, args.seeds, args.jobs, args.k_sweep) == \
        (True, "x", 3, 7, (2, 4), 5, 1, (4, 8))
    assert (args.teacher_images, args.teacher_epochs) == (0, 9)
    assert callable(args.func)
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"reinforced-data: error: .*train/", err[0])
    for bad in (dict(epochs=0), dict(seeds=0), dict(jobs=-1), dict(teacher_images=-1), dict(teacher_epochs=0)):
        with pytest.raises(ConfigError):
            DemoSettings(**bad).validate()
    assert DemoSettings(epochs=(40, 10, 20, 10)).epochs == (10, 20, 40)
    assert DemoSettings(epochs=5).main_epochs == 5
    # Ctrl-C: one line and exit 130, as from the reinforced-data command
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "run_demo", interrupted)
    assert main(["--quick", "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err.strip() == "reinforced-data: interrupted"
    assert "95 % intervals" in add_demo_parser(argparse.ArgumentParser().add_subparsers()).format_help()


def test_k_is_chosen_by_the_one_standard_error_rule():
    def sweep(k: int, accs: Sequence[float]) -> list[RunResult]:
        return [dataclasses.replace(_run("reinforced", sd, a, 1.0), views=k, evaluated_on="held-out")
                for sd, a in enumerate(accs)]

    runs = sweep(8, (0.70, 0.71, 0.72)) + sweep(16, (0.79, 0.80, 0.81)) + sweep(32, (0.79, 0.81, 0.83))
    # best: K=32, mean 0.81, standard error 0.02 / sqrt(3); K=16's mean 0.80 lies within it, K=8's does not
    assert chosen_k(runs) == 16
    assert chosen_k(sweep(8, (0.5, 0.5)) + sweep(64, (0.9, 0.9))) == 64


def _die_or_wait(what: str) -> str:
    if what == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if what == "fail":
        raise ValueError("a run failed")
    time.sleep(60)
    return what


@pytest.mark.subprocess
def test_a_failed_or_killed_training_process_stops_the_demo_at_once():
    from reinforced_data.demo import _parallel

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="a run failed"):  # the queued and running 60 s runs are not waited for
        _parallel(_die_or_wait, [("fail",), ("wait",), ("wait",), ("wait",)], 2, {})
    with pytest.raises(ReinforcedDataError, match="training process of the demo died"):
        _parallel(_die_or_wait, [("die",), ("wait",), ("wait",)], 2, {})
    assert time.monotonic() - t0 < 30


def _children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] not in "ZX":
                out.add(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


@pytest.mark.subprocess
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_terminated_or_killed_demo_leaves_no_training_process_behind(sig):
    import subprocess
    import sys

    code = "import time; from reinforced_data.demo import _parallel; _parallel(time.sleep, [(120,)] * 3, 2, {})"
    proc, workers = subprocess.Popen([sys.executable, "-c", code]), set()
    try:
        deadline = time.monotonic() + 60
        while len(workers := _children(proc.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(workers) >= 2, "the pool's workers did not start"
        proc.send_signal(sig)
        # SIGTERM stops the pool on the way out (exit 143); after SIGKILL the kernel ends the workers
        assert proc.wait(timeout=30) == (128 + signal.SIGTERM if sig == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(w) for w in workers), "a training process outlived the demo"
    finally:
        proc.kill()
        for w in workers | _children(proc.pid):
            if _alive(w):
                os.kill(w, signal.SIGKILL)


def test_bad_settings_are_refused():
    for bad in (dict(threads=-1), dict(seed=-1)):
        with pytest.raises(ConfigError):
            DemoSettings(**bad).validate()


def test_sets_smaller_than_a_batch_are_refused_before_training(tmp_path):
    """Fewer images than one batch would train for zero steps: a one-line error names the set, before any training."""
    tiny = {k: v for k, v in TINY.items() if k not in ("train_images", "quick")}
    with pytest.raises(ConfigError, match="the students' training set: 20 images, fewer than one batch of 32"):
        run_demo(tmp_path / "a", quick=True, train_images=20, **tiny)
    root = tmp_path / "data"  # 48 training images: enough for the students, not for two teacher bags of 32
    ShapesDataset("train", 48, seed=2, num_classes=4).write_image_folder(root / "train")
    ShapesDataset("test", 16, seed=2, num_classes=4).write_image_folder(root / "val")
    tiny = {k: v for k, v in tiny.items() if k != "test_images"}
    with pytest.raises(ConfigError, match="each of the teacher's two bags .*: 2[0-9] images, fewer than one batch of 32"):
        run_demo(tmp_path / "b", data=str(root), quick=True, **tiny)
    # the K sweep on an ImageFolder trains on the images outside the held-out tenth: 36 of 40
    ShapesDataset("train", 40, seed=2, num_classes=4).write_image_folder(tmp_path / "d40" / "train")
    ShapesDataset("test", 16, seed=2, num_classes=4).write_image_folder(tmp_path / "d40" / "val")
    with pytest.raises(ConfigError, match="the K sweep's training images .*: 36 images, fewer than one batch of 40"):
        run_demo(tmp_path / "c", data=str(tmp_path / "d40"), quick=True, k_sweep=(2,), **{**tiny, "batch_size": 40})
