"""Builders of small files in the real layouts, with published feature sizes and random content."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmfusion.data.dataset import SplitData
from mmfusion.data.mmsa import write_mmsa
from mmfusion.data.mult import write_mult

MOSI_MULT = {"dims": {"text": 300, "audio": 5, "vision": 20}, "lengths": {"text": 50, "audio": 375, "vision": 500}}
MOSI_MMSA = {"dims": {"text": 768, "audio": 5, "vision": 20}, "lengths": {"text": 50, "audio": 375, "vision": 500}}
IEMOCAP_MULT = {"dims": {"text": 300, "audio": 74, "vision": 35}, "lengths": {"text": 20, "audio": 400, "vision": 500}}


def random_split(n: int, dims: dict[str, int], max_len: dict[str, int], rng: np.random.Generator,
                 emotions: int = 0, name: str = "s") -> SplitData:
    """Random features with random lengths in [1, T] (real frames first, padding zero)."""
    features, lengths = {}, {}
    for m, d in dims.items():
        T = max_len[m]
        L = rng.integers(1, T + 1, size=n)
        x = rng.normal(size=(n, T, d)).astype(np.float32)
        x[np.arange(T)[None, :] >= L[:, None]] = 0
        features[m], lengths[m] = x, L.astype(np.int64)
    if emotions:
        labels = rng.integers(0, 2, size=(n, emotions)).astype(np.int64)
    else:
        labels = rng.uniform(-3, 3, size=n).astype(np.float32)
    return SplitData(features, lengths, labels, [f"{name}_{i}" for i in range(n)])


def make_splits(shape: dict, sizes: tuple[int, int, int] = (24, 8, 8), emotions: int = 0,
                seed: int = 0) -> dict[str, SplitData]:
    rng = np.random.default_rng(seed)
    return {s: random_split(n, shape["dims"], shape["lengths"], rng, emotions, s)
            for s, n in zip(("train", "valid", "test"), sizes)}


def write_mosi_mult(path: Path, **kw) -> dict[str, SplitData]:
    splits = make_splits(MOSI_MULT, **kw)
    write_mult(path, splits)
    return splits


def write_mosi_mmsa(path: Path, **kw) -> dict[str, SplitData]:
    splits = make_splits(MOSI_MMSA, **kw)
    write_mmsa(path, splits)
    return splits


def write_iemocap_mult(path: Path, **kw) -> dict[str, SplitData]:
    from mmfusion.batch import IEMOCAP_EMOTIONS

    splits = make_splits(IEMOCAP_MULT, emotions=4, **kw)
    write_mult(path, splits, emotions=IEMOCAP_EMOTIONS, with_ids=False)
    return splits
