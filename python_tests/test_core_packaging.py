"""The installed package: one version everywhere, its license, its declared build requirements."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

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
    licenses = [f for f in dist.files or [] if f.name == "LICENSE"]
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
