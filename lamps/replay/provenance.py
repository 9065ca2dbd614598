"""Provenance of results: the committed source tree that ran, and whether it was dirty.

Every results file names ``git rev-parse HEAD`` of the source tree and whether the tree had
uncommitted changes (to tracked files, or untracked files under ``lamps/``, ``csrc/`` or
``scripts/``). A replay refuses a dirty tree unless ``--allow-dirty``; results from one are
marked ``"dirty": true`` and the table says so in capitals.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
_WATCHED = ("lamps", "csrc", "scripts", "pyproject.toml", "CMakeLists.txt")


@dataclass(frozen=True)
class Provenance:
    """What ran: the commit, whether the tree differed from it, and the changed paths."""

    commit: str | None
    dirty: bool
    changed: tuple[str, ...]
    root: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        d = asdict(self)
        d["changed"] = list(self.changed)
        return d

    def banner(self) -> str:
        """One line for tables and logs; loud when the tree was dirty or unknown."""
        if self.commit is None:
            return "source: NOT A GIT CHECKOUT (results cannot be traced to a commit)"
        if self.dirty:
            return (
                f"source: {self.commit[:12]} + UNCOMMITTED CHANGES ({len(self.changed)} paths) "
                "-- DIRTY TREE, NOT REPRODUCIBLE FROM THE COMMIT"
            )
        return f"source: commit {self.commit[:12]} (clean tree)"


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def source_root() -> Path:
    """The checkout the running package was built from: ``$LAMPS_SOURCE_ROOT`` (set by
    ``scripts/replay``, which installs the package), else the package's own directory (an
    editable install), else the current directory."""
    env = os.environ.get("LAMPS_SOURCE_ROOT")
    if env:
        return Path(env)
    if (PACKAGE_ROOT / ".git").exists():
        return PACKAGE_ROOT
    return Path.cwd()


def provenance(root: Path | None = None) -> Provenance:
    """The provenance of the source tree at ``root`` (``source_root()`` by default)."""
    root = root or source_root()
    head = _git(root, "rev-parse", "HEAD")
    if head is None:
        return Provenance(None, True, (), str(root))
    status = _git(root, "status", "--porcelain", "--untracked-files=all", "--", *_WATCHED)
    changed = tuple(line[3:] for line in (status or "").splitlines() if line.strip())
    return Provenance(head.strip(), bool(changed), changed, str(root))


class DirtyTreeError(RuntimeError):
    """The source tree has uncommitted changes and --allow-dirty was not given."""


def require_clean(prov: Provenance, allow_dirty: bool) -> None:
    """Raises DirtyTreeError for a dirty or unknown tree unless ``allow_dirty``."""
    if (prov.dirty or prov.commit is None) and not allow_dirty:
        paths = ", ".join(prov.changed[:5]) + (" ..." if len(prov.changed) > 5 else "")
        raise DirtyTreeError(
            f"the source tree at {prov.root} is not a clean commit ({paths or 'no git'}); "
            "commit first, or pass --allow-dirty to run anyway (results marked DIRTY)"
        )
