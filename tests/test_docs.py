"""The code and the docs cite only files that are in the repository, and the README stays a short manual."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a repository path as docstrings and comments write it: docs/design/mea.md, configs/mea/mosi.yaml, benchmarks/speed.py
PATH = re.compile(r"\b((?:docs|src|benchmarks|tests|configs|scripts)/[\w./-]*[\w/])")
# a path inside the package, as docstrings and tables write it: models/mea.py, engine/train.py (under src/mmfusion)
PACKAGE_PATH = re.compile(r"(?<![\w/.])((?:modules|models|data|engine|cli|kernels|metrics|inspect)/\w+\.(?:py|cpp))")
PLACEHOLDER = re.compile(r"[<*{]")  # benchmarks/out/speed_<model>.json, configs/mea/*.yaml: patterns, not files
GENERATED = ("benchmarks/out",)  # where the benchmark scripts write; not in the repository
SOURCES = sorted([*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("src").rglob("*.cpp"),
                  *ROOT.joinpath("benchmarks").rglob("*.py"), *ROOT.joinpath("tests").rglob("*.py"),
                  *ROOT.joinpath("configs").rglob("*.yaml"), *ROOT.joinpath("scripts").glob("*.sh")])
DOCS = sorted([ROOT / "README.md", *ROOT.glob("CONTRIBUTING.md"), *ROOT.joinpath("docs").rglob("*.md"),
               *ROOT.joinpath("benchmarks").glob("*.md")])


def cited_paths(text: str) -> set[str]:
    """Repository paths named in ``text``, without patterns and generated outputs."""
    found = set()
    for m in PATH.finditer(text):
        end = m.end()
        if end < len(text) and PLACEHOLDER.match(text[end]):
            continue
        path = m.group(1).rstrip(".")
        if not path.startswith(GENERATED):
            found.add(path)
    found |= {f"src/mmfusion/{m.group(1)}" for m in PACKAGE_PATH.finditer(text)}
    return found


def test_cited_paths_finds_what_docstrings_write():
    text = ('"""Our reading (docs/design/mea.md §2); see configs/mea/mosi.yaml. Writes benchmarks/out/x.json and\n'
            'benchmarks/out/speed_<model>.json; configs/mea/*.yaml hold the rest; src/mmfusion/batch.py; the model\n'
            'in models/mea.py, its test in tests/models/test_mea.py."""')
    assert cited_paths(text) == {"docs/design/mea.md", "configs/mea/mosi.yaml", "src/mmfusion/batch.py",
                                 "src/mmfusion/models/mea.py", "tests/models/test_mea.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_sources_cite_only_files_in_the_repository(path):
    text = path.read_text()
    missing = sorted(p for p in cited_paths(text) if not (ROOT / p).exists())
    assert not missing, f"{path.relative_to(ROOT)} names files that are not in the repository: {missing}"
    outside = [] if path == Path(__file__) else re.findall(r"shared/spec|spec §\d|spec\.md", text)
    assert not outside, f"{path.relative_to(ROOT)} cites a specification outside the repository: {outside}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_doc_links_resolve(path):
    """Every relative Markdown link and every repository path a page names exists."""
    text = path.read_text()
    links = {target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text)
             if not target.startswith(("http://", "https://", "#", "mailto:"))}
    missing = sorted(link for link in links if link and not (path.parent / link).exists())
    missing += sorted(p for p in cited_paths(text) if not (ROOT / p).exists() and not (path.parent / p).exists())
    assert not missing, f"{path.relative_to(ROOT)} links to files that do not exist: {missing}"


def test_readme_is_a_short_manual():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines; move details into docs/"
    first_screen = "\n".join(lines[:40])
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", first_screen), "no dated timings on the README's first screen"
    assert not re.search(r"EPYC|Xeon|H100|AVX", first_screen), "no machine names on the README's first screen"
