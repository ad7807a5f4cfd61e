"""mmfusion's own open format for custom datasets: one HDF5 file (``h5:PATH``). See docs/custom-data.md.

Layout (every array is a plain HDF5 dataset, readable from any language)::

    /                       attrs: format = "mmfusion", version = 1, task = "regression" | "emotion",
                                   emotions = "neutral,happy,..." (emotion task only)
    /<split>/<modality>/features   (N, T_m, d_m) float32, real frames first, zero padding after
    /<split>/<modality>/lengths    (N,) int64, 0 <= length <= T_m
    /<split>/labels                (N,) float32 scores, or (N, E) int64 in {0, 1} for E binary emotions (optional)
    /<split>/ids                   (N,) UTF-8 strings (optional)

``<split>`` is train, valid and test (training needs all three; a file of clips to predict may hold one); a split
without labels can be predicted but not trained or scored on. ``<modality>`` any of text, vision, audio (at least
one).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mmfusion.batch import MODALITIES
from mmfusion.data.dataset import (
    SPLITS,
    DatasetBundle,
    LoadReport,
    SplitData,
    check_lengths,
    clean_features,
    count_empty,
    finite_float32,
    real_array,
)
from mmfusion.errors import DataError
from mmfusion.io import atomic_path

FORMAT_VERSION = 1


def write_custom(path: str | Path, bundle: DatasetBundle) -> Path:
    """Write a dataset in the mmfusion HDF5 format (to a temporary name, then renamed into place)."""
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = "mmfusion"
        h5.attrs["version"] = FORMAT_VERSION
        h5.attrs["task"] = bundle.task
        h5.attrs["emotions"] = ",".join(bundle.emotions)
        if bundle.feature_set:
            h5.attrs["feature_set"] = bundle.feature_set
        for name, s in bundle.splits.items():
            g = h5.create_group(name)
            for m in s.modalities:
                gm = g.create_group(m)
                gm.create_dataset("features", data=s.features[m].astype(np.float32), compression="gzip",
                                  compression_opts=1)
                gm.create_dataset("lengths", data=s.lengths[m].astype(np.int64))
            if s.labeled:
                g.create_dataset("labels", data=s.labels)
            g.create_dataset("ids", data=np.array(s.ids, dtype=object), dtype=h5py.string_dtype())
    return path


def _group(parent: h5py.Group, name: str, *, file: str, split: str | None, key: str) -> h5py.Group:
    obj = parent[name]
    if not isinstance(obj, h5py.Group):
        raise DataError("expected a group", file=file, split=split, key=key, expected="an HDF5 group",
                        actual="a dataset")
    return obj


def _dataset(parent: h5py.Group, name: str, *, file: str, split: str, key: str) -> h5py.Dataset:
    obj = parent[name]
    if not isinstance(obj, h5py.Dataset):
        raise DataError("expected a dataset", file=file, split=split, key=key, expected="an HDF5 dataset",
                        actual="a group")
    return obj


def read_custom(path: str | Path) -> DatasetBundle:
    """Read the mmfusion HDF5 format with the same validation as the other readers."""
    file = str(path)
    if not Path(path).exists():
        raise DataError("file not found", file=file)
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file ({exc})", file=file) from None
    report = LoadReport()
    with h5:
        if h5.attrs.get("format") != "mmfusion":
            raise DataError("not an mmfusion dataset", file=file, key="format", expected="'mmfusion'",
                            actual=h5.attrs.get("format"))
        version = h5.attrs.get("version", FORMAT_VERSION)
        if not isinstance(version, (int, np.integer)) or not 1 <= int(version) <= FORMAT_VERSION:
            raise DataError("a format version this mmfusion cannot read (written by a newer one?)", file=file,
                            key="version", expected="an integer, " + (f"1 to {FORMAT_VERSION}" if FORMAT_VERSION > 1
                                                                      else "1"), actual=repr(version))
        task = str(h5.attrs.get("task", "regression"))
        if task not in ("regression", "emotion"):
            raise DataError("unknown task", file=file, key="task", expected="regression or emotion", actual=task)
        emotions = tuple(e for e in str(h5.attrs.get("emotions", "")).split(",") if e)
        splits = {}
        if not any(split in h5 for split in SPLITS):
            raise DataError("no split", file=file, expected=f"one or more of {list(SPLITS)}", actual=list(h5))
        for split in [s for s in SPLITS if s in h5]:
            g = _group(h5, split, file=file, split=split, key=split)
            mods = [m for m in MODALITIES if m in g]
            groups = {m: _group(g, m, file=file, split=split, key=m) for m in mods}
            if not mods:
                raise DataError("no modality group", file=file, split=split, expected=list(MODALITIES),
                                actual=list(g))
            labeled = "labels" in g  # clips without labels can be predicted, not trained or scored on
            if labeled:
                raw_labels = _dataset(g, "labels", file=file, split=split, key="labels")[()]
                labels = real_array(raw_labels, file=file, split=split, key="labels",
                                    expected="(N,) scores or (N, E) emotions in {0, 1}")
                if labels.ndim == 0:
                    raise DataError("labels must be an array", file=file, split=split, key="labels",
                                    expected="(N,) scores or (N, E) emotions in {0, 1}", actual="a scalar")
                n = labels.shape[0]
            else:
                if "features" not in groups[mods[0]]:
                    raise DataError("missing key", file=file, split=split, key=f"{mods[0]}/features",
                                    expected="features and lengths", actual=list(groups[mods[0]]))
                first = _dataset(groups[mods[0]], "features", file=file, split=split, key=f"{mods[0]}/features")
                n = int(first.shape[0]) if first.ndim else 0
                labels = (np.full((n, len(emotions)), -1, np.int64) if task == "emotion"
                          else np.full(n, np.nan, np.float32))
            features, lengths = {}, {}
            for m in mods:
                for key in ("features", "lengths"):
                    if key not in groups[m]:
                        raise DataError("missing key", file=file, split=split, key=f"{m}/{key}",
                                        expected="features and lengths", actual=list(groups[m]))
                x = clean_features(_dataset(groups[m], "features", file=file, split=split, key=f"{m}/features")[()],
                                   file=file, split=split, key=f"{m}/features", report=report, expected_n=n)
                L = check_lengths(_dataset(groups[m], "lengths", file=file, split=split, key=f"{m}/lengths")[()],
                                  x.shape[1], n, file=file, split=split, key=f"{m}/lengths")
                x[np.arange(x.shape[1])[None, :] >= L[:, None]] = 0.0
                features[m], lengths[m] = x, L
            if labeled and task == "emotion":  # (unlabelled splits keep their placeholders, never read)
                if labels.ndim != 2 or labels.shape[1] != len(emotions) or not np.isin(labels, (0, 1)).all():
                    raise DataError("wrong emotion labels", file=file, split=split, key="labels",
                                    expected=f"(N, {len(emotions)}) in {{0, 1}}", actual=f"{labels.shape}")
                labels = labels.astype(np.int64)
            elif labeled:
                if labels.shape not in {(n,), (n, 1)}:
                    raise DataError("wrong regression labels", file=file, split=split, key="labels",
                                    expected=f"({n},) numbers", actual=f"{labels.shape}")
                labels = finite_float32(labels.reshape(n), file=file, split=split, key="labels")
            if "ids" in g:
                raw_ids = np.asarray(_dataset(g, "ids", file=file, split=split, key="ids")[()])
                if raw_ids.ndim != 1:
                    raise DataError("wrong id array", file=file, split=split, key="ids", expected=f"({n},) strings",
                                    actual=f"shape {raw_ids.shape}")
                ids = [v.decode() if isinstance(v, bytes) else str(v) for v in raw_ids]
                if len(ids) != n:
                    raise DataError("number of ids differs from the number of clips", file=file, split=split,
                                    key="ids", expected=f"{n} ids", actual=f"{len(ids)}")
            else:
                ids = [f"{split}_{i:05d}" for i in range(n)]
            splits[split] = SplitData(features, lengths, labels, ids, labeled=labeled)
            count_empty(splits[split], split, report)
        feature_set = str(h5.attrs["feature_set"]) if "feature_set" in h5.attrs else None
    return DatasetBundle(name=Path(file).stem, task=task, splits=splits, source=f"h5:{file}",  # type: ignore[arg-type]
                         emotions=emotions, report=report, feature_set=feature_set)
