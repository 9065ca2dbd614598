"""Provenance: a dirty checkout of this repository is refused, an installed package never is.

The build side is real: ``cmake/build_info.cmake`` (what the wheel build runs) writes the build
info from real git trees; the run side reads it as an installed package would. Where the running
package lives is ``provenance.PACKAGE_ROOT``, pointed here at a checkout or a site-packages.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import lamps
from lamps.replay import provenance as prov
from lamps.replay.provenance import DirtyTreeError, provenance, require_clean

ROOT = Path(__file__).resolve().parents[1]
BUILD_INFO_SCRIPT = ROOT / "cmake" / "build_info.cmake"


def git(root: Path, *args: str) -> str:
    """Runs git in ``root``; its output."""
    done = subprocess.run(
        ["git", "-C", str(root), "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def project(root: Path, name: str = "vllm-lamps") -> Path:
    """A committed git tree shaped like a checkout of the project called ``name``."""
    (root / "lamps").mkdir(parents=True)
    (root / "lamps" / "a.py").write_text("x = 1\n")
    (root / "pyproject.toml").write_text(f'[project]\nname = "{name}"\n')
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "one")
    return root


def cmake() -> str:
    """The cmake that builds the wheel (on PATH, or beside this interpreter)."""
    found = shutil.which("cmake") or shutil.which("cmake", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("cmake is not installed (scripts/setup-env installs it): no build to check")
    return found


def build_info(source: Path, out: Path) -> ModuleType:
    """The ``lamps/_build_info.py`` a wheel built from ``source`` carries, imported."""
    subprocess.run(
        [
            cmake(),
            f"-DLAMPS_SOURCE_DIR={source}",
            f"-DLAMPS_BUILD_INFO={out}",
            "-P",
            str(BUILD_INFO_SCRIPT),
        ],
        check=True,
        capture_output=True,
    )
    spec = importlib.util.spec_from_file_location("lamps_build_info_under_test", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def running_from(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Where the running package lives is set by the test; no ``$LAMPS_SOURCE_ROOT``."""
    monkeypatch.delenv("LAMPS_SOURCE_ROOT", raising=False)
    return monkeypatch


def test_a_clean_checkout_runs_and_names_its_commit(
    tmp_path: Path, running_from: pytest.MonkeyPatch
) -> None:
    checkout = project(tmp_path / "checkout")
    running_from.setattr(prov, "PACKAGE_ROOT", checkout)
    assert prov.checkout_root() == checkout
    p = provenance()
    commit = git(checkout, "rev-parse", "HEAD")
    assert (p.source, p.commit, p.dirty, p.version) == (
        "checkout",
        commit,
        False,
        lamps.__version__,
    )
    require_clean(p, allow_dirty=False)
    version = lamps.__version__
    assert p.banner() == f"source: vllm-lamps {version}, commit {commit[:12]} (clean tree)"
    assert p.as_dict()["version"] == lamps.__version__


def test_a_dirty_checkout_is_refused_without_allow_dirty(
    tmp_path: Path, running_from: pytest.MonkeyPatch
) -> None:
    checkout = project(tmp_path / "checkout")
    (checkout / "cmake").mkdir()
    (checkout / "cmake" / "new.cmake").write_text("# untracked build input\n")
    (checkout / "notes.txt").write_text("not a watched path\n")
    running_from.setattr(prov, "PACKAGE_ROOT", checkout)
    p = provenance()
    assert p.source == "checkout" and p.dirty and p.changed == ("cmake/new.cmake",)
    assert "DIRTY TREE" in p.banner()
    with pytest.raises(DirtyTreeError, match=r"vllm-lamps at .*checkout.*--allow-dirty"):
        require_clean(p, allow_dirty=False)
    require_clean(p, allow_dirty=True)


