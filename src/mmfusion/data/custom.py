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

String attributes may be variable- or fixed-length, UTF-8 or ASCII, and null- or space-padded (as C, MATLAB or
h5py write them), and a one-element array holds its one value; ``emotions`` may also be an array of names.
Everything must be stored in the file itself: external links, external raw storage and virtual datasets (which
point into other files) are refused.

A file whose features exceed :data:`LAZY_ABOVE` bytes (as float32), or any file with ``lazy=True``, is read
lazily: it is checked once, block by block, with the same checks as an in-memory read, and then each batch reads
its samples from the file (in the DataLoader's worker processes where ``train.num_workers`` > 0), through a
bounded chunk cache. The values a model sees are the same either way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmfusion.batch import MODALITIES
from mmfusion.data import dataset as _dataset_module
from mmfusion.data.dataset import (
    ABSURD_FEATURE,
    SPLITS,
    DatasetBundle,
    LoadReport,
    SplitData,
    check_feature_shape,
    check_labels_magnitude,
    check_lengths,
    clean_block,
    clean_features,
    count_empty,
    finite_float32,
    real_array,
)
from mmfusion.errors import ConfigError, DataError
from mmfusion.io import atomic_path

FORMAT_VERSION = 1
CHUNK_CACHE_BYTES = 4 * 2**20
"""HDF5's chunk cache per feature array and process when reading lazily (HDF5's default is 1 MiB)."""
MAX_LAZY_CHUNK_BYTES = 64 * 2**20
"""The largest chunk a lazy read accepts: reading one sample decompresses its whole chunk."""
SCAN_BLOCK_BYTES = 8 * 2**20
"""How much of a feature array a lazy read checks at a time (as float32)."""
MAX_EXPANSION = 2000
"""No compression HDF5 ships stores data in less than 1/1000 of its size (deflate's limit is about 1:1032): an
array declaring more than this many times the bytes the file stores for it (above 1 MiB) is refused before
anything is allocated."""


def write_custom(path: str | Path, bundle: DatasetBundle) -> Path:
    """Write a dataset in the mmfusion HDF5 format (to a temporary name, then renamed into place).

    Feature arrays are chunked by whole samples (a lazy read decompresses only the samples it needs) and written
    a block of samples at a time, so a lazily read bundle converts without being loaded whole."""
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
                x = s.features[m]
                n, T, d = x.shape
                sample = max(1, T * d * 4)
                rows = int(max(1, min(n, 2**16 // sample)))  # chunks of whole samples, >= 64 KiB where small
                frames = int(min(T, max(1, 2**22 // (4 * d))))  # ... and <= 4 MiB where a sample is large
                ds = gm.create_dataset("features", shape=(n, T, d), dtype=np.float32, compression="gzip",
                                       compression_opts=1, chunks=(rows, frames, d) if n else None)
                step = max(rows, SCAN_BLOCK_BYTES // sample // rows * rows)
                for a in range(0, n, step):
                    ds[a:a + step] = np.asarray(x[a:a + step], dtype=np.float32)
                gm.create_dataset("lengths", data=s.lengths[m].astype(np.int64))
            if s.labeled:
                g.create_dataset("labels", data=s.labels)
            g.create_dataset("ids", data=np.array(s.ids, dtype=object), dtype=h5py.string_dtype())
    return path


def _human(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{n} B"
        n /= 1000  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _child(parent: h5py.Group, name: str, *, file: str, split: str | None, key: str) -> h5py.Group | h5py.Dataset:
    """``parent[name]``, refusing links out of the file (which would read another file) and broken links."""
    try:
        link = parent.get(name, getlink=True)
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"unreadable entry ({exc})", file=file, split=split, key=key) from None
    if link is None:
        raise DataError("missing key", file=file, split=split, key=key, expected=f"an entry {name!r}",
                        actual=f"keys {sorted(parent)}")
    if isinstance(link, h5py.ExternalLink):
        raise DataError("an external link (into another file), which mmfusion does not follow", file=file,
                        split=split, key=key, expected="data stored in this file",
                        actual=f"a link to {link.filename}:{link.path}")
    try:
        obj = parent[name]
    except (KeyError, OSError, RuntimeError, ValueError) as exc:
        raise DataError(f"a broken link ({exc})", file=file, split=split, key=key,
                        expected="an entry that exists", actual=getattr(link, "path", "?")) from None
    if isinstance(obj, h5py.Dataset):
        try:
            external, virtual = obj.external, obj.is_virtual
        except (OSError, RuntimeError, ValueError):  # pragma: no cover - depends on the HDF5 build
            external, virtual = None, False
        if external or virtual:
            raise DataError("an array stored in other files (external storage or a virtual dataset), which mmfusion "
                            "does not read", file=file, split=split, key=key, expected="data stored in this file",
                            actual="external storage" if external else "a virtual dataset")
    return obj


def _group(parent: h5py.Group, name: str, *, file: str, split: str | None, key: str) -> h5py.Group:
    obj = _child(parent, name, file=file, split=split, key=key)
    if not isinstance(obj, h5py.Group):
        raise DataError("expected a group", file=file, split=split, key=key, expected="an HDF5 group",
                        actual="a dataset")
    return obj


def _dataset(parent: h5py.Group, name: str, *, file: str, split: str, key: str) -> h5py.Dataset:
    obj = _child(parent, name, file=file, split=split, key=key)
    if not isinstance(obj, h5py.Dataset):
        raise DataError("expected a dataset", file=file, split=split, key=key, expected="an HDF5 dataset",
                        actual="a group")
    _check_storage(obj, file=file, split=split, key=key)
    return obj


def _check_storage(ds: h5py.Dataset, *, file: str, split: str, key: str) -> None:
    """Refuse an array that declares far more data than the file stores for it (a few KB declaring petabytes),
    before anything is allocated for it."""
    declared = int(np.prod([int(v) for v in ds.shape], dtype=object)) * int(ds.dtype.itemsize) if ds.shape else 0
    if declared <= 2**20:
        return
    try:
        stored = int(ds.id.get_storage_size())
    except (OSError, RuntimeError, ValueError):  # pragma: no cover
        stored = 0
    if declared > MAX_EXPANSION * stored:
        raise DataError("an array declaring far more data than the file stores for it", file=file, split=split,
                        key=key, expected=f"at most {MAX_EXPANSION}x the {_human(stored)} stored",
                        actual=f"shape {tuple(ds.shape)} of {ds.dtype} = {_human(declared)}")


def _read(ds: h5py.Dataset, *, file: str, split: str, key: str, sel: Any = ()) -> np.ndarray:
    """``ds[sel]`` as a numpy array; an unreadable array (damaged chunk, missing filter, an HDF5 type numpy has no
    counterpart for) or one too large for memory is a :class:`DataError`."""
    try:
        return np.asarray(ds[sel])
    except MemoryError:
        raise DataError("an array too large for this machine's memory", file=file, split=split, key=key,
                        expected="an array that fits (or --set data_args.lazy=true to read features lazily)",
                        actual=f"shape {tuple(ds.shape)} of {ds.dtype}") from None
    except (OSError, TypeError, ValueError, RuntimeError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable array ({type(exc).__name__}: {str(exc)[:200]})", file=file, split=split,
                        key=key) from None


def _attr(h5: h5py.File, name: str, *, file: str) -> Any:
    """Attribute ``name`` of the file's root (None when absent); a one-element array gives its element."""
    try:
        raw = h5.attrs.get(name)
    except (OSError, TypeError, ValueError, RuntimeError, KeyError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable attribute ({type(exc).__name__}: {str(exc)[:200]})", file=file, key=name) \
            from None
    if isinstance(raw, np.ndarray) and raw.dtype != object and raw.size == 1 or (
            isinstance(raw, np.ndarray) and raw.dtype == object and raw.size == 1):
        raw = raw.reshape(-1)[0]
    return raw


def _text(raw: Any, *, file: str, key: str, what: str = "a string") -> str:
    """A string attribute value as text: variable- or fixed-length, UTF-8 bytes or str, padding stripped."""
    if isinstance(raw, np.ndarray):
        raise DataError("an array where one value belongs", file=file, key=key, expected=what,
                        actual=f"an array of shape {raw.shape}")
    if isinstance(raw, (bytes, np.bytes_)):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise DataError("text that is not UTF-8", file=file, key=key, expected=what,
                            actual=repr(bytes(raw)[:60])) from None
    if not isinstance(raw, str):
        raise DataError("not a string", file=file, key=key, expected=what, actual=f"{type(raw).__name__} {raw!r}"[:80])
    return raw.rstrip("\x00 ").strip()


def _emotions(raw: Any, task: str, *, file: str) -> tuple[str, ...]:
    """The emotion names: a comma-separated string or an array of names; for the emotion task, at least one, each
    non-empty and none twice."""
    if raw is None:
        names: list[str] = []
    elif isinstance(raw, np.ndarray) and raw.ndim == 1:
        names = [_text(v, file=file, key="emotions", what="names of emotions") for v in raw]
    else:
        text = _text(raw, file=file, key="emotions", what='names of emotions, e.g. "neutral,happy,sad,angry"')
        names = [e.strip() for e in text.split(",")] if text else []
    if task != "emotion":
        return tuple(e for e in names if e)
    if not names:
        raise DataError("the emotion task needs the names of its emotions", file=file, key="emotions",
                        expected='names such as "neutral,happy,sad,angry"', actual=repr(raw)[:80])
    if "" in names:
        raise DataError("an empty emotion name", file=file, key="emotions", expected="non-empty names",
                        actual=repr(",".join(names))[:80])
    repeated = sorted({e for e in names if names.count(e) > 1})
    if repeated:
        raise DataError("an emotion named twice (its label columns could not be told apart)", file=file,
                        key="emotions", expected="distinct names", actual=f"{repeated[0]!r} in {names}"[:120])
    return tuple(names)


def _header(h5: h5py.File, *, file: str) -> tuple[str, tuple[str, ...]]:
    """Check the root attributes; the task and the emotion names."""
    fmt = _attr(h5, "format", file=file)
    if fmt is None or _text(fmt, file=file, key="format") != "mmfusion":
        raise DataError("not an mmfusion dataset", file=file, key="format", expected="'mmfusion'",
                        actual=repr(fmt)[:80])
    version = _attr(h5, "version", file=file)
    version = FORMAT_VERSION if version is None else version
    ok = isinstance(version, (int, np.integer)) or (  # MATLAB writes numbers as doubles
        isinstance(version, (float, np.floating)) and np.isfinite(version) and float(version).is_integer())
    if not ok or not 1 <= int(version) <= FORMAT_VERSION:
        raise DataError("a format version this mmfusion cannot read (written by a newer one?)", file=file,
                        key="version", expected="an integer, " + (f"1 to {FORMAT_VERSION}" if FORMAT_VERSION > 1
                                                                  else "1"), actual=repr(version)[:80])
    raw_task = _attr(h5, "task", file=file)
    task = "regression" if raw_task is None else _text(raw_task, file=file, key="task")
    if task not in ("regression", "emotion"):
        raise DataError("unknown task", file=file, key="task", expected="regression or emotion", actual=task[:80])
    return task, _emotions(_attr(h5, "emotions", file=file), task, file=file)


def _ids(ds: h5py.Dataset, n: int, *, file: str, split: str) -> list[str]:
    raw = _read(ds, file=file, split=split, key="ids")
    if raw.ndim != 1:
        raise DataError("wrong id array", file=file, split=split, key="ids", expected=f"({n},) strings",
                        actual=f"shape {raw.shape}")
    if len(raw) != n:
        raise DataError("number of ids differs from the number of clips", file=file, split=split,
                        key="ids", expected=f"{n} ids", actual=f"{len(raw)}")
    ids = []
    for i, v in enumerate(raw):
        if isinstance(v, (bytes, np.bytes_)):
            try:
                v = bytes(v).decode("utf-8")
            except UnicodeDecodeError:
                raise DataError("an id that is not UTF-8 text", file=file, split=split, key="ids",
                                expected="UTF-8 strings", actual=f"{bytes(v)[:40]!r} at clip {i}") from None
        ids.append(str(v))
    return ids


def _declared_feature_bytes(h5: h5py.File, *, file: str) -> int:
    """The size of every feature array as float32 (what an in-memory read holds); entries that are not as the
    format says are skipped here and refused by the read itself."""
    total = 0
    for split in SPLITS:
        for m in MODALITIES:
            try:
                g = _group(_group(h5, split, file=file, split=split, key=split), m, file=file, split=split, key=m)
                ds = _child(g, "features", file=file, split=split, key=f"{m}/features")
            except DataError:
                continue
            if isinstance(ds, h5py.Dataset) and ds.shape:
                total += int(np.prod([int(v) for v in ds.shape], dtype=object)) * 4
    return total


class H5Features:
    """(N, T, d) float32 features of one split and modality, read from an mmfusion HDF5 file on demand.

    Indexing reads only the samples asked for (``x[rows]``, ``x[rows, :T]``; rows an integer, slice or index
    array) and gives what the in-memory reader would hold: float32, ``-inf`` replaced by 0, frames past each
    sample's length zero. Each process opens the file itself (so DataLoader workers do), with a chunk cache of
    :data:`CHUNK_CACHE_BYTES`. ``np.asarray(x)`` reads the whole array (for code that needs all of it)."""

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, path: str, name: str, shape: tuple[int, int, int], lengths: np.ndarray,
                 cache_bytes: int = CHUNK_CACHE_BYTES) -> None:
        self.path, self.name, self.shape = path, name, tuple(int(v) for v in shape)
        self.lengths = lengths
        self.cache_bytes = cache_bytes
        self._ds: h5py.Dataset | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getstate__(self) -> dict[str, Any]:  # sent to worker processes without the open file
        return {**self.__dict__, "_ds": None, "_pid": None}

    def __repr__(self) -> str:
        return f"H5Features({self.path!r}, {self.name!r}, shape={self.shape})"

    def _dataset(self) -> h5py.Dataset:
        if self._ds is None or self._pid != os.getpid():  # a forked worker opens its own handle
            f = h5py.File(self.path, "r", rdcc_nbytes=self.cache_bytes, rdcc_nslots=10007)
            self._ds, self._pid = f[self.name], os.getpid()
        return self._ds

    def _rows(self, rows: np.ndarray, frames: int) -> np.ndarray:
        """Samples ``rows`` (1-D index array), their first ``frames`` frames, as the in-memory reader holds them."""
        ds = self._dataset()
        out = np.empty((len(rows), frames, self.shape[2]), np.float32)
        if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
            out[:] = ds[int(rows[0]):int(rows[0]) + len(rows), :frames]  # one contiguous read
        else:
            for k, r in enumerate(rows):
                out[k] = ds[int(r), :frames]
        out[np.isneginf(out)] = 0.0
        out[np.arange(frames)[None, :] >= self.lengths[rows][:, None]] = 0.0
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, np.ndarray) and rows.dtype == bool and rows.ndim > 1:
            return np.asarray(self)[key]
        idx = np.arange(self.shape[0])[rows]
        frames = self.shape[1]
        if rest and isinstance(rest[0], slice) and rest[0].start in (None, 0) and rest[0].step in (None, 1):
            frames = len(range(*rest[0].indices(self.shape[1])))  # x[rows, :T]: read only those frames
            rest = (slice(None),) + rest[1:]
        if idx.ndim == 0:
            return self._rows(idx.reshape(1), frames)[0][rest]
        if idx.ndim > 1:
            return np.asarray(self)[key]
        return self._rows(idx, frames)[(slice(None), *rest)]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self._rows(np.arange(self.shape[0]), self.shape[1])
        return out if dtype is None else out.astype(dtype)

    def astype(self, dtype: Any) -> np.ndarray:
        return np.asarray(self).astype(dtype)


def _blocks(n: int, row_bytes: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    step = max(1, SCAN_BLOCK_BYTES // max(row_bytes, 1))
    step = max(chunk_rows, step // chunk_rows * chunk_rows)  # whole chunks: each is decompressed once
    for a in range(0, n, step):
        yield a, min(n, a + step)


def _scan_features(ds: h5py.Dataset, *, file: str, split: str, key: str, report: LoadReport) -> None:
    """The value checks :func:`clean_features` makes, block by block, of an array whose shape was checked (the
    lazy reader keeps nothing it reads here)."""
    n, T, d = ds.shape
    chunk_rows = ds.chunks[0] if ds.chunks else 1
    if ds.chunks and int(np.prod(ds.chunks)) * ds.dtype.itemsize > MAX_LAZY_CHUNK_BYTES:
        raise DataError("chunks too large to read sample by sample", file=file, split=split, key=key,
                        expected=f"chunks of at most {MAX_LAZY_CHUNK_BYTES // 2**20} MiB (rewrite the file with "
                                 f"`mmfusion convert h5:FILE NEW.h5`, or h5repack -l CHUNK=1x{T}x{d})",
                        actual=f"chunks {ds.chunks}")
    biggest = 0.0
    for a, b in _blocks(n, T * d * 4, chunk_rows):
        raw = _read(ds, file=file, split=split, key=key, sel=np.s_[a:b])
        _, top = clean_block(raw, file=file, split=split, key=key, report=report, row0=a)
        biggest = max(biggest, top)
    report.magnitude(split, key, biggest, limit=ABSURD_FEATURE)


def read_custom(path: str | Path, *, lazy: bool | None = None) -> DatasetBundle:
    """Read the mmfusion HDF5 format with the same validation as the other readers.

    ``lazy``: read features from the file batch by batch instead of into memory (None: when they exceed
    :data:`LAZY_ABOVE` bytes as float32). Either way every value is checked before the bundle is returned."""
    file = str(path)
    if lazy is not None and not isinstance(lazy, bool):
        raise ConfigError("lazy must be true, false or null (automatic)", source="data_args", key="lazy",
                          expected="true, false or null", actual=lazy)
    if not Path(path).exists():
        raise DataError("file not found", file=file)
    try:
        h5 = h5py.File(path, "r")
    except (OSError, ValueError) as exc:
        raise DataError(f"not a readable HDF5 file ({exc})", file=file) from None
    report = LoadReport()
    with h5:
        task, emotions = _header(h5, file=file)
        raw_set = _attr(h5, "feature_set", file=file)  # written by `mmfusion extract`: which extractors, which version
        feature_set = None if raw_set is None else _text(raw_set, file=file, key="feature_set")
        if lazy is None:
            lazy = _declared_feature_bytes(h5, file=file) > _dataset_module.LAZY_ABOVE
        splits = {}
        try:
            keys = list(h5)
        except (OSError, RuntimeError, UnicodeDecodeError) as exc:
            raise DataError(f"unreadable file ({exc})", file=file) from None
        if not any(split in keys for split in SPLITS):
            raise DataError("no split", file=file, expected=f"one or more of {list(SPLITS)}", actual=keys[:20])
        report.extra_keys(None, keys, SPLITS)
        for split in [s for s in SPLITS if s in keys]:
            splits[split] = _read_split(h5, split, file=file, task=task, emotions=emotions, lazy=lazy,
                                        report=report)
            count_empty(splits[split], split, report)
    if lazy:
        report.notes.append("features are read from the file batch by batch (lazy)")
    return DatasetBundle(name=Path(file).stem, task=task, splits=splits, source=f"h5:{file}",  # type: ignore[arg-type]
                         emotions=emotions, report=report, feature_set=feature_set)


def _read_split(h5: h5py.File, split: str, *, file: str, task: str, emotions: tuple[str, ...], lazy: bool,
                report: LoadReport) -> SplitData:
    g = _group(h5, split, file=file, split=split, key=split)
    try:
        keys = list(g)
    except (OSError, RuntimeError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable group ({exc})", file=file, split=split) from None
    mods = [m for m in MODALITIES if m in keys]
    report.extra_keys(split, keys, (*MODALITIES, "labels", "ids"))
    groups = {m: _group(g, m, file=file, split=split, key=m) for m in mods}
    if not mods:
        raise DataError("no modality group", file=file, split=split, expected=list(MODALITIES), actual=keys[:20])
    labeled = "labels" in keys  # clips without labels can be predicted, not trained or scored on
    if labeled:
        raw_labels = _read(_dataset(g, "labels", file=file, split=split, key="labels"), file=file, split=split,
                           key="labels")
        labels = real_array(raw_labels, file=file, split=split, key="labels",
                            expected="(N,) scores or (N, E) emotions in {0, 1}")
        if labels.ndim == 0:
            raise DataError("labels must be an array", file=file, split=split, key="labels",
                            expected="(N,) scores or (N, E) emotions in {0, 1}", actual="a scalar")
        n = labels.shape[0]
    else:
        first = _dataset(groups[mods[0]], "features", file=file, split=split, key=f"{mods[0]}/features")
        n = int(first.shape[0]) if first.shape else 0
        labels = (np.full((n, len(emotions)), -1, np.int64) if task == "emotion"
                  else np.full(n, np.nan, np.float32))
    features: dict[str, Any] = {}
    lengths = {}
    for m in mods:
        mkeys = list(groups[m])
        for key in ("features", "lengths"):
            if key not in mkeys:
                raise DataError("missing key", file=file, split=split, key=f"{m}/{key}",
                                expected="features and lengths", actual=mkeys[:20])
        report.extra_keys(f"{split}/{m}", mkeys, ("features", "lengths"))
        ds = _dataset(groups[m], "features", file=file, split=split, key=f"{m}/features")
        if ds.shape is None:  # an empty dataspace
            raise DataError("an empty array", file=file, split=split, key=f"{m}/features",
                            expected="float array (N, T, d)", actual="no data space")
        check_feature_shape(ds.dtype, ds.shape, file=file, split=split, key=f"{m}/features", expected_n=n)
        T = int(ds.shape[1])
        L = check_lengths(_read(_dataset(groups[m], "lengths", file=file, split=split, key=f"{m}/lengths"),
                                file=file, split=split, key=f"{m}/lengths"),
                          T, n, file=file, split=split, key=f"{m}/lengths")
        if lazy:
            _scan_features(ds, file=file, split=split, key=f"{m}/features", report=report)
            features[m] = H5Features(file, ds.name, ds.shape, L)
        else:
            x = clean_features(_read(ds, file=file, split=split, key=f"{m}/features"), file=file, split=split,
                               key=f"{m}/features", report=report, expected_n=n)
            x[np.arange(x.shape[1])[None, :] >= L[:, None]] = 0.0
            features[m] = x
        lengths[m] = L
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
        check_labels_magnitude(labels, split=split, key="labels", report=report)
    if "ids" in keys:
        ids = _ids(_dataset(g, "ids", file=file, split=split, key="ids"), n, file=file, split=split)
    else:
        ids = [f"{split}_{i:05d}" for i in range(n)]
    return SplitData(features, lengths, labels, ids, labeled=labeled)
