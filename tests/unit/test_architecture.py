"""The house rules of the import graph, read from the source (every import, at module level or inside a function).

- no import cycle between modules of decembert_cli/ and tasks/;
- no arrow from viz/, features/, data/, model/, densecap/ or metrics/ into engine/ or commands/;
- the library never imports commands/ (only app.py does);
- plugins/ import decembert_cli's public API (decembert_cli.api) and nothing else of ours.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"decembert_cli": ROOT / "decembert_cli", "decembert_tasks": ROOT / "tasks"}


def _module_name(package: str, folder: Path, file: Path) -> str:
    parts = [package, *file.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(file: Path, module: str) -> set[str]:
    """Every module `file` imports (absolute names; `from X import y` counts X.y when that is a module)."""
    is_package = file.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)
    return found


def import_graph() -> dict[str, set[str]]:
    modules: dict[str, Path] = {}
    for package, folder in PACKAGES.items():
        for file in folder.rglob("*.py"):
            modules[_module_name(package, folder, file)] = file
    graph: dict[str, set[str]] = {}
    for name, file in modules.items():
        graph[name] = {m for m in _imports(file, name) if m in modules and m != name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (a package's __init__ importing its own submodules does not count), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # a package's __init__ re-exporting its submodules
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    cycle = _cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_layer_imports_the_engine_or_the_commands() -> None:
    graph = import_graph()
    lower = ("viz", "features", "data", "model", "densecap", "metrics")
    arrows = [
        f"{a} -> {b}"
        for a, targets in graph.items()
        for b in targets
        if a.split(".")[1:2]
        and a.split(".")[1] in lower
        and a.startswith("decembert_cli.")
        and b.startswith(("decembert_cli.engine", "decembert_cli.commands"))
    ]
    assert not arrows, arrows
    into_commands = [
        f"{a} -> {b}"
        for a, t in graph.items()
        for b in t
        if b.startswith("decembert_cli.commands") and not a.startswith(("decembert_cli.commands", "decembert_cli.app"))
    ]
    assert not into_commands, into_commands


def test_plugins_import_only_the_public_api() -> None:
    files = sorted((ROOT / "plugins").rglob("*.py"))
    assert files, "no plugin sources found"
    wrong = []
    for file in files:
        for name in _imports(file, "plugin"):
            ours = name.split(".")[0] in ("decembert_cli", "decembert_tasks")
            if ours and not (name == "decembert_cli.api" or name.startswith("decembert_cli.api.")):
                wrong.append(f"{file.relative_to(ROOT)}: {name}")
            elif ours and any(part.startswith("_") for part in name.split(".")):
                wrong.append(f"{file.relative_to(ROOT)}: private name {name}")
    assert not wrong, wrong


def test_the_checker_finds_a_cycle_and_a_relative_import() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"p": {"p.x"}, "p.x": {"p"}}) is None  # a package and its own submodule
    assert _cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "decembert_tasks.common" in graph["decembert_tasks.retrieval"]  # `from .common import ClipTask`


def test_the_engine_draws_nothing_and_inference_sits_below_export() -> None:
    """The engine reports validation pictures through `Job.pictures` (given by the commands), never by importing
    viz/; `inference` (used by viz/) does not import `export` (which builds models through the engine)."""
    graph = import_graph()
    into_viz = [
        f"{a} -> {b}" for a, t in graph.items() for b in t if a.startswith("decembert_cli.engine") and ".viz" in b
    ]
    assert not into_viz, into_viz
    assert "decembert_cli.export" not in graph["decembert_cli.inference"]
    assert "decembert_cli.inference" in graph["decembert_cli.export"]  # the arrow runs downwards only
