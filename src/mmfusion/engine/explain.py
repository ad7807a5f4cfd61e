"""``mmfusion explain``: every inspectable quantity of one sample as arrays (``arrays.npz``) and PNG heatmaps, plus
an embedding plot of the exclusive vs agnostic codes of the split (MEA's Figures 5 and 6)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.data import DatasetBundle, FusionDataset
from mmfusion.errors import ConfigError, DataError
from mmfusion.inspect import plots
from mmfusion.io import atomic_write_bytes, atomic_write_json


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def read_prediction(pred: np.ndarray, label: Any, task: str, names: Sequence[str]) -> str:
    """One line a person can read: the score, each emotion's probability of being present, or the class; with the
    label beside it unless ``label`` is None (a clip without labels)."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if task == "regression":
        return f"score {pred[0]:+.3f}" + ("" if label is None else f" (label {float(label):+.3f})")
    if task == "emotion":
        logits = pred.reshape(len(names), 2)
        p = np.exp(logits[:, 1] - np.logaddexp(logits[:, 0], logits[:, 1]))  # softmax over (absent, present)
        ys = [None] * len(names) if label is None else [int(y) for y in np.asarray(label)]
        return ", ".join(f"{e} {q:.2f}" + ("" if y is None else f" (label {y})")
                         for e, q, y in zip(names, p, ys, strict=True))
    k = int(np.argmax(pred))
    name = names[k] if k < len(names) else str(k)
    if label is None:
        return f"class {name}"
    truth = names[int(label)] if int(label) < len(names) else str(int(label))
    return f"class {name} (label {truth})"


def sample_index(bundle: DatasetBundle, split: str, sample_id: str) -> int:
    """The index of the sample called ``sample_id`` in ``split`` (a clear error naming close ids if none is)."""
    ids = bundle.split(split, labeled=False).ids
    try:
        return ids.index(sample_id)
    except ValueError:
        import difflib

        close = difflib.get_close_matches(sample_id, ids, n=3)
        raise DataError("no sample with this id", file=bundle.source, split=split, key="id",
                        expected=f"one of the split's {len(ids)} ids" + (f", e.g. {close}" if close else ""),
                        actual=sample_id) from None


def explain_sample(model: Any, bundle: DatasetBundle, split: str, index: int, out: Path) -> dict[str, Any]:
    """Run ``model.explain`` on one sample (alone: predictions do not depend on batch company) and save."""
    if not hasattr(model, "explain"):
        raise ConfigError("this model has no attention maps to explain", key="model", expected="mea",
                          actual=type(model).__name__)
    data = bundle.split(split, labeled=False)
    if not 0 <= index < len(data):
        raise DataError("sample index out of range", file=bundle.source, split=split, key="index",
                        expected=f"0 <= index < {len(data)}", actual=index)
    batch = FusionDataset(data).collate([index])
    model.eval()
    res = model.explain(batch.features, batch.masks)
    info, mods = res["inspect"], model.modalities
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {"prediction": _np(res["pred"][0])}
    files = []
    for key, title in (("psa", "PSA"), ("psa_vanilla", "vanilla self-attention")):
        for m, layers in info.get(key, {}).items():
            for l, a in enumerate(layers):
                arr = _np(a[0])  # (H, T, T)
                arrays[f"{key}/{m}/layer{l}"] = arr
                files.append(plots.heatmap(out / f"{key}_{m}_layer{l}.png", arr.mean(0),
                                           f"{title}, {m}, layer {l + 1} (mean over heads)", "key frame",
                                           "query frame"))
    for t, layers in info.get("hca", {}).items():
        for l, maps in enumerate(layers):
            for kind, a in maps.items():
                if a is None:
                    continue
                arr = _np(a[0])  # (H, T_t, S)
                arrays[f"hca/{t}/layer{l}/{kind}"] = arr
                files.append(plots.heatmap(out / f"hca_{t}_layer{l}_{kind}.png", arr.mean(0),
                                           f"HCA {kind} MRU, target {t}, layer {l + 1}", "source frame",
                                           f"{t} frame"))
    if "wal" in info:
        psi = _np(info["wal"][0])  # (layers, M)
        arrays["wal"] = psi
        files.append(plots.bars(out / "wal.png", psi, [f"layer {i + 1}" for i in range(len(psi))], mods,
                                "WAL weights ψ per PSA layer"))
    for branch, xi in info.get("dgf", {}).items():
        arr = _np(xi[0])
        arrays[f"dgf/{branch}"] = arr
        files.append(plots.heatmap(out / f"dgf_{branch}.png", arr, f"DGF ξ ({branch} graph)", "neighbour j",
                                   "node i", mods, mods))
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "__"): v for k, v in arrays.items()})
    atomic_write_bytes(out / "arrays.npz", buf.getvalue())
    meta = {"id": data.ids[index], "split": split, "index": index, "prediction": arrays["prediction"].tolist(),
            "label": np.asarray(data.labels[index]).tolist() if data.labeled else None,
            "reading": read_prediction(arrays["prediction"], data.labels[index] if data.labeled else None,
                                       bundle.task, bundle.emotions),
            "files": [str(f) for f in files],
            "arrays": sorted(arrays), "lengths": {m: int(data.lengths[m][index]) for m in mods}}
    atomic_write_json(out / "explain.json", meta)
    return meta


def embed_codes(model: Any, bundle: DatasetBundle, split: str, out: Path, method: str = "tsne",
                max_samples: int = 300, batch_size: int = 64) -> Path:
    """Plot the exclusive and agnostic codes of up to ``max_samples`` samples in 2-D (t-SNE or PCA)."""
    data = bundle.split(split, labeled=False)
    ds = FusionDataset(data)
    n = min(max_samples, len(data))
    codes: dict[str, list[np.ndarray]] = {}
    model.eval()
    with torch.no_grad():
        for start in range(0, n, batch_size):
            b = ds.collate(range(start, min(n, start + batch_size)))
            for branch, c in model(b.features, b.masks)["inspect"]["codes"].items():
                codes.setdefault(branch, []).append(_np(c))
    stacked = {k: np.concatenate(v) for k, v in codes.items()}
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **stacked)
    atomic_write_bytes(out / "codes.npz", buf.getvalue())
    return plots.embedding(out / f"codes_{method}.png", stacked, model.modalities, method)
