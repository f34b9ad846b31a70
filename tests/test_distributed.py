"""torchrun drills: clean exits every time, ranks that end when torchrun is gone, a bounded rendezvous."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

import _reinforce_util as U
from reinforced_data import store as S

pytestmark = [pytest.mark.distributed, pytest.mark.slow, pytest.mark.subprocess]

DATA = "synthetic:num_images=16,num_classes=8,min_size=20,max_size=28,seed=2"
COMMON = ["--data", DATA, "--teacher", "_reinforce_util:tiny_teacher", "--output-size", "16", "-K", "2", "-k", "2",
          "--block-size", "4", "--no-progress"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
            "reinforced_data", *args]


def test_resume_merge_over_complete_shards_exits_0_every_time(tmp_path):
    """The drill that ended about 1 run in 4 with SIGABRT ('terminate called without an active
    exception') after all work was done, when the ranks tore down a gloo process group."""
    out = tmp_path / "d.h5"
    cmd = torchrun("reinforce", *COMMON, "--policy", "rrc_ra_re_mix", "-o", str(out), "--merge")
    r = subprocess.run(cmd, capture_output=True, text=True, env=U.subprocess_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    first = [open(p, "rb").read() for p in (S.shard_path(out, 0, 2), S.shard_path(out, 1, 2))]
    for attempt in range(3):
        r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, env=U.subprocess_env(), timeout=120)
        assert r.returncode == 0, f"run {attempt}: exit {r.returncode}\n{r.stderr}"
        assert "terminate called" not in r.stderr and "merged 2 shards into" in r.stderr
        assert "8 images were already stored" in r.stderr
    with S.ReinforcementFile(out) as f:
        assert f.complete and f.num_images == 16 and f.header.extra == {"merged_from": 2}
    assert [open(p, "rb").read() for p in (S.shard_path(out, 0, 2), S.shard_path(out, 1, 2))] == first


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        kids.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return kids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ranks_exit_when_torchrun_is_killed(tmp_path):
    out = tmp_path / "slow.h5"
    proc = subprocess.Popen(torchrun("reinforce", *COMMON, "-o", str(out), "--batch-size", "1"),
                            env=U.subprocess_env(TINY_TEACHER_DELAY="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ranks: list[int] = []
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not (len(ranks) == 2 and os.path.exists(S.shard_path(out, 1, 2))):
            time.sleep(0.3)
            ranks = _children(proc.pid)
        assert len(ranks) == 2 and proc.poll() is None, "the ranks did not start"
        os.kill(proc.pid, signal.SIGKILL)  # torchrun gone, as after an OOM kill: nobody will stop the ranks
        proc.wait()
        deadline = time.time() + 20
        while time.time() < deadline and any(_alive(p) for p in ranks):
            time.sleep(0.2)
        assert not any(_alive(p) for p in ranks), "orphaned ranks kept running"
    finally:  # never leave a rank behind, whatever failed
        for p in set(ranks) | set(_children(proc.pid) if proc.poll() is None else []):
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with S.ReinforcementFile(S.shard_path(out, 0, 2), accept_incomplete=True) as f:
        assert not f.complete  # stopped mid-way; --resume continues it


def test_a_rank_alone_gives_up_meeting_after_the_timeout(tmp_path):
    with socket.socket() as s:  # a port nobody serves
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = U.subprocess_env(RANK="1", WORLD_SIZE="2", LOCAL_RANK="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                           REINFORCED_DATA_DIST_TIMEOUT="3")
    t = time.time()
    r = subprocess.run([sys.executable, "-m", "reinforced_data", "reinforce", *COMMON, "-o", str(tmp_path / "x.h5")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "rank 1 could not meet the other ranks within 0:00:03" in lines[0], r.stderr
    assert "REINFORCED_DATA_DIST_TIMEOUT" in lines[0]
    assert time.time() - t < 60


SCRIPT = """
import sys
from reinforced_data import reinforce
from reinforced_data.policy import Policy
s = reinforce({data!r}, "_reinforce_util:tiny_teacher", sys.argv[1], policy=Policy.preset("rrc_ra_re_mix",
              output_size=(16, 16)), num_views=2, topk=2, block_size=4, progress=False, merge=True)
print("merged", s.merged, "ranks", len(s.ranks), "images", sum(r["images"] for r in s.ranks))
"""


def _ranks_by_hand(out, extra_env=None):
    """Two ranks started without torchrun (rank 0 hosts the store), as a script of one's own would."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(2):
        env = U.subprocess_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                               MASTER_PORT=str(port), **(extra_env or {}).get(rank, {}))
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT.format(data=DATA), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return [(p.wait(timeout=120), *p.communicate()) for p in procs]


def test_reinforce_merge_from_a_script_equals_one_process(tmp_path):
    from reinforced_data.policy import Policy
    from reinforced_data.generation import reinforce

    out = tmp_path / "m.h5"
    results = _ranks_by_hand(out)
    for rc, stdout, stderr in results:
        assert rc == 0, stderr
        assert f"merged {out} ranks 2 images 16" in stdout
    single = tmp_path / "single.h5"
    reinforce(DATA, "_reinforce_util:tiny_teacher", str(single), policy=Policy.preset("rrc_ra_re_mix",
              output_size=(16, 16)), num_views=2, topk=2, block_size=4, progress=False)
    with S.ReinforcementFile(out) as a, S.ReinforcementFile(single) as b:
        for i in range(16):
            ra, rb = a.read_image(i), b.read_image(i)
            assert (ra.params == rb.params).all() and (ra.indices == rb.indices).all()
            assert (ra.probs == rb.probs).all() and (ra.partner_index == rb.partner_index).all()


def test_a_failing_rank_is_reported_by_the_others_and_nobody_hangs(tmp_path):
    out = tmp_path / "f.h5"
    # rank 1's teacher fails (time.sleep(nan)); rank 0 finishes its shard, then learns of it
    results = _ranks_by_hand(out, {1: {"TINY_TEACHER_DELAY": "nan"}})
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc1 != 0 and "ValueError" in err1
    assert rc0 != 0 and "rank 1 of 2 failed" in err0 and "run again with --resume" in err0
    assert not out.exists()  # no merge
    with S.ReinforcementFile(S.shard_path(out, 0, 2)) as f:
        assert f.complete
