"""docs/architecture.md's module tables are the import rules: each row's "may import" column
lists the package modules that module may import (at the top or lazily inside a function).
This reads the tables and every module's imports and fails when one breaks them, when a
module is missing from the tables, or when the package's imports form a circle."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "reinforced_data"
DOC = REPO / "docs" / "architecture.md"
NOT_MODULES = {"csrc/"}  # rows for sources that Python does not import
COMPILED = "reinforced_data._C"  # the compiled op: loaded by _ops, outside these rules


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _all_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path, name: str) -> set[str]:
    """The package modules ``path`` imports, anywhere in it."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    modules = _all_modules()
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = {f"{target}.{a.name}" for a in node.names} & set(modules)
            # `from . import store` imports the module store; `from . import __version__` the package
            out |= submodules if len(submodules) == len(node.names) else submodules | {target}
    return {m for m in out if m.split(".")[0] == "reinforced_data" and m != COMPILED and m != name}


def _rules() -> dict[str, set[str] | None]:
    """module row (as written in the table, e.g. ``store/format.py``) -> the allowed names, or None for "everything"."""
    rules: dict[str, set[str] | None] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        rows = re.findall(r"`([^`]+)`", cells[0])
        allowed = cells[2]
        names = None if re.match(r"everything|the whole public API", allowed) else set(re.findall(r"`([^`]+)`", allowed))
        if names is not None and "the whole public API" in allowed:
            names = None
        for row in rows:
            rules[row] = names
    return rules


def _row_module(row: str) -> str:
    parts = row.rstrip("/").removesuffix(".py").split("/")
    return ".".join(["reinforced_data"] + [p for p in parts if p != "__init__"])


def _resolve(allowed: str, row: str) -> str:
    """An allowed name of a row's column: a sibling in the row's package (``format`` in the
    store's table), else a module of the package."""
    pkg = _row_module(row).rpartition(".")[0] if "/" in row.rstrip("/") else "reinforced_data"
    name = allowed.removesuffix(".py").replace("/", ".")
    for cand in (f"{pkg}.{name}", f"reinforced_data.{name}"):
        if cand in _all_modules():
            return cand
    return f"reinforced_data.{name}"


def _unit(module: str, units: list[str]) -> str:
    """The table row a module belongs to: itself, or the package row (``ensemble/``) above it."""
    best = ""
    for u in units:
        if (module == u or module.startswith(u + ".")) and len(u) > len(best):
            best = u
    return best


def test_every_module_has_a_row_and_every_row_a_module():
    rows = sorted(_row_module(r) for r in _rules() if r not in NOT_MODULES)
    modules = set(_all_modules())
    assert not [r for r in rows if r not in modules], "rows naming no module"
    assert not [m for m in sorted(modules) if not _unit(m, rows)], "modules without a row"


def test_imports_follow_docs_architecture():
    rules = {r: v for r, v in _rules().items() if r not in NOT_MODULES}
    units = sorted(_row_module(r) for r in rules)
    rows = {_row_module(r): r for r in rules}
    broken = []
    for name, path in _all_modules().items():
        unit = _unit(name, units)
        allowed = rules[rows[unit]]
        if allowed is None:
            continue
        ok = {_resolve(a, rows[unit]) for a in allowed} | {unit}
        for target in sorted(_imports(path, name)):
            if target == "reinforced_data" and name == unit and "." not in name.removeprefix("reinforced_data"):
                continue
            if _unit(target, units) in ok or target in ok or any(target.startswith(o + ".") for o in ok):
                continue
            broken.append(f"{name} imports {target}, which docs/architecture.md does not allow for {rows[unit]}")
    assert not broken, "\n".join(broken)


def test_no_import_circle():
    modules = _all_modules()
    graph = {name: _imports(path, name) & set(modules) for name, path in modules.items()}
    for name in graph:  # a package's __init__ importing its own modules lazily is not a circle
        graph[name] = {t for t in graph[name] if not t.startswith(name + ".")} if modules[name].name == "__init__.py" \
            else graph[name]
    graph = {n: {t for t in ts if t != "reinforced_data"} for n, ts in graph.items()}  # the face imports on first use
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(graph[n]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)
