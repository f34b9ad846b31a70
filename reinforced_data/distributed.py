"""Several ranks (``torchrun``): meeting, waiting for every rank, rank 0's merge, a clean exit.

Each rank writes its own shard with no communication at all (see
:mod:`reinforced_data.generation`). What ranks need from each other happens before and
after that work, through the launcher's key-value store (torch's ``env://`` rendezvous,
the store ``torchrun`` serves), never through a collective of a process group:

* at the start, the rendezvous: bounded by :func:`timeout` (30 minutes, or
  ``$REINFORCED_DATA_DIST_TIMEOUT`` seconds), so ranks whose launcher died before they
  met give up instead of retrying for days;
* at the end, every rank posts its summary (or its error) and waits for the others'.
  Ranks may finish hours apart, so this wait has no deadline of its own: it polls,
  and ends when the store or the launcher is gone. Then rank 0 merges the shards and
  posts the result; the others wait for it, and rank 0 waits until every rank has
  read it (it may be the store's host).
* Throughout, a watcher thread ends a torchrun worker (exit status 1) as soon as its
  parent process, torchrun, is gone: committed rows are kept, ``--resume`` continues.

No gloo or NCCL process group is created, so none has to be torn down: the teardown
race of a gloo group destroyed while its threads still ran (a rank ending in
``terminate called without an active exception`` after all work was done) cannot
occur. When the caller has initialised a process group already, its store is used.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ._started import STARTED_UNDER
from .errors import ConfigError, ReinforcedDataError

__all__ = ["TIMEOUT_ENV", "DEFAULT_TIMEOUT_S", "timeout", "launcher_pid", "ParentWatch", "run_ranks"]

log = logging.getLogger(__name__)

TIMEOUT_ENV = "REINFORCED_DATA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 30 * 60
POLL_S = 0.2

_calls = itertools.count()  # several synchronised runs in one process use distinct keys


def timeout() -> datetime.timedelta:
    """The rendezvous and store timeout: ``$REINFORCED_DATA_DIST_TIMEOUT`` seconds, default 30 minutes."""
    text = os.environ.get(TIMEOUT_ENV)
    if not text:
        return datetime.timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not seconds > 0 or seconds == float("inf"):
        raise ConfigError(f"{TIMEOUT_ENV}={text!r} must be a positive number of seconds")
    return datetime.timedelta(seconds=seconds)


def launcher_pid() -> int:
    """The parent this process started under: the one noted when the package was first imported
    (:data:`reinforced_data.STARTED_UNDER`), so that a launcher that died during the
    imports since is seen gone; in a process forked after that import, its parent now."""
    pid, parent = STARTED_UNDER
    return parent if pid == os.getpid() else os.getppid()


class ParentWatch:
    """A daemon thread that ends this process (``os._exit(1)``) once its parent is gone.

    A rank whose launcher died is re-parented (to init or a subreaper), so its parent pid
    changes; nothing would ever collect its result, and a rank waiting for the others
    would wait forever. Rows already committed are safe, as after ``kill -9``.
    """

    def __init__(self, interval: float = 1.0) -> None:
        self.parent = launcher_pid()
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="reinforced_data-parent-watch", daemon=True)

    def _watch(self) -> None:
        while True:
            if os.getppid() != self.parent:
                log.error("the launcher (pid %d) is gone: stopping this rank; committed rows are kept, continue "
                          "with --resume", self.parent)
                os._exit(1)
            if self._stop.wait(self.interval):
                return

    @staticmethod
    def launched_by_torchrun() -> bool:
        """Only a torchrun worker is watched: a rank started by hand (``nohup ... &``) may outlive its shell."""
        return "TORCHELASTIC_RUN_ID" in os.environ

    def __enter__(self) -> "ParentWatch":
        if self.launched_by_torchrun():
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _store(rank: int, world_size: int, wait: datetime.timedelta):
    """The key-value store the ranks share: the caller's process group's, or torch's env:// rendezvous."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.distributed_c10d._get_default_store()
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise ConfigError(f"{world_size} ranks must meet, but {' and '.join(missing)} is not set; launch them with "
                          "torchrun (or set MASTER_ADDR and MASTER_PORT)")
    host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    hosting = rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    if not hosting:  # wait for the store here: torch's client would log a C++ traceback on its timeout
        _wait_for_server(host, port, rank, wait)
    try:
        store, _, _ = next(dist.rendezvous("env://", rank=rank, world_size=world_size, timeout=wait))
    except (RuntimeError, ValueError) as e:  # torch's DistStoreError / DistNetworkError are RuntimeErrors
        raise _no_meeting(rank, wait, str(e)) from None
    return store


