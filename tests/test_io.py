"""Atomic writes: the new file replaces the old one whole, with the permissions an ordinary write would give."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from mmfusion.data.custom import read_custom, write_custom
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic
from mmfusion.io import atomic_path, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    try:
        yield
    finally:
        os.umask(old)


def test_new_file_gets_the_permissions_of_a_plain_write(tmp_path, umask_027):
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    written = atomic_write_json(tmp_path / "metrics.json", {"corr": 0.5})
    assert _mode(written) == _mode(plain) == 0o640  # 0666 less the umask (a temporary file would be 0600)


def test_replacing_a_file_keeps_its_permissions_and_replaces_its_content(tmp_path):
    target = tmp_path / "summary.md"
    target.write_text("old")
    os.chmod(target, 0o604)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert _mode(target) == 0o604


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "results.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_hdf5_dataset_is_written_through_a_temporary_name(tmp_path, umask_027):
    bundle = make_synthetic(SyntheticConfig(n_train=8, n_valid=4, n_test=4, seed=0))
    path = write_custom(tmp_path / "data.h5", bundle)
    assert _mode(path) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]
    back = read_custom(path)
    np.testing.assert_array_equal(back.splits["train"].labels, bundle.splits["train"].labels)


def test_several_files_change_together_or_not_at_all(tmp_path, monkeypatch):
    import errno

    from mmfusion import io as mmio
    from mmfusion.io import atomic_write_many

    first, second = tmp_path / "predictions.csv", tmp_path / "metrics.json"
    first.write_text("old predictions")
    second.write_text("old metrics")
    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):  # the second file's write finds the disk full
        if "w" in mode and os.path.basename(file).startswith(".metrics.json."):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(mmio, "open", full_disk, raising=False)
    with pytest.raises(OSError) as failed:
        atomic_write_many({first: b"new predictions", second: b"new metrics"})
    assert failed.value.filename == str(second) and failed.value.errno == errno.ENOSPC  # names the file meant
    assert first.read_text() == "old predictions" and second.read_text() == "old metrics"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "predictions.csv"]  # no temporary left
    monkeypatch.undo()
    atomic_write_many({first: b"new predictions", second: b"new metrics"})
    assert first.read_text() == "new predictions" and second.read_text() == "new metrics"
