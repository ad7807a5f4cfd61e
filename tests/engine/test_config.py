import pytest

from mmfusion.engine.config import resolve_config
from mmfusion.errors import ConfigError


def test_unknown_key_names_file_key_and_choices(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: lf_lstm\ntrain:\n  max_epoch: 3\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(str(cfg))
    msg = str(err.value)
    assert str(cfg) in msg and "'max_epoch'" in msg and "max_epochs" in msg


def test_wrong_type_and_unknown_model_arg(tmp_path):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, sets=["train.lr=fast"])
    assert "'lr'" in str(err.value) and "float" in str(err.value) and "fast" in str(err.value)
    with pytest.raises(ConfigError) as err:
        resolve_config(None, {"model": "lf_lstm"}, sets=["model_args.hiden=3"])
    assert "'hiden'" in str(err.value) and "hidden" in str(err.value)
    with pytest.raises(ConfigError, match="unknown model"):
        resolve_config(None, {"model": "nope"})


@pytest.mark.parametrize(("flags", "sets", "suggestion"), [
    ({"model": "lf_lstm"}, ["model_args.hiden=3"], "did you mean 'hidden'?"),
    ({}, ["train.max_epoch=3"], "did you mean 'max_epochs'?"),
    ({}, ["trian.lr=0.1"], "did you mean 'train'?"),
    ({"model": "mea_tin"}, [], "did you mean 'mea_tiny'?"),
    ({"model": "mea", "ablation": "no_hcaa"}, [], "did you mean 'no_hca'?"),
])
def test_a_misspelt_name_gets_the_closest_one_suggested(flags, sets, suggestion):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, flags, sets=sets)
    assert str(err.value).endswith(suggestion)


def test_nothing_is_suggested_when_no_name_is_close():
    with pytest.raises(ConfigError) as err:
        resolve_config(None, {"model": "zzzzzz"})
    assert "did you mean" not in str(err.value) and "unknown model" in str(err.value)


