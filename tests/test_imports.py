"""Imports run one way, through the layers below; every package under src/mmfusion and benchmarks/ has a layer.

A module may import packages of lower layers only (never its own layer's other packages, never a higher one).
The layers, lowest first:

    0  errors                         the user-facing error classes, and how a command reports them
    1  io, batch, metrics             plain Python / numpy / torch helpers that know no other package but errors
    2  config, runtime                typed configs; process set-up (threads, allocator, compilation)
    3  kernels                        the optional compiled attention kernel
    4  modules                        building blocks, unaware of any model
    5  models, data, inspect          model families; readers; plots — none knows the others
    6  media                          raw recordings -> features (writes the data layer's format)
    7  engine                         the only Lightning code besides the CLI
    8  cli                            parse -> engine -> print
    9  __main__, benchmarks           entry points

A new package fails `test_every_package_has_a_layer` until it is given a layer here; a new upward or sideways
import fails `test_no_back_edges` unless it is one of the KNOWN_BACK_EDGES below, each of which is to go.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "mmfusion"
BENCHMARKS = ROOT / "benchmarks"

LAYERS: list[set[str]] = [
    {"errors"},
    {"io", "batch", "metrics"},
    {"config", "runtime"},
    {"kernels"},
    {"modules"},
    {"models", "data", "inspect"},
    {"media"},
    {"engine"},
    {"cli"},
    {"__main__", "benchmarks"},
]
LAYER = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# Imports against the layers that exist today, with the reason; each should be removed, not added to.
KNOWN_BACK_EDGES = {
    ("runtime", "kernels"): "compile_model builds the kernel before tracing (a function-level import)",
}


def _package(path: Path) -> str:
    """The layer name of a file: its top-level package under src/mmfusion, or "benchmarks"."""
    if path.is_relative_to(BENCHMARKS):
        return "benchmarks"
    return path.relative_to(SRC).parts[0].removesuffix(".py")


def _imports(path: Path) -> set[str]:
    """The mmfusion packages (and "lightning") a file imports, at any depth: module level or inside functions."""
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from mmfusion import kernels`` imports the package ``kernels``
            modules = [f"{node.module}.{a.name}" for a in node.names] if node.module == "mmfusion" else [node.module]
        else:
            continue
        for name in modules:
            parts = name.split(".")
            if parts[0] == "mmfusion" and len(parts) > 1:
                out.add(parts[1])
            elif parts[0] in ("lightning", "pytorch_lightning"):
                out.add("lightning")
    return out


def _files() -> list[Path]:
    return sorted(SRC.rglob("*.py")) + sorted(BENCHMARKS.rglob("*.py"))


def _packages() -> set[str]:
    return {_package(p) for p in _files()} | {p.name for p in SRC.iterdir() if p.is_dir() and p.name != "__pycache__"}


def test_every_package_has_a_layer():
    unlisted = _packages() - set(LAYER) - {"__init__"}
    assert not unlisted, f"give these packages a layer in tests/test_imports.py: {sorted(unlisted)}"


def test_no_back_edges():
    bad = []
    for path in _files():
        pkg = _package(path)
        if pkg not in LAYER:  # the package root's __init__.py; an unlisted package fails the test above
            continue
        for dep in _imports(path) & set(LAYER) - {pkg}:
            if LAYER[dep] >= LAYER[pkg] and (pkg, dep) not in KNOWN_BACK_EDGES:
                bad.append(f"{path.relative_to(ROOT)} ({pkg}, layer {LAYER[pkg]}) imports {dep} (layer {LAYER[dep]})")
    assert not bad, bad


def test_the_rule_catches_a_back_edge(tmp_path):
    """The checker itself: an import of a higher layer from a module is found."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from mmfusion.engine.system import FusionSystem\n    from mmfusion import cli\n")
    assert _imports(module) == {"engine", "cli"}
    assert all(LAYER[dep] > LAYER["models"] for dep in _imports(module))


def test_lightning_only_in_engine_and_cli():
    users = {_package(p) for p in SRC.rglob("*.py") if "lightning" in _imports(p)}
    assert users <= {"engine", "cli"}, users
