import os
import pickle

import numpy as np
import pytest

from mmfusion.data import load_data
from mmfusion.data.safe_pickle import safe_load
from mmfusion.errors import DataError


class _Exploit:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_pickle_that_runs_a_command_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "mosi_data_noalign.pkl"
    bad.write_bytes(pickle.dumps({"train": {"text": _Exploit(marker)}}))
    with pytest.raises(DataError) as err:
        load_data(f"mult:{bad}")
    msg = str(err.value)
    assert str(bad) in msg and "system" in msg and "refused" in msg
    assert not marker.exists()


def test_plain_numpy_pickles_load(tmp_path):
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [1, "x", (2.5,)], "c": np.float64(3.0),
            "d": np.array(["v1", "v2"])}
    for protocol in (2, 4, 5):
        p = tmp_path / f"ok{protocol}.pkl"
        p.write_bytes(pickle.dumps(data, protocol=protocol))
        out = safe_load(p)
        np.testing.assert_array_equal(out["a"], data["a"])
        assert out["b"] == data["b"] and out["c"] == 3.0 and list(out["d"]) == ["v1", "v2"]


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        safe_load(tmp_path / "nope.pkl")
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(DataError, match="junk.pkl: not a readable pickle"):
        safe_load(junk)
