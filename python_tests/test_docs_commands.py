"""Every shell command in README.md and docs/ is one the project runs or checks.

A command in a ```bash block is accepted when it is one of:
- ``lamps ...``: parsed here by the real ``lamps`` argument parser (a renamed or removed option
  fails), every subcommand included (each must appear in some block); its runs are the
  subcommands' own tests (``test_replay*.py``, ``test_agents_http.py``,
  ``test_cli_commands.py``);
- ``bash scripts/NAME``: the script exists (the test command runs ``scripts/test``, CI runs it,
  and ``scripts/replay`` is ``lamps replay`` with the options parsed above);
- a block under ``<!-- tested-by: python_tests/FILE.py::TEST -->`` (or the HTTP examples'
  ``<!-- e2e-http: TAG -->``, which ``test_e2e_http.py`` runs): the named test exists.
Anything else fails with the file and line, so a command nobody runs cannot be documented.
"""

from __future__ import annotations

import argparse
import functools
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"((?:<!--[^\n]*-->\n)?)```bash\n(.*?)```", re.S)
TESTED_BY = re.compile(r"<!-- tested-by: (python_tests/[\w/]+\.py)::(\w+) -->")


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    out = []
    for line in joined.splitlines():
        line = " ".join(line.split())
        if line and not line.startswith("#"):
            out.append(line)
    return out


def blocks() -> list[tuple[str, int, str, str]]:
    """(page, line, marker, body) of every bash block in the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in BLOCK.finditer(text):
            line = text[: m.start()].count("\n") + 1
            found.append((page.relative_to(ROOT).as_posix(), line, m.group(1), m.group(2)))
    return found


def check_marker(marker: str) -> None:
    if marker.startswith("<!-- e2e-http:"):
        assert "e2e-http" in (ROOT / "python_tests/test_e2e_http.py").read_text()
        return
    m = TESTED_BY.match(marker)
    assert m, f"unknown marker {marker.strip()!r}"
    path = ROOT / m.group(1)
    assert path.is_file(), f"{m.group(1)} does not exist"
    assert f"def {m.group(2)}(" in path.read_text(), f"{m.group(1)} has no {m.group(2)}"


@functools.cache
def lamps_parser() -> argparse.ArgumentParser:
    from lamps.cli import build_parser

    return build_parser()


def check_command(command: str) -> None:
    words = shlex.split(command.split(" #")[0])
    if words[:1] == ["lamps"]:
        try:
            lamps_parser().parse_args(words[1:])
        except SystemExit as e:
            if e.code == 0:
                return  # --help
            raise AssertionError(f"`{command}` does not parse (exit {e.code})") from None
        return
    if words[:1] == ["bash"] and words[1].startswith("scripts/"):
        assert (ROOT / words[1]).is_file(), f"{words[1]} does not exist"
        return
    raise AssertionError(
        f"`{command}` is neither `lamps ...` nor `bash scripts/...`: mark its block with "
        "<!-- tested-by: python_tests/FILE.py::TEST --> naming the test that runs it"
    )


@pytest.mark.parametrize("page,line,marker,body", blocks(), ids=lambda v: str(v)[:40])
def test_documented_command_is_run_or_checked(page: str, line: int, marker: str, body: str) -> None:
    if marker:
        check_marker(marker)
        return
    for command in commands(body):
        try:
            check_command(command)
        except AssertionError as e:
            raise AssertionError(f"{page}:{line}: {e}") from None


def test_the_checker_refuses_what_it_should() -> None:
    with pytest.raises(AssertionError, match="does not parse"):
        check_command("lamps replay --no-such-option 1")
    with pytest.raises(AssertionError, match="mark its block"):
        check_command("curl http://127.0.0.1:8000/v1/models")
    with pytest.raises(AssertionError, match="has no"):
        check_marker("<!-- tested-by: python_tests/test_docs_commands.py::no_such_test -->")
    check_command("lamps replay --policies vllm,lamps --qps 4")
    assert commands("a \\\n  b  # x\n# c\n\nd\n") == ["a b # x", "d"]
    # The other subcommands go through the same parser.
    check_command("lamps targets --paired-at 4.5 results/a results/b  # a comment")
    check_command("lamps workloads pack-coding traces out.json.gz")
    with pytest.raises(AssertionError, match="does not parse"):
        check_command("lamps targets")  # a results directory is required
    with pytest.raises(AssertionError, match="does not parse"):
        check_command("lamps workloads pack-coding traces")


def subcommands(parser: argparse.ArgumentParser) -> set[tuple[str, ...]]:
    """Every command the parser runs: ``("replay",)``, ``("workloads", "derive")``, ..."""
    found: set[tuple[str, ...]] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= {(name, *rest) for rest in subcommands(sub)} or {(name,)}
    return found


def test_every_lamps_command_is_documented() -> None:
    # Each subcommand of `lamps` appears in a bash block of README.md or docs/, where the test
    # above parses it: no command of the package goes undocumented or unchecked.
    documented: set[tuple[str, ...]] = set()
    for _, _, _, body in blocks():
        for command in commands(body):
            if command.startswith("lamps "):
                words = shlex.split(command.split(" #")[0])
                documented |= {tuple(words[1 : n + 1]) for n in (1, 2)}
    missing = sorted(subcommands(lamps_parser()) - documented)
    assert not missing, f"lamps subcommands no bash block of the docs shows: {missing}"


def test_the_main_commands_defaults_parse() -> None:
    script = (ROOT / "scripts/replay").read_text()
    m = re.search(r"set -- (.*?)\nfi", script, re.S)
    assert m, "scripts/replay has no default arguments"
    check_command("lamps replay " + re.sub(r"\\\n\s*", " ", m.group(1)))


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    missing = [
        target
        for target in LINK.findall(page.read_text())
        if "://" not in target and not (page.parent / target).exists()
    ]
    assert not missing, f"{page.relative_to(ROOT)} links to missing files: {missing}"
