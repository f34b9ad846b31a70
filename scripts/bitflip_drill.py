"""The bit-flip drill of docs/reliability.md: flip one bit in every STEP-th byte of a copy of a
reinforcement file, open it, read record (0, 0) and the run's statistics in a subprocess with a
time limit, and count what happened (the exception's class, OK, or HANG past the limit).

    python scripts/bitflip_drill.py FILE.h5 [--step 13] [--timeout 30]

A HANG is a defect: the file's reader looped instead of reporting damage.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile

READ = """
import sys
from reinforced_data.store import ReinforcementFile
try:
    with ReinforcementFile(sys.argv[1]) as f:
        f.read(0, 0)
        f.generation
    print("OK")
except Exception as e:
    print(type(e).__name__)
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--step", type=int, default=13, help="flip a bit in every STEP-th byte (default 13)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds before a read counts as a hang")
    args = ap.parse_args()
    data = open(args.file, "rb").read()
    counts: collections.Counter = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "flipped.h5")
        for offset in range(0, len(data), args.step):
            flipped = bytearray(data)
            flipped[offset] ^= 1 << (offset % 8)
            with open(path, "wb") as f:
                f.write(flipped)
            try:
                r = subprocess.run([sys.executable, "-c", READ, path], capture_output=True, text=True,
                                   timeout=args.timeout)
                out = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else f"crash (exit {r.returncode})"
            except subprocess.TimeoutExpired:
                out = "HANG"
            counts[out] += 1
            if out not in ("OK", "CorruptFileError"):
                print(f"byte {offset}, bit {offset % 8}: {out}", flush=True)
    print(f"{sum(counts.values())} flips: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    return 1 if counts["HANG"] or any(k.startswith("crash") for k in counts) else 0


if __name__ == "__main__":
    sys.exit(main())
