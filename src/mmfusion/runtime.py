"""Process-level settings that make CPU training fast.

PyTorch's CPU allocator is the C library's ``malloc``. With glibc, every block above 32 MiB is a fresh ``mmap`` and
goes back to the system when freed, so each new attention-sized tensor (a 32×8×500×500 float map is 256 MB) is
page-faulted in again: on a 2-core machine that costs more than the arithmetic (a 256 MB elementwise add takes
~250 ms this way, ~25 ms from reused memory). :func:`keep_freed_memory` tells glibc to serve large blocks from its
heap and to keep what is freed for reuse — the effect a caching allocator (jemalloc, tcmalloc) has. The price is
that the process keeps its peak memory until it exits.

The command line calls it at start-up; set ``MMFUSION_KEEP_FREED_MEMORY=0`` to leave the allocator alone.

:func:`describe_cpu` names the CPU and its widest vector unit for the benchmark scripts' records; :func:`cpu_flags`
(also keying the compiled kernels' builds) reads its feature flags.

:func:`compile_model` wraps a model in ``torch.compile``: the narrow-head attention kernel is a registered operator
(``torch.ops.mmfusion.narrow_attention``) and PSA's prediction product has a traceable form, so both stay inside the
compiled graphs (only the LSTMs run eagerly between them). On a small CPU this removes most of the per-operator
overhead of one-clip inference (a first call compiles for a minute or more). Padded lengths that change from
batch to batch cost one more compilation, for dynamic shapes, and then reuse it (no size is pinned inside the
graphs), so it pays off once there are enough clips, or a long-lived process, to amortise the compile time.

:func:`launched_worker` tells the processes of a multi-device run that only train apart from the one that writes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Any

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4

_applied = False


def launched_worker() -> bool:
    """True in a process Lightning launched for a further device of a multi-device run (``--devices N``), or a
    further process started by ``torchrun`` or SLURM (``RANK``, ``SLURM_PROCID``) for a multi-node run.

    Lightning's default multi-device strategy runs the command line again in one process per further device, in
    lockstep with the first; those processes train their share of each batch and leave writing files and printing
    to the first (global rank 0).
    """
    if any(os.environ.get(key, "0") not in ("", "0") for key in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return True
    # a SLURM task other than the first (srun starts one per process; Lightning reads SLURM_PROCID as the rank,
    # except in an interactive allocation, whose job name is bash or interactive)
    slurm = "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")
    return slurm and os.environ.get("SLURM_PROCID", "0") not in ("", "0")


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse. Returns True if applied (Linux with glibc, not disabled)."""
    global _applied
    if _applied:
        return True
    if os.environ.get("MMFUSION_KEEP_FREED_MEMORY", "1") == "0" or platform.system() != "Linux":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (libc.mallopt(_M_MMAP_MAX, 0)  # large blocks from the heap, not one mmap each
              and libc.mallopt(_M_TRIM_THRESHOLD, -1)  # never hand freed heap back (-1 = SIZE_MAX)
              and libc.mallopt(_M_TOP_PAD, 256 << 20))  # grow the heap in 256 MB steps
    except (OSError, AttributeError):
        return False
    _applied = bool(ok)
    return _applied


def cpuinfo_fields(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (or of the text given), keys lower-cased;
    empty where the file does not exist."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def cpu_flags(fields: dict[str, str] | None = None) -> str:
    """The CPU's feature flags (x86 ``flags``, aarch64 ``Features``), or "" where cpuinfo does not list them."""
    fields = cpuinfo_fields() if fields is None else fields
    return fields.get("flags") or fields.get("features", "")


def describe_cpu(cpuinfo: str | None = None) -> str:
    """The CPU's model name and widest float vector unit, e.g. ``"Intel(R) Xeon(R) Processor (AVX-512)"``, for
    benchmark records (timings differ several-fold between CPUs, and ``platform.processor()`` says only
    ``x86_64``). Read from ``/proc/cpuinfo`` (or the text given); elsewhere the platform's processor string."""
    fields = cpuinfo_fields(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(cpu_flags(fields).split())
    isa = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON"))
                if flag in flags), None)
    return f"{name} ({isa})" if isa else name


def compile_model(model: Any, *, dynamic: bool | None = True, backend: str = "inductor") -> Any:
    """``torch.compile(model)`` (a ``torch.nn.Module``), with dynamic shapes by default (clips of other lengths
    reuse the compiled code). Raises ConfigError up front where a CPU model cannot be compiled (no C++ compiler).
    """
    import torch

    from mmfusion import kernels
    from mmfusion.errors import ConfigError

    if backend == "inductor" and any(p.device.type == "cpu" for p in model.parameters()) \
            and kernels.compiler() is None:
        raise ConfigError("compiling a model for the CPU needs a C++ compiler on PATH", key="compile",
                          expected="g++ or $CXX", actual=os.environ.get("CXX", "c++"))
    kernels.narrow_attention()  # build (or load) the kernel before tracing, not inside it
    return torch.compile(model, dynamic=dynamic, backend=backend)
