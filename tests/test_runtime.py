import platform

from mmfusion import runtime


def test_keep_freed_memory_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", False)
    monkeypatch.setenv("MMFUSION_KEEP_FREED_MEMORY", "0")
    assert runtime.keep_freed_memory() is False


def test_keep_freed_memory_applies_on_glibc(monkeypatch):
    monkeypatch.setattr(runtime, "_applied", False)
    monkeypatch.delenv("MMFUSION_KEEP_FREED_MEMORY", raising=False)
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert runtime.keep_freed_memory() is expected


def test_describe_cpu_names_the_model_and_its_widest_vector_unit():
    avx512 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse avx avx2 avx512f\n"
    avx2 = "processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse avx avx2 fma\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd evtstrm\n"
    assert runtime.describe_cpu(avx512) == "Intel(R) Xeon(R) Processor (AVX-512)"
    assert runtime.describe_cpu(avx2) == "AMD EPYC 7B13 (AVX2)"
    assert runtime.describe_cpu(arm).endswith("(NEON)")
    assert runtime.cpu_flags(runtime.cpuinfo_fields(arm)) == "fp asimd evtstrm"  # aarch64 calls them Features
    assert runtime.describe_cpu("") == (platform.processor() or platform.machine())


def test_further_processes_of_torchrun_and_slurm_are_workers(monkeypatch):
    """Only global rank 0 writes: torchrun's RANK and SLURM's task id (as Lightning reads them) mark the others."""
    for key in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_JOB_NAME"):
        monkeypatch.delenv(key, raising=False)
    assert not runtime.launched_worker()
    monkeypatch.setenv("RANK", "1")  # torchrun, second node, its only process (LOCAL_RANK 0)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert runtime.launched_worker()
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_JOB_NAME", "mea-mosei")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert not runtime.launched_worker()
    monkeypatch.setenv("SLURM_PROCID", "5")
    assert runtime.launched_worker()
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")  # Lightning ignores SLURM here; so do we
    assert not runtime.launched_worker()
