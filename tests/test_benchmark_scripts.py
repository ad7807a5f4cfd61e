"""The benchmark scripts' own promises (they are scripts, not package code, so they are loaded by path)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scaling_resumed_seed_equals_uninterrupted_and_warmup_is_linear(tmp_path, capsys):
    """A seed stopped at every validation check (``--max-minutes 0``) and resumed each time ends with exactly the
    result of an uninterrupted run, and ``--warmup`` raises the learning rate linearly with the step."""
    scaling = _load("scaling")
    args = ["--model", "mea_tiny", "--n-train", "64", "--steps", "6", "--every", "2", "--batch", "16",
            "--seeds", "7", "--warmup", "4", "--lr", "0.002"]
    scaling.main([*args, "--out-dir", str(tmp_path / "once")])
    once = json.loads((tmp_path / "once" / "scaling_mea_tiny_warmup4.json").read_text())

    resumed = tmp_path / "resumed"
    state = resumed / "scaling_mea_tiny_warmup4_seed7.pt"
    lrs = []
    for i in range(2):  # stops after steps 2 and 4
        scaling.main([*args, "--out-dir", str(resumed), "--max-minutes", "0"])
        out = capsys.readouterr().out
        assert "run the same command to go on" in out
        assert ("going on from step 2 of 6" in out) == (i == 1)
        saved = torch.load(state, weights_only=True)
        lrs.append((saved["step"], saved["opt"]["param_groups"][0]["lr"]))
    assert lrs == [(2, 0.002 * 2 / 4), (4, 0.002)]  # the rate of the last step taken: step/warmup, then constant
    scaling.main([*args, "--out-dir", str(resumed), "--max-minutes", "0"])  # the last check ends the seed
    assert not state.exists()
    assert "going on from step 4 of 6" in capsys.readouterr().out
    scaling.main([*args, "--out-dir", str(resumed)])  # a finished seed is not trained again
    assert "seed 7: already in" in capsys.readouterr().out
    again = json.loads((resumed / "scaling_mea_tiny_warmup4.json").read_text())

    assert [r["seed"] for r in again["seeds"]] == [7]  # the skipped seed was not appended a second time
    a, b = once["seeds"][0], again["seeds"][0]
    assert a["history"] == b["history"] and len(a["history"]) == 3
    assert a["step"] == b["step"] and a["test"] == b["test"]
    assert (resumed / "scaling_mea_tiny_warmup4.md").read_text().count("| corr |") == 1


def test_frontend_proxy_variants_change_only_what_they_name():
    """Each front-end variant differs from the paper's front end (same seed) in exactly the part it names."""
    proxy = _load("frontend_proxy")
    bundle = proxy.load_data("synthetic", {**proxy.DATA, "n_train": 16, "n_valid": 8})
    models = {v: proxy.build_variant(v, bundle, seed=3) for v in proxy.VARIANTS}
    paper = dict(models["paper"].named_parameters())
    fes = {v: proxy._front_ends(m) for v, m in models.items()}
    assert len(fes["paper"]) == 3 and all(fe.scale == 4.0 for fe in fes["paper"])  # sqrt(16)
    assert all(fe.scale == 1.0 for fe in fes["unscaled"])
    assert all(fe.scale == 8.0 for fe in fes["scale_x2"]) and all(fe.scale == 16.0 for fe in fes["scale_x4"])
    assert all(fe.lstm is None for fe in fes["conv"]) and all(fe.residual for fe in fes["residual"])
    x, mask = torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool)
    assert all(torch.equal(fe.positions(x, mask), x) for fe in fes["no_positions"])
    assert not torch.equal(fes["paper"][0].positions(x, mask), x)
    for v, factor in (("lstm_out_scaled", 4.0), ("lstm_out_scaled_x2", 8.0)):  # the same weights, output × factor
        assert [p for _, p in models[v].named_parameters()] and all(
            torch.equal(p, q) for p, q in zip(models[v].parameters(), models["paper"].parameters(), strict=True))
        for fe, ref in zip(fes[v], fes["paper"], strict=True):
            feats = torch.randn(2, 5, fe.conv.in_channels)
            torch.testing.assert_close(fe(feats, mask), ref(feats, mask) * factor)
    for v in ("residual", "unscaled", "scale_x2", "scale_x4", "no_positions"):
        assert all(torch.equal(p, paper[n]) for n, p in models[v].named_parameters()), v
    changed = {v: {n for n, p in models[v].named_parameters() if not torch.equal(p, paper[n])}
               for v in ("forget_bias_1", "orthogonal_recurrent")}
    assert changed["forget_bias_1"] and all("bias_ih" in n for n in changed["forget_bias_1"])
    assert changed["orthogonal_recurrent"] and all("weight_hh" in n for n in changed["orthogonal_recurrent"])
    for lstm in proxy._lstms(models["forget_bias_1"]):
        H = lstm.hidden_size
        assert torch.all(lstm.bias_ih_l0[H:2 * H] == 1.0) and not torch.all(lstm.bias_ih_l0[:H] == 1.0)
    for lstm in proxy._lstms(models["orthogonal_recurrent"]):
        for block in lstm.weight_hh_l0.detach().chunk(4, 0):
            torch.testing.assert_close(block @ block.T, torch.eye(lstm.hidden_size), atol=1e-5, rtol=0)


