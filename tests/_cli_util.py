"""The small generation the CLI tests run (synthetic data, the tiny teacher), as command-line
arguments and as the same call in-process, and the file's raw chunks to compare runs by.

Imported as ``import _cli_util`` by the test modules (pytest puts tests/ on sys.path).
"""

from __future__ import annotations

import h5py

from reinforced_data.policy import Policy
from reinforced_data.generation import reinforce

DATA = "synthetic:num_images=24,num_classes=8,min_size=20,max_size=32,seed=2"
TEACHER = "_reinforce_util:tiny_teacher"
COMMON = ["--data", DATA, "--teacher", TEACHER, "--output-size", "16", "-K", "4", "-k", "3", "--seed", "5",
          "--block-size", "8"]


def api_run(path, batch_size, policy="rrc_ra_re"):
    """The same generation as COMMON, in this process."""
    return reinforce(DATA, TEACHER, str(path), policy=Policy.preset(policy, output_size=(16, 16)), num_views=4,
                     topk=3, seed=5, block_size=8, batch_size=batch_size, progress=False)


def chunks(path):
    with h5py.File(path, "r") as f:
        d = f["records"]
        return [d.id.read_direct_chunk((i, g, 0))[1] for i in range(d.shape[0]) for g in range(d.shape[1])]
