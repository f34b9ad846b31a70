#!/usr/bin/env python
"""What KDLoss's target check costs on a CPU: against the loss, and against a training step.

``KDLoss`` checks every batch's targets (``check_targets=True``, the default) and
``KDLoss(check_targets=False)`` skips it. On one thread this measures, side by side:

1. the loss's forward + backward with and without the check, on logits ``[--batch, --classes]``
   (256 x 1000) and three targets: dense float32 probabilities, sparse top-``--k`` (10)
   ``(indices, probs)`` pairs (the rest is the residual), hard labels; plus the check
   alone (``losses._check_dense`` / ``_check_sparse`` / ``_check_hard``) called in a tight loop;
2. a whole training step of the README's student (B = 64, 32 x 32 images,
   Conv2d(3, 32, 3) + ReLU + global average pool + Linear(32, 8), dense [64, 8] targets,
   ``KDLoss``, AdamW): forward, loss, zero_grad, backward, optimiser step, with and without
   the check.

Every round times one block of ``--calls`` (10) calls of each variant, in an order that
alternates between rounds; a variant's figure is the median over ``--rounds`` rounds, and the
check's cost is the median of the per-round differences (checked - unchecked, same round),
with their interquartile range. Times are the thread's CPU time (``time.thread_time``; the
backward pass runs on the calling thread on a CPU), which on a shared machine does not count
time spent waiting for a core; the wall-clock overhead is given beside it.

    python benchmarks/kd_check.py            # ~1 min, writes benchmarks/results/kd_check.md
    python benchmarks/kd_check.py --quick    # a few seconds, writes benchmarks/.data/kd_check_quick.md
"""

from __future__ import annotations

import _common  # first: this checkout's reinforced_data on sys.path

_common.one_core()  # per-core numbers: every thread pool pinned before torch loads

import argparse  # noqa: E402
import datetime  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Callable  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from _common import HERE, ROOT, machine, publish  # noqa: E402
from reinforced_data import losses as L  # noqa: E402

VARIANTS = ("off", "on", "check")  # check_targets=False, check_targets=True, the check alone


def block(f: Callable[[], None], n: int) -> tuple[float, float]:
    """Mean (thread CPU µs, wall µs) per call over ``n`` calls of ``f``."""
    c0, w0 = time.thread_time_ns(), time.perf_counter_ns()
    for _ in range(n):
        f()
    return (time.thread_time_ns() - c0) / n / 1e3, (time.perf_counter_ns() - w0) / n / 1e3


