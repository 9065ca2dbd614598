"""The installed package: one version everywhere, its license, its declared build requirements."""

from __future__ import annotations

import ast
import enum
import importlib.metadata
import importlib.resources
import re
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import pytest

import lamps
from lamps import _core, _swap

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
ROOT = Path(__file__).resolve().parents[1]


def test_version_has_one_source() -> None:
    """lamps/__init__.py's version is the distribution's and the extensions' (built in)."""
    assert lamps.__version__ == importlib.metadata.version("vllm-lamps")
    assert _core.__version__ == lamps.__version__
    assert _swap.__version__ == lamps.__version__
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in pyproject["project"]
    assert "version" in pyproject["project"]["dynamic"]


def test_license_is_apache_2_and_ships_with_the_wheel() -> None:
    """PEP 639 metadata: the SPDX expression, and the full license text in the dist-info."""
    meta = importlib.metadata.metadata("vllm-lamps")
    assert meta["License-Expression"] == "Apache-2.0"
    dist = importlib.metadata.distribution("vllm-lamps")
    # The project's own licence in the dist-info (the shipped traces carry theirs in lamps/data).
    licenses = [f for f in dist.files or [] if f.name == "LICENSE" and f.parent.name == "licenses"]
    assert licenses, "LICENSE is not installed"
    text = licenses[0].read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert text == (ROOT / "LICENSE").read_text()


def test_pybind11_requirement_is_the_one_the_bindings_need() -> None:
    """bindings.cpp includes pybind11/native_enum.h, which pybind11 3.0 introduced."""
    assert "pybind11/native_enum.h" in (ROOT / "csrc" / "bindings.cpp").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert "pybind11>=3.0" in requires
    assert re.search(r'"pybind11>=3\.0"', (ROOT / "scripts" / "setup-env").read_text())


@pytest.mark.parametrize("name", ["_core.pyi", "_swap.pyi", "py.typed"])
def test_type_stubs_are_installed(name: str) -> None:
    """Both extensions are typed for users of the installed package (PEP 561)."""
    assert (importlib.resources.files("lamps") / name).is_file()


def _public(names: Iterable[str]) -> set[str]:
    return {n for n in names if not n.startswith("_") or n == "__version__"}


def _stub_names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return _public(names)


@pytest.mark.parametrize("module", [_core, _swap], ids=lambda m: m.__name__)
def test_stubs_name_everything_the_extension_has(module: ModuleType) -> None:
    """Every public class, function, exception and member of the extension is in its stub."""
    stub = importlib.resources.files("lamps") / f"{module.__name__.rsplit('.', 1)[1]}.pyi"
    tree = ast.parse(stub.read_text())
    assert _stub_names(tree.body) == _public(dir(module)) - {"annotations"}
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for name, node in classes.items():
        runtime = getattr(module, name)
        if issubclass(runtime, BaseException | enum.Enum):
            continue  # members come from the Python base class
        inherited = set().union(*(dir(base) for base in runtime.__mro__[1:]))
        own = _public(set(dir(runtime)) - inherited | set(vars(runtime)) - {"__init__"})
        stubbed = _stub_names(node.body)
        for base in runtime.__mro__[1:]:
            if base.__name__ in classes:
                stubbed |= _stub_names(classes[base.__name__].body)
        assert own <= stubbed, f"{name}: {sorted(own - stubbed)} missing from the stub"
