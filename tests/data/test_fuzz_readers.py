"""Property-based test of the readers: random small MulT, MMSA and HDF5 files with random corruptions either load as
a valid bundle or raise mmfusion's own error (:class:`mmfusion.errors.MMFusionError`), never another exception.

The default run tries a fixed, small set of examples (a fixed seed: the same ones every run, a few seconds); the long
mode explores new random examples each run: ``pytest -m fuzz`` (``MMFUSION_FUZZ_EXAMPLES``, default 2000, sets how
many).
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, seed, settings
from hypothesis import strategies as st

from mmfusion.data import DatasetBundle, load_data
from mmfusion.errors import MMFusionError

SPLITS = ("train", "valid", "test")
MODS = ("text", "audio", "vision")

FUZZ_EXAMPLES = int(os.environ.get("MMFUSION_FUZZ_EXAMPLES", "2000"))
quick = settings(max_examples=100, deadline=None, database=None,
                 suppress_health_check=list(HealthCheck))
long = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

# --- random values a hostile or careless writer could put anywhere -------------------------------------------------

STRANGE_ARRAYS = ["float64_huge", "int", "uint8", "bool", "complex", "str", "bytes", "object", "float16", "nan",
                  "inf", "neg_inf", "empty", "scalar", "rank1", "rank4", "transposed", "shorter", "longer"]
STRANGE_VALUES = ["none", "str", "int", "float", "list_ragged", "list", "dict", "nested"]


def strange_array(kind: str, like: np.ndarray, rng: np.random.Generator) -> Any:
    """An array (or value) like ``like`` spoiled in one way."""
    x = np.array(like, copy=True)
    if x.dtype.kind not in "biuf":  # strings (ids): spoil a numeric stand-in of the same shape
        x = np.arange(x.size, dtype=np.float32).reshape(x.shape)
    if kind == "float64_huge":
        y = x.astype(np.float64)
        if y.size:
            y.flat[rng.integers(y.size)] = 1e300
        return y
    if kind == "int":
        return x.astype(np.int64) if np.isfinite(x).all() else np.zeros(x.shape, np.int64)
    if kind == "uint8":
        return np.full(x.shape, 200, np.uint8)
    if kind == "bool":
        return x != 0
    if kind == "complex":
        return x.astype(np.complex64)
    if kind == "str":
        return x.astype(str)
    if kind == "bytes":
        return np.full(x.shape, b"\xff\xfe", dtype="S2")
    if kind == "object":
        return np.array([object() for _ in range(max(x.size, 1))], dtype=object)[:x.size].reshape(x.shape) \
            if x.size else np.empty(x.shape, object)
    if kind == "float16":
        return x.astype(np.float16)
    if kind in ("nan", "inf", "neg_inf"):
        y = x.astype(np.float32)
        if y.size:
            y.flat[rng.integers(y.size)] = {"nan": np.nan, "inf": np.inf, "neg_inf": -np.inf}[kind]
        return y
    if kind == "empty":
        return np.zeros((0,) + x.shape[1:], x.dtype)
    if kind == "scalar":
        return np.asarray(x.flat[0] if x.size else 0.0)
    if kind == "rank1":
        return x.reshape(-1)
    if kind == "rank4":
        return x[..., None]
    if kind == "transposed":
        return np.swapaxes(x, 0, -1) if x.ndim > 1 else x[None]
    if kind == "shorter":
        return x[:-1]
    if kind == "longer":
        return np.concatenate([x, x[:1]]) if x.ndim else x
    raise AssertionError(kind)


def strange_value(kind: str) -> Any:
    return {"none": None, "str": "abc", "int": 3, "float": 2.5, "list_ragged": [[1.0, 2.0], [3.0]],
            "list": [1.0, 2.0], "dict": {"a": 1}, "nested": {"train": [1, 2]}}[kind]


# --- valid small files ---------------------------------------------------------------------------------------------

def base_split(rng: np.random.Generator, n: int, dims: dict[str, int], T: dict[str, int], emotions: int,
               padding: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
    feats, lengths = {}, {}
    for m in MODS:
        L = rng.integers(0, T[m] + 1, size=n)
        x = rng.normal(size=(n, T[m], dims[m])).astype(np.float32)
        t = np.arange(T[m])[None, :]
        x[(t >= L[:, None]) if padding == "right" else (t < (T[m] - L)[:, None])] = 0
        feats[m], lengths[m] = x, L.astype(np.int64)
    labels = (rng.integers(0, 2, size=(n, emotions)) if emotions else rng.uniform(-3, 3, size=n)).astype(
        np.int64 if emotions else np.float32)
    return feats, lengths, labels


def make_file(layout: str, rng: np.random.Generator, dims: dict[str, int], T: dict[str, int], emotions: int,
              sizes: tuple[int, int, int]) -> dict[str, Any]:
    """The content of a valid small file (the pickled dicts; for HDF5 a plan :func:`write_h5` follows)."""
    content: dict[str, Any] = {}
    for split, n in zip(SPLITS, sizes):
        f, L, y = base_split(rng, n, dims, T, emotions, "left" if layout == "mult" else "right")
        ids = np.array([f"{split}{i}" for i in range(n)])
        if layout == "mult":
            d: dict[str, Any] = dict(f)
            d["labels"] = (np.eye(2, dtype=np.float32)[y] if emotions else y.reshape(-1, 1, 1))
            d["id"] = ids
        elif layout == "mmsa":
            d = dict(f)
            d["audio_lengths"], d["vision_lengths"] = L["audio"].tolist(), L["vision"]
            bert = np.zeros((n, 3, T["text"]), np.float32)
            bert[:, 1] = np.arange(T["text"])[None, :] < L["text"][:, None]
            d["text_bert"], d["regression_labels"], d["id"] = bert, y, ids
        else:
            d = {**{f"{m}/features": f[m] for m in MODS}, **{f"{m}/lengths": L[m] for m in MODS}, "labels": y,
                 "ids": ids}
        content[split] = d
    if layout == "h5":
        content["attrs"] = {"format": "mmfusion", "version": 1, "task": "emotion" if emotions else "regression",
                            "emotions": "a,b" if emotions else ""}
    return content


@st.composite
def dataset_file(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    layout = draw(st.sampled_from(["mult", "mmsa", "h5"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dims = {m: draw(st.integers(1, 3)) for m in MODS}
    T = {m: draw(st.integers(1, 4)) for m in MODS}
    emotions = draw(st.sampled_from([0, 0, 2])) if layout != "mmsa" else 0
    sizes = tuple(draw(st.integers(1, 4)) for _ in SPLITS)
    return layout, make_file(layout, rng, dims, T, emotions, sizes)  # type: ignore[arg-type]


def _example(seed: int) -> tuple[str, dict[str, Any]]:
    rng = np.random.default_rng(seed)
    layout = ("mult", "mmsa", "h5")[seed % 3]
    emotions = 2 * (seed % 2) if layout != "mmsa" else 0
    return layout, make_file(layout, rng, {m: int(rng.integers(1, 4)) for m in MODS},
                             {m: int(rng.integers(1, 5)) for m in MODS}, emotions, (3, 2, 2))


CORRUPTIONS = ["array", "value", "delete", "extra", "attr", "gaps", "ids", "lengths", "group_for_dataset",
               "split_type"]


def corrupt(draw: st.DrawFn, layout: str, content: dict[str, Any]) -> None:
    kind = draw(st.sampled_from(CORRUPTIONS))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    split = draw(st.sampled_from(SPLITS))
    d = content[split]
    if not isinstance(d, dict) or not d:  # already replaced by something else
        return
    key = draw(st.sampled_from(sorted(d)))
    if kind == "array" and isinstance(d[key], np.ndarray):
        d[key] = strange_array(draw(st.sampled_from(STRANGE_ARRAYS)), d[key], rng)
    elif kind == "value":
        d[key] = strange_value(draw(st.sampled_from(STRANGE_VALUES)))
    elif kind == "delete":
        del d[key]
    elif kind == "extra":
        d[draw(st.sampled_from(["pose", "extra/features", "x"]))] = np.zeros((2, 2, 2), np.float32)
    elif kind == "attr" and layout == "h5":
        name = draw(st.sampled_from(["format", "version", "task", "emotions"]))
        content["attrs"][name] = draw(st.sampled_from([
            None, "", ",", "a,a", " mmfusion ", b"mmfusion", b"\xff\xfe", np.bytes_("emotion"), 2, 1.5, -1, 1e300,
            np.array(["mmfusion", "x"], dtype=h5py.string_dtype()), np.array([1, 2]), np.array([b"a", b"b"]),
            np.float64(1.0), "regression", "emotion", "a,b,c"]))
    elif kind == "gaps" and layout == "mmsa" and "text_bert" in d and isinstance(d["text_bert"], np.ndarray) \
            and d["text_bert"].ndim == 3 and d["text_bert"].shape[-1] > 1:
        d["text_bert"][0, 1] = 0
        d["text_bert"][0, 1, -1] = draw(st.sampled_from([1, 2, -1, 0.5]))
    elif kind == "ids":
        d["ids" if layout == "h5" else "id"] = draw(st.sampled_from([
            np.array([b"\xff"] * 9), np.array([1, 2, 3]), np.array([[b"a", b"b"]]), np.array(["x"]),
            np.array(["a", "b", "c", "d"]), np.array([b"caf\xe9", b"b", b"c", b"d"])]))
    elif kind == "lengths":
        for k in [k for k in d if k.endswith("lengths")][:1]:
            d[k] = draw(st.sampled_from([np.array([-1, 0, 1, 2]), np.array([99] * 4), np.array([0.5] * 4),
                                         [np.nan], np.array([[1]])]))
    elif kind == "group_for_dataset" and layout == "h5":
        d[key] = {"inner": np.zeros(3)}
    elif kind == "split_type":
        content[split] = draw(st.sampled_from([[1, 2], "split", None, np.zeros(3)]))


def write_h5(path: Path, content: dict[str, Any]) -> None:
    with h5py.File(path, "w") as h5:
        for k, v in content["attrs"].items():
            if v is not None:
                h5.attrs[k] = v
        for split in SPLITS:
            d = content[split]
            if not isinstance(d, dict):
                h5[split] = np.asarray(d if d is not None else 0) if not isinstance(d, str) else d
                continue
            g = h5.create_group(split)
            for key, v in d.items():
                if isinstance(v, dict):
                    sub = g.create_group(key)
                    for k2, v2 in v.items():
                        sub[k2] = v2
                    continue
                if v is None:
                    g[key] = h5py.Empty("f4")
                    continue
                arr = np.asarray(v) if not isinstance(v, (list, str)) or key == "x" else v
                try:
                    if isinstance(arr, np.ndarray) and arr.dtype.kind == "U":
                        arr = arr.astype(object)
                        g.create_dataset(key, data=arr, dtype=h5py.string_dtype())
                    elif isinstance(arr, np.ndarray) and arr.dtype == object:
                        continue  # HDF5 cannot hold Python objects: the key stays missing
                    else:
                        g[key] = arr
                except (TypeError, ValueError):
                    continue  # a value HDF5 itself cannot store: the key stays missing


def check_valid(bundle: DatasetBundle) -> None:
    """What a loaded bundle promises every model."""
    assert isinstance(bundle, DatasetBundle)
    for s in bundle.splits.values():
        n = len(s)
        assert len(s.ids) == n and all(isinstance(i, str) for i in s.ids)
        for m in s.modalities:
            x, L = np.asarray(s.features[m]), s.lengths[m]
            assert x.dtype == np.float32 and x.ndim == 3 and x.shape[0] == n and x.shape[2] >= 1
            assert L.shape == (n,) and ((0 <= L) & (L <= x.shape[1])).all()
            assert np.isfinite(x).all()
            assert not x[np.arange(x.shape[1])[None, :] >= L[:, None]].any()
        if s.labeled:
            if bundle.task == "regression":
                assert s.labels.shape == (n,) and np.isfinite(s.labels).all()
            else:
                assert s.labels.shape == (n, len(bundle.emotions)) and np.isin(s.labels, (0, 1)).all()
    bundle.check_splits_agree()


def load_or_refuse(layout: str, content: dict[str, Any], lazy: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / ("data.h5" if layout == "h5" else "unaligned_50.pkl" if layout == "mmsa" else "d.pkl")
        if layout == "h5":
            write_h5(path, content)
        else:
            path.write_bytes(pickle.dumps(content, protocol=4))
        try:
            bundle = load_data(f"{layout}:{path}", {"lazy": True} if lazy and layout == "h5" else None)
        except MMFusionError as exc:
            event(f"{layout}: refused: {str(exc).split(': ', 1)[-1][:30]}")
            return
        event(f"{layout}: loaded")
        check_valid(bundle)


@st.composite
def corrupted_file(draw: st.DrawFn) -> tuple[str, dict[str, Any], bool]:
    layout, content = draw(dataset_file())
    for _ in range(draw(st.integers(0, 3))):
        corrupt(draw, layout, content)
    return layout, content, draw(st.booleans())


@quick
@seed(38)  # the same examples every run
@given(corrupted_file())
def test_readers_load_or_refuse_by_name(case: tuple[str, dict[str, Any], bool]) -> None:
    load_or_refuse(*case)


@pytest.mark.fuzz
@long
@given(corrupted_file())
def test_readers_load_or_refuse_by_name_long(case: tuple[str, dict[str, Any], bool]) -> None:
    load_or_refuse(*case)


def test_the_generator_makes_valid_files_and_corrupt_ones():
    """The property is not vacuous: uncorrupted files load, and the corruptions reach the readers' errors."""
    loaded = refused = 0
    for number in range(12):
        layout, content = _example(number)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / ("data.h5" if layout == "h5" else "unaligned_50.pkl" if layout == "mmsa" else "d.pkl")
            write_h5(path, content) if layout == "h5" else path.write_bytes(pickle.dumps(content))
            check_valid(load_data(f"{layout}:{path}"))
            loaded += 1
            content["train"] = [1, 2]
            write_h5(path, content) if layout == "h5" else path.write_bytes(pickle.dumps(content))
            with pytest.raises(MMFusionError):
                load_data(f"{layout}:{path}")
            refused += 1
    assert loaded == refused == 12
