"""The layers run one way (docs/architecture.md): a package imports only the packages below it.

Checked on the source, every import statement including the ones inside functions, so a lazy import cannot
hide a cycle. Beam and torch have their own fences: Beam only in pipeline/ (io/storage.py may load it lazily
for a URL scheme only Beam serves), torch only in models/ (and the commands/demo that run it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aligndata"

# Which of our packages each package may import ("aligndata" itself: only ROOT_NAMES). Leaf modules that
# import nothing of ours (BASE) may be imported by every layer.
BASE = {"progress_bar", "gc_policy"}
ROOT_NAMES = {"__version__", "LOG_FORMAT"}  # constants aligndata/__init__.py defines (it imports nothing)
ALLOWED: dict[str, set[str]] = {
    "progress_bar": set(),
    "gc_policy": set(),
    "filters": set(),
    "io": set(),
    "fetch": {"filters", "io"},
    "shards": {"filters", "io"},
    "images": {"filters", "io"},
    "extract": {"filters", "io", "fetch"},
    "inspect": {"filters", "io", "shards", "images"},
    "models": {"filters", "io", "shards"},
    "subsets": {"filters", "io", "shards"},
    "labelled": {"filters", "io", "shards", "images"},
    "pipeline": {"filters", "io", "fetch", "shards", "images", "extract", "inspect"},
    "localweb": set(),
    "example": {"filters", "io", "fetch", "shards", "images", "extract", "inspect", "pipeline", "localweb"},
    "commands": {"filters", "io", "fetch", "shards", "images", "extract", "inspect", "models", "pipeline",
                 "subsets", "labelled"},
    "demo": {"filters", "io", "fetch", "shards", "images", "extract", "inspect", "models", "pipeline",
             "subsets", "localweb", "example", "labelled"},
    "cli": {"filters", "commands", "demo", "example", "pipeline", "shards", "io"},
}
# Third-party fences: (module prefix, the layers that may import it).
FENCES = {
    "apache_beam": {"pipeline", "io"},  # io: storage.py's lazy fallback for URL schemes only Beam serves
    "torch": {"models", "commands", "demo"},
    "transformers": {"models", "commands", "demo"},
    "open_clip": {"models"},
}


def _layer(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "aligndata":  # "from aligndata import x": x is a package or a root name
                found += [(node.lineno, f"aligndata.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def _violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue
        layer = _layer(path)
        assert layer in ALLOWED, f"{path}: a new top-level module or package: give it a layer in ALLOWED"
        for line, module in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            top = module.split(".")
            if top[0] == "aligndata" and len(top) > 1 and top[1] not in ROOT_NAMES:
                target = top[1]
                if target != layer and target not in ALLOWED[layer] and not (target in BASE and layer not in BASE):
                    problems.append(f"{where}: {layer} imports {module}")
            for fenced, layers in FENCES.items():
                if (module == fenced or module.startswith(fenced + ".")) and layer not in layers:
                    problems.append(f"{where}: {layer} imports {module}")
    return problems


def test_layers_import_one_way():
    problems = _violations()
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_the_allowed_graph_has_no_cycle():
    seen: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, trail: tuple[str, ...]) -> None:
        if seen.get(node) == 2:
            return
        if seen.get(node) == 1:
            pytest.fail(f"cycle in ALLOWED: {' -> '.join(trail + (node,))}")
        seen[node] = 1
        for nxt in ALLOWED[node]:
            visit(nxt, trail + (node,))
        seen[node] = 2

    for node in ALLOWED:
        visit(node, ())
