"""``mmfusion predict`` on one video file takes a short path: the model alone from the checkpoint, the extractors'
direct loaders, no word alignment, one torch thread. It must predict what the full path (the LightningModule,
extraction as ``extract`` does it, torch's default threads) predicts, and start without the heavy packages."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("mediapipe")
pytest.importorskip("opensmile")

from mmfusion.engine.checkpoints import load_system  # noqa: E402
from mmfusion.engine.clip_predict import _clip_row, predict_clips  # noqa: E402
from mmfusion.engine.system import FusionSystem  # noqa: E402
from mmfusion.media import FeatureSet  # noqa: E402
from mmfusion.media.extract import Extractor  # noqa: E402
from mmfusion.media.talking import Style, make_clip  # noqa: E402

SMALL = Style(width=192, height=144, fps=25, audio_rate=16000, channels=1)
SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture(scope="module")
def clip_and_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("one")
    clip = folder / "said.mp4"
    make_clip(clip, "a charming and funny film", 2.0, 0, SMALL, random.Random(1))
    (folder / "said.json").unlink()
    (folder / "said.txt").write_text("a charming and funny film")  # plain words: extract would align them
    torch.manual_seed(0)
    fs = FeatureSet()
    system = FusionSystem("mea_tiny", {}, fs.dims, 1, "regression", meta={"feature_set": fs.name})
    ckpt = folder / "m.ckpt"
    torch.save({"hyper_parameters": dict(system.hparams), "state_dict": system.state_dict()}, ckpt)
    return clip, ckpt


def test_the_short_path_predicts_what_the_full_path_predicts(clip_and_ckpt: tuple[Path, Path]) -> None:
    clip, ckpt = clip_and_ckpt
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        row = predict_clips(ckpt, [clip])[0]  # on one thread
        assert torch.get_num_threads() == 2  # and torch's threads given back
    finally:
        torch.set_num_threads(before)
    assert row["notes"]["text_source"] == "txt"  # not aligned: the model does not read the words' times
    system = load_system(ckpt)
    full = Extractor(FeatureSet()).clip(clip, clip.with_suffix(".txt"))
    assert full["meta"]["text_source"].startswith("txt, aligned")
    want = _clip_row(system.model, full, "said", clip, dict(system.hparams["feature_dims"]), "regression", ())
    assert row["lengths"] == want["lengths"] == {"text": 5, "audio": row["lengths"]["audio"],
                                                 "vision": row["lengths"]["vision"]}
    np.testing.assert_allclose(row["prediction"], want["prediction"], rtol=1e-5, atol=1e-6)
    assert row["wal"] == pytest.approx(want["wal"], rel=1e-5)


def test_the_command_starts_without_lightning_transformers_or_matplotlib(clip_and_ckpt: tuple[Path, Path]) -> None:
    clip, ckpt = clip_and_ckpt
    code = ("import runpy, sys; sys.argv = ['mmfusion', 'predict', '--ckpt', sys.argv[1], sys.argv[2], '--json']\n"
            "try:\n    runpy.run_module('mmfusion', run_name='__main__')\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = ('lightning', 'transformers', 'opensmile', 'pandas', 'h5py', 'sklearn', 'torch._dynamo', "
            "'matplotlib', 'mediapipe.tasks')\n"
            "print('RC', rc, 'HEAVY', [m for m in heavy if m in sys.modules])")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code, str(ckpt), str(clip)], capture_output=True, text=True, env=env,
                         timeout=600)
    assert "RC 0 HEAVY []" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    res = json.loads(out.stdout[:out.stdout.rindex("RC 0")])
    assert res["id"] == "said" and res["lengths"]["text"] == 5


def test_face_mesh_alone_then_the_whole_mediapipe_package_in_one_process() -> None:
    """FaceMesh imported without mediapipe's __init__ (no drawing helpers, matplotlib or Tasks API); a later
    ``import mediapipe`` still gets the whole package."""
    code = ("import sys\nfrom mmfusion.media.features import face_mesh_module\n"
            "fm = face_mesh_module()\n"
            "print('ALONE', [m for m in ('matplotlib', 'cv2', 'mediapipe.tasks') if m in sys.modules])\n"
            "import mediapipe as mp\n"
            "print('SAME', mp.solutions.face_mesh is fm, mp.solutions.face_mesh.FaceMesh is fm.FaceMesh)\n"
            "print('WHOLE', callable(mp.solutions.drawing_utils.draw_landmarks),"
            " mp.tasks.vision.FaceLandmarker is not None, isinstance(mp.__version__, str))\n")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert "ALONE []" in out.stdout and "SAME True True" in out.stdout and "WHOLE True True True" in out.stdout, \
        out.stdout + out.stderr[-2000:]
