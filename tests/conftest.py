import os

import pytest
import torch

from mmfusion import kernels

os.environ.setdefault("MPLBACKEND", "Agg")

# Under pytest-xdist (scripts/test.sh runs one worker per core) each worker gets its share of the cores, and the
# training processes some tests start inherit it: without this, every worker would start a thread per core.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    _threads = max(1, _cores // _workers)
    torch.set_num_threads(_threads)
    os.environ["OMP_NUM_THREADS"] = str(_threads)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def ext():
    """The compiled attention kernel; a skip only where this machine cannot build it (no C++ compiler)."""
    module = kernels.narrow_attention()
    if module is None:
        if kernels.compiler() is not None:  # this machine can build it: not building is a failure, not a skip
            pytest.fail(f"the kernel did not build: {kernels.unavailable_reason()}")
        pytest.skip(f"no compiled kernel here: {kernels.unavailable_reason()}")
    return module


def pytest_collection_modifyitems(config, items):
    """Tests marked ``fuzz`` (the long property-based runs) run only when asked for: ``pytest -m fuzz``."""
    if "fuzz" in (config.getoption("markexpr", "") or ""):
        return
    keep = [item for item in items if item.get_closest_marker("fuzz") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("fuzz") is not None])
        items[:] = keep
