"""Sampling helpers shared by test_policy.py and the fresh process one of its tests starts
(with ``tests/`` on ``sys.path``): the source sizes, the presets, and every preset's
parameters at every size as one byte string.
"""

from __future__ import annotations

import numpy as np

from reinforced_data.policy import PRESETS, Policy

# (height, width) of source images: tiny, degenerate, extreme aspect (RRC fallback), usual
SOURCE_SIZES = [(1, 1), (1, 7), (9, 1), (3, 700), (480, 640), (333, 500), (2000, 150)]


def all_presets():
    return sorted(PRESETS)


def fits(policy: Policy, h: int, w: int) -> bool:
    """Whether the policy's crop takes an h x w source (a padded RandomCrop needs h + 2p >= output)."""
    if policy.crop_mode != "padded":
        return True
    oh, ow = policy.output_size
    return h + 2 * policy.crop_padding >= oh and w + 2 * policy.crop_padding >= ow


def sample_all(seed: int) -> bytes:
    """Parameters of every preset at every source size, concatenated."""
    out = []
    for name in all_presets():
        p = Policy.preset(name)
        g = np.random.default_rng(seed)
        for h, w in SOURCE_SIZES:
            if fits(p, h, w):
                out.append(p.sample(g, 64, h, w).tobytes())
    return b"".join(out)