def test_scripts_checkout_variable_is_refused_through_the_cli_when_dirty(
    tmp_path: Path, running_from: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scripts/replay`` and ``scripts/sweep`` name their checkout in $LAMPS_SOURCE_ROOT."""
    from lamps.cli import main

    checkout = project(tmp_path / "checkout")
    (checkout / "lamps" / "a.py").write_text("x = 2\n")
    running_from.setenv("LAMPS_SOURCE_ROOT", str(checkout))
    argv = ["replay", "--qps", "1", "--duration", "1", "--policies", "vllm", "--no-plots"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"checkout of vllm-lamps at {checkout} is not a clean commit (lamps/a.py)" in err
    assert not (tmp_path / "out").exists()


def test_an_installed_package_runs_in_another_projects_dirty_repository(
    tmp_path: Path, running_from: pytest.MonkeyPatch
) -> None:
    """The user's directory is theirs: its git state is not the package's provenance."""
    built_from = project(tmp_path / "built-from")
    info = build_info(built_from, tmp_path / "_build_info.py")
    theirs = project(tmp_path / "their-project", name="their-project")
    (theirs / "lamps" / "a.py").write_text("x = 3\n")  # dirty, and even has a lamps/ folder
    site = tmp_path / "venv" / "site-packages"
    (site / "lamps").mkdir(parents=True)
    running_from.setattr(prov, "PACKAGE_ROOT", site)
    running_from.setattr(prov, "load_build_info", lambda: info)
    running_from.chdir(theirs)
    assert prov.checkout_root() is None
    p = provenance()
    commit = git(built_from, "rev-parse", "HEAD")
    assert (p.source, p.commit, p.dirty) == ("installed", commit, False)
    assert p.root == str(site / "lamps")
    require_clean(p, allow_dirty=False)
    assert p.banner() == (
        f"source: vllm-lamps {lamps.__version__}, built from commit {commit[:12]} (clean)"
    )


def test_another_projects_checkout_holding_the_package_is_not_this_checkout(
    tmp_path: Path, running_from: pytest.MonkeyPatch
) -> None:
    """A package installed into the top of some other git repository (pip --target) is
    installed, not a checkout of this one."""
    theirs = project(tmp_path / "their-project", name="their-project")
    running_from.setattr(prov, "PACKAGE_ROOT", theirs)
    assert prov.checkout_root() is None
    assert provenance().source == "installed"


def test_a_wheel_built_from_a_dirty_tree_runs_and_says_dirty(tmp_path: Path) -> None:
    source = project(tmp_path / "source")
    (source / "lamps" / "a.py").write_text("x = 2\n")
    (source / "lamps" / 'odd"name.py').write_text("")
    info = build_info(source, tmp_path / "_build_info.py")
    assert git(source, "rev-parse", "HEAD") == info.COMMIT
    assert info.DIRTY is True
    assert sorted(info.CHANGED) == sorted(["lamps/a.py", '"lamps/odd\\"name.py"'])
    p = prov.installed_provenance(info)
    require_clean(p, allow_dirty=False)
    assert p.dirty and p.banner().endswith(f"built from commit {info.COMMIT[:12]} (dirty)")


def test_a_clean_build_records_its_commit_as_clean(tmp_path: Path) -> None:
    source = project(tmp_path / "source")
    info = build_info(source, tmp_path / "_build_info.py")
    assert (git(source, "rev-parse", "HEAD"), False, ()) == (info.COMMIT, info.DIRTY, info.CHANGED)


@pytest.mark.parametrize("where", ["no git", "inside another project's repository"])
def test_a_build_without_its_own_git_records_unknown(tmp_path: Path, where: str) -> None:
    """An sdist or a tarball, even unpacked inside some other repository, names no commit."""
    if where == "no git":
        source = tmp_path / "vllm-lamps-0.1.0"
        (source / "lamps").mkdir(parents=True)
    else:
        source = project(tmp_path / "their-project", name="their-project") / "vendor" / "lamps"
        source.mkdir(parents=True)
    info = build_info(source, tmp_path / "_build_info.py")
    assert (info.COMMIT, info.DIRTY, info.CHANGED) == (None, None, ())
    p = prov.installed_provenance(info)
    require_clean(p, allow_dirty=False)
    assert p.banner() == (
        f"source: vllm-lamps {lamps.__version__}, built from commit unknown (not built from git)"
    )


def test_the_running_package_carries_its_build_info() -> None:
    """scikit-build-core installs lamps/_build_info.py (wheel and editable installs alike)."""
    info = prov.load_build_info()
    assert info is not None
    assert info.COMMIT is None or len(info.COMMIT) == 40
    assert isinstance(info.CHANGED, tuple)
