"""``mmfusion predict --ckpt CKPT clip.mp4``: extract video files with the feature set the checkpoint was trained on,
then run the model on each clip; for MEA also each modality's WAL weight and the DGF edge weights.

One clip from the command line is mostly start-up, so this path imports only what it uses: the model alone from the
checkpoint (:func:`~mmfusion.engine.checkpoints.load_model`, no Lightning), and the extractors, which skip word
alignment (the model reads one vector per word, not the words' times)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.data.dataset import FusionDataset, SplitData
from mmfusion.engine.checkpoints import load_model
from mmfusion.engine.explain import read_prediction
from mmfusion.errors import DataError
from mmfusion.media import FeatureSet
from mmfusion.media.decode import ClipFailure
from mmfusion.media.extract import Extractor, list_clips
from mmfusion.media.transcript import find_transcript


def checkpoint_feature_set(hparams: Mapping[str, Any], ckpt: str | Path) -> FeatureSet:
    """The feature set a checkpoint with hyper-parameters ``hparams`` was trained on (a :class:`DataError` if it
    records none: it was not trained on extracted clips)."""
    name = (hparams.get("meta") or {}).get("feature_set")
    if not name:
        raise DataError("the checkpoint was not trained on features from `mmfusion extract`, so video files cannot "
                        "be turned into its inputs", file=ckpt, key="feature_set",
                        expected="a recorded feature set", actual="none recorded")
    return FeatureSet.parse(name)


def predict_clips(ckpt: str | Path, inputs: Sequence[str | Path], *, text: str | None = None,
                  transcript: Path | None = None, progress: Callable[[int, int, str], None] | None = None,
                  threads: int | None = 1) -> list[dict[str, Any]]:
    """One result per clip under ``inputs`` (files or folders): ``id``, ``file``, ``prediction`` (raw model output),
    ``reading`` (score / emotions / class in words), ``score`` and ``class`` (sentiment), ``emotions`` (emotion
    task), ``wal`` ({modality: weight} averaged over layers) and ``dgf`` ({branch: {"i->j": weight}}) for MEA,
    ``lengths`` per modality and extraction notes; or ``error`` with the reason for a clip that failed.

    ``threads``: torch's CPU threads while it runs (restored afterwards; None: as they are). One clip's text
    encoder and model are a few dozen milliseconds of work on one thread; a second thread mostly waits on the first,
    and on a busy machine makes them up to ten times slower. The numbers do not depend on it beyond float rounding."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _predict_clips(ckpt, inputs, text, transcript, progress)
    finally:
        torch.set_num_threads(saved)


def _predict_clips(ckpt: str | Path, inputs: Sequence[str | Path], text: str | None, transcript: Path | None,
                   progress: Callable[[int, int, str], None] | None) -> list[dict[str, Any]]:
    model, hp = load_model(ckpt)
    fs = checkpoint_feature_set(hp, ckpt)
    task, emotions = hp["task"], tuple(hp.get("emotions") or ())
    want = dict(hp["feature_dims"])
    clips = [c for item in inputs for c in list_clips(Path(item))]
    if not clips:
        raise DataError("no video files", file=", ".join(map(str, inputs)))
    if (text is not None or transcript is not None) and len(clips) > 1:
        raise DataError("--transcript / --transcript-file give the words of one clip", key="inputs",
                        expected="one video file", actual=f"{len(clips)} clips")
    ex = Extractor(fs)
    results = []
    for n, (cid, path) in enumerate(clips):
        try:
            t = transcript if transcript is not None else find_transcript(path.stem, [path.parent])
            res = ex.clip(path, t if text is None else None, text, word_times=False)
        except ClipFailure as exc:
            results.append({"id": cid, "file": str(path), "error": exc.reason, "detail": exc.detail})
            continue
        results.append(_clip_row(model, res, cid, path, want, task, emotions))
        if progress:
            progress(n + 1, len(clips), cid)
    return results


def _clip_row(model: Any, res: dict[str, Any], cid: str, path: Path, want: dict[str, int], task: str,
              emotions: tuple[str, ...]) -> dict[str, Any]:
    """:func:`predict_clips`' result for one extracted clip ``res``."""
    mods = [m for m in want if m in res]
    feats = {m: res[m][None].astype(np.float32) if len(res[m]) else np.zeros((1, 1, want[m]), np.float32)
             for m in mods}
    lengths = {m: np.array([len(res[m])], np.int64) for m in mods}
    labels = np.zeros((1, len(emotions)), np.int64) if task == "emotion" else np.zeros(1, np.float32)
    batch = FusionDataset(SplitData(feats, lengths, labels, [cid], labeled=False)).collate([0])
    with torch.no_grad():
        out = model.explain(batch.features, batch.masks) if hasattr(model, "explain") else \
            model(batch.features, batch.masks)
    pred = out["pred"][0].float().numpy()
    row: dict[str, Any] = {"id": cid, "file": str(path), "prediction": pred.reshape(-1).tolist(),
                           "reading": read_prediction(pred, None, task, emotions),
                           "lengths": {m: int(lengths[m][0]) for m in mods}, "notes": res["meta"]}
    if task == "regression":
        score = float(pred.reshape(-1)[0])
        row["score"] = score
        row["class"] = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    elif task == "emotion":
        logits = pred.reshape(len(emotions), 2)
        p = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))
        row["emotions"] = {e: float(q) for e, q in zip(emotions, p, strict=True)}
    else:
        row["class"] = emotions[int(np.argmax(pred))] if emotions else int(np.argmax(pred))
    info = out.get("inspect", {})
    order = list(getattr(model, "modalities", mods))
    if "wal" in info:
        psi = info["wal"][0].float().numpy()  # (layers, M)
        row["wal"] = {m: float(v) for m, v in zip(order, psi.mean(0), strict=True)}
    if "dgf" in info:
        row["dgf"] = {branch: {f"{order[i]}->{order[j]}": float(xi[0].float().numpy()[i, j])
                               for i in range(len(order)) for j in range(len(order)) if i != j}
                      for branch, xi in info["dgf"].items()}
    return row