def test_frontend_proxy_skips_finished_runs_and_refuses_other_settings(tmp_path, capsys):
    """A run already in the JSON is not trained again, and runs with another step budget are not mixed into it."""
    proxy = _load("frontend_proxy")
    args = ["--variants", "paper", "conv", "--seeds", "5", "--steps", "4", "--every", "2", "--n-train", "64",
            "--out-dir", str(tmp_path)]
    proxy.main(args)
    first = json.loads((tmp_path / "frontend_proxy.json").read_text())
    assert [(r["variant"], r["seed"], [h["step"] for h in r["history"]]) for r in first["runs"]] == [
        ("paper", 5, [2, 4]), ("conv", 5, [2, 4])]
    assert "| paper | " in (tmp_path / "frontend_proxy.md").read_text()
    capsys.readouterr()
    proxy.main(args)
    assert "conv, seed 5: already in" in capsys.readouterr().out
    assert json.loads((tmp_path / "frontend_proxy.json").read_text())["runs"] == first["runs"]
    longer = [a if a != "4" else "6" for a in args]  # --steps 6
    with pytest.raises(SystemExit, match=r"'steps': 4.*give another --out-dir"):
        proxy.main(longer)


def test_frontend_proxy_weight_decay_trains_otherwise_and_is_kept_apart(tmp_path):
    """--weight-decay changes the training (AdamW), and its runs are not mixed with plain Adam runs in one file."""
    proxy = _load("frontend_proxy")
    args = ["--variants", "paper", "--seeds", "5", "--steps", "4", "--every", "2", "--n-train", "64"]
    proxy.main(args + ["--out-dir", str(tmp_path / "adam")])
    proxy.main(args + ["--weight-decay", "0.5", "--out-dir", str(tmp_path / "adamw")])
    adam, adamw = (json.loads((tmp_path / d / "frontend_proxy.json").read_text()) for d in ("adam", "adamw"))
    assert (adam["weight_decay"], adamw["weight_decay"]) == (0.0, 0.5)
    assert adam["runs"][0]["history"] != adamw["runs"][0]["history"]
    assert "AdamW, weight decay 0.5" in (tmp_path / "adamw" / "frontend_proxy.md").read_text()
    with pytest.raises(SystemExit, match=r"'weight_decay': 0.0.*give another --out-dir"):
        proxy.main(args + ["--weight-decay", "0.5", "--out-dir", str(tmp_path / "adam")])


@pytest.mark.parametrize(("script", "args", "says"), [
    ("speed", ["--model", "mea_tni"], "did you mean 'mea_tiny'?"),
    ("scaling", ["--model", "mea_tiny", "--set", "dimm=8"], "did you mean 'dim'?"),
])
def test_a_bad_setting_in_a_script_is_one_line_like_the_cli(script, args, says):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"{script}.py: error: ") and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr


def test_speed_inference_only_times_rounds_without_training(tmp_path):
    """``--inference-only`` writes one best/median pair per round and model variant and runs no training step."""
    import subprocess
    import sys

    out = tmp_path / "inference.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--model", "mea_tiny",
                           "--frames", "16", "--inference-only", "--repeat", "2", "--calls", "3", "--no-peak",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert list(result["one_clip_rounds"]) == ["eager"]  # no compiled rounds without --compile
    rounds = result["one_clip_rounds"]["eager"]
    assert len(rounds) == 2 and all(0 < r["best_ms"] <= r["median_ms"] for r in rounds)
    assert result["calls_per_round"] == 3 and result["lengths"]["vision"] == 16
    assert "train_step_s" not in result and "round 2 of 2, eager" in done.stdout
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--inference-only", "--calls", "0"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--calls must be at least 1, got 0" in bad.stderr
