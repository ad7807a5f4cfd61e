"""Optional compiled CPU kernels, built on first use with the machine's C++ compiler (PyTorch's JIT extension
loader; the build is cached under ``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``).

mmfusion never requires them: when no compiler is found, the build fails, or ``MMFUSION_KERNELS=0`` is set, the
pure-PyTorch paths run instead (same numbers up to float rounding). The build targets the CPU it runs on
(``-march=native``); the extension name carries a hash of the source, of the CPU's feature flags and of the
checkout's path, so machines sharing a home directory never load each other's builds and two checkouts never
rebuild each other's. A build killed half-way cannot block later ones (see :func:`_exclusive`).
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sysconfig
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from mmfusion.runtime import cpu_flags

_SOURCE = Path(__file__).with_name("narrow_attention.cpp")
_lock = threading.Lock()
_cache: dict[str, ModuleType | None] = {}
_errors: dict[str, str] = {}


def _cpu_flags() -> str:
    return cpu_flags() or platform.processor() or platform.machine()


def _put_ninja_on_path() -> None:
    """PyTorch's extension builder runs ``ninja`` from PATH; the ``ninja`` wheel (a dependency) lives beside this
    interpreter, which is not on PATH when the environment is not activated."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja  # the PyPI wheel's binary

        directory = ninja.BIN_DIR
    except (ImportError, AttributeError):
        directory = sysconfig.get_path("scripts")
    os.environ["PATH"] = directory + os.pathsep + os.environ.get("PATH", "")


def kernels_enabled() -> bool:
    """False when ``MMFUSION_KERNELS`` is set to 0/false/no/off."""
    return os.environ.get("MMFUSION_KERNELS", "1").strip().lower() not in {"0", "false", "no", "off"}


@contextmanager
def disabled() -> Iterator[None]:
    """Run the PyTorch paths inside this block (sets ``MMFUSION_KERNELS=0``, restores it afterwards)."""
    saved = os.environ.get("MMFUSION_KERNELS")
    os.environ["MMFUSION_KERNELS"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["MMFUSION_KERNELS"]
        else:
            os.environ["MMFUSION_KERNELS"] = saved


@contextmanager
def _exclusive(build_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``build_dir`` while PyTorch loads (and if needed builds) the extension there.

    PyTorch serialises builds with a plain ``lock`` file that its builder deletes when done; a build that is killed
    (Ctrl-C twice, a timeout, an out-of-memory kill) leaves it behind, and every later ``load()`` then waits for
    it forever, silently. Every mmfusion process holds this flock around ``load()`` and the system releases it
    however the holder ends, so a ``lock`` file found while holding the flock has no builder: it is removed.
    """
    import fcntl

    try:
        fd = os.open(build_dir / "mmfusion.flock", os.O_CREAT | os.O_RDWR, 0o666)
    except OSError:  # a read-only cache: nothing can be built or cleared there anyway
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock: PyTorch's own lock only, as before
            yield
            return
        stale = build_dir / "lock"
        if stale.exists():
            warnings.warn(f"mmfusion: removed {stale}, left by an interrupted build of the attention kernel",
                          RuntimeWarning, stacklevel=3)
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the flock


def compiler() -> str | None:
    """The C++ compiler a build would use (``$CXX``, else ``c++``), or None when it is not on PATH."""
    return shutil.which(os.environ.get("CXX", "c++"))


def narrow_attention() -> ModuleType | None:
    """The compiled narrow-head attention kernel (``forward``/``backward``), or None where it is unavailable.

    The first call in a fresh environment compiles it (about a minute on a 2-core machine); later calls, and
    later processes, load the cached build. Why it is unavailable is in :func:`unavailable_reason`.
    """
    if not kernels_enabled():
        return None
    key = "narrow_attention"
    if key in _cache:
        return _cache[key]
    with _lock:
        if key in _cache:
            return _cache[key]
        module = None
        if platform.system() != "Linux" or platform.machine() not in {"x86_64", "aarch64"}:
            _errors[key] = f"built only on Linux x86_64/aarch64 (this is {platform.system()} {platform.machine()})"
        elif compiler() is None:
            _errors[key] = "no C++ compiler on PATH (set CXX or install g++)"
        else:
            # the checkout's path is part of the name: two checkouts sharing the cache would otherwise rebuild
            # each other's build (ninja sees another source path) every time one of them runs
            digest = hashlib.sha256(_SOURCE.read_bytes() + _cpu_flags().encode()
                                    + str(_SOURCE.resolve()).encode()).hexdigest()[:12]
            try:
                _put_ninja_on_path()
                from torch.utils.cpp_extension import _get_build_directory, load

                name = f"mmfusion_narrow_attention_{digest}"
                build_dir = Path(_get_build_directory(name, False))
                with _exclusive(build_dir):
                    module = load(
                        name=name,
                        sources=[str(_SOURCE)],
                        extra_cflags=["-O3", "-march=native", "-ffp-contract=fast", "-fno-math-errno", "-fopenmp"],
                        extra_ldflags=["-fopenmp"],
                        build_directory=str(build_dir),
                        verbose=False,
                    )
            except Exception as err:  # noqa: BLE001 - any build failure means: use the PyTorch path
                _errors[key] = f"build failed: {type(err).__name__}: {str(err).strip().splitlines()[-1:]}"
                warnings.warn(f"mmfusion: compiled attention kernel unavailable ({_errors[key]}); "
                              "using the PyTorch path", RuntimeWarning, stacklevel=2)
        _cache[key] = module
        return module


def unavailable_reason(key: str = "narrow_attention") -> str | None:
    """Why a kernel is not in use (None when it is loaded or was never asked for)."""
    if not kernels_enabled():
        return "disabled by MMFUSION_KERNELS"
    return _errors.get(key)
