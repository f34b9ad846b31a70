"""README.md stays true: its swap example runs as it is, and it names the two commands CI runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

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


def test_ci_test_command_deselects_nothing_and_every_marker_is_registered():
    """CI runs the README's test command: it must run every test (no -m / -k selection), and every
    marker the suite uses must be registered in pyproject.toml (so --strict-markers passes)."""
    command = _block("test-command").split()
    assert command[:3] == ["python", "-m", "pytest"]
    assert not any(a.startswith(("-m", "-k", "--deselect", "--ignore")) for a in command[3:]), command
    pyproject = open(os.path.join(U.REPO_DIR, "pyproject.toml"), encoding="utf-8").read()
    section = pyproject.split("[tool.pytest.ini_options]", 1)[1]
    registered = set(re.findall(r'^\s*"(\w+):', section.split("markers = [", 1)[1].split("\n]", 1)[0], re.M))
    used = set()
    for name in os.listdir(os.path.dirname(__file__)):
        if name.endswith(".py"):
            text = open(os.path.join(os.path.dirname(__file__), name), encoding="utf-8").read()
            used |= set(re.findall(r"pytest\.mark\.(\w+)", text)) | set(re.findall(r'get_closest_marker\("(\w+)"\)', text))
    builtin = {"parametrize", "skipif", "skip", "xfail", "usefixtures", "filterwarnings"}
    assert {"slow", "subprocess", "cuda", "compiled"} <= registered
    assert used - builtin <= registered, used - builtin - registered


@pytest.mark.slow
@pytest.mark.subprocess
def test_readme_swap_example_runs(tmp_path):
    script = tmp_path / "example.py"
    script.write_text(_block("example"))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env=U.subprocess_env())
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 3, r.stdout
    assert (tmp_path / "train_plus.h5").is_file()
