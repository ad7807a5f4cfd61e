"""`mmfusion fit --set model_args.X=...` with a value out of range: exit status 2 and, on one line, the error that
``mmfusion.models.build`` gives for the same value, before any data is read or any run directory is made."""

import pytest

from mmfusion.cli.main import main
from tests.models.test_registry import build_error


@pytest.mark.parametrize(("model", "key", "value", "text"), [
    ("mea_tiny", "num_heads", 0, "0"),
    ("mea_tiny", "res_dropout", -0.1, "-0.1"),
    ("lf_lstm_tiny", "hidden", 0, "0"),
    ("lf_lstm_tiny", "dropout", 1.5, "1.5"),
])
def test_fit_refuses_the_value_build_refuses_with_the_same_error(tmp_path, capsys, model, key, value, text):
    out = tmp_path / "runs"
    assert main(["fit", "--model", model, "--data", "synthetic", "--out", str(out),
                 "--set", f"model_args.{key}={text}"]) == 2
    err = capsys.readouterr().err
    expected = str(build_error(model, key, value)).removeprefix(f"{model}: ")
    assert expected in err and f"(key {key!r})" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and not out.exists()
