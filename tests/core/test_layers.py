"""The package is one house with every arrow pointing down: each module imports only from its own
layer or the layers below (function-local imports included), and no group of modules imports in a
circle. A new top-level module or package must be given a layer here, or this test fails."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import ibisagent

ROOT = Path(ibisagent.__file__).parent
# ground -> tools / data -> env (+ rewards) -> policies (+ runner; testing stand-ins) -> eval -> train / synth / app
# -> cli
LAYERS = {
    **dict.fromkeys(
        [
            "errors",
            "hardware",
            "io",
            "metrics",
            "geometry",
            "clicker",
            "overlay",
            "lifetime",
            "json_http",
            "chat_client",
            "assets",
            "progress",
        ],
        0,
    ),
    **dict.fromkeys(["tools", "data"], 1),
    **dict.fromkeys(["env", "rewards"], 2),
    **dict.fromkeys(["policies", "testing"], 3),
    "eval": 4,
    **dict.fromkeys(["train", "synth", "app", "integrations"], 5),
    "cli": 6,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the ibisagent modules it imports (anywhere in the file), resolved to real modules."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:  # `from pkg import name` -> pkg
                    target = target.rpartition(".")[0]
                if target.startswith("ibisagent.") and target != name:
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int | None:
    top = module.split(".")[1] if "." in module else None
    return None if top is None else LAYERS.get(top, -1)


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.suffix == ".py" else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    tops -= {"__init__", "__pycache__", "weights"}
    assert not tops - set(LAYERS), f"give these a layer in {__file__}: {sorted(tops - set(LAYERS))}"


def test_no_import_points_up_a_layer():
    up = [
        f"{a} -> {b}"
        for a, targets in import_graph().items()
        for b in targets
        if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a)
    ]
    assert not up, "imports pointing up a layer:\n" + "\n".join(sorted(up))


def test_no_import_circles():
    """Tarjan's strongly connected components; a package's __init__ importing its own children
    is not a circle."""
    graph = import_graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w.startswith(v + "."):
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_checker_sees_an_up_pointing_import(tmp_path, monkeypatch):
    """The checker itself can fail: a ground module importing the CLI is caught."""
    fake = tmp_path / "ibisagent"
    (fake / "cli").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "cli" / "__init__.py").write_text("")
    (fake / "cli" / "main.py").write_text("")
    (fake / "metrics.py").write_text("def f():\n    from ibisagent.cli.main import app\n")
    monkeypatch.setitem(globals(), "ROOT", fake)
    graph = import_graph()
    assert graph["ibisagent.metrics"] == {"ibisagent.cli.main"}
    assert layer_of("ibisagent.cli.main") > layer_of("ibisagent.metrics")
