"""One exception hierarchy: every exception class in ``collab`` and ``relay`` is a ColonyError
and is drawn in collab/errors.py's module docstring."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re

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
