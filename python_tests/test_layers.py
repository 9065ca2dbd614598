"""The package's layers (docs/architecture.md): each imports only from layers below it.

Read from the sources (every `import`, module level or inside a function), so a new upward or
sideways import fails here before it shows up as an import cycle at run time.
"""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Iterator

import pytest

import lamps

ROOT = pathlib.Path(lamps.__file__).resolve().parent

# Lowest first. A module may import its own group and any group of a lower layer, nothing else;
# groups of one layer stand beside each other (LAMPS and the baselines never import each other).
LAYERS: tuple[tuple[str, ...], ...] = (
    # the C++ extensions, the build's record (generated in an installed copy), packaged data
    ("lamps._core", "lamps._swap", "lamps._build_info", "lamps.data"),
    ("lamps.defaults", "lamps.choices", "lamps.logs"),  # they import nothing of lamps
    ("lamps",),  # the core's Python face
    ("lamps.swap", "lamps.tiny_models"),
    ("lamps.mechanism",),
    ("lamps.connector",),
    ("lamps.vllm", "lamps.baselines", "lamps.workloads", "lamps.harness"),
    ("lamps.replay",),
    ("lamps.agents",),
    ("lamps.cli",),
)
MAX_LINES = 400


def module_name(path: pathlib.Path) -> str:
    """The dotted name of a source file under lamps/."""
    parts = ("lamps", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def group_of(module: str) -> str:
    """The layer group a module belongs to (its top-level package or module under lamps)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def layer_of(group: str) -> int:
    """The index of a group's layer; KeyError names a group missing from LAYERS."""
    for index, groups in enumerate(LAYERS):
        if group in groups:
            return index
    raise KeyError(f"{group} is in no layer: add it to LAYERS (and docs/architecture.md)")


def lamps_imports(path: pathlib.Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import of a lamps module in the file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "lamps":
                    yield node.lineno, alias.name
        elif (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module or "").split(".")[0] == "lamps"
        ):
            yield node.lineno, str(node.module)


SOURCES = sorted(ROOT.rglob("*.py"))


def test_every_group_has_a_layer() -> None:
    for path in SOURCES:
        layer_of(group_of(module_name(path)))


def upward_or_sideways(group: str, imports: Iterator[tuple[int, str]]) -> list[str]:
    """The imports of a module of `group` that reach its own layer (another group) or above."""
    layer = layer_of(group)
    return [
        f"line {line}: {target}"
        for line, target in imports
        if group_of(target) != group and layer_of(group_of(target)) >= layer
    ]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_go_down_or_stay_in_their_group(path: pathlib.Path) -> None:
    group = group_of(module_name(path))
    wrong = upward_or_sideways(group, lamps_imports(path))
    assert not wrong, f"{group} (layer {layer_of(group)}) imports from its layer or above: {wrong}"


def test_the_checker_refuses_sideways_and_upward_imports(tmp_path: pathlib.Path) -> None:
    source = tmp_path / "x.py"
    source.write_text(
        "import lamps.mechanism.pausing\n"
        "def f():\n    from lamps.vllm.scheduler import LampsScheduler\n"
        "from lamps.replay import runner\n"
    )
    wrong = upward_or_sideways("lamps.baselines", iter(sorted(lamps_imports(source))))
    assert wrong == ["line 3: lamps.vllm.scheduler", "line 4: lamps.replay"]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_file_over_the_line_limit(path: pathlib.Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)}: {lines} lines (limit {MAX_LINES})"


def import_time_edges(path: pathlib.Path, modules: set[str]) -> set[str]:
    """Modules the file imports when it is imported (not inside functions or TYPE_CHECKING),
    its own parent packages left out (Python imports those first, by design)."""
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Try):
                visit(node.body)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body)
                visit(node.orelse)

    visit(ast.parse(path.read_text(), str(path)).body)
    name = module_name(path)
    return {m for m in found & modules if m != name and not name.startswith(m + ".")}


def test_no_import_cycles() -> None:
    modules = {module_name(p) for p in SOURCES}
    edges = {module_name(p): import_time_edges(p, modules) for p in SOURCES}
    done: set[str] = set()

    def walk(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            raise AssertionError(" -> ".join((*path[path.index(module) :], module)))
        if module in done:
            return
        for target in sorted(edges[module]):
            walk(target, (*path, module))
        done.add(module)

    for module in sorted(edges):
        walk(module, ())
