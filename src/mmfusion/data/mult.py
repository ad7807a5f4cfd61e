"""Reader and writer for the MulT layout (``<name>_data_noalign.pkl`` / ``<name>_data.pkl``), as MulT distributes it.
See docs/design/data-formats.md §1.

One pickle ``{"train"|"valid"|"test": {"text", "audio", "vision", "labels"[, "id"]}}``; sequences are **left**
padded with zeros and carry no lengths, so a sample's length is the count of trailing frames from its first
not-all-zero frame. Labels are (N, 1, 1) sentiment scores or, for IEMOCAP, (N, 4, 2) one-hot
(not-present, present) per emotion.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmfusion.batch import IEMOCAP_EMOTIONS
from mmfusion.data.dataset import (
    SPLITS,
    DatasetBundle,
    LoadReport,
    SplitData,
    check_labels_magnitude,
    clean_features,
    count_empty,
    finite_float32,
    left_to_right,
    lengths_from_left_padding,
    note_if_large,
    real_array,
    require_keys,
)
from mmfusion.data.safe_pickle import safe_load
from mmfusion.errors import DataError
from mmfusion.io import atomic_write_bytes

MULT_MODALITIES = ("text", "audio", "vision")


def ids_from(raw: object, n: int, *, file: str, split: str) -> list[str]:
    """Sample ids as strings; multi-part ids (N, k) are joined with ``$_$`` (MMSA's convention)."""
    try:
        arr = np.asarray(raw)
    except (ValueError, TypeError):
        raise DataError("not a rectangular id array (rows of different lengths?)", file=file, split=split,
                        key="id", expected=f"N={n} ids", actual=type(raw).__name__) from None
    if arr.shape[:1] != (n,):
        raise DataError("id array has the wrong length", file=file, split=split, key="id", expected=f"N={n}",
                        actual=f"shape {arr.shape}")

    def text(v: object) -> str:
        return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)

    if arr.ndim == 1:
        return [text(v) for v in arr]
    return ["$_$".join(text(v) for v in row.reshape(-1)) for row in arr]


def read_mult(path: str | Path) -> DatasetBundle:
    """Read a MulT-layout pickle. Errors name the file, split, key, expected and actual value."""
    file = str(path)
    raw = safe_load(path)
    require_keys(raw, SPLITS, file=file, split=None, what="split")
    report = LoadReport()
    first_labels = real_array(raw["train"]["labels"], file=file, split="train", key="labels",
                              expected="(N, 1, 1) sentiment scores or (N, E, 2) one-hot emotions") \
        if isinstance(raw["train"], Mapping) and "labels" in raw["train"] else None
    emotions: tuple[str, ...] = ()
    if first_labels is not None and first_labels.ndim == 3 and first_labels.shape[-1] == 2 and first_labels.shape[
            1] > 1:
        E = first_labels.shape[1]
        emotions = IEMOCAP_EMOTIONS if E == 4 else tuple(f"emotion{i}" for i in range(E))
    splits = {}
    for split in SPLITS:
        d = raw[split]
        require_keys(d, (*MULT_MODALITIES, "labels"), file=file, split=split, what="split")
        report.extra_keys(split, list(d), (*MULT_MODALITIES, "labels", "id"))
        labels = real_array(d["labels"], file=file, split=split, key="labels",
                            expected="(N, 1, 1) sentiment scores or (N, E, 2) one-hot emotions")
        if labels.ndim == 0:  # N comes from the labels: without it every feature array would be "wrong"
            raise DataError("labels must be an array, one entry per clip", file=file, split=split, key="labels",
                            expected="(N, 1, 1) sentiment scores or (N, E, 2) one-hot emotions",
                            actual=f"a scalar ({labels.item()!r})")
        n = labels.shape[0]
        features, lengths = {}, {}
        for m in MULT_MODALITIES:
            x = clean_features(d[m], file=file, split=split, key=m, report=report, expected_n=n)
            lengths[m] = lengths_from_left_padding(x)
            features[m] = left_to_right(x, lengths[m])
        if emotions:
            if labels.shape[1:] != (len(emotions), 2):
                raise DataError("wrong label shape", file=file, split=split, key="labels",
                                expected=f"(N, {len(emotions)}, 2)", actual=f"{labels.shape}")
            pairs = labels.reshape(-1, 2)
            one_hot = np.isin(pairs, (0, 1)).all(-1) & (pairs.sum(-1) == 1)
            if not one_hot.all():
                bad = int(np.argmin(one_hot))  # the first pair that is not
                raise DataError("emotion labels that are not one-hot", file=file, split=split, key="labels",
                                expected="(absent, present) pairs (1, 0) or (0, 1)",
                                actual=f"{pairs[bad].tolist()} at sample {bad // len(emotions)}, "
                                       f"emotion {bad % len(emotions)}")
            labels_out = np.argmax(labels, axis=-1).astype(np.int64)  # index 1 = emotion present
        else:
            if labels.size != n:
                raise DataError("wrong label shape", file=file, split=split, key="labels",
                                expected="(N, 1, 1) sentiment scores", actual=f"{labels.shape}")
            labels_out = finite_float32(labels.reshape(n), file=file, split=split, key="labels")
            check_labels_magnitude(labels_out, split=split, key="labels", report=report)
        ids = ids_from(d["id"], n, file=file, split=split) if "id" in d else [f"{split}_{i:05d}" for i in range(n)]
        splits[split] = SplitData(features, lengths, labels_out, ids)
        count_empty(splits[split], split, report)
    note_if_large(splits, f"mult:{file}", report)
    return DatasetBundle(
        name=Path(file).stem, task="emotion" if emotions else "regression", splits=splits, source=f"mult:{file}",
        emotions=emotions, report=report,
    )


def write_mult(path: str | Path, splits: Mapping[str, SplitData], *, emotions: tuple[str, ...] = (),
               lengths: Mapping[str, int] | None = None, with_ids: bool = True) -> Path:
    """Write splits in the MulT layout: left-padded to ``lengths[m]`` (default: the arrays' T), labels
    (N, 1, 1) or one-hot (N, E, 2). The write is atomic."""
    out = {}
    for name, s in splits.items():
        d: dict[str, np.ndarray] = {}
        for m in MULT_MODALITIES:
            x, L = s.features[m], s.lengths[m]
            T = (lengths or {}).get(m, x.shape[1])
            arr = np.zeros((len(s), T, x.shape[2]), dtype=np.float32)
            for i in range(len(s)):
                n = min(int(L[i]), T)
                if n:
                    arr[i, T - n:] = x[i, :n]
            d[m] = arr
        if emotions:
            d["labels"] = np.eye(2, dtype=np.float32)[s.labels]  # (N, E, 2)
        else:
            d["labels"] = s.labels.reshape(-1, 1, 1).astype(np.float32)
        if with_ids:
            d["id"] = np.asarray(s.ids)
        out[name] = d
    return atomic_write_bytes(path, pickle.dumps(out, protocol=4))
