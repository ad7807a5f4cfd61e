"""FusionSystem reads its training settings from a TrainConfig, whose defaults are the only ones."""

from dataclasses import asdict

from mmfusion.engine.config import TrainConfig
from mmfusion.engine.system import FusionSystem

ARGS = ("lf_lstm_tiny", {}, {"text": 4, "audio": 3, "vision": 2}, 1, "regression", ())


def test_a_train_config_is_used_and_recorded_as_plain_values():
    system = FusionSystem(*ARGS, train=TrainConfig(lr=0.01, weight_decay=0.5, lr_schedule="constant"))
    opt = system.configure_optimizers()
    assert opt["optimizer"].defaults["lr"] == 0.01 and opt["optimizer"].defaults["weight_decay"] == 0.5
    assert "lr_scheduler" not in opt
    # a checkpoint (read with weights_only) holds plain values, not the dataclass
    assert system.hparams["train"] == asdict(TrainConfig(lr=0.01, weight_decay=0.5, lr_schedule="constant"))
    assert isinstance(system.hparams_initial["train"], dict)


def test_a_recorded_mapping_takes_the_defaults_of_train_config_for_what_it_lacks():
    system = FusionSystem(*ARGS, train={"lr": 0.5, "a_setting_since_removed": 1})
    assert system.train_cfg == TrainConfig(lr=0.5)
    sched = system.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert sched.factor == TrainConfig.lr_factor and sched.patience == TrainConfig.lr_patience
