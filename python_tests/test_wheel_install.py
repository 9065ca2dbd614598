"""A new user's first run: the wheel built, installed into a fresh virtual environment, and
``lamps replay`` run from an empty directory, whose results name the version and the commit.

Real build (pip wheel through scikit-build-core and CMake), real install, real console script.
To stay cheap, the fresh environment gets vLLM, torch and numpy from this interpreter's
site-packages through a ``.pth`` file (listed after its own site-packages, so the ``lamps`` that
runs is the wheel's), and the replay is a 5-second simulated run of one policy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

import lamps
from lamps.replay.provenance import checkout_provenance

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def run(*cmd: str | Path, cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Runs ``cmd``; its stdout and stderr, or a failure showing them."""
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_lamps_replay_from_an_installed_wheel_in_an_empty_directory(tmp_path: Path) -> None:
    source = checkout_provenance(ROOT)  # what the wheel's build is expected to record
    dist, venv, empty = tmp_path / "dist", tmp_path / "venv", tmp_path / "empty"
    pip = (sys.executable, "-m", "pip")
    quiet = ("-q", "--disable-pip-version-check")
    build_env = {**os.environ, "LAMPS_WITH_CUDA": "OFF"}  # the CUDA backend is not under test
    run(*pip, "wheel", *quiet, "--no-build-isolation", "--no-deps", "-w", dist, ROOT,
        cwd=tmp_path, env=build_env, timeout=900)  # fmt: skip
    (wheel,) = dist.glob("vllm_lamps-*.whl")
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path, timeout=120)
    python = venv / "bin" / "python"
    purelib = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                  cwd=tmp_path, timeout=60).strip()  # fmt: skip
    run(*pip, "--python", python, "install", *quiet, "--no-deps", "--no-index", wheel,
        cwd=tmp_path, timeout=300)  # fmt: skip
    # After the install: pip would otherwise see this environment's vllm-lamps as installed.
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LAMPS_SOURCE_ROOT", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    printed = run(
        venv / "bin" / "lamps", "replay", "--synthetic", "--synthetic-requests", "20",
        "--qps", "1", "--duration", "5", "--policies", "vllm", "--seeds", "0", "--jobs", "1",
        "--no-plots", "--out", "results", cwd=empty, env=env, timeout=600,
    )  # fmt: skip

    recorded = json.loads((empty / "results" / "results.json").read_text())["provenance"]
    assert recorded["source"] == "installed"
    assert recorded["root"] == str(Path(purelib) / "lamps")  # the wheel ran, not the source
    assert recorded["version"] == lamps.__version__
    assert recorded["commit"] == source.commit
    if source.commit is None:
        assert f"vllm-lamps {lamps.__version__}, built from commit unknown" in printed
    else:
        assert recorded["dirty"] == source.dirty
        state = "dirty" if source.dirty else "clean"
        banner = f"vllm-lamps {lamps.__version__}, built from commit {source.commit[:12]} ({state})"
        assert banner in printed
        assert banner in (empty / "results" / "table.md").read_text()
    assert "P99 TTFT" in printed
    assert sorted(p.name for p in empty.iterdir()) == ["results"]
