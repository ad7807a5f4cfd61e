import json

import pytest
import torch

from mmfusion.cli.main import main
from mmfusion.data import FusionDataset, load_data
from mmfusion.engine.robustness import conditions, feature_std, perturb

SMALL = ["--set", "data_args.n_train=48", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=24",
         "--max-epochs", "1", "--batch-size", "16", "--no-progress"]


def test_bench_table_then_robustness(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["bench", "--models", "lf_lstm_tiny,ef_lstm_tiny", "--data", "synthetic", "--seeds", "1", "2",
            "--out", str(out), *SMALL]
    assert main(args) == 0
    table = json.loads((out / "bench_synthetic.json").read_text())
    assert set(table["models"]) == {"lf_lstm_tiny", "ef_lstm_tiny"} and table["bayes"]["corr"] > 0.9
    for model in table["models"].values():
        assert model["seeds"] == [1, 2] and "params" in model["metrics"] and "corr" in model["metrics"]
    md = (out / "bench_synthetic.md").read_text()
    assert "Bayes-optimal" in md and "lf_lstm_tiny" in md
    assert (out / "bench_synthetic.png").stat().st_size > 1000
    capsys.readouterr()
    # a second call reuses the finished runs
    assert main(args) == 0
    assert "finished earlier" in capsys.readouterr().out

    assert main(["robustness", "--runs", str(out), "--data", "synthetic", "--set", "n_train=48", "--set",
                 "n_valid=16", "--set", "n_test=24"]) == 0
    rob = json.loads((out / "robustness_synthetic.json").read_text())
    assert set(rob["models"]) == {"lf_lstm_tiny", "ef_lstm_tiny"}
    per = rob["models"]["lf_lstm_tiny"]
    assert per["clean"]["seeds"] == 2 and per["missing:text"]["mean"] != per["clean"]["mean"]
    assert (out / "robustness_synthetic.png").stat().st_size > 1000


def test_robustness_conditions_change_inputs_as_described():
    bundle = load_data("synthetic", {"n_train": 40, "n_valid": 8, "n_test": 8})
    batch = FusionDataset(bundle.splits["test"]).collate(range(8))
    std = feature_std(bundle)
    gen = torch.Generator().manual_seed(0)
    miss = perturb(batch, "missing:audio", std, gen)
    assert not miss.masks["audio"].any() and torch.equal(miss.masks["text"], batch.masks["text"])
    noisy = perturb(batch, "noise:vision:1", std, gen)
    assert not torch.equal(noisy.features["vision"], batch.features["vision"])
    assert (noisy.features["vision"][~batch.masks["vision"]] == 0).all()  # padding stays padding
    dropped = perturb(batch, "drop:0.5", std, gen)
    for m in batch.masks:
        assert (dropped.masks[m] <= batch.masks[m]).all() and dropped.masks[m].any(1).all()
        assert dropped.masks[m].sum() < batch.masks[m].sum()
    assert len(conditions(bundle.modalities)) == 1 + 3 + 9 + 3


def test_robustness_models_take_bench_names_and_refuse_unknown_ones(tmp_path):
    """--models mea:no_hca (as bench takes it) finds the run directory mea-no_hca; a name with no checkpoint is
    an error naming what there is, not a column silently left out."""
    from mmfusion.engine.robustness import trained_checkpoints
    from mmfusion.errors import DataError

    for model in ("mea", "mea-no_hca", "lf_lstm"):
        ckpt = tmp_path / model / "synthetic" / "seed_1" / "checkpoints" / "best.ckpt"
        ckpt.parent.mkdir(parents=True)
        ckpt.write_bytes(b"")
    assert [p.parts[-5] for p in trained_checkpoints(tmp_path, "synthetic", ["mea:no_hca", "lf_lstm"])] == [
        "lf_lstm", "mea-no_hca"]
    assert len(trained_checkpoints(tmp_path, "synthetic", ["mea-no_hca"])) == 1
    assert len(trained_checkpoints(tmp_path, "synthetic")) == 3
    with pytest.raises(DataError) as err:
        trained_checkpoints(tmp_path, "synthetic", ["mea", "mult"])
    assert "['mult']" in str(err.value) and "mea-no_hca" in str(err.value) and "--models" in str(err.value)


def test_bench_names_the_seeds_that_collapsed(tmp_path, capsys, monkeypatch):
    """A seed whose predictions are one value is listed under the table, not only averaged into it."""
    from mmfusion.engine import system as system_module

    predict_step = system_module.FusionSystem.predict_step

    def collapsed_for_seed_2(self, batch, batch_idx):
        out = predict_step(self, batch, batch_idx)
        return {**out, "pred": out["pred"] * 0 + 0.5} if self.hparams["meta"]["seed"] == 2 else out

    monkeypatch.setattr(system_module.FusionSystem, "predict_step", collapsed_for_seed_2)
    out = tmp_path / "runs"
    assert main(["bench", "--models", "lf_lstm_tiny", "--data", "synthetic", "--seeds", "1", "2", "--out", str(out),
                 *SMALL]) == 0
    assert "note: lf_lstm_tiny, seed 2: the predictions are one value (0.5)" in capsys.readouterr().out.replace(
        "\n", "")
    md = (out / "bench_synthetic.md").read_text()
    assert "**Runs to look at**" in md and "- lf_lstm_tiny, seed 2: the predictions are one value" in md
    assert "seed 1:" not in md
    notes = json.loads((out / "bench_synthetic.json").read_text())["models"]["lf_lstm_tiny"]["notes"]
    assert len(notes) == 1 and notes[0].startswith("lf_lstm_tiny, seed 2")


def test_bench_takes_no_config_file_each_model_reads_its_own(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--models", "lf_lstm_tiny", "--config", str(tmp_path / "x.yaml")])
    assert err.value.code == 2 and "--config" in capsys.readouterr().err
