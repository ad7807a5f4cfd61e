"""Imports run one way: cli -> engine -> {models, data, media, metrics}; models -> modules -> batch;
media -> data -> batch."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmfusion"
FORBIDDEN = {
    "modules": {"models", "data", "engine", "cli", "lightning", "inspect"},
    "models": {"data", "engine", "cli", "lightning"},
    "data": {"models", "modules", "engine", "cli", "lightning", "media"},
    "metrics": {"models", "modules", "data", "engine", "cli", "lightning"},
    "engine": {"cli"},
    "media": {"models", "modules", "engine", "cli", "lightning", "inspect"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    out = set()
    for n in names:
        parts = n.split(".")
        if parts[0] == "mmfusion" and len(parts) > 1:
            out.add(parts[1])
        elif parts[0] in ("lightning", "pytorch_lightning"):
            out.add("lightning")
    return out


def test_no_upward_imports():
    bad = []
    for layer, forbidden in FORBIDDEN.items():
        for path in (SRC / layer).rglob("*.py"):
            hits = _imports(path) & forbidden
            if hits:
                bad.append(f"{path.relative_to(SRC)} imports {sorted(hits)}")
    assert not bad, bad


def test_lightning_only_in_engine_and_cli():
    users = {p.relative_to(SRC).parts[0] for p in SRC.rglob("*.py") if "lightning" in _imports(p)}
    assert users <= {"engine", "cli"}, users
