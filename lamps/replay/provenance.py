"""Provenance of results: the package version and commit that ran, and whether it was dirty.

Two sources, by where the running package comes from:

- A checkout of this repository (an editable install, or ``$LAMPS_SOURCE_ROOT``, which
  ``scripts/replay`` and ``scripts/sweep`` set to the checkout they install from) is asked live:
  ``git rev-parse HEAD`` and whether tracked files, or untracked files under the watched paths,
  changed. A replay refuses a dirty checkout unless ``--allow-dirty``: it guards the project's
  own result tables. Results from one are marked ``"dirty": true``, the table in capitals.
- An installed package (a wheel, in any directory) names what its build recorded in
  ``lamps._build_info`` (written by ``cmake/build_info.cmake``): "vllm-lamps X.Y.Z, built from
  commit C (clean)". It never refuses: the commit is fixed in the wheel, whatever the current
  directory holds.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import lamps

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The directory holding the running ``lamps`` package: a checkout, or site-packages."""
WATCHED = ("lamps", "csrc", "cmake", "scripts", "pyproject.toml", "CMakeLists.txt")
"""The paths whose changes make a tree dirty (``cmake/build_info.cmake`` lists the same)."""
_THIS_PROJECT = re.compile(r'^name = "vllm-lamps"$', re.MULTILINE)


@dataclass(frozen=True)
class Provenance:
    """What ran: version, commit, whether its tree differed from the commit, and where it was."""

    version: str
    commit: str | None
    dirty: bool | None  # None: unknown (an installed package built without git)
    changed: tuple[str, ...]
    root: str
    source: Literal["checkout", "installed"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["changed"] = list(self.changed)
        return d

    def banner(self) -> str:
        """One line for tables and logs; loud when a checkout was dirty or unknown."""
        package = f"vllm-lamps {self.version}"
        if self.source == "installed":
            if self.commit is None:
                return f"source: {package}, built from commit unknown (not built from git)"
            state = "dirty" if self.dirty else "clean"
            return f"source: {package}, built from commit {self.commit[:12]} ({state})"
        if self.commit is None:
            return (
                f"source: {package} at {self.root}: NOT A GIT CHECKOUT "
                "(results cannot be traced to a commit)"
            )
        if self.dirty:
            return (
                f"source: {package}, commit {self.commit[:12]} + UNCOMMITTED CHANGES "
                f"({len(self.changed)} paths) -- DIRTY TREE, NOT REPRODUCIBLE FROM THE COMMIT"
            )
        return f"source: {package}, commit {self.commit[:12]} (clean tree)"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _is_this_project(root: Path) -> bool:
    try:
        return bool(_THIS_PROJECT.search((root / "pyproject.toml").read_text()))
    except OSError:
        return False


def checkout_root() -> Path | None:
    """The checkout of this repository the running package comes from, or None if installed.

    ``$LAMPS_SOURCE_ROOT`` when set, else ``PACKAGE_ROOT`` when it is a git checkout of this
    project (an editable install). Never the current directory: that is the user's.
    """
    env = os.environ.get("LAMPS_SOURCE_ROOT")
    if env:
        return Path(env)
    if (PACKAGE_ROOT / ".git").exists() and _is_this_project(PACKAGE_ROOT):
        return PACKAGE_ROOT
    return None


def checkout_provenance(root: Path) -> Provenance:
    """The provenance of the source tree at ``root``, from git."""
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return Provenance(lamps.__version__, None, True, (), str(root), "checkout")
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *WATCHED)
    changed = tuple(line[3:] for line in (status or "").splitlines() if line.strip())
    return Provenance(
        lamps.__version__, head.strip(), bool(changed), changed, str(root), "checkout"
    )


def load_build_info() -> ModuleType | None:
    """``lamps._build_info``, written into the wheel by its build; None when absent."""
    try:
        return importlib.import_module("lamps._build_info")
    except ModuleNotFoundError:
        return None


def installed_provenance(build_info: ModuleType | None) -> Provenance:
    """The provenance of an installed package, as its build recorded it in ``build_info``."""
    commit = getattr(build_info, "COMMIT", None)
    dirty = getattr(build_info, "DIRTY", None)
    changed = tuple(getattr(build_info, "CHANGED", ()))
    where = str(PACKAGE_ROOT / "lamps")
    return Provenance(lamps.__version__, commit, dirty, changed, where, "installed")


def provenance(root: Path | None = None) -> Provenance:
    """The checkout at ``root`` if given, else the running package's checkout or build."""
    root = root if root is not None else checkout_root()
    if root is None:
        return installed_provenance(load_build_info())
    return checkout_provenance(root)


class DirtyTreeError(RuntimeError):
    """The checkout has uncommitted changes and --allow-dirty was not given."""


def require_clean(prov: Provenance, allow_dirty: bool) -> None:
    """Raises DirtyTreeError for a dirty or unknown checkout unless ``allow_dirty``.

    An installed package never raises: its commit is fixed, and its results name it.
    """
    if prov.source == "installed" or allow_dirty:
        return
    if prov.dirty or prov.commit is None:
        paths = ", ".join(prov.changed[:5]) + (" ..." if len(prov.changed) > 5 else "")
        raise DirtyTreeError(
            f"the checkout of vllm-lamps at {prov.root} is not a clean commit "
            f"({paths or 'no git'}); commit first, or pass --allow-dirty to run anyway "
            "(results marked DIRTY)"
        )
