"""Every shipped config resolves; the README's two commands are the ones the scripts and CI run."""

import os
import re
import subprocess
from pathlib import Path

import pytest

from mmfusion.config import load_yaml
from mmfusion.engine.runs import resolve_config
from mmfusion.models import build

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "configs")) for p in CONFIGS])
def test_config_resolves_and_builds(path):
    cfg = resolve_config(str(path))
    assert cfg.model == path.parent.name or path.parent.name == "msaf"
    dims = {"text": 300, "vision": 35, "audio": 74}
    model = build(cfg.model, dims, 8 if "iemocap" in path.name else 1, **cfg.model_args)
    # every setting the file makes reaches the model built from it (and the training loop's)
    def same(a, b):
        return tuple(a) == tuple(b) if isinstance(a, (list, tuple)) else a == b

    for key, value in cfg.model_args.items():
        assert same(getattr(model.config, key), value), (path.name, key)
    written = load_yaml(str(path))
    for key, value in written.get("train", {}).items():
        assert same(getattr(cfg.train, key), value), (path.name, key)


def test_readme_commands_match_scripts_and_ci():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## Two commands\s+```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_readme_main_command_runs(tmp_path):
    """The demo script end to end, shortened to one epoch on a small benchmark."""
    env = {**os.environ, "MMFUSION_DEMO_OUT": str(tmp_path)}
    done = subprocess.run(["bash", str(ROOT / "scripts" / "demo.sh"), "--max-epochs", "1", "--no-progress",
                           "--set", "data_args.n_train=64", "--set", "data_args.n_valid=16",
                           "--set", "data_args.n_test=32"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Bayes-optimal" in done.stdout and "mea" in done.stdout and "lf_lstm" in done.stdout
    assert list(tmp_path.glob("bench_synthetic.*"))


def test_readme_python_example_runs():
    """The README's "From Python" block, as written: MEA trains a step on padded clips and explains them."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - our own README
    model, maps = scope["model"], scope["maps"]
    assert scope["out"]["pred"].shape == (2, 1) and set(scope["out"]["losses"]) >= {"dis", "exc", "agn"}
    assert all(p.grad is not None for p in model.head.parameters())
    assert maps["psa"]["vision"][0].shape == (2, 8, 500, 500) and "hca" in maps and "wal" in maps