def interleaved(fs: dict[str, Callable[[], None]], rounds: int, calls: int,
                probe: list[int] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per variant, per clock ("cpu", "wall"): one block time per round (µs per call); for the
    variant "situ", also "probe": the CPU ns ``probe[0]`` gathered during its block, per call.
    Untimed warm-up first; the order of the variants is reversed every other round."""
    for f in fs.values():
        block(f, calls)
    keys = list(fs)
    out = {k: {"cpu": [], "wall": [], "probe": []} for k in keys}
    for r in range(rounds):
        for k in (keys if r % 2 == 0 else keys[::-1]):
            if probe is not None:
                probe[0] = 0
            cpu, wall = block(fs[k], calls)
            out[k]["cpu"].append(cpu)
            out[k]["wall"].append(wall)
            if k == "situ":
                out[k]["probe"].append(probe[0] / calls / 1e3)
    return out


def summarise(t: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    med = statistics.median
    s = {"off": med(t["off"]["cpu"]), "on": med(t["on"]["cpu"]), "check": med(t["check"]["cpu"])}
    for clock in ("cpu", "wall"):
        d = [b - a for a, b in zip(t["off"][clock], t["on"][clock])]
        q1, _, q3 = statistics.quantiles(d, n=4) if len(d) > 1 else (d[0], d[0], d[0])
        s[f"diff_{clock}"], s[f"q1_{clock}"], s[f"q3_{clock}"] = med(d), q1, q3
        s[f"pct_{clock}"] = 100 * med(d) / med(t["off"][clock])
    s["situ"] = med(t["situ"]["probe"])
    s["situ_pct"] = 100 * med([c / w for c, w in zip(t["situ"]["probe"], t["situ"]["cpu"])])
    return s


def in_situ(f: Callable[[], None], name: str, probe: list[int]) -> Callable[[], None]:
    """``f`` with ``losses.<name>`` (the check KDLoss calls) timed: its thread CPU ns are added to
    ``probe[0]``. The wrapper costs two clock reads per call (about 0.5 µs here), counted in."""
    orig = getattr(L, name)

    def timed(*a):
        t0 = time.thread_time_ns()
        try:
            return orig(*a)
        finally:
            probe[0] += time.thread_time_ns() - t0

    def g():
        setattr(L, name, timed)
        try:
            f()
        finally:
            setattr(L, name, orig)
    return g


def loss_variants(b: int, c: int, k: int, seed: int, probe: list[int]) -> dict[str, dict[str, Callable[[], None]]]:
    """Per target: forward + backward of KDLoss on logits [b, c] unchecked ("off"), checked ("on"),
    checked with the check timed inside ("situ"), and the check alone ("check")."""
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, c, generator=g, requires_grad=True)
    q = torch.softmax(3 * torch.randn(b, c, generator=g), 1)
    probs, idx = q.topk(k, 1)  # mass < 1: the rest is the residual
    y = q.argmax(1)
    on, off = L.KDLoss(), L.KDLoss(check_targets=False)

    def step(crit, target):
        def f():
            s.grad = None
            crit(s, target).backward()
        return f

    cases = {"dense float32": (q, "_check_dense", lambda: L._check_dense(q)),
             f"sparse, k = {k}": ((idx, probs), "_check_sparse", lambda: L._check_sparse(idx, probs, c)),
             "hard labels": (y, "_check_hard", lambda: L._check_hard(y, c))}
    return {name: {"off": step(off, t), "on": step(on, t), "situ": in_situ(step(on, t), fn, probe), "check": chk}
            for name, (t, fn, chk) in cases.items()}


def student_variants(seed: int, probe: list[int]) -> dict[str, Callable[[], None]]:
    """The README's student and loop: B = 64, 32 x 32, 8 classes, dense soft targets, AdamW.
    The variants share the model and the optimiser (every step does the same work)."""
    torch.manual_seed(seed)
    x = torch.randn(64, 3, 32, 32)
    q = torch.softmax(torch.randn(64, 8), 1)
    student = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(32, 8))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-2)

    def train(crit):
        def f():
            loss = crit(student(x), q)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return f

    return {"off": train(L.KDLoss(check_targets=False)), "on": train(L.KDLoss()),
            "situ": in_situ(train(L.KDLoss()), "_check_dense", probe), "check": lambda: L._check_dense(q)}


def code_state() -> str:
    """HEAD commit, and whether reinforced_data/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "reinforced_data"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not head:
        return "unknown"
    return f"commit {head}" + (f", with uncommitted changes in {len(dirty.splitlines())} file(s) under "
                               "reinforced_data/" if dirty else "")


def _loadavg() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="rows of the loss benchmark's logits")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--k", type=int, default=10, help="classes listed by the sparse target")
    ap.add_argument("--rounds", type=int, default=100, help="interleaved rounds of the loss benchmark")
    ap.add_argument("--step-rounds", type=int, default=100, help="interleaved rounds of the training step")
    ap.add_argument("--calls", type=int, default=10, help="calls per timed block")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a few seconds: a smoke test, not figures to quote")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    cmd_args = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.rounds, args.step_rounds, args.calls = 6, 4, 3
    out = args.out or os.path.join(HERE, ".data/kd_check_quick.md" if args.quick else "results/kd_check.md")
    load_start, t_all = _loadavg(), time.perf_counter()

    probe = [0]
    rows = {}
    for name, fs in loss_variants(args.batch, args.classes, args.k, args.seed, probe).items():
        t0 = time.perf_counter()
        rows[name] = summarise(interleaved(fs, args.rounds, args.calls, probe))
        print(f"[kd_check] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    st = summarise(interleaved(student_variants(args.seed, probe), args.step_rounds, args.calls, probe))
    print(f"[kd_check] training step: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    def row(name, s):
        return (f"| {name} | {s['off']:.0f} | {s['on']:.0f} | {s['diff_cpu']:+.0f} ({s['q1_cpu']:+.0f} to "
                f"{s['q3_cpu']:+.0f}) | {s['pct_cpu']:+.1f} % | {s['pct_wall']:+.1f} % | {s['situ']:.1f} "
                f"({s['situ_pct']:.1f} %) | {s['check']:.1f} ({100 * s['check'] / s['off']:.1f} %) |")

    header = ["| {} | `check_targets=False` | `check_targets=True` | difference (IQR) | overhead, CPU time | "
              "overhead, wall clock | the check, timed inside | the check alone, tight loop |",
              "|---|---|---|---|---|---|---|---|"]
    cmd = " ".join(["python", "benchmarks/kd_check.py", *map(shlex.quote, cmd_args)])
    lines = [
        "# KDLoss target check: overhead on a CPU" + (" (quick run: too few rounds to quote)" if args.quick else ""),
        "",
        f"Command: `{cmd}`",
        f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}; {code_state()}.",
        f"Machine: {machine()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}; one thread (torch intra- and inter-op, "
        f"OMP, MKL). Load average (1/5/15 min) at start {load_start}, at end {_loadavg()}: a shared machine, "
        "compare rows of this run, not runs.",
        "",
        f"µs of thread CPU time per call: the median over {args.rounds} interleaved rounds (the training step: "
        f"{args.step_rounds}), each timing a block of {args.calls} calls of every variant. Difference: the median of "
        "the per-round differences checked − unchecked, in brackets their interquartile range; overhead: that "
        "median over the unchecked median, on the thread's CPU time and on the wall clock (which also counts "
        "waiting for a core). The check, timed inside: the function `KDLoss` calls (`losses._check_dense`, "
        "`_check_sparse`, `_check_hard`) timed where it runs, in a third, checked variant (in brackets its share "
        "of that variant's time); the check alone: the same function on the same target called in a loop (in "
        "brackets over the unchecked time).",
        "",
        f"## The loss alone: forward + backward, logits [{args.batch}, {args.classes}] float32",
        "",
        header[0].format("target"),
        header[1],
        *(row(name, s) for name, s in rows.items()),
        "",
        "## A whole training step: the README's student",
        "",
        "B = 64 images 32 × 32, Conv2d(3, 32, 3, padding=1) + ReLU + global average pool + Linear(32, 8), dense "
        "soft targets [64, 8], `KDLoss`, AdamW (lr 1e-2): forward, loss, zero_grad, backward, step.",
        "",
        header[0].format(""),
        header[1],
        row("training step", st),
        "",
        f"Total time {time.perf_counter() - t_all:.0f} s.",
    ]
    publish("\n".join(lines) + "\n", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
