"""benchmarks/loader.py --quick runs end to end, and benchmarks/_photos.image_folder caches its folder.

The smoke run checks that every row was measured, that the chart is
a PNG and that the recorded results are not touched; it does not judge the numbers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO, "benchmarks")
SCRIPT = os.path.join(BENCH, "loader.py")

ROWS = ["(a) ReinforcedDataset", "(a) ReinforcedDataset, uint8", "(a) ReinforcedDataset, batch replay in the main process",
        "(b) timm create_transform",
        "(c) torchvision v2 on uint8 tensors", "(d) decode + resize only", "(d) decode + resize + normalise",
        "(e) torchvision.io decode + resize only", "(e) torchvision.io decode + resize + normalise"]


def _photos():
    if BENCH not in sys.path:
        sys.path.insert(0, BENCH)
    import _photos

    return _photos


def test_image_folder_is_written_once_and_reused(tmp_path):
    pytest.importorskip("skimage")
    photos = _photos()
    root = str(tmp_path / "photos")
    assert photos.image_folder(root, 12, seed=3) == root
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".JPEG"))
    assert len(files) == 12
    mtimes = [os.path.getmtime(f) for f in files]
    photos.image_folder(root, 12, seed=3)  # same request: nothing rewritten
    assert [os.path.getmtime(f) for f in files] == mtimes
    photos.image_folder(root, 5, seed=3)  # another request: the folder is replaced
    assert sum(f.endswith(".JPEG") for _, _, fs in os.walk(root) for f in fs) == 5
    assert json.load(open(os.path.join(root, ".photos.json")))["n"] == 5
    assert not os.path.exists(root + ".tmp")


def test_image_folder_refuses_a_folder_it_did_not_write(tmp_path):
    pytest.importorskip("skimage")
    photos = _photos()
    root = tmp_path / "mine"
    root.mkdir()
    (root / "keep.txt").write_text("not a photo folder")
    with pytest.raises(FileExistsError, match="not written by image_folder"):
        photos.image_folder(str(root), 4)
    assert (root / "keep.txt").read_text() == "not a photo folder"


def test_iter_photos_gives_make_photos_pixels():
    pytest.importorskip("skimage")
    photos = _photos()
    a = photos.make_photos(4, seed=1)
    b = list(photos.iter_photos(4, seed=1))
    assert [p.source for p in a] == [p.source for p in b]
    assert all(x.tensor.equal(y.tensor) for x, y in zip(a, b))


@pytest.mark.slow
@pytest.mark.subprocess
def test_quick_run_measures_every_row(tmp_path):
    pytest.importorskip("skimage")
    pytest.importorskip("timm")
    pytest.importorskip("matplotlib")
    results = os.path.join(BENCH, "results", "loader.md")
    before = os.path.getmtime(results) if os.path.exists(results) else None
    out = tmp_path / "loader.md"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, SCRIPT, "--quick", "--data", str(tmp_path / "data"), "--out", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    assert text == proc.stdout.rstrip("\n") + "\n"
    assert "Command: `python benchmarks/loader.py --quick" in text
    assert not re.search(r"\{[A-Za-z_.]+\}", text), "an unformatted placeholder leaked into the results"

    # one row per pipeline and worker count, each measured
    measured = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 10 and cells[0] in ROWS:
            measured[(cells[0], int(cells[2]))] = cells[3]
    assert set(measured) == {(r, w) for r in ROWS for w in (0, 1, 2)}
    for (row, w), ips in measured.items():
        assert re.fullmatch(r"[\d,]+", ips) and int(ips.replace(",", "")) > 0, (row, w, ips)
    assert re.search(r"`ReinforcementFile.read\(i, view\)`, \d+ random records on a warm handle: median [\d.]+ µs", text)
    # the targets' table: a ratio (wall / CPU) per worker count
    verdict = re.search(r"^\| \(a\) float32 ≥ 2× \(b\) timm \|(.*)\|$", text, re.M)
    assert verdict, text
    cells = [c.strip() for c in verdict.group(1).split("|")]
    assert len(cells) == 3
    for c in cells:
        assert re.fullmatch(r"[\d.]+× (met|NOT met) / [\d.]+× (met|NOT met)", c), c

    raw = json.loads((tmp_path / "loader.json").read_text())
    assert len(raw["rows"]) == len(ROWS) * 3
    for r in raw["rows"]:
        assert not r["error"], r
        assert len(r["epoch_wall_s"]) == len(r["epoch_cpu_s"]) == 1 and r["images"] > 0
        assert len(r["worker_mem_mib"]) == r["workers"]

    png = tmp_path / "loader.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![images/s](loader.png)" in text
    # the recorded results are never overwritten by a smoke run
    assert (os.path.getmtime(results) if os.path.exists(results) else None) == before


def test_error_bar_is_never_negative(monkeypatch):
    """The values that made the chart refuse ``yerr``: the CPU panel's median rate computed as
    ``1e3 / cpu_ms`` lies an ulp below ``images / cpu`` for the same epoch."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        monkeypatch.setenv(var, os.environ.get(var, "1"))  # the script sets them on import: restored after
    monkeypatch.syspath_prepend(BENCH)
    from loader import error_bar

    images, cpu = 2182, 72.15678783375485
    value = 1e3 / (cpu / images * 1e3)
    rates = [images / cpu]
    assert value - rates[0] < 0  # the rounding that used to give a negative length below the bar
    down, up = error_bar(value, rates)
    assert down == 0.0 and 0.0 <= up < 1e-12
    assert error_bar(10.0, [8.0, 10.0, 13.0]) == (2.0, 3.0)
