"""Heatmaps and embedding plots (matplotlib, Agg backend). Every PNG is written atomically."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion.io import atomic_write_bytes


def pyplot() -> Any:
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def heatmap(path: Path, matrix: np.ndarray, title: str, xlabel: str, ylabel: str,
            xticks: Sequence[str] | None = None, yticks: Sequence[str] | None = None) -> Path:
    plt = pyplot()
    h, w = matrix.shape
    fig, ax = plt.subplots(figsize=(min(2 + w * 0.12, 10) if not xticks else 3.6,
                                    min(1.6 + h * 0.12, 8) if not yticks else 3.2))
    im = ax.imshow(matrix, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if xticks:
        ax.set_xticks(range(len(xticks)), xticks)
    if yticks:
        ax.set_yticks(range(len(yticks)), yticks)
    return save_figure(fig, path)


def bars(path: Path, values: np.ndarray, groups: Sequence[str], series: Sequence[str], title: str) -> Path:
    """values (len(groups), len(series)) as grouped bars."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.5 + 1.2 * len(groups), 3.2))
    width = 0.8 / len(series)
    for j, name in enumerate(series):
        ax.bar(np.arange(len(groups)) + j * width, values[:, j], width, label=name)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def embedding(path: Path, codes: Mapping[str, np.ndarray], modalities: Sequence[str], method: str = "tsne",
              seed: int = 0) -> Path:
    """2-D embedding of exclusive and agnostic codes (the paper's Fig. 5).

    codes: {"exclusive": (N, M, d), "agnostic": (N, M, d)}; colour = modality, marker = branch.
    """
    plt = pyplot()
    points, labels, kinds = [], [], []
    for branch, arr in codes.items():
        for i, m in enumerate(modalities):
            points.append(arr[:, i])
            labels += [m] * len(arr)
            kinds += [branch] * len(arr)
    X = np.concatenate(points)
    if method == "pca":
        from sklearn.decomposition import PCA

        Y = PCA(2, random_state=seed).fit_transform(X)
    else:
        from sklearn.manifold import TSNE

        Y = TSNE(2, random_state=seed, init="pca", perplexity=min(30.0, max(5.0, len(X) / 10))).fit_transform(X)
    fig, ax = plt.subplots(figsize=(5, 4.2))
    colours = dict(zip(modalities, ["#4c72b0", "#dd8452", "#55a868"]))
    markers = {"exclusive": "o", "agnostic": "x"}
    labels_a, kinds_a = np.array(labels), np.array(kinds)
    for branch in codes:
        for m in modalities:
            sel = (labels_a == m) & (kinds_a == branch)
            ax.scatter(Y[sel, 0], Y[sel, 1], s=9, c=colours[m], marker=markers.get(branch, "."),
                       label=f"{branch} {m}", alpha=0.7)
    ax.legend(fontsize=7, markerscale=1.5)
    name = {"tsne": "t-SNE", "pca": "PCA"}.get(method, method)
    ax.set_title(f"{name} of the decoupled codes", fontsize=9)
    return save_figure(fig, path)
