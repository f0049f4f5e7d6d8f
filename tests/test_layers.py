"""The package's layering, checked on its imports (module level and inside functions alike).

One sentence (docs/architecture.md): core -> data -> models -> scoring -> engine -> methods -> audit -> continual ->
report -> pipeline -> recipes -> cli. A module imports only from its own layer or layers to its left, the imports form no
cycle, and a method file imports from no other method file (only ``methods.base``, ``methods.losses`` and
``methods.shared``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import obliviate

ROOT = Path(obliviate.__file__).parent

LAYERS = [
    ("core", ["errors", "io", "config", "logprobs", "cache", "threads", "heap", "resources"]),
    ("data", ["data"]),
    ("models", ["models"]),
    ("scoring", ["scoring"]),
    ("engine", ["engine"]),
    ("methods", ["methods"]),
    ("audit", ["audit"]),
    ("continual", ["continual"]),
    ("report", ["report"]),
    ("pipeline", ["pipeline"]),
    ("recipes", ["recipes"]),
    ("cli", ["cli", "__main__", ""]),  # "" is the package itself: the public API re-exports every layer
]
METHOD_BUILDING_BLOCKS = {"obliviate.methods.base", "obliviate.methods.losses", "obliviate.methods.shared"}


def modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = ["obliviate", *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The obliviate modules ``name`` imports: ``from .x import y`` counts as x.y when that is a module, else x."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1] + ([node.module] if node.module else [])
                target = ".".join(base)
            else:
                target = node.module or ""
            if not target.startswith("obliviate"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("obliviate")}
    return found - {name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def layer_of(module: str) -> int:
    rest = module.split(".")[1:]
    first = rest[0] if rest else ""
    for i, (_, members) in enumerate(LAYERS):
        if first in members:
            return i
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and to docs/architecture.md")


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def upward_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(g.items()):
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(mod):
                bad.append(f"{mod} ({LAYERS[layer_of(mod)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    return bad


def method_cross_imports(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in sorted(g.items()):
        if not mod.startswith("obliviate.methods.") or mod in METHOD_BUILDING_BLOCKS:
            continue
        for dep in sorted(deps):
            if dep.startswith("obliviate.methods") and dep not in METHOD_BUILDING_BLOCKS:
                bad.append(f"{mod} imports {dep}")
    return bad


def test_every_module_has_a_layer():
    for mod in graph():
        layer_of(mod)


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_no_upward_import():
    assert upward_imports(graph()) == []


def test_methods_import_only_building_blocks():
    assert method_cross_imports(graph()) == []


def test_the_checks_catch_what_they_guard_against():
    """The checks themselves, on small graphs with the defect planted: each must report it."""
    g = {"obliviate.data.a": {"obliviate.audit.b"}, "obliviate.audit.b": {"obliviate.data.a"}}
    assert cycles(g) == [["obliviate.audit.b", "obliviate.data.a"]]
    assert upward_imports(g) == ["obliviate.data.a (data) imports obliviate.audit.b (audit)"]
    g = {"obliviate.methods.npo": {"obliviate.methods.rmu", "obliviate.methods.shared"}}
    assert method_cross_imports(g) == ["obliviate.methods.npo imports obliviate.methods.rmu"]
    real = graph()
    assert "obliviate.scoring.metrics" in real["obliviate.audit.mia"]  # the walker sees imports as written
    assert "obliviate.scoring.passes" in real["obliviate.engine.coreset"]  # and those inside functions
