"""The ``lamps`` command surface: every tool is a subcommand with a documented ``--help``, and
each of the smaller ones runs on a small input (the committed results under
``benchmarks/results/``, tiny kv-cache-tester traces, a short stateless replay)."""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from coding_traces import extending, subagent, trace, write

from lamps.cli import build_parser, main
from lamps.workloads.coding_pack import PACKED_DIR, PACKED_FILE, unpack

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHARED = ROOT.parent / "shared" / "workloads" / "claude-code" / "traces"

SUBCOMMANDS = (
    ("calibrate",),
    ("plot",),
    ("targets",),
    ("stateless-eval",),
    ("workloads", "derive"),
    ("workloads", "pack-coding"),
)
"""The commands that were ``python -m`` modules (and ``workloads derive``)."""


def _subparser(words: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def test_lamps_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("replay", "calibrate", "plot", "targets", "stateless-eval", "agents", "workloads"):
        assert name in out


def test_help_imports_neither_vllm_nor_torch(tmp_path: Path) -> None:
    # `lamps --help` and every subcommand's --help answer at once: building the parser (the
    # replay's policy and router lists included) must not import vLLM, whose import takes seconds.
    code = (
        "import sys; from lamps.cli import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'vllm', 'torch'}))"
    )
    # cwd: not the source tree, whose `lamps` (no compiled core) `-c` would put first.
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=" ".join)
def test_help_describes_the_command_and_every_argument(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main([*words, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: lamps {' '.join(words)} ")
    parser = _subparser(words)
    assert parser.description and len(parser.description) > 80, "a description of the command"
    undocumented = [a.dest for a in parser._actions if not a.help]
    assert not undocumented, f"arguments without help: {undocumented}"


def test_no_module_of_the_package_is_a_hidden_entry_point() -> None:
    # One command surface: `lamps SUBCOMMAND`, not `python -m lamps.something`.
    found = []
    for path in sorted((ROOT / "lamps").rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare) and ast.unparse(node) == "__name__ == '__main__'":
                found.append(path.relative_to(ROOT).as_posix())
    assert not found


def _copy_results(name: str, tmp_path: Path) -> Path:
    out = tmp_path / name
    out.mkdir()
    shutil.copy(RESULTS / name / "results.json", out / "results.json")
    return out


def test_calibrate_reproduces_the_committed_calibration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy_results("calibration", tmp_path)
    # docs/replay.md: the rate ratio is met, InferCept's saturation is not (exit status 1).
    assert main(["calibrate", str(out)]) == 1
    assert "| 5x | 2.68 | 4.49 | 1.67 |" in capsys.readouterr().out
    committed = RESULTS / "calibration"
    assert (out / "calibration.md").read_text() == (committed / "calibration.md").read_text()
    got = json.loads((out / "calibration.json").read_text())
    assert got == json.loads((committed / "calibration.json").read_text())
    assert (out / "calibration.png").stat().st_size > 0


def test_calibrate_without_the_two_policies_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy_results("hidden0-lamps", tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["calibrate", str(out)])
    assert e.value.code == 2
    assert "calibration needs vllm and infercept rows" in capsys.readouterr().err


def test_plot_redraws_a_results_directory(tmp_path: Path) -> None:
    out = _copy_results("hidden0", tmp_path)
    assert main(["plot", str(out)]) == 0
    assert (out / "latency.png").stat().st_size > 0 and (out / "kv_usage.png").stat().st_size > 0


def test_targets_prints_a_table_per_directory_and_the_paired_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["targets", str(RESULTS / "main"), str(RESULTS / "single")]) == 0
    out = capsys.readouterr().out
    assert out.count("### ") == 2
    assert "Best baseline: `vllm` (knee 4 req/s)" in out
    assert "| mean e2e / infercept |" in out
    assert main(["targets", "--paired-at", "4.5", str(RESULTS / "ablations")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].startswith("| `lamps` |") and any("`lamps-oracle`" in x for x in lines)


def test_targets_runs_without_vllm(tmp_path: Path) -> None:
    # Reading results needs neither vLLM nor the replay: a fresh interpreter that cannot import it.
    code = (
        "import sys; sys.modules['vllm'] = None; from lamps.cli import main; "
        f"sys.exit(main(['targets', {str(RESULTS / 'main')!r}]))"
    )
    # cwd: not the source tree, whose `lamps` (no compiled core) `-c` would put first.
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "Best baseline" in done.stdout


def test_a_missing_results_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(["plot", str(tmp_path)])
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith("lamps: error: ")


def test_pack_coding_packs_two_traces_that_read_back_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    traces = {
        "a.json": trace(extending(2), "a"),
        "b.json": trace([*extending(3), subagent(extending(2))], "b"),
    }
    src = write(tmp_path / "src", traces)
    out = tmp_path / "packed.json.gz"
    assert main(["workloads", "pack-coding", str(src), str(out)]) == 0
    assert "packed 2 of 2 traces" in capsys.readouterr().err
    assert unpack(out.read_bytes()) == traces
    assert "hash_runs" in gzip.decompress(out.read_bytes()).decode()


def test_pack_coding_refuses_a_bad_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = write(tmp_path / "src", {"a.json": trace(extending(2)), "bad.json": {"requests": 1}})
    with pytest.raises(SystemExit) as e:
        main(["workloads", "pack-coding", str(src), str(tmp_path / "out.gz")])
    assert e.value.code == 2
    assert "bad.json" in capsys.readouterr().err
    assert not (tmp_path / "out.gz").exists()


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared traces are not at {SHARED}")
def test_pack_coding_regenerates_the_shipped_file(tmp_path: Path) -> None:
    from importlib import resources

    out = tmp_path / PACKED_FILE
    assert main(["workloads", "pack-coding", str(SHARED), str(out)]) == 0
    shipped = resources.files("lamps.data").joinpath(PACKED_DIR, PACKED_FILE).read_bytes()
    assert out.read_bytes() == shipped


def test_stateless_eval_runs_a_short_replay(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "stateless"
    argv = ["stateless-eval", "--policies", "vllm", "--qps", "0.5", "--seeds", "0",
            "--duration", "5", "--jobs", "1", "--allow-dirty", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert [(r["policy"], r["qps"], r["seed"]) for r in data["rows"]] == [("vllm", 0.5, 0)]
    assert data["command"]["policies"] == "vllm" and "run" not in data["command"]
    assert "| 0.5 | vllm | 1 |" in (out / "table.md").read_text()
    assert "| 0.5 | vllm | 1 |" in capsys.readouterr().out
