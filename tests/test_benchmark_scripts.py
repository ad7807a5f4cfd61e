"""The benchmark scripts' own promises (they are scripts, not package code, so they are loaded by path)."""

import importlib.util
import json
from pathlib import Path

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
