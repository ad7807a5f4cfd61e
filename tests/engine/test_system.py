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


def test_a_fit_calibrates_the_model_on_training_batches_before_each_validation(tmp_path):
    import torch

    from mmfusion.cli.main import main
    from mmfusion.data import FusionDataset, load_data
    from mmfusion.engine.checkpoints import load_system

    data = {"n_train": 48, "n_valid": 16, "n_test": 16}
    args = ["fit", "--model", "mea_tiny", "--data", "synthetic", "--max-epochs", "2", "--batch-size", "16",
            "--no-progress", "--threads", "1", "--set", "model_args.agnostic_norm=modality",
            "--set", "train.patience=0", "--out", str(tmp_path)]
    args += [x for k, v in data.items() for x in ("--set", f"data_args.{k}={v}")]
    assert main(args) == 0
    run = tmp_path / "mea_tiny" / "synthetic" / "seed_1111" / "checkpoints"
    model = load_system(run / "last.ckpt").model.eval()
    # 3 training batches, fewer than CALIBRATION_BATCHES: the statistics are those of every training clip's
    # evaluation-mode code, so the codes come out centred per modality
    train = FusionDataset(load_data("synthetic", data, source="data_args").split("train", labeled=True))
    with torch.no_grad():
        batch = train.collate(range(48))
        codes = model(batch.features, batch.masks)["inspect"]["codes"]["agnostic"]
    torch.testing.assert_close(codes.mean(0), torch.zeros_like(codes[0]), atol=1e-4, rtol=0)
