import os

import pytest
import torch

from mmfusion import kernels

os.environ.setdefault("MPLBACKEND", "Agg")


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
