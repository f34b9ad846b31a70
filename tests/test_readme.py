"""README.md stays true: its swap example runs as it is, and it names the two commands CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import _reinforce_util as U

README = os.path.join(U.REPO_DIR, "README.md")


def _block(marker: str) -> str:
    text = open(README, encoding="utf-8").read()
    m = re.search(rf"<!-- {marker} -->\s*```\w*\n(.*?)```\s*<!-- /{marker} -->", text, re.S)
    assert m, f"README.md has no <!-- {marker} --> block"
    return m.group(1)


def test_readme_names_the_main_and_test_commands():
    assert _block("main-command").strip() == "reinforced-data demo --out demo_out"
    assert _block("test-command").strip().startswith("python -m pytest")


def test_readme_swap_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_block("example"))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=U.subprocess_env())
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, r.stdout
    assert (tmp_path / "train_plus.h5").is_file()
