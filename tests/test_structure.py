"""The engine and the command line stay readable (short functions, a thin ``cli/main.py``), and every test file
is named after the module or command it tests."""

import argparse
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


# Tests mirror src/: tests/<pkg>/test_<name>.py or test_<name>_<aspect>.py tests src/mmfusion/<pkg>/<name>.py (or the
# subpackage <pkg>/<name>/; <name> = <pkg> for the package's own __init__.py, as tests/metrics/test_metrics.py);
# tests/cli/ may name a command instead (tests/cli/test_fit.py: `mmfusion fit`; import-weights -> import_weights);
# top-level test files name a top-level module (tests/test_io.py: io.py). Only these test no one module:
CROSS_CUTTING = {
    "tests/test_benchmark_scripts.py": "runs the scripts of benchmarks/, outside the package",
    "tests/test_configs_and_readme.py": "the shipped configs/ and the README's commands, across every layer",
    "tests/test_docs.py": "every path that the code and the docs cite exists",
    "tests/test_imports.py": "the import layers of every package",
    "tests/test_packaging.py": "the built wheel ships the configs, and an install from it reads them",
    "tests/test_structure.py": "the size and the names of files, this one included",
    "tests/data/test_fuzz_readers.py": "one property-based test across every reader (MulT, MMSA, HDF5)",
    "tests/data/test_hostile_files.py": "hostile files against every reader, in both read modes",
    "tests/models/test_contract.py": "the contract that every registered model keeps, model by model",
    "tests/models/test_learning.py": "every registered model learns the synthetic benchmark's planted signal",
}


def _commands() -> set[str]:
    """The CLI's commands as test file names write them (``import-weights`` -> ``import_weights``)."""
    from mmfusion.cli.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name.replace("-", "_") for name in sub.choices}


def _subjects(package: Path) -> set[str]:
    """What a test file may be named after in ``package``: its modules, its subpackages, and the package itself."""
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    return modules | {p.name for p in package.iterdir() if (p / "__init__.py").is_file()} | {package.name}


def misnamed_tests(tests: Path, src: Path, commands: dict[str, set[str]], allowed: set[str]) -> list[str]:
    """Test files (relative to ``tests``) that name no module, subpackage or command they could test, and test
    folders with no package of that name under ``src``. ``commands``: the command names a package's tests may take
    (``{"cli": {"fit", ...}}``); ``allowed``: test files (relative to ``tests``) that test no one module."""
    out = []
    for path in sorted(tests.rglob("test_*.py")):
        rel = path.relative_to(tests).as_posix()
        if rel in allowed:
            continue
        if len(path.relative_to(tests).parts) > 2:
            out.append(f"{rel}: deeper than tests/<package>/")
            continue
        package = src if path.parent == tests else src / path.parent.name
        if not (package / "__init__.py").is_file():
            out.append(f"{rel}: no package {package.relative_to(src.parent).as_posix()}")
            continue
        names = _subjects(package) - ({src.name} if package == src else set())
        names |= commands.get(package.name, set()) if package != src else set()
        if not any(path.stem == f"test_{n}" or path.stem.startswith(f"test_{n}_") for n in names):
            out.append(f"{rel}: names no module of {package.relative_to(src.parent).as_posix()}")
    return out


def test_every_test_file_names_the_module_or_command_it_tests():
    allowed = {name.removeprefix("tests/") for name in CROSS_CUTTING}
    assert misnamed_tests(Path(__file__).parent, SRC, {"cli": _commands()}, allowed) == []


def test_the_cross_cutting_list_names_existing_files_and_says_why():
    root = Path(__file__).parents[1]
    assert [name for name in CROSS_CUTTING if not (root / name).is_file()] == []
    assert all(len(why) > 20 and "\n" not in why for why in CROSS_CUTTING.values())


def test_a_test_file_that_names_no_module_is_named(tmp_path):
    src, tests = tmp_path / "src" / "pkg", tmp_path / "tests"
    for module in ("__init__.py", "io.py", "core/__init__.py", "core/train.py", "shell/__init__.py", "shell/main.py",
                   "nets/__init__.py", "nets/mea/__init__.py"):
        (src / module).parent.mkdir(parents=True, exist_ok=True)
        (src / module).write_text("")
    good = ["test_io.py", "core/test_train.py", "core/test_train_divergence.py", "core/test_core.py",
            "shell/test_fit.py", "shell/test_main.py", "nets/test_mea_compile.py", "test_docs.py"]
    bad = ["test_pkg.py", "test_misc.py", "core/test_trainer.py", "core/test_fit.py", "shell/test_tune.py",
           "media/test_extract.py", "core/x/test_train.py"]
    for name in good + bad:
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).write_text("")
    (tests / "core" / "helpers.py").write_text("")  # not a test file: free to be named anything
    assert misnamed_tests(tests, src, {"shell": {"fit"}}, {"test_docs.py"}) == [
        "core/test_fit.py: names no module of pkg/core", "core/test_trainer.py: names no module of pkg/core",
        "core/x/test_train.py: deeper than tests/<package>/", "media/test_extract.py: no package pkg/media",
        "shell/test_tune.py: names no module of pkg/shell", "test_misc.py: names no module of pkg",
        "test_pkg.py: names no module of pkg"]
