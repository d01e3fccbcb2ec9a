"""The layout shows the architecture (docs/design.md "The map"), and stays that way:

* relay/ imports go one way at run time: ops on top, then app, server, federation, endpoints,
  coordination, core, storage (imports under ``if TYPE_CHECKING:`` are annotations only);
* collab/ never imports relay/ (also ruff TID251);
* no module is over 500 lines;
* every module of collab/ and relay/ has its own test file at the mirrored path.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RANK = {"storage": 0, "core": 1, "coordination": 2, "endpoints": 3, "federation": 4, "server": 5, "app": 6,
        "ops": 7}


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if p.name != "__init__.py" or p.stat().st_size)


def _runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import that runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text(), str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out.extend((node.lineno, a.name) for a in node.names)
    return out


def _group(path: Path) -> str:
    return path.relative_to(ROOT / "relay").with_suffix("").parts[0]


@pytest.mark.parametrize("path", _modules("relay"), ids=lambda p: str(p.relative_to(ROOT)))
def test_relay_imports_go_one_way(path: Path) -> None:
    here = _group(path)
    if here not in RANK:
        return
    for line, mod in _runtime_imports(path):
        parts = mod.split(".")
        if parts[0] != "relay" or len(parts) < 2 or parts[1] not in RANK or parts[1] == here:
            continue
        assert RANK[parts[1]] < RANK[here], f"{path.relative_to(ROOT)}:{line} imports {mod} (from {here} upward)"


@pytest.mark.parametrize("path", _modules("collab"), ids=lambda p: str(p.relative_to(ROOT)))
def test_collab_never_imports_relay(path: Path) -> None:
    for line, mod in _runtime_imports(path):
        assert mod.split(".")[0] != "relay", f"{path.relative_to(ROOT)}:{line} imports {mod}"


def test_no_module_over_500_lines() -> None:
    long = {str(p.relative_to(ROOT)): n for pkg in ("collab", "relay", "benchmarks")
            for p in (ROOT / pkg).rglob("*.py") if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_every_module_has_its_test_file() -> None:
    missing = []
    for pkg in ("collab", "relay"):
        for p in _modules(pkg):
            if p.name == "__init__.py":
                continue
            rel = p.relative_to(ROOT)
            want = ROOT / "tests" / rel.parent / f"test_{p.stem}.py"
            if not want.exists():
                missing.append(f"{rel} -> {want.relative_to(ROOT)}")
    assert not missing, "\n".join(missing)
