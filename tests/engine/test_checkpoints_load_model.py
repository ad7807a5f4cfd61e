"""load_model: a checkpoint's model without the LightningModule (what ``predict`` on a video file uses), read and
refused exactly as load_system reads and refuses it."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmfusion.data.dataset import FusionDataset, SplitData
from mmfusion.engine.checkpoints import SYSTEM_FIELDS, load_model, load_system
from mmfusion.engine.system import FusionSystem
from mmfusion.errors import DataError

DIMS = {"text": 6, "audio": 5, "vision": 4}
SRC = str(Path(__file__).resolve().parents[2] / "src")


def _save(path: Path, hparams: dict, state: dict) -> Path:
    torch.save({"hyper_parameters": hparams, "state_dict": state}, path)
    return path


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(3)
    system = FusionSystem("mea_tiny", {}, DIMS, 1, "regression", meta={"feature_set": "x"})
    return _save(tmp_path / "m.ckpt", dict(system.hparams), system.state_dict())


def _batch():
    rng = np.random.default_rng(0)
    feats = {m: rng.normal(size=(2, 7, d)).astype(np.float32) for m, d in DIMS.items()}
    lengths = {m: np.array([7, 4]) for m in DIMS}
    data = SplitData(feats, lengths, np.zeros(2, np.float32), ["a", "b"], labeled=False)
    return FusionDataset(data).collate([0, 1])


def test_load_model_gives_load_systems_model_and_hparams(ckpt: Path) -> None:
    model, hparams = load_model(ckpt)
    system = load_system(ckpt)
    assert hparams == dict(system.hparams) and not model.training
    b = _batch()
    with torch.no_grad():
        got, want = model(b.features, b.masks)["pred"], system.model(b.features, b.masks)["pred"]
    assert torch.equal(got, want)
    assert set(SYSTEM_FIELDS) == set(inspect.signature(FusionSystem.__init__).parameters) - {"self"}


@pytest.mark.parametrize("damage, says", [
    (lambda h, s: h.update(learning_rate=1.0), "hyper_parameters/learning_rate"),
    (lambda h, s: s.update({"extra.weight": torch.zeros(1)}), "unexpected key 'extra.weight'"),
    (lambda h, s: s.pop(next(iter(s))), "do not fit"),
    (lambda h, s: s[next(k for k in s if k.endswith("weight"))].fill_(float("nan")), "state_dict/model."),
    (lambda h, s: h.update(feature_dims={"text": -1}), "feature_dims"),
])
def test_load_model_refuses_what_load_system_refuses(ckpt: Path, tmp_path: Path, damage, says: str) -> None:
    raw = torch.load(ckpt, weights_only=True)
    damage(raw["hyper_parameters"], raw["state_dict"])
    bad = _save(tmp_path / "bad.ckpt", raw["hyper_parameters"], raw["state_dict"])
    with pytest.raises(DataError) as err:
        load_model(bad)
    assert says in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(DataError):
        load_system(bad)


def test_load_model_reads_weights_only(tmp_path: Path) -> None:
    bad = tmp_path / "object.ckpt"
    torch.save({"hyper_parameters": {}, "state_dict": {}, "hook": Path("x")}, bad)  # a pickled object
    with pytest.raises(DataError, match="not a loadable mmfusion checkpoint"):
        load_model(bad)


def test_predict_on_a_video_file_never_imports_lightning(ckpt: Path, tmp_path: Path) -> None:
    """The command up to extraction (parse, load the checkpoint, check its feature set) in a fresh interpreter:
    Lightning, transformers and torch's compiler stack stay unimported (each costs seconds of start-up)."""
    code = ("import sys; from mmfusion.cli.main import main; "
            f"rc = main(['predict', '--ckpt', {str(ckpt)!r}, {str(tmp_path / 'clip.mp4')!r}]); "
            "heavy = [m for m in ('lightning', 'transformers', 'torch._dynamo') if m in sys.modules]; "
            "print('rc', rc, 'heavy', heavy)")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    # the checkpoint records feature set "x": refused by name before any clip is read, after the whole load
    assert "rc 2 heavy []" in out.stdout, out.stdout + out.stderr
    assert "feature_set" in out.stderr


def test_a_checkpoint_trained_with_the_kernel_evaluates_where_the_kernel_is_unavailable(tmp_path: Path,
                                                                                         monkeypatch) -> None:
    """attention=kernel says how the model ran, not what it computes: where the kernel cannot be built the
    checkpoint loads with attention=auto, says so, and predicts what the same weights predict under auto."""
    monkeypatch.setenv("MMFUSION_KERNELS", "0")
    torch.manual_seed(3)
    system = FusionSystem("mea_tiny", {}, DIMS, 1, "regression", meta={"feature_set": "x"})
    hparams = dict(system.hparams)
    trained = _save(tmp_path / "k.ckpt", {**hparams, "model_args": {**(hparams["model_args"] or {}),
                                                                     "attention": "kernel"}}, system.state_dict())
    batch = _batch()
    for load in (lambda p: load_system(p).model, lambda p: load_model(p)[0]):
        with pytest.warns(UserWarning, match=r"k\.ckpt: trained with model_args\.attention=kernel, which is "
                                             r"unavailable here \(disabled by MMFUSION_KERNELS\); evaluating with "
                                             r"attention=auto"):
            loaded = load(trained)
        settings = {m.attention for m in loaded.modules() if isinstance(getattr(m, "attention", None), str)}
        assert settings == {"auto"}
        with torch.no_grad():
            torch.testing.assert_close(loaded(batch.features, batch.masks)["pred"],
                                       system.model.eval()(batch.features, batch.masks)["pred"])
