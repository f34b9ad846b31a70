"""Builders of small reinforcement files shared by the store tests: a header, deterministic
records for any images, and a file written from them.

Imported as ``import _store_util`` by the test modules (pytest puts tests/ on sys.path), and
by the scripts the store tests run in a subprocess with ``tests/`` on ``sys.path``.
"""

from __future__ import annotations

import numpy as np

from reinforced_data import store as S
from reinforced_data.policy import Policy

N, K, TOPK, C = 12, 10, 5, 20


def make_header(policy="rrc_ra_re", n=N, k=K, topk=TOPK, c=C, labels=None, **kw) -> S.Header:
    labels = np.arange(n) % c if labels is None else labels
    pol = Policy.preset(policy, output_size=(32, 32)) if isinstance(policy, str) else policy
    return S.Header(n, k, topk, c, pol, [{"name": "t", "weights_sha256": "x"}], S.Fingerprint.of(labels), **kw)


def make_rows(header: S.Header, indices, seed=0):
    """Deterministic records for the given images: (params, top-k indices, probs, partner index, partner view)."""
    pol = header.policy
    n = len(indices)
    params = np.stack([pol.sample(np.random.default_rng([seed, int(i)]), header.num_views, 40, 50) for i in indices])
    rng = np.random.default_rng([seed, 99] + [int(i) for i in indices])
    logits = rng.normal(size=(n, header.num_views, header.num_classes)) * 3
    p = np.exp(logits)
    p /= p.sum(-1, keepdims=True)
    idx = np.argsort(-p, -1)[..., :header.topk]
    val = np.take_along_axis(p, idx, -1)
    pi = rng.integers(0, header.num_images, (n, header.num_views))
    pv = rng.integers(0, header.num_views, (n, header.num_views))
    return params, idx, val, pi, pv


def write_file(path, header, indices=None, labels=None, finish=True):
    indices = range(header.num_images) if indices is None else indices
    labels = np.arange(header.num_images) % header.num_classes if labels is None else labels
    w = S.ReinforcementWriter.open(path, header, labels)
    rows = {}
    for i in indices:
        params, idx, val, pi, pv = make_rows(header, [i])
        mix = header.policy.mixing
        w.write([i], params, idx, val, pi if mix else None, pv if mix else None)
        w.commit()
        rows[i] = (params[0], idx[0], val[0], pi[0], pv[0])
    if finish:
        w.finish(expected=np.asarray(list(indices)))
    else:
        w.close()
    return rows
