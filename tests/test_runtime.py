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
