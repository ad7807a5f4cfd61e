import json

import pytest

from mmfusion.cli.main import build_parser, main

COMMANDS = ["fit", "tune", "bench", "test", "predict", "explain", "robustness", "convert", "prepare", "data", "models",
            "extract", "make-dataset", "import-weights"]


def test_every_command_is_listed_and_has_help(capsys):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as done:
            main([cmd, "--help"])
        assert done.value.code == 0
        assert f"usage: mmfusion {cmd}" in capsys.readouterr().out


def test_version_names_the_installed_packages(capsys):
    import torch

    import mmfusion

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"mmfusion {mmfusion.__version__} (")
    assert f"torch {torch.__version__}" in out


def test_models_lists_every_registered_model_and_ablations(capsys):
    assert main(["models", "--ablations"]) == 0
    out = capsys.readouterr().out
    from mmfusion.models import list_models
    from mmfusion.models.mea import MEAConfig

    assert all(name in out.split() for name in list_models())
    # every ablation on its own line with the settings it makes and the Table V row it stands for
    assert set(MEAConfig.ABLATION_NOTES) == set(MEAConfig.ABLATIONS)
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == set(MEAConfig.ABLATIONS)
    assert "use_hca=false" in lines["no_hca"] and MEAConfig.ABLATION_NOTES["no_hca"] in lines["no_hca"]
    assert "fusion=concat" in lines["dgf_concat"]
    assert "mea_tiny   ablations: as above" in out


def test_models_json_says_what_each_model_reads_and_its_ablations(tmp_path, capsys):
    from mmfusion.models import list_models
    from mmfusion.models.mea import MEAConfig

    assert main(["models", "--json", str(tmp_path / "models.json")]) == 0
    info = json.loads((tmp_path / "models.json").read_text())
    assert sorted(info) == list_models()
    assert info["mea"]["reads"] == "sequences" and info["msaf_ravdess"]["reads"] == "clips"
    assert info["mea"]["ablations"]["no_hca"] == {"settings": {"use_hca": False},
                                                 "note": MEAConfig.ABLATION_NOTES["no_hca"]}
    assert len(info["mea_tiny"]["ablations"]) == len(MEAConfig.ABLATIONS) and info["mult"]["ablations"] == {}


def test_data_describes_a_draw_with_reader_options(tmp_path, capsys):
    out = tmp_path / "d.json"
    assert main(["data", "synthetic", "--set", "n_train=40", "--set", "n_valid=10", "--json", str(out)]) == 0
    info = json.loads(out.read_text())
    assert info["splits"]["train"]["n"] == 40 and info["splits"]["valid"]["n"] == 10
    assert "N=    40" in capsys.readouterr().out
    assert main(["data", "synthetic", "--set", "n_trian=40"]) == 2
    assert "'n_trian'" in capsys.readouterr().err


def test_output_into_a_closed_pipe_ends_quietly():
    """`mmfusion models --ablations | head -1`: the reader leaves early; no BrokenPipeError traceback."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import sys; from mmfusion.cli.main import main; "
                             "sys.exit(main(['models', '--ablations']))"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first write that reaches the pipe fails
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141), err  # 0 when the output fitted in the pipe's buffer
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_a_file_system_refusal_is_one_line_naming_the_path(tmp_path, capsys):
    """An output under a regular file (or without permission, or on a full disk): the path and the reason, no
    traceback."""
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    assert main(["convert", "synthetic", str(blocker / "data.h5"), "--set", "n_train=40"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err and "error:" in err, err
    assert blocker.read_text() == "a file, not a folder"


@pytest.mark.parametrize("args", [["predict", "--batch-size", "0"], ["test", "--batch-size", "-3"],
                                  ["explain", "--max-samples", "0"]])
def test_sizes_below_one_are_refused_by_the_flag(args, capsys):
    with pytest.raises(SystemExit) as done:
        main([args[0], "--ckpt", "x.ckpt", "--data", "synthetic", *args[1:]])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {args[1]}: expected a whole number >= 1, got {args[2]}" in err
