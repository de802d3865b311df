"""The house rules of the import graph, read from the source (every import, at module level or inside a function).

- no import cycle between modules of decembert_cli/ and tasks/;
- no arrow from viz/, features/, data/, model/, densecap/ or metrics/ into engine/ or commands/;
- the library never imports commands/ (only app.py does);
- plugins/ import decembert_cli's public API (decembert_cli.api) and nothing else of ours;
- an import inside a function of decembert_cli/ has a reason; it is allowed only
  (a) in app.py or commands/: the CLI imports the library when a command runs, so `decembert --help` stays fast;
  (b) of a module of LAZY_THIRD_PARTY: slow to import (measured with `python -X importtime`) or optional;
  (c) marked `# lazy: <reason>` on its line or in the comment right above it, the reason naming the import
      cycle or layering arrow it breaks, or the module it keeps light and who needs that.
  Everything else (decembert_cli's own modules, the standard library, numpy, yaml, rich, ...) is imported at
  module level. Typing-only imports stay under `if TYPE_CHECKING:` at module level.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"decembert_cli": ROOT / "decembert_cli", "decembert_tasks": ROOT / "tasks"}
# (a) where any import may wait for the function that needs it
CLI_FILES = ("decembert_cli/app.py", "decembert_cli/commands/")
# (b) third-party modules a library function may import where it uses them: seconds to import (measured with
# `python -X importtime`, after torch and numpy where the module has them already), or not our dependency.
# Cheap ones are imported at module level: numpy (~0.2 s), cv2 (~0.03 s after numpy), pycocoevalcap (~0.05 s),
# safetensors and huggingface_hub (~0 after torch), yaml, rich.
LAZY_THIRD_PARTY = {
    "torch": "~6 s; config/, io, recipes, data/video and data/tokenizer import without it",
    "torchvision": "~4 s after torch",
    "transformers": "~1-5 s after torch (BertModel most); model/__init__, model.weights, data/tokenizer, "
    "densecap/backends without it",
    "timm": "~3 s after torch; only the 2D backbone",
    "pytorchvideo": "~2.5 s after torch; only the 3D backbones",
    "av": "the fallback decoder: comes with pytorchvideo, not a dependency of ours",
    "matplotlib": "~1 s (pyplot); only pictures, and the Agg backend must be chosen before pyplot loads",
    "tensorboard": "optional extra (train.log_to: [tensorboard])",
    "wandb": "optional extra (train.log_to: [wandb])",
}


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


def _lazy_marker(lines: list[str], node: ast.stmt) -> bool:
    """`# lazy: <reason>` on the import's lines or in the comment block right above it."""
    above = []
    k = node.lineno - 2
    while k >= 0 and lines[k].lstrip().startswith("#"):
        above.append(lines[k])
        k -= 1
    span = lines[node.lineno - 1 : node.end_lineno or node.lineno] + above
    return any(re.search(r"#\s*lazy:\s*\S", line) for line in span)


def unexplained_imports(source: str, path: str) -> list[str]:
    """`path:line import ...` for each import inside a function that is neither of LAZY_THIRD_PARTY only nor
    marked `# lazy: <reason>`."""
    lines = source.splitlines()
    found: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, ast.Import | ast.ImportFrom):
                if isinstance(child, ast.Import):
                    roots = {alias.name.split(".")[0] for alias in child.names}
                else:  # a relative import is ours
                    roots = {"." if child.level else (child.module or "").split(".")[0]}
                if not roots <= LAZY_THIRD_PARTY.keys() and not _lazy_marker(lines, child):
                    found.append(f"{path}:{child.lineno} {ast.unparse(child)}")
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(source), False)
    return found


def test_function_level_imports_have_a_reason() -> None:
    wrong = []
    for file in sorted((ROOT / "decembert_cli").rglob("*.py")):
        path = file.relative_to(ROOT).as_posix()
        if not path.startswith(CLI_FILES):
            wrong += unexplained_imports(file.read_text(encoding="utf-8"), path)
    assert not wrong, "import at module level, or say why not with `# lazy: <reason>`:\n" + "\n".join(wrong)


def test_the_checker_finds_a_function_level_import_without_a_reason() -> None:
    source = (
        "import json\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from decembert_cli.config import Config\n"
        "def f():\n"
        "    import os\n"
        "    from decembert_cli.io import read_jsonl\n"
        "    from . import sibling\n"
        "    import torch\n"
        "    import matplotlib.pyplot as plt\n"
        "    from transformers import BertModel\n"
        "    import torch, yaml\n"
        "    # lazy: a cycle through decembert_cli.x,\n"
        "    # which imports this module\n"
        "    from decembert_cli.x import y\n"
        "    import shutil  # lazy: keeps z light\n"
        "    import re  # lazy:\n"
        "    def inner():\n"
        "        import csv\n"
        "class C:\n"
        "    import math\n"
        "    async def m(self):\n"
        "        from decembert_cli import errors\n"
    )
    assert unexplained_imports(source, "x.py") == [
        "x.py:6 import os",
        "x.py:7 from decembert_cli.io import read_jsonl",
        "x.py:8 from . import sibling",
        "x.py:12 import torch, yaml",
        "x.py:17 import re",
        "x.py:19 import csv",
        "x.py:23 from decembert_cli import errors",
    ]
