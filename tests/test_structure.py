"""The engine and the command line stay readable: short functions, a thin ``cli/main.py``."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mmfusion"
MAX_FUNCTION_LINES = 60
MAX_CLI_MAIN_LINES = 300


def _long_functions(path: Path, root: Path = SRC) -> list[str]:
    """``file:function (N lines)`` for every function (methods and nested ones included) longer than the limit."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(root)}:{node.name} ({lines} lines)")
    return out


def test_no_long_function_in_engine_or_cli():
    files = sorted((SRC / "engine").rglob("*.py")) + sorted((SRC / "cli").rglob("*.py"))
    assert files
    assert [f for p in files for f in _long_functions(p)] == []


def test_a_function_one_line_over_the_limit_is_named(tmp_path):
    (tmp_path / "x.py").write_text("def at_limit():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1)
                                   + "\n\nclass C:\n    def over(self):\n" + "        x = 1\n" * MAX_FUNCTION_LINES)
    assert _long_functions(tmp_path / "x.py", tmp_path) == [f"x.py:over ({MAX_FUNCTION_LINES + 1} lines)"]


def test_cli_main_is_thin():
    assert len((SRC / "cli" / "main.py").read_text().splitlines()) < MAX_CLI_MAIN_LINES
