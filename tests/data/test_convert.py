import numpy as np
import pytest

from mmfusion.cli.main import main
from mmfusion.data import load_data
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic


@pytest.mark.parametrize("layout", ["h5", "mult", "mmsa"])
def test_convert_round_trip(tmp_path, layout):
    out = tmp_path / ("data.h5" if layout == "h5" else "data.pkl")
    assert main(["convert", "synthetic", str(out), "--layout", layout, "--set", "n_train=40", "--set", "n_valid=8",
                 "--set", "n_test=8"]) == 0
    back = load_data({"h5": f"h5:{out}", "mult": f"mult:{out}", "mmsa": f"mmsa:{out}"}[layout])
    ref = make_synthetic(SyntheticConfig(n_train=40, n_valid=8, n_test=8))
    for m in ("text", "vision", "audio"):
        np.testing.assert_array_equal(back.splits["train"].lengths[m], ref.splits["train"].lengths[m])
        np.testing.assert_allclose(back.splits["train"].features[m], ref.splits["train"].features[m], atol=1e-6)
    np.testing.assert_allclose(back.splits["test"].labels, ref.splits["test"].labels, atol=1e-6)
    assert back.splits["valid"].ids == ref.splits["valid"].ids


@pytest.mark.parametrize(("out", "layout", "says"), [
    ("data.pkl", None, "--layout mult or --layout mmsa"),  # .pkl: MulT's or MMSA's layout?
    ("data.h5", "mult", "'.pkl'"),  # a pickle in a file named .h5 would go to the HDF5 reader later
    ("data.pkl", "h5", "'.h5'"),
    ("data", None, "no suffix"),
])
def test_convert_refuses_a_file_name_that_says_another_format(tmp_path, capsys, out, layout, says):
    args = ["convert", "synthetic", str(tmp_path / out), "--set", "n_train=40"]
    assert main(args + (["--layout", layout] if layout else [])) == 2
    err = capsys.readouterr().err
    assert says in err and out in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_convert_keeps_an_existing_file_unless_told_and_never_replaces_its_input(tmp_path, capsys):
    out = tmp_path / "mine.h5"
    out.write_bytes(b"the user's file")
    args = ["convert", "synthetic", str(out), "--set", "n_train=40"]
    assert main(args) == 2
    assert "the output file exists" in capsys.readouterr().err and out.read_bytes() == b"the user's file"
    assert main(args + ["--overwrite"]) == 0
    assert load_data(f"h5:{out}").splits["train"].labels.shape == (40,)
    # the file being read, under another spelling of its path: refused even with --overwrite
    assert main(["convert", f"h5:{out}", str(tmp_path / "." / "mine.h5"), "--overwrite"]) == 2
    assert "the output is the file being read" in capsys.readouterr().err
    assert main(["convert", str(out), str(out), "--overwrite"]) == 2  # a SPEC without its reader's prefix
    assert "the output is the file being read" in capsys.readouterr().err
    assert load_data(f"h5:{out}").splits["train"].labels.shape == (40,)
