"""Reader and writer for the MMSA layout (``unaligned_50.pkl`` / ``aligned_50.pkl``), docs/design/data-formats.md §2.

One pickle ``{"train"|"valid"|"test": {...}}`` with BERT ``text`` (N, L_t, 768), right-padded ``audio`` and
``vision`` with ``audio_lengths`` / ``vision_lengths``, ``regression_labels`` (N,) and ``id``. The text length comes
from the attention-mask row of ``text_bert`` when present, else from the last not-all-zero frame.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from mmfusion.data.dataset import (
    SPLITS,
    DatasetBundle,
    LoadReport,
    SplitData,
    check_labels_magnitude,
    check_lengths,
    clean_features,
    count_empty,
    finite_float32,
    lengths_from_right_padding,
    note_if_large,
    real_array,
    require_keys,
)
from mmfusion.data.mult import ids_from
from mmfusion.data.safe_pickle import safe_load
from mmfusion.errors import DataError
from mmfusion.io import atomic_write_bytes

REQUIRED = ("text", "audio", "vision", "audio_lengths", "vision_lengths", "regression_labels")
KNOWN = (*REQUIRED, "text_bert", "id", "raw_text", "classification_labels", "annotations")
"""Every key the layout defines (the legacy labels and ``raw_text`` are read by no model here; others are noted)."""


def mask_lengths(mask: np.ndarray, *, file: str, split: str, ids: list[str] | None) -> np.ndarray:
    """Lengths (N,) from the attention-mask row of ``text_bert`` (N, T): each row must be ones then zeros (a
    prefix); a row with gaps would be read as its count of ones and cut the clip's text, so it is refused, naming
    the clip."""
    on = mask != 0
    if not np.isin(mask, (0, 1)).all():
        i = int(np.argmax(~np.isin(mask, (0, 1)).all(-1)))
        raise DataError("attention mask holds values other than 0 and 1", file=file, split=split,
                        key="text_bert", expected="row 1 (attention mask) of 0s and 1s",
                        actual=f"{mask[i][~np.isin(mask[i], (0, 1))][0]!r} in clip {i}"
                               + (f" ({ids[i]!r})" if ids else ""))
    L = on.sum(-1)
    prefix = np.arange(mask.shape[1])[None, :] < L[:, None]
    gaps = (on != prefix).any(-1)
    if gaps.any():
        i = int(np.argmax(gaps))
        raise DataError("attention mask with gaps (a real token after padding)", file=file, split=split,
                        key="text_bert", expected="row 1 (attention mask) of each clip: ones, then zeros",
                        actual=f"{''.join('1' if v else '0' for v in on[i][:80])}{'...' * (len(on[i]) > 80)} "
                               f"in clip {i}"
                               + (f" ({ids[i]!r})" if ids else ""))
    return L.astype(np.int64)


def read_mmsa(path: str | Path) -> DatasetBundle:
    """Read an MMSA-layout pickle. Errors name the file, split, key, expected and actual value."""
    file = str(path)
    raw = safe_load(path)
    require_keys(raw, SPLITS, file=file, split=None, what="split")
    report = LoadReport()
    splits = {}
    for split in SPLITS:
        d = raw[split]
        require_keys(d, REQUIRED, file=file, split=split, what="split")
        report.extra_keys(split, list(d), KNOWN)
        labels = real_array(d["regression_labels"], file=file, split=split, key="regression_labels",
                            expected="(N,) sentiment scores")
        if labels.ndim not in (1, 2) or labels.ndim == 2 and labels.shape[1] != 1:
            raise DataError("wrong label shape", file=file, split=split, key="regression_labels",
                            expected="(N,) sentiment scores", actual=f"{labels.shape}")
        labels = finite_float32(labels.reshape(-1), file=file, split=split, key="regression_labels")
        check_labels_magnitude(labels, split=split, key="regression_labels", report=report)
        n = labels.shape[0]
        ids = ids_from(d["id"], n, file=file, split=split) if "id" in d else [f"{split}_{i:05d}" for i in range(n)]
        features, lengths = {}, {}
        for m in ("text", "vision", "audio"):
            x = clean_features(d[m], file=file, split=split, key=m, report=report, expected_n=n)
            T = x.shape[1]
            if m == "text":
                if "text_bert" in d:
                    tb = real_array(d["text_bert"], file=file, split=split, key="text_bert",
                                    expected=f"({n}, 3, {T}) BERT inputs")
                    if tb.ndim != 3 or tb.shape[0] != n or tb.shape[1] != 3 or tb.shape[2] != T:
                        raise DataError("wrong shape", file=file, split=split, key="text_bert",
                                        expected=f"({n}, 3, {T})", actual=f"{tb.shape}")
                    L = mask_lengths(tb[:, 1], file=file, split=split, ids=ids if "id" in d else None)
                else:
                    L = lengths_from_right_padding(x)
            else:
                L = check_lengths(d[f"{m}_lengths"], T, n, file=file, split=split, key=f"{m}_lengths")
            x[np.arange(T)[None, :] >= L[:, None]] = 0.0  # frames past the length are padding
            features[m], lengths[m] = x, L
        splits[split] = SplitData(features, lengths, labels, ids)
        count_empty(splits[split], split, report)
    note_if_large(splits, f"mmsa:{file}", report)
    return DatasetBundle(name=Path(file).parent.name or Path(file).stem, task="regression", splits=splits,
                         source=f"mmsa:{file}", report=report)


def write_mmsa(path: str | Path, splits: Mapping[str, SplitData], *,
               lengths: Mapping[str, int] | None = None) -> Path:
    """Write regression splits in the MMSA layout (right-padded, with length arrays and ``text_bert``)."""
    out = {}
    for name, s in splits.items():
        d: dict[str, object] = {}
        for m in ("text", "audio", "vision"):
            x, L = s.features[m], s.lengths[m]
            T = (lengths or {}).get(m, x.shape[1])
            arr = np.zeros((len(s), T, x.shape[2]), dtype=np.float32)
            n = min(T, x.shape[1])
            arr[:, :n] = x[:, :n]
            d[m] = arr
            if m != "text":
                d[f"{m}_lengths"] = np.minimum(L, T).astype(np.int64).tolist()
        T_t = d["text"].shape[1]  # type: ignore[union-attr]
        bert = np.zeros((len(s), 3, T_t), dtype=np.float32)
        bert[:, 1] = np.arange(T_t)[None, :] < np.minimum(s.lengths["text"], T_t)[:, None]
        d["text_bert"] = bert
        d["regression_labels"] = s.labels.astype(np.float32)
        d["id"] = np.asarray(s.ids)
        d["raw_text"] = np.asarray(["" for _ in s.ids])
        out[name] = d
    return atomic_write_bytes(path, pickle.dumps(out, protocol=4))
