"""Evaluation metrics exactly as the field reports them (spec: data-formats §5). Pure functions on arrays."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

SENTIMENT_KEYS: tuple[str, ...] = ("mae", "corr", "acc7", "acc5", "acc2_non0", "f1_non0", "acc2_has0", "f1_has0")


CONSTANT_STD = 1e-12
"""Standard deviation below which :func:`pearson` treats a side as constant (and :func:`constant_predictions` warns)."""


def pearson(p: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; 0 when either side is constant (where it is undefined)."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    sp, sy = p.std(), y.std()
    if sp < CONSTANT_STD or sy < CONSTANT_STD:
        return 0.0
    return float(np.mean((p - p.mean()) * (y - y.mean())) / (sp * sy))


def constant_predictions(pred: np.ndarray, task: str) -> str | None:
    """A warning when regression predictions (N,) or (N, 1) are one value for every sample, else None.

    A model that has collapsed to a constant gets Corr 0 from :func:`pearson` (Corr is undefined there), which reads
    like a poor model rather than a broken run; callers print this next to the metrics.
    """
    p = np.asarray(pred, np.float64).reshape(-1)
    if task != "regression" or p.size < 2 or p.std() >= CONSTANT_STD:
        return None
    return (f"the predictions are one value ({p[0]:.4g}) for all {p.size} samples: the model has collapsed to a "
            "constant, and Corr, undefined for a constant, is reported as 0 (a smaller learning rate or less weight "
            "decay usually helps)")


def metric_warnings(pred: np.ndarray, labels: np.ndarray, task: str) -> list[str]:
    """What a reader of regression metrics must know: predictions that collapsed to one value
    (:func:`constant_predictions`), or labels of the scored split that are one value, where Corr is undefined
    too (and reported as 0, which would read as a model that learned nothing)."""
    out = [w for w in (constant_predictions(pred, task),) if w]
    y = np.asarray(labels, np.float64).reshape(-1)
    if task == "regression" and y.size >= 2 and y.std() < CONSTANT_STD:
        out.append(f"the labels of this split are one value ({y[0]:.4g}) for all {y.size} samples: Corr is "
                   "undefined there and reported as 0")
    return out


def sentiment_metrics(pred: np.ndarray, label: np.ndarray,
                      keys: Collection[str] = SENTIMENT_KEYS) -> dict[str, float]:
    """MAE, Corr, Acc7, Acc5 and Acc2/weighted F1 in both conventions, for scores in [-3, 3].

    - Acc7: ``round(clip(p, -3, 3)) == round(clip(y, -3, 3))``; Acc5 the same with clip to [-2, 2].
    - ``*_non0`` (MulT, MEA, most papers): samples with ``y == 0`` dropped, ``p > 0`` against ``y > 0``.
    - ``*_has0`` (MMSA's Has0): ``p >= 0`` against ``y >= 0`` over all samples.
    F1 is scikit-learn's weighted F1. Accuracies are fractions in [0, 1]. ``keys`` picks a subset of
    :data:`SENTIMENT_KEYS` (only those are computed: the F1s cost milliseconds each).
    """
    unknown = set(keys) - set(SENTIMENT_KEYS)
    if unknown:
        raise ValueError(f"unknown sentiment metrics {sorted(unknown)}; expected some of {list(SENTIMENT_KEYS)}")
    p = np.asarray(pred, dtype=np.float64).reshape(-1)
    y = np.asarray(label, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"predictions and labels differ in length: {p.shape[0]} vs {y.shape[0]}")
    nz = y != 0
    metrics = {
        "mae": lambda: float(np.mean(np.abs(p - y))),
        "corr": lambda: pearson(p, y),
        "acc7": lambda: float(np.mean(np.round(np.clip(p, -3, 3)) == np.round(np.clip(y, -3, 3)))),
        "acc5": lambda: float(np.mean(np.round(np.clip(p, -2, 2)) == np.round(np.clip(y, -2, 2)))),
        "acc2_non0": lambda: float(accuracy_score(y[nz] > 0, p[nz] > 0)) if nz.any() else float("nan"),
        "f1_non0": lambda: float(f1_score(y[nz] > 0, p[nz] > 0, average="weighted", zero_division=0))
        if nz.any() else float("nan"),
        "acc2_has0": lambda: float(accuracy_score(y >= 0, p >= 0)),
        "f1_has0": lambda: float(f1_score(y >= 0, p >= 0, average="weighted", zero_division=0)),
    }
    return {k: metrics[k]() for k in SENTIMENT_KEYS if k in keys}


def emotion_metrics(logits: np.ndarray, labels: np.ndarray, emotions: Sequence[str]) -> dict[str, float]:
    """Per-emotion binary accuracy and weighted F1 (IEMOCAP protocol), plus their means.

    ``logits``: (N, E, 2) or (N, 2E) scores for (not-present, present); ``labels``: (N, E) in {0, 1}.
    """
    y = np.asarray(labels).astype(np.int64)
    E = len(emotions)
    z = np.asarray(logits, dtype=np.float64).reshape(y.shape[0], E, 2)
    pred = z.argmax(-1)
    out: dict[str, float] = {}
    for e, name in enumerate(emotions):
        out[f"acc_{name}"] = float(accuracy_score(y[:, e], pred[:, e]))
        out[f"f1_{name}"] = float(f1_score(y[:, e], pred[:, e], average="weighted", zero_division=0))
    out["acc_mean"] = float(np.mean([out[f"acc_{n}"] for n in emotions]))
    out["f1_mean"] = float(np.mean([out[f"f1_{n}"] for n in emotions]))
    return out


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy and weighted F1 of the arg-max class. logits (N, C), labels (N,)."""
    pred = np.asarray(logits).argmax(-1)
    y = np.asarray(labels).astype(np.int64)
    return {"acc": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, average="weighted", zero_division=0))}


def main_metric(task: str) -> tuple[str, str]:
    """The metric a table sorts by and whether higher is better."""
    return {"regression": ("corr", "max"), "emotion": ("f1_mean", "max"), "classification": ("acc", "max")}[task]