def test_layering_file_then_flags_then_set(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_epochs: 3\n  lr: 0.01\nseeds: [1, 2]\n")
    out = resolve_config(str(cfg), {"train": {"max_epochs": 5}}, sets=["train.lr=0.5", "model_args.hidden=7"])
    assert out.train.max_epochs == 5 and out.train.lr == 0.5 and out.seeds == [1, 2]
    assert out.model_args == {"hidden": 7}


def test_exponent_numbers_are_floats_in_files_and_on_the_command_line(tmp_path):
    """PyYAML reads YAML 1.1, where ``1e-3`` (no dot) is a string; learning rates are written that way."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mea\ntrain:\n  lr: 1e-3\n  weight_decay: 5E-5\nmodel_args:\n  alpha: 2.5e-1\n")
    out = resolve_config(str(cfg), sets=["data_args.noise=2e-1"])
    assert (out.train.lr, out.train.weight_decay, out.model_args["alpha"], out.data_args["noise"]) == (
        1e-3, 5e-5, 0.25, 0.2)
    assert resolve_config(None, sets=["train.lr=3e-4"]).train.lr == 3e-4
    assert resolve_config(None, sets=["train.max_epochs=12"]).train.max_epochs == 12  # ints stay ints


@pytest.mark.parametrize("value", ["1e400", ".inf", "-.inf"])
def test_an_infinite_setting_is_refused(value):
    with pytest.raises(ConfigError, match=r"not a finite number \(key 'lr'\): expected a finite float"):
        resolve_config(None, sets=[f"train.lr={value}"])


@pytest.mark.parametrize(("sets", "key", "expected"), [
    (["train.max_epochs=0"], "max_epochs", ">= 1"),
    (["train.batch_size=0"], "batch_size", ">= 1"),
    (["train.lr=-0.1"], "lr", "> 0"),
    (["data_args.n_train=-5"], "n_train", ">= 1"),
    (["data_args.noise=-1"], "noise", ">= 0"),
    (["data_args.n_valid=1"], "n_valid", ">= 2"),
    (["model_args.num_heads=0"], "num_heads", ">= 1"),
    (["model_args.psa_layers=0"], "psa_layers", ">= 1"),
    (["model_args.embed_dropout=1.5"], "embed_dropout", "< 1"),
    (["model_args.kernels={text: 4}"], "kernels.text", "an odd positive int"),
    (["model_args.kernels={txt: 3}"], "kernels.txt", "one of"),
    (["model_args.alpha=-1"], "alpha", ">= 0"),
    (["seeds=[1, 2, 1]"], "seeds", "distinct seeds"),
    (["seeds=[1, -1]"], "seeds", "0 <= seed < 2**32"),  # numpy's generators refuse negative seeds
    (["data_args.seed=-1"], "seed", ">= 0"),
])
def test_values_out_of_range_are_refused_by_name(sets, key, expected):
    """Out-of-range numbers give one ConfigError naming the key, the bound and the value, not an error from deep
    inside torch or numpy (or a run that silently trains nonsense)."""
    from mmfusion.data import load_data

    with pytest.raises(ConfigError) as err:
        cfg = resolve_config(None, {"model": "mea"}, sets=sets)
        load_data(cfg.data, cfg.data_args)
    msg = str(err.value)
    assert f"'{key}'" in msg and f"expected {expected}" in msg, msg


@pytest.mark.parametrize("sets", [["model_args.hidden=0"], ["model_args.dropout=1.0"]])
def test_other_models_widths_and_dropouts_are_bounded_too(sets):
    with pytest.raises(ConfigError, match="out of range"):
        resolve_config(None, {"model": "lf_lstm"}, sets=sets)


@pytest.mark.parametrize(("sets", "key"), [(["train.precision=8-bit"], "precision"),
                                           (["train.accelerator=tpu2"], "accelerator")])
def test_unknown_precision_or_accelerator_names_the_choices(sets, key):
    with pytest.raises(ConfigError) as err:
        resolve_config(None, sets=sets)
    assert f"'{key}'" in str(err.value) and "expected one of" in str(err.value)


@pytest.mark.parametrize(("given", "stored"), [("32", "32-true"), ("16", "16-mixed"), ("bf16", "bf16-mixed"),
                                              ("64", "64-true"), ("bf16-true", "bf16-true")])
def test_lightnings_short_precision_names_are_read_as_it_reads_them(tmp_path, given, stored):
    assert resolve_config(None, {"train": {"precision": given}}).train.precision == stored  # --precision 32
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"train:\n  precision: {given}\n")  # YAML reads 32 as an int
    assert resolve_config(str(cfg)).train.precision == stored


def test_a_gpu_run_without_a_gpu_is_refused_before_any_directory_is_made(tmp_path, monkeypatch):
    import torch

    from mmfusion.engine.train import fit

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cfg = resolve_config(None, {"model": "lf_lstm_tiny", "out": str(tmp_path / "runs")},
                         sets=["train.accelerator=gpu"])
    with pytest.raises(ConfigError, match="no GPU is visible") as err:
        fit(cfg)
    assert "'devices'" in str(err.value) and "--accelerator cpu" in str(err.value)
    assert not (tmp_path / "runs").exists()


def test_a_model_that_cannot_read_the_data_is_refused_before_training(tmp_path):
    from mmfusion.engine.bench import run_bench
    from mmfusion.engine.train import fit

    cfg = resolve_config(None, {"model": "msaf_ravdess_tiny", "out": str(tmp_path / "runs")})
    with pytest.raises(ConfigError) as err:
        fit(cfg)
    assert "feature sequences" in str(err.value) and "'model'" in str(err.value) and "mea" in str(err.value)
    # a bench checks every model (and its config) before the first one trains
    with pytest.raises(ConfigError, match="msaf_ntu_tiny does not read"):
        run_bench(["lf_lstm_tiny", "msaf_ntu_tiny"], {"out": str(tmp_path / "runs")}, [])
    with pytest.raises(ConfigError, match="unknown model"):
        run_bench(["lf_lstm_tiny", "nope"], {"out": str(tmp_path / "runs")}, [])
    with pytest.raises(ConfigError, match=r"each model once.*\['lf_lstm_tiny'\]"):
        run_bench(["lf_lstm_tiny", "mea_tiny", "lf_lstm_tiny"], {"out": str(tmp_path / "runs")}, [])
    with pytest.raises(ConfigError, match="no model to bench"):  # `--models ,`
        run_bench([], {"out": str(tmp_path / "runs")}, [])
    assert not (tmp_path / "runs").exists()


def test_an_ablation_and_a_setting_that_contradicts_it_are_refused():
    """--ablation no_hca with use_hca=true: one of the two would be silently ignored."""
    with pytest.raises(ConfigError) as err:
        resolve_config(None, {"model": "mea", "ablation": "no_hca"}, sets=["model_args.use_hca=true"])
    assert "'no_hca'" in str(err.value) and "model_args.use_hca" in str(err.value)
    assert err.value.expected is False and err.value.actual is True
    same = resolve_config(None, {"model": "mea", "ablation": "no_hca"}, sets=["model_args.use_hca=false"])
    assert same.model_args["use_hca"] is False  # agreeing settings (a saved config.yaml holds both) are fine
    other = resolve_config(None, {"model": "mea", "ablation": "no_hca"}, sets=["model_args.mu=0.1"])
    assert other.model_args == {"mu": 0.1, "use_hca": False}


def test_an_ablation_of_a_model_without_any_names_the_models_that_have_them():
    with pytest.raises(ConfigError) as err:
        resolve_config(None, {"model": "lf_lstm", "ablation": "no_hca"})
    assert "lf_lstm has no named ablations" in str(err.value) and "'mea'" in str(err.value)
    with pytest.raises(ConfigError, match="unknown ablation for mea.*no_hca"):
        resolve_config(None, {"model": "mea", "ablation": "no_hcaa"})


def test_a_misspelt_reader_option_is_named_with_the_closest_one():
    from mmfusion.data import load_data

    with pytest.raises(ConfigError) as err:
        load_data("ravdess:/no/such/dir", {"fodl": 2})
    assert "'fodl'" in str(err.value) and str(err.value).endswith("did you mean 'fold'?")
    with pytest.raises(ConfigError) as err:  # a reader without options says so instead of "one of []"
        load_data("mult:/no/such.pkl", {"fold": 2})
    assert "takes no options" in str(err.value) and "[]" not in str(err.value)


def test_one_entry_of_a_table_is_set_and_the_others_kept(tmp_path):
    """A per-modality table (kernel sizes, widths) is overridden entry by entry: by --set on top of a config file,
    and on top of the model's defaults (not some other fallback) when a config gives only part of it."""
    from mmfusion.models import build

    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mea\nmodel_args:\n  kernels: {text: 3, vision: 3, audio: 5}\n")
    out = resolve_config(str(cfg), sets=["model_args.kernels.text=1"])
    assert out.model_args["kernels"] == {"text": 1, "vision": 3, "audio": 5}
    out = resolve_config(str(cfg), sets=["model_args.kernels={vision: 7}"])
    assert out.model_args["kernels"] == {"text": 3, "vision": 7, "audio": 5}
    tfn = build("tfn", {"text": 6, "vision": 5, "audio": 4}, 1, hidden={"text": 5})
    assert tfn.config.hidden == {"text": 5, "vision": 16, "audio": 8}  # TFNConfig's defaults for the other two
    assert tfn.subnets.mlps["audio"][2].out_features == 8


@pytest.mark.parametrize(("model", "sets", "message"), [
    ("tfn", ["model_args.hidden.text=abc"], "wrong type (key 'hidden.text'): expected int, got 'abc'"),
    ("tfn", ["model_args.hidden={txt: 4}"], "unknown entry (key 'hidden.txt')"),
    ("msaf_lstm", ["model_args.hidden.text=-4"], "out of range (key 'hidden.text'): expected >= 1, got -4"),
    ("mea", ["model_args.kernels.audio=4"], "(key 'kernels.audio'): expected an odd positive int, got 4"),
])
def test_table_entries_are_checked_like_any_setting(model, sets, message):
    """An entry of a table is type- and range-checked and a misspelt one refused, instead of an error from inside
    torch or an entry that is silently ignored."""
    with pytest.raises(ConfigError) as err:
        resolve_config(None, {"model": model}, sets=sets)
    assert message in str(err.value)
    assert str(err.value).startswith("--set [model_args]: ")


def test_an_error_names_where_the_offending_value_came_from(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: mea\nmodel_args:\n  dim: 41\n")
    with pytest.raises(ConfigError) as err:  # the file's value
        resolve_config(str(cfg))
    assert str(err.value).startswith(f"{cfg} [model_args]: ") and "'dim'" in str(err.value)
    cfg.write_text("model: mea\nmodel_args:\n  mu: 0.2\n")
    for flags, sets, start in [({}, ["model_args.dimm=3"], "--set [model_args]: "),
                               ({"ablation": "no_hcaa"}, [], "command line: "),
                               ({"ablation": "no_hca"}, ["model_args.use_hca=true"], "--set [model_args]: "),
                               ({"seeds": [1, 1]}, [], "command line: "),
                               ({}, ["model=nope"], "--set: ")]:
        with pytest.raises(ConfigError) as err:
            resolve_config(str(cfg), flags, sets=sets)
        assert str(err.value).startswith(start), (flags, sets, str(err.value))


def test_the_tensorboard_logger_without_tensorboard_is_refused_before_a_run_starts(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    with pytest.raises(ConfigError, match=r"needs tensorboard installed \(key 'logger'\).*mmfusion\[tensorboard\]"):
        resolve_config(None, sets=["train.logger=tensorboard"])
    assert resolve_config(None, sets=["train.logger=csv"]).train.logger == "csv"


@pytest.mark.parametrize("name", ["mea", "mult", "lf_lstm", "misa", "tfn", "msaf_lstm", "msaf_ravdess"])
def test_model_args_out_of_range_are_the_error_build_gives(name):
    """The command line's ``--set model_args.X=...`` and the Python API's ``build(..., X=...)`` run one check."""
    from mmfusion.config import yaml_dump
    from tests.models.test_registry import build_error, out_of_range

    for field, _, value in out_of_range(name):
        with pytest.raises(ConfigError) as err:
            resolve_config(None, {"model": name}, sets=[f"model_args.{field}={yaml_dump(value).strip()}"])
        built = build_error(name, field, value)
        assert (err.value.problem, err.value.key, err.value.expected, err.value.actual) == (
            built.problem, built.key, built.expected, built.actual)
        assert str(err.value).endswith(str(built).removeprefix(f"{name}: "))


def test_config_files_layer_in_order_and_an_error_names_the_file_that_set_the_value(tmp_path):
    base, preset = tmp_path / "base.yaml", tmp_path / "preset.yaml"
    base.write_text("model: mea\nmodel_args:\n  mu: 0.1\n  alpha: 0.5\ntrain:\n  lr: 0.001\n  batch_size: 8\n")
    preset.write_text("model_args:\n  alpha: 0.25\ntrain:\n  lr: 0.002\n")
    cfg = resolve_config([str(base), str(preset)])
    assert (cfg.model_args["mu"], cfg.model_args["alpha"]) == (0.1, 0.25)  # mappings merge, the later file wins
    assert (cfg.train.lr, cfg.train.batch_size) == (0.002, 8)
    assert resolve_config([str(preset), str(base)], {"model": "mea"}).train.lr == 0.001
    preset.write_text("model_args:\n  beta: -1\n")
    with pytest.raises(ConfigError) as err:
        resolve_config([str(base), str(preset)])
    assert str(preset) in str(err.value) and "beta" in str(err.value)
