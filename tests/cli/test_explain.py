import json

import numpy as np

from mmfusion.cli.main import main
from mmfusion.engine.explain import read_prediction

SMALL = ["--set", "data_args.n_train=48", "--set", "data_args.n_valid=16", "--set", "data_args.n_test=24"]


def test_explain_writes_maps_weights_and_embedding(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["fit", "--model", "mea_tiny", "--data", "synthetic", "--max-epochs", "1", "--batch-size", "16",
                 "--no-progress", "--out", str(out), *SMALL]) == 0
    ckpt = out / "mea_tiny" / "synthetic" / "seed_1111" / "checkpoints" / "best.ckpt"
    exp = tmp_path / "exp"
    assert main(["explain", "--ckpt", str(ckpt), "--data", "synthetic", "--index", "3", "--out", str(exp),
                 "--embedding", "pca"]) == 0
    meta = json.loads((exp / "explain.json").read_text())
    assert f"score {meta['prediction'][0]:+.3f}" in capsys.readouterr().out
    arrays = np.load(exp / "arrays.npz")
    L = meta["lengths"]
    assert arrays["psa__vision__layer1"].shape == (2, L["vision"], L["vision"])
    assert arrays["hca__audio__layer0__mixed"].shape == (2, L["audio"], sum(L.values()))
    np.testing.assert_allclose(arrays["wal"].sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(arrays["dgf__agnostic"].sum(-1), 1.0, rtol=1e-5)
    for f in ("psa_text_layer0.png", "psa_vanilla_vision_layer1.png", "hca_text_layer0_coarse.png", "wal.png",
              "dgf_exclusive.png", "codes_pca.png"):
        assert (exp / f).stat().st_size > 1000, f
    # the modality separability of the codes: explain and fit read the same checkpoint on the same test split
    run = ckpt.parent.parent
    metrics = json.loads((run / "metrics.json").read_text())
    sep = json.loads((exp / "separability.json").read_text())
    for key in ("disc_acc_agnostic_test", "disc_acc_exclusive_test", "probe_acc_agnostic_test"):
        assert sep[key] == metrics[key], key
    assert "fresh linear probe" in (run / "summary.md").read_text()
    # one learning-curve point per epoch; the chosen checkpoint's validation loss is the curve's at its epoch
    curve = metrics["learning_curve"]
    assert [p["epoch"] for p in curve] == list(range(len(curve))) and len(curve) == 1
    assert curve[metrics["best_epoch"]]["val_loss"] == metrics["best_val_loss"]
    # the same sample by its id
    assert main(["explain", "--ckpt", str(ckpt), "--data", "synthetic", "--id", meta["id"], "--out",
                 str(tmp_path / "by_id"), "--embedding", "none"]) == 0
    assert json.loads((tmp_path / "by_id" / "explain.json").read_text())["index"] == 3
    capsys.readouterr()
    assert main(["explain", "--ckpt", str(ckpt), "--data", "synthetic", "--id", meta["id"] + "x",
                 "--embedding", "none"]) == 2
    err = capsys.readouterr().err
    assert "no sample with this id" in err and meta["id"] in err  # the close ids are named


def test_the_prediction_is_read_out_per_task():
    emotions = ("neutral", "happy", "sad", "angry")
    logits = np.array([[0.0, np.log(3.0)], [np.log(3.0), 0.0], [1.0, 1.0], [0.0, 0.0]]).reshape(-1)
    assert read_prediction(logits, [1, 0, 1, 0], "emotion", emotions) == (
        "neutral 0.75 (label 1), happy 0.25 (label 0), sad 0.50 (label 1), angry 0.50 (label 0)")
    assert read_prediction(np.array([0.1, 2.0, -1.0]), 2, "classification", ("calm", "happy", "sad")) == (
        "class happy (label sad)")
    assert read_prediction(np.array([-1.25]), 0.5, "regression", ()) == "score -1.250 (label +0.500)"
