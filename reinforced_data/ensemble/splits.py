"""Index splits: train / val / test (:func:`stratified_split`) and the weak learners' disjoint bags
(:func:`bagging_split`), class-stratified and seeded."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from torch import Tensor

from ..errors import ConfigError

__all__ = ["bagging_split", "stratified_split"]

logger = logging.getLogger(__name__)


def bagging_split(labels: Sequence[int] | np.ndarray | Tensor, n: int | None, seed: int = 0, *,
                  groups: Sequence[Hashable] | Mapping[int, Hashable] | None = None) -> list[np.ndarray]:
    """Split sample indices into ``n`` disjoint bags, one per weak learner.

    By default the bags are class-stratified: every class's samples are shuffled (seeded) and
    dealt round-robin, so the bags cover the data, their sizes differ by at most one, and
    each class's count differs by at most one between bags. ``n`` may not exceed the
    smallest class's size, since every bag must see every class.

    ``groups`` splits by a user-given grouping instead (the paper splits Oxford Pets into
    cats and dogs): a per-sample sequence of group ids, or a mapping class -> group id. Each
    bag is then one group (bags ordered by sorted group id); ``n`` must be None or the
    number of groups. Returns sorted int64 index arrays.
    """
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    if groups is not None:
        return _split_by_groups(y, n, groups)
    if n is None or n < 1:
        raise ConfigError(f"n must be a positive number of bags, got {n}")
    classes, counts = np.unique(y, return_counts=True)
    smallest = int(counts.argmin())
    if n > counts[smallest]:
        raise ConfigError(f"n={n} bags but class {classes[smallest]} has only {counts[smallest]} samples; "
                         f"every bag needs each class, so use n <= {counts[smallest]}")
    rng = np.random.default_rng(seed)
    order = []
    for c in rng.permutation(classes):  # class order shuffled so no bag is always first to get a remainder
        idx = np.flatnonzero(y == c)
        order.append(rng.permutation(idx))
    dealt = np.concatenate(order)
    bag_of = np.arange(dealt.size) % n
    return [np.sort(dealt[bag_of == b]).astype(np.int64) for b in range(n)]


def stratified_split(labels: Sequence[int] | np.ndarray | Tensor, fractions: tuple[float, float] = (0.15, 0.15),
                     seed: int = 0, *, val: float | None = None,
                     test: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) sorted index arrays; each class is split in the same proportions.

    ``fractions`` is ``(val, test)``: the shares held out for validation and for test (the
    keywords ``val=`` / ``test=`` say the same by name and override it:
    ``stratified_split(y, val=0.1, test=0.2)``). Every class gives at least one sample to
    each, and the rest to training (which must keep at least one).
    """
    y = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if y.ndim != 1 or y.size == 0:
        raise ConfigError(f"labels must be a non-empty 1-D sequence, got shape {y.shape}")
    fractions = tuple(fractions)
    if len(fractions) == 2:
        fractions = (fractions[0] if val is None else val, fractions[1] if test is None else test)
    if len(fractions) != 2 or min(fractions) < 0 or sum(fractions) >= 1:
        raise ConfigError(f"fractions must be (val, test) shares >= 0 summing to less than 1, got {fractions}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = (max(1, round(f * len(idx))) for f in fractions)
        if n_val + n_test >= len(idx):
            raise ConfigError(f"class {c} has {len(idx)} samples: too few for a train, a val and a test share")
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    train, val, test = (np.sort(np.concatenate(p)).astype(np.int64) for p in parts)
    return train, val, test


def _split_by_groups(y: np.ndarray, n: int | None,
                     groups: Sequence[Hashable] | Mapping[int, Hashable]) -> list[np.ndarray]:
    if isinstance(groups, Mapping):
        missing = sorted(set(y.tolist()) - set(groups))
        if missing:
            raise ConfigError(f"groups maps classes to groups but has no group for class {missing[0]}")
        g = [groups[int(c)] for c in y]
    else:
        g = list(groups)
        if len(g) != y.size:
            raise ConfigError(f"groups has {len(g)} entries but there are {y.size} labels; give one group per sample")
    try:
        names = sorted(set(g))
    except TypeError:
        raise ConfigError("group ids must be sortable (e.g. all str or all int)") from None
    if n is not None and n != len(names):
        raise ConfigError(f"n={n} but groups holds {len(names)} groups {names[:5]}; pass n=None or n={len(names)}")
    if len(names) < 2:
        logger.warning("bagging_split: groups holds a single group, so there is one bag")
    pos = {v: i for i, v in enumerate(names)}
    g_arr = np.array([pos[v] for v in g])
    return [np.flatnonzero(g_arr == i).astype(np.int64) for i in range(len(names))]
