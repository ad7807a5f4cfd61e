"""In-memory splits shared by all readers, their validation, and batching into :class:`mmfusion.batch.Batch`.

Every reader converts its file into :class:`SplitData`: per modality a float32 array (N, T_m, d_m) whose real
frames come first (readers of left-padded files move them), plus the valid lengths (N,). Keeping one alignment
lets the collate function trim each batch to its longest sample; models never rely on it (they read the masks).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from mmfusion.batch import MODALITIES, Batch, lengths_to_mask
from mmfusion.errors import DataError

SPLITS: tuple[str, ...] = ("train", "valid", "test")
Task = Literal["regression", "emotion", "classification"]


@dataclass
class SplitData:
    """One split. ``features[m]``: (N, T_m, d_m) float32 with real frames first; ``lengths[m]``: (N,) int64;
    ``labels``: (N,) float32 (regression) or (N, E) int64 (E binary emotions); ``ids``: N strings;
    ``extras``: optional per-sample arrays (N, ...) such as the built-in benchmark's term values.
    ``labeled`` is False for clips without labels (mmfusion's HDF5 format allows them, to predict new clips); their
    ``labels`` are then placeholders (NaN scores, or -1 per emotion) that no metric or loss may read.

    Clip datasets (raw video/audio for MSAF's networks) have fixed-size arrays and no ``lengths``; their splits may
    share one (memory-mapped) array and select their samples with ``rows``."""

    features: dict[str, np.ndarray]
    lengths: dict[str, np.ndarray]
    labels: np.ndarray
    ids: list[str]
    extras: dict[str, np.ndarray] = field(default_factory=dict)
    rows: np.ndarray | None = None
    labeled: bool = True
    augment: Any = None  # clip datasets: training-only augmentation of a batch's float features (dict -> dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.features] + [m for m in self.features if m not in MODALITIES]



@dataclass
class LoadReport:
    """What a reader changed or noticed: replaced ``-inf`` values, empty (missing) streams, truncations, keys it
    ignored, and warnings (values of an absurd magnitude) that do not stop the load but may explain a failed run.

    ``split`` says where the train/valid/test split came from (e.g. a dataset's standard folds); ``caveats`` are
    statements every result on this data must carry (a non-standard split): the engine copies them into
    ``metrics.json`` and the summaries. ``release`` names the public release the file was recognised as."""

    neg_inf: dict[str, int] = field(default_factory=dict)  # "split/modality" -> count of values replaced
    empty: dict[str, int] = field(default_factory=dict)  # "split/modality" -> samples with length 0
    notes: list[str] = field(default_factory=list)
    split: str | None = None
    caveats: list[str] = field(default_factory=list)
    release: dict[str, Any] | None = None
    max_abs: dict[str, float] = field(default_factory=dict)  # "split/key" -> largest magnitude of its values
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"neg_inf_replaced": dict(self.neg_inf), "empty_streams": dict(self.empty), "notes": list(self.notes),
                "split": self.split, "caveats": list(self.caveats), "release": self.release,
                "max_abs": dict(self.max_abs), "warnings": list(self.warnings)}

    def lines(self) -> list[str]:
        out = list(self.caveats)
        out += [self.release["line"]] if self.release and self.release.get("line") else []
        out += [f"split: {self.split}"] if self.split else []
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"replaced {n} -inf values by 0 in {k}" for k, n in self.neg_inf.items() if n]
        out += [f"{n} samples have no {k.split('/')[1]} frames in {k.split('/')[0]}" for k, n in self.empty.items()
                if n]
        return out + self.notes

    def magnitude(self, split: str, key: str, value: float, *, limit: float) -> None:
        """Record the largest magnitude of ``split/key``; above ``limit`` (no real feature or label comes near it,
        see :data:`ABSURD_FEATURE` and :data:`ABSURD_LABEL`) add a warning naming the key and the magnitude."""
        where = f"{split}/{key}"
        self.max_abs[where] = max(self.max_abs.get(where, 0.0), float(value))
        if value > limit:
            self.warnings.append(f"{where}: values up to {value:.3g} in magnitude (features and labels of real data "
                                 f"lie well within ±{limit:.0e}); a file written with the wrong scale or units? "
                                 "Training on it is likely to diverge")

    def extra_keys(self, split: str | None, keys: Sequence[str], known: Sequence[str]) -> None:
        """Note the keys of a split (or file) this reader does not use, so they are not ignored silently."""
        extra = sorted(str(k) for k in keys if str(k) not in known)
        if extra:
            self.notes.append(f"{split + ': ' if split else ''}ignored {'key' if len(extra) == 1 else 'keys'} "
                              f"{', '.join(map(repr, extra[:10]))}{' ...' * (len(extra) > 10)} "
                              "(not part of the format)")


@dataclass
class DatasetBundle:
    """All splits of one dataset plus what the engine needs to know about it."""

    name: str
    task: Task
    splits: dict[str, SplitData]
    source: str
    emotions: tuple[str, ...] = ()
    report: LoadReport = field(default_factory=LoadReport)
    bayes: dict[str, float] | None = None  # metric ceilings, known only for the built-in benchmark
    feature_set: str | None = None  # how the features were extracted (``mmfusion extract``), when the file says

    def __post_init__(self) -> None:
        self.check_splits_agree()
        for name, s in self.splits.items():  # ids name clips in predictions.csv and explain --id
            counts = Counter(s.ids)
            repeated = [i for i, n in counts.items() if n > 1]
            if repeated:
                self.report.notes.append(f"{name}: clip ids occur more than once: {len(repeated)} id(s) in "
                                         f"{sum(counts[i] for i in repeated)} rows (first {repeated[0]!r}); rows "
                                         "of predictions.csv with such an id are told apart by order")

    def check_splits_agree(self) -> None:
        """Every split holds the same modalities with the same feature size (the whole per-sample shape for clip
        data) and labels of the same shape: a model built from one split must read the others. A
        :class:`DataError` names the file, the split and key that differ, and both values."""
        if not self.splits:
            return
        ref_name = "train" if "train" in self.splits else next(iter(self.splits))
        ref = self.splits[ref_name]

        def size(s: SplitData, m: str) -> tuple[int, ...]:
            x = s.features[m]
            return tuple(x.shape[-1:]) if m in s.lengths else tuple(x.shape[1:])

        def per_clip(labels: np.ndarray) -> str:  # (N,) or (N, 4)
            return "(N" + "".join(f", {d}" for d in labels.shape[1:]) + ("," if labels.ndim == 1 else "") + ")"

        for name, s in self.splits.items():
            if name == ref_name:
                continue
            if sorted(s.features) != sorted(ref.features):
                raise DataError("modalities differ across splits", file=self.source, split=name, key="modalities",
                                expected=f"{ref.modalities} (as in split {ref_name!r})", actual=s.modalities)
            for m in ref.modalities:
                if size(s, m) != size(ref, m):
                    what = "feature size" if m in ref.lengths else "sample shape"
                    raise DataError(f"{what} differs across splits", file=self.source, split=name,
                                    key=f"{m}/features",
                                    expected=f"{'x'.join(map(str, size(ref, m)))} (as in split {ref_name!r})",
                                    actual="x".join(map(str, size(s, m))))
            if s.labeled and ref.labeled and s.labels.shape[1:] != ref.labels.shape[1:]:
                raise DataError("label shape differs across splits", file=self.source, split=name, key="labels",
                                expected=f"{per_clip(ref.labels)} (as in split {ref_name!r})",
                                actual=per_clip(s.labels))

    @property
    def _first(self) -> SplitData:
        """The training split, or where a file holds only clips to predict, its first split."""
        return self.splits["train"] if "train" in self.splits else next(iter(self.splits.values()))

    @property
    def modalities(self) -> list[str]:
        return self._first.modalities

    @property
    def inputs(self) -> str:
        """"sequences" (feature sequences with lengths) or "clips" (fixed-size raw video/audio), as models declare
        what they read (:func:`mmfusion.models.model_inputs`)."""
        return "sequences" if self._first.lengths else "clips"

    @property
    def feature_dims(self) -> dict[str, int]:
        return {m: int(x.shape[-1]) for m, x in self._first.features.items()}

    def split(self, name: str, *, labeled: bool = True) -> SplitData:
        """Split ``name``; a :class:`DataError` naming the file if it is missing or empty, or (``labeled``) has no
        labels."""
        if name not in self.splits:
            raise DataError("missing split", file=self.source, key=name, expected=f"a {name!r} split",
                            actual=f"splits {list(self.splits)}")
        if len(self.splits[name]) == 0:  # a reader may give one (a tiny CSD folder); no command can use it
            raise DataError("a split without clips", file=self.source, split=name, expected="at least one clip",
                            actual="N=0")
        if labeled and not self.splits[name].labeled:
            raise DataError("this split has no labels (its clips can be predicted, not trained or scored on)",
                            file=self.source, split=name, key="labels", expected="labels", actual="none")
        return self.splits[name]

    @property
    def output_dim(self) -> int:
        """1 score (regression), 2 logits per emotion (emotion), one logit per class (classification)."""
        return {"regression": 1, "emotion": 2 * len(self.emotions), "classification": len(self.emotions)}[self.task]

    def describe(self) -> str:
        held = [s for s in SPLITS if s in self.splits]
        sizes = "/".join(str(len(self.splits[s])) for s in held)
        tr = self._first
        dims = ", ".join(f"{m} {tr.features[m].shape[1]}x{d}" if m in tr.lengths else
                         f"{m} {'x'.join(map(str, tr.features[m].shape[1:]))}" for m, d in self.feature_dims.items())
        return f"{self.name} ({self.task}; {'/'.join(held)} {sizes}; {dims})"


def lengths_from_left_padding(x: np.ndarray) -> np.ndarray:
    """Valid lengths (N,) of left-padded (N, T, d) data: the trailing frames from the first not-all-zero one."""
    nonzero = np.any(x != 0, axis=-1)  # (N, T)
    first = np.argmax(nonzero, axis=1)
    T = x.shape[1]
    return np.where(nonzero.any(axis=1), T - first, 0).astype(np.int64)


def lengths_from_right_padding(x: np.ndarray) -> np.ndarray:
    """Valid lengths (N,) of right-padded (N, T, d) data: up to and including the last not-all-zero frame."""
    nonzero = np.any(x != 0, axis=-1)
    T = x.shape[1]
    last = T - 1 - np.argmax(nonzero[:, ::-1], axis=1)
    return np.where(nonzero.any(axis=1), last + 1, 0).astype(np.int64)


def left_to_right(x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Move the last ``lengths[i]`` frames of each sample to the front, zeroing the rest. (N, T, d) -> same."""
    N, T = x.shape[:2]
    t = np.arange(T)[None, :]
    src = np.clip(t + (T - lengths)[:, None], 0, T - 1)  # (N, T)
    out = np.take_along_axis(x, src[:, :, None], axis=1)
    out[t.repeat(N, 0) >= lengths[:, None]] = 0
    return out


FLOAT32_MAX = float(np.finfo(np.float32).max)


def real_array(raw: Any, *, file: str, split: str | None, key: str, expected: str) -> np.ndarray:
    """``raw`` as a numpy array of real numbers (integer or floating dtype).

    A ragged nesting (rows of different lengths), strings, objects or complex numbers raise :class:`DataError`
    naming the file, split and key, with ``expected`` as the expected value.
    """
    if isinstance(raw, np.ndarray):
        arr = raw
    else:
        try:
            arr = np.asarray(raw)
        except (ValueError, TypeError):
            raise DataError("not a rectangular array (rows of different lengths?)", file=file, split=split,
                            key=key, expected=expected, actual=type(raw).__name__) from None
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError("not real numbers", file=file, split=split, key=key, expected=expected,
                        actual=f"dtype {arr.dtype}")
    return arr


def finite_float32(values: np.ndarray, *, file: str, split: str | None, key: str) -> np.ndarray:
    """``values`` as float32, refusing NaN, infinities and values beyond float32's range (which would become
    infinite)."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = values.astype(np.float32)
    if not np.isfinite(out).all():
        raise DataError("contains NaN, inf or values beyond float32's range", file=file, split=split, key=key,
                        expected=f"finite values within ±{FLOAT32_MAX:.3g}",
                        actual=f"{int((~np.isfinite(out)).sum())} such values")
    return out


LAZY_ABOVE = 2 * 2**30
"""Feature bytes (as float32) above which the HDF5 reader reads lazily by default, and the pickle readers (which
must hold everything in memory) suggest converting the file to HDF5."""


def note_if_large(splits: dict[str, SplitData], spec: str, report: LoadReport) -> None:
    """For readers that hold a whole file in memory: above :data:`LAZY_ABOVE`, note how to read it lazily."""
    total = sum(x.nbytes for s in splits.values() for x in s.features.values())
    if total > LAZY_ABOVE:
        report.notes.append(f"this file's features take {total / 1e9:.1f} GB of memory; `mmfusion convert {spec} "
                            "NAME.h5` writes them to mmfusion's HDF5 format, which is read lazily (batch by batch)")


ABSURD_FEATURE = 1e6
"""A feature magnitude no real extractor produces (GloVe, COVAREP, FACET, BERT values lie within a few thousand;
raw 16-bit audio within 32768): above it, the load report warns."""
ABSURD_LABEL = 1e6
"""A label magnitude no benchmark uses (sentiment scores lie within ±3): above it, the load report warns."""


def check_feature_shape(dtype: np.dtype, shape: tuple[int, ...], *, file: str, split: str, key: str,
                        expected_n: int | None) -> None:
    """The checks of a (N, T, d) feature array that need only its dtype and shape (shared by the in-memory and the
    lazy HDF5 reader, which checks a file's arrays before reading them)."""
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise DataError("not real numbers", file=file, split=split, key=key, expected="float array (N, T, d)",
                        actual=f"dtype {dtype}")
    if len(shape) != 3:
        raise DataError("wrong rank", file=file, split=split, key=key, expected="3 dims (N, T, d)",
                        actual=f"shape {tuple(shape)}")
    if expected_n is not None and shape[0] != expected_n:
        raise DataError("number of samples differs across keys", file=file, split=split, key=key,
                        expected=f"N={expected_n}", actual=f"N={shape[0]}")
    if shape[1] == 0 or shape[2] == 0:
        raise DataError("no frames or no features", file=file, split=split, key=key, expected="T >= 1 and d >= 1",
                        actual=f"shape {tuple(shape)}")


def clean_block(raw: np.ndarray, *, file: str, split: str, key: str, report: LoadReport, row0: int = 0
                ) -> tuple[np.ndarray, float]:
    """Samples ``row0 ...`` of a (n, T, d) real feature array as a float32 copy with ``-inf`` replaced by 0 (counted
    in ``report``), and the largest magnitude among them. NaN, ``+inf`` and values beyond float32's range raise
    :class:`DataError` naming the file, split, key and the first sample. The one value check of every reader: the
    in-memory readers pass whole arrays, the lazy HDF5 reader blocks of samples."""
    with np.errstate(over="ignore"):
        x = np.array(raw, dtype=np.float32, copy=True)
    if raw.dtype != np.float32:  # a finite value that became infinite in float32 (only looked for where any did)
        inf = np.isinf(x)
        if inf.any() and (overflow := inf & np.isfinite(raw)).any():
            i = tuple(np.argwhere(overflow)[0])
            raise DataError("values beyond float32's range", file=file, split=split, key=key,
                            expected=f"|value| <= {FLOAT32_MAX:.3g}",
                            actual=f"{raw[i]:.3g} at sample {row0 + i[0]}, frame {i[1]}")
    nan = np.isnan(x)
    if nan.any():
        where = np.argwhere(nan)[0]
        raise DataError("contains NaN", file=file, split=split, key=key, expected="finite values",
                        actual=f"{int(nan.sum())} NaN values, first at sample {row0 + where[0]}, frame {where[1]}")
    neg = np.isneginf(x)
    if neg.any():
        report.neg_inf[f"{split}/{key}"] = report.neg_inf.get(f"{split}/{key}", 0) + int(neg.sum())
        x[neg] = 0.0
    if np.isposinf(x).any():
        raise DataError("contains +inf", file=file, split=split, key=key, expected="finite values",
                        actual=f"{int(np.isposinf(x).sum())} +inf values")
    return x, float(np.abs(x).max()) if x.size else 0.0


def clean_features(
    x: Any, *, file: str, split: str, key: str, report: LoadReport, expected_n: int | None = None
) -> np.ndarray:
    """Check a (N, T, d) feature array and replace ``-inf`` by 0 (counted in ``report``).

    NaN, ``+inf``, a wrong rank or a wrong N raise :class:`DataError` naming the file, split and key; values of an
    absurd magnitude (above :data:`ABSURD_FEATURE`) add a warning to ``report``.
    """
    x = real_array(x, file=file, split=split, key=key, expected="float array (N, T, d)")
    check_feature_shape(x.dtype, x.shape, file=file, split=split, key=key, expected_n=expected_n)
    out, biggest = clean_block(x, file=file, split=split, key=key, report=report)
    report.magnitude(split, key, biggest, limit=ABSURD_FEATURE)
    return out


def check_labels_magnitude(labels: np.ndarray, *, split: str, key: str, report: LoadReport) -> None:
    """Warn (in ``report``) about regression labels of an absurd magnitude (above :data:`ABSURD_LABEL`)."""
    if labels.size:
        report.magnitude(split, key, float(np.abs(labels).max()), limit=ABSURD_LABEL)


def check_lengths(lengths: Any, T: int, n: int, *, file: str, split: str, key: str) -> np.ndarray:
    """Validate a length array (N,) against the sequence length T."""
    lengths = real_array(lengths, file=file, split=split, key=key, expected=f"({n},) integers")
    if lengths.ndim != 1 or lengths.shape[0] != n:
        raise DataError("length array has the wrong shape", file=file, split=split, key=key,
                        expected=f"({n},)", actual=f"{tuple(lengths.shape)}")
    bad = ~np.isfinite(lengths) | (lengths != np.round(lengths))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError("lengths must be whole numbers", file=file, split=split, key=key,
                        expected="integers", actual=f"{lengths[i]} at sample {i}")
    if (lengths < 0).any() or (lengths > T).any():
        i = int(np.argmax((lengths < 0) | (lengths > T)))
        raise DataError("length outside the sequence", file=file, split=split, key=key,
                        expected=f"0 <= length <= {T}", actual=f"{lengths[i]:g} at sample {i}")
    return lengths.astype(np.int64)


def require_keys(d: Any, keys: Sequence[str], *, file: str, split: str | None, what: str) -> None:
    if not isinstance(d, dict):
        raise DataError(f"{what} must be a dict", file=file, split=split, expected="dict",
                        actual=type(d).__name__)
    missing = [k for k in keys if k not in d]
    if missing:
        raise DataError(f"missing {what} key", file=file, split=split, key=missing[0],
                        expected=f"keys {list(keys)}", actual=f"keys {sorted(map(str, d))}")


def count_empty(split: SplitData, name: str, report: LoadReport) -> None:
    for m, lengths in split.lengths.items():
        report.empty[f"{name}/{m}"] = int((lengths == 0).sum())


class FusionDataset(torch.utils.data.Dataset):
    """Index dataset over a :class:`SplitData`; batching is done in :meth:`collate` by fancy indexing."""

    def __init__(self, split: SplitData, augment: bool = False) -> None:
        self.split = split
        self.augment = augment and split.augment is not None  # training batches only

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> int:
        return i

    def collate(self, indices: Sequence[int]) -> Batch:
        """Stack samples into a :class:`Batch`, trimming each modality to the longest sample in the batch."""
        idx = np.asarray(indices)
        features, masks = {}, {}
        for m in self.split.modalities:
            if m not in self.split.lengths:  # fixed-size clip arrays: no mask; uint8 video becomes [0, 1] floats
                rows = self.split.rows[idx] if self.split.rows is not None else idx
                x = torch.from_numpy(np.ascontiguousarray(self.split.features[m][rows]))
                features[m] = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                continue
            lengths = self.split.lengths[m][idx]
            T = max(int(lengths.max()), 1)
            features[m] = torch.from_numpy(np.ascontiguousarray(self.split.features[m][idx, :T]))
            masks[m] = lengths_to_mask(torch.from_numpy(lengths), T)
        labels = torch.from_numpy(self.split.labels[idx])
        if self.augment:
            features = self.split.augment(features)
        return Batch(features, masks, labels, [self.split.ids[i] for i in idx])
