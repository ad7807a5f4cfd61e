"""Ships the repository's ``configs/`` inside the wheel as ``mmfusion/configs`` (everything else is in pyproject.toml).

The configs stay at the repository root, where users and the README name them (``--config configs/mea/mosi.yaml``);
setuptools' package data only covers files inside a package directory, so the build copies them in.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        source = ROOT / "configs"
        if not source.is_dir():
            raise FileNotFoundError(f"{source}: the model configs to ship with the package are missing")
        target = Path(self.build_lib) / "mmfusion" / "configs"
        for path in sorted(source.rglob("*.yaml")):
            dest = target / path.relative_to(source)
            self.mkpath(str(dest.parent))
            self.copy_file(str(path), str(dest))


setup(cmdclass={"build_py": BuildPyWithConfigs})