def _no_meeting(rank: int, wait: datetime.timedelta, why: str) -> ReinforcedDataError:
    return ReinforcedDataError(f"rank {rank} could not meet the other ranks within {wait} ({' '.join(why.split())}); "
                               f"is the launcher still running? ({TIMEOUT_ENV} sets the timeout in seconds)")


def _wait_for_server(host: str, port: int, rank: int, wait: datetime.timedelta) -> None:
    deadline = time.monotonic() + wait.total_seconds()
    while True:
        try:
            socket.create_connection((host, port), timeout=min(1.0, wait.total_seconds())).close()
            return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise _no_meeting(rank, wait, f"nothing answers at {host}:{port}: {e.strerror or e}") from None
            time.sleep(POLL_S)


def _wait_for(store, keys: list[str], deadline: datetime.timedelta | None = None) -> None:
    """Poll until every key exists. Waits for work have no deadline (the parent watch and the
    store's own errors end them); the last handshake has one."""
    end = None if deadline is None else time.monotonic() + deadline.total_seconds()
    while not store.check(keys):
        if end is not None and time.monotonic() > end:
            missing = [k.rsplit("/", 1)[1] for k in keys if not store.check([k])]
            raise ReinforcedDataError(f"rank(s) {', '.join(missing)} did not confirm the end of the run within "
                                      f"{deadline}; the files are complete, check that every rank has exited")
        time.sleep(POLL_S)


def _prefix() -> str:
    run = os.environ.get("TORCHELASTIC_RUN_ID", "run")
    restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return f"reinforced_data/{run}/{restart}/{next(_calls)}"


def run_ranks(work: Callable[[], Any], output: str | os.PathLike, *, rank: int, world_size: int,
              merge: bool = False, overwrite: bool = False) -> Any:
    """Run ``work()`` (this rank's :meth:`Reinforcement.run`) with the other ranks; see the module docstring.

    Returns this rank's :class:`~reinforced_data.generation.Summary` with ``ranks`` (every
    rank's summary, by rank) and, after a merge, ``merged`` set. When a rank failed,
    that rank raises its own error and every other rank a :class:`ReinforcedDataError`
    naming it; no merge is attempted.
    """
    from . import store as store_mod

    with ParentWatch():
        store = _store(rank, world_size, timeout())
        prefix = _prefix()
        try:
            error: BaseException | None = None
            summary = None
            try:
                summary = work()
            except Exception as e:  # noqa: BLE001 - reported to the other ranks, then raised here
                error = e
            mine = {"summary": summary.to_dict() if summary is not None else None,
                    "error": None if error is None else (" ".join(str(error).split()) or type(error).__name__)}
            store.set(f"{prefix}/rank/{rank}", json.dumps(mine))
            keys = [f"{prefix}/rank/{r}" for r in range(world_size)]
            _wait_for(store, keys)
            posted = [json.loads(store.get(k)) for k in keys]
            failed = [(r, p["error"]) for r, p in enumerate(posted) if p["error"] is not None]
            merged: str | None = None
            if not failed and merge:
                if rank == 0:
                    result = {"merged": None, "error": None}
                    try:  # a resumed run merges again: the merged file is made from the (complete) shards
                        result["merged"] = store_mod.merge(output, [p["summary"]["output"] for p in posted],
                                                           overwrite=overwrite)
                    except Exception as e:  # noqa: BLE001 - the other ranks must learn of it, not wait forever
                        result["error"] = " ".join(str(e).split()) or type(e).__name__
                        error = e
                    store.set(f"{prefix}/merged", json.dumps(result))
                else:
                    _wait_for(store, [f"{prefix}/merged"])
                    result = json.loads(store.get(f"{prefix}/merged"))
                merged = result["merged"]
                if result["error"] is not None and rank != 0:
                    failed = [(0, f"merging the shards failed: {result['error']}")]
            # rank 0 may host the store: it leaves only after every rank has read what it needs
            store.set(f"{prefix}/done/{rank}", "1")
            if rank == 0:
                _wait_for(store, [f"{prefix}/done/{r}" for r in range(world_size)], timeout())
        finally:
            del store
        if error is not None:
            raise error
        others = [(r, msg) for r, msg in failed if r != rank]
        if others:
            r, msg = others[0]
            raise ReinforcedDataError(f"rank {r} of {world_size} failed ({msg}); this rank's shard is complete: fix "
                                      "the cause and run again with --resume")
    summary.ranks = [p["summary"] for p in posted]
    summary.merged = merged
    return summary
