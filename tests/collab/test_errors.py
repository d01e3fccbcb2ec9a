"""One exception hierarchy: every exception class in ``collab`` and ``relay`` is a ColonyError
and is drawn in collab/errors.py's module docstring."""
from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import collab
import relay
from collab import errors
from collab.errors import ColonyError


def _modules() -> list[str]:
    names: list[str] = []
    for pkg in (collab, relay):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
    return sorted(names)


def _exception_classes() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for name in _modules():
        module = importlib.import_module(name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == name:
                found.append(obj)
    return found


def _drawn() -> set[str]:
    assert errors.__doc__ is not None
    return set(re.findall(r"[├└]── (\w+)", errors.__doc__)) | {"ColonyError"}


def test_the_walk_finds_the_classes_outside_errors_py() -> None:
    names = {c.__name__ for c in _exception_classes()}
    assert {"HeadMoved", "MirrorConflict", "BackupError", "CompactError", "ConfigError", "Refused",
            "YProtocolError", "TooCostly", "CanonicalError", "RelayError"} <= names


@pytest.mark.parametrize("cls", _exception_classes(), ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_every_exception_class_is_in_the_hierarchy(cls: type[BaseException]) -> None:
    assert issubclass(cls, ColonyError), f"{cls.__module__}.{cls.__name__} is not a ColonyError"
    assert cls.__name__ in _drawn(), f"{cls.__name__} is not drawn in collab/errors.py's docstring"


def test_the_docstring_draws_each_class_under_its_parent() -> None:
    """Indentation in the drawing is the subclass relation."""
    assert errors.__doc__ is not None
    classes = {c.__name__: c for c in _exception_classes()}
    stack: list[tuple[int, str]] = [(-1, "ColonyError")]
    classes["ColonyError"] = ColonyError
    for line in errors.__doc__.splitlines():
        m = re.match(r"^([│ ]*)[├└]── (\w+)", line)
        if m is None:
            continue
        depth, name = len(m.group(1)), m.group(2)
        while stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1]
        assert name in classes, f"{name} is drawn but not defined"
        assert classes[parent] in classes[name].__mro__[1:], f"{name} is drawn under {parent}"
        stack.append((depth, name))


def test_value_errors_stay_value_errors() -> None:
    """Callers that caught ValueError before these joined the hierarchy still catch them."""
    from collab.canonical import CanonicalError
    from relay.endpoints.yjs_protocol import YProtocolError
    from relay.ops.cli import ConfigError

    for cls in (CanonicalError, YProtocolError, ConfigError):
        assert issubclass(cls, ValueError)


def _broad(handler: ast.ExceptHandler) -> bool:
    names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(n is None or (isinstance(n, ast.Name) and n.id in ("Exception", "BaseException")) for n in names)


def _reports(handler: ast.ExceptHandler) -> bool:
    """Re-raises, logs with a traceback, or hands the exception on (to a future or a reply)."""
    for node in ast.walk(ast.Module(body=handler.body, type_ignores=[])):
        if isinstance(node, ast.Raise):
            return True
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("exception", "set_exception", "_fail") or any(k.arg == "exc_info" for k in node.keywords):
                return True
    return False


def test_no_broad_except_swallows_silently() -> None:
    root = Path(collab.__file__).resolve().parent.parent
    silent = []
    for pkg in ("collab", "relay"):
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            silent.extend(f"{path.relative_to(root)}:{node.lineno}" for node in ast.walk(tree)
                          if isinstance(node, ast.ExceptHandler) and _broad(node) and not _reports(node))
    assert silent == [], "broad excepts that neither re-raise nor log a traceback: " + ", ".join(silent)
