import pytest

from mmfusion.engine.runs import resolve_config
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


def test_layering_file_then_flags_then_set(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  max_epochs: 3\n  lr: 0.01\nseeds: [1, 2]\n")
    out = resolve_config(str(cfg), {"train": {"max_epochs": 5}}, sets=["train.lr=0.5", "model_args.hidden=7"])
    assert out.train.max_epochs == 5 and out.train.lr == 0.5 and out.seeds == [1, 2]
    assert out.model_args == {"hidden": 7}
