"""The wheel ships the model configs, and an install from it reads them (not the source tree's, not defaults)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mmfusion.engine import bench
from mmfusion.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import sys
from pathlib import Path
import mmfusion
from mmfusion.engine.bench import default_config_dir, shipped_config
from mmfusion.engine.runs import resolve_config
unpacked = Path(sys.argv[1]).resolve()
assert Path(mmfusion.__file__).resolve().is_relative_to(unpacked), mmfusion.__file__
d = default_config_dir()
assert d == unpacked / "mmfusion" / "configs", d
cfg = resolve_config(str(d / "mea" / "synthetic.yaml"))
assert cfg.model_args["kernels"] == {"text": 1, "vision": 1, "audio": 1}, cfg.model_args
assert Path(shipped_config("configs/mea/mosi.yaml")) == d / "mea" / "mosi.yaml"
print("ok")
"""


def test_the_wheel_ships_the_configs_and_bench_reads_them(tmp_path):
    src = tmp_path / "source"  # a copy, so the build writes nothing into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so", "build")
    shutil.copytree(ROOT / "src", src / "src", ignore=ignore)
    shutil.copytree(ROOT / "configs", src / "configs")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("mmfusion-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {n.removeprefix("mmfusion/configs/") for n in zf.namelist() if n.startswith("mmfusion/configs/")}
    assert shipped == {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    elsewhere = tmp_path / "elsewhere"  # no ./configs here, and no source tree above the unpacked package
    elsewhere.mkdir()
    run = subprocess.run([sys.executable, "-c", CHECK, str(unpacked)], capture_output=True, text=True, timeout=300,
                         cwd=elsewhere, env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin",
                                             "MMFUSION_KERNELS": "0"})
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]


def test_without_any_configs_bench_refuses_naming_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "config_dirs", lambda: [tmp_path / "a" / "configs", tmp_path / "b" / "configs"])
    with pytest.raises(ConfigError, match=r"no model configs found.*a/configs.*b/configs"):
        bench.default_config_dir()


def test_a_repository_config_path_falls_back_to_the_shipped_file(tmp_path, monkeypatch):
    shipped = tmp_path / "pkg" / "configs"
    (shipped / "mea").mkdir(parents=True)
    (shipped / "mea" / "mosi.yaml").write_text("model: mea\n")
    monkeypatch.chdir(tmp_path)  # no ./configs
    monkeypatch.setattr(bench, "config_dirs", lambda: [tmp_path / "configs", shipped])
    assert bench.shipped_config("configs/mea/mosi.yaml") == str(shipped / "mea" / "mosi.yaml")
    assert bench.shipped_config("configs/mea/nope.yaml") == "configs/mea/nope.yaml"  # reading it names the file
    (tmp_path / "mine.yaml").write_text("model: mea\n")
    assert bench.shipped_config("mine.yaml") == "mine.yaml"
