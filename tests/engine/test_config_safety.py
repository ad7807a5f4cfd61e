"""Hostile config files and --set values: refused with one named error before anything is built (exit status 2)."""

from __future__ import annotations

import pytest

from mmfusion.cli.main import main
from mmfusion.config import yaml_dump, yaml_load
from mmfusion.errors import ConfigError, DataError

# each level doubles the one before: 30 levels stand for 2^30 copies of "lol" in 700 bytes of text
BOMB = 'a0: &a0 ["lol", "lol"]\n' + "".join(f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]\n" for i in range(1, 30))


def _fit(out, *args):
    return main(["fit", "--model", "lf_lstm_tiny", "--no-progress", "--out", str(out), *args])


def test_alias_bombs_are_refused_before_expansion(tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(f"model_args: {{}}\n{BOMB}")
    assert len(BOMB) < 1000
    assert _fit(tmp_path / "runs", "--config", str(cfg)) == 2  # expanded, it would be 2^30 strings
    err = capsys.readouterr().err
    assert f"{cfg}: refused YAML: aliases (*a0) are not accepted" in err and "line 3" in err
    assert len(err) < 400 and not (tmp_path / "runs").exists()
    # in a --set value
    assert _fit(tmp_path / "runs", "--set", "model_args={a: &x [1, 2], b: *x}") == 2
    err = capsys.readouterr().err
    assert "--set: refused value: aliases (*x) are not accepted" in err and "'model_args'" in err
    # a plain anchor without alias is harmless, but no run config ever needs one: aliases are what is refused
    with pytest.raises(Exception, match="aliases"):
        yaml_load(BOMB)


def test_duplicate_keys_are_refused(tmp_path, capsys):
    cfg = tmp_path / "dup.yaml"
    cfg.write_text("train:\n  lr: 0.1\n  batch_size: 8\n  lr: 0.2\n")
    assert _fit(tmp_path / "runs", "--config", str(cfg)) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: refused YAML: key 'lr' is given twice in one mapping" in err and "line 4" in err
    assert _fit(tmp_path / "runs", "--set", "model_args={hidden: 4, hidden: 8}") == 2
    assert "--set: refused value: key 'hidden' is given twice" in capsys.readouterr().err


def test_a_non_utf8_config_is_named(tmp_path, capsys):
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("train:\n  lr: 0.01  # réglé\n".encode("latin-1"))
    assert _fit(tmp_path / "runs", "--config", str(cfg)) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: not UTF-8 text (byte 0xe9 at line 2)" in err and "Traceback" not in err


def test_error_messages_truncate_long_values(tmp_path, capsys):
    long = "x" * 100_000
    assert _fit(tmp_path / "runs", "--set", f"model_args.hidden={long}") == 2
    err = capsys.readouterr().err
    assert "'model_args.hidden'" in err or "hidden" in err
    assert len(err) < 1000 and "(100,002 characters in all)" in err  # repr adds the quotes
    assert str(DataError("x", actual=long)).endswith("... (100,000 characters in all)")
    assert len(str(DataError("x", actual=long))) < 500
    assert len(str(ConfigError("x", key=long, actual=long, expected=long))) < 1000


def test_stored_configs_round_trip_without_aliases():
    shared = [1, 2]
    text = yaml_dump({"a": shared, "b": shared})  # the same object twice: written out twice, never as an alias
    assert "&" not in text and "*" not in text and yaml_load(text) == {"a": [1, 2], "b": [1, 2]}
