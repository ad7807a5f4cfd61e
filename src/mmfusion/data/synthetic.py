"""The built-in asynchronous benchmark (``--data synthetic``), generated from a seed in about a second.

Three modalities at different frame rates (text : vision : audio = 1 : 2 : 3 frames per unit time) with
heterogeneous feature sizes. Each clip has its own duration, so lengths vary per sample and are padded. Latent
variables are written into the streams as *events*: a frame whose marker channel is 1 and whose value channel
holds the variable; every other frame is Gaussian background. Each modality's channels are finally rotated by a
fixed random orthogonal matrix, so nothing is axis-aligned.

The sentiment label is ``y = clip(f + eps, -3, 3)``, ``eps ~ N(0, noise^2)``, with ``f`` the sum of five terms:

- **agnostic**: ``w_agn * z`` where ``z`` appears in all three modalities, each at its own random time;
- **exclusive** (one per modality): ``w_exc * z_m``, present only in modality m;
- **cross-modal**: the text carries a cue (one of 3 keys); the vision stream carries 3 candidate events, each with
  a distinct key and its own value. Only the value whose key matches the text cue counts: ``w_cross * v_match``.
  No single modality determines this term.

Because every latent can be read off exactly (the markers are noise-free), ``f`` is a function of the input and
the Bayes-optimal prediction for each metric is known: the median ``clip(f)`` for MAE, the conditional mean for
Corr, the most probable rounded class for Acc7/Acc5 and ``sign(f)`` for Acc2/F1. :func:`bayes_ceiling` reports
their expected scores on the test split (Monte Carlo over the label noise), the row every results table prints.

The 4-emotion variant (``task="emotion"``, IEMOCAP-style) labels emotion e present iff ``F_e + eps_e > 0`` with
``F_e`` a different signed mix of the same five terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.special import ndtr

from mmfusion.batch import IEMOCAP_EMOTIONS
from mmfusion.data.dataset import DatasetBundle, LoadReport, SplitData

TERMS: tuple[str, ...] = ("agnostic", "exclusive_text", "exclusive_vision", "exclusive_audio", "crossmodal")

# Signed mix of the five terms for each emotion of the 4-emotion variant (rows follow IEMOCAP_EMOTIONS).
EMOTION_MIX = np.array(
    [
        [1.0, 1.0, 0.0, 0.0, 1.0],
        [1.0, 0.0, 1.0, 0.0, -1.0],
        [-1.0, 0.0, 0.0, 1.0, 1.0],
        [0.0, 1.0, 1.0, -1.0, 1.0],
    ]
)


@dataclass
class SyntheticConfig:
    """Sizes and difficulty of the built-in benchmark; every field can be overridden with ``data_args``."""

    seed: int = 0
    task: Literal["regression", "emotion"] = "regression"
    n_train: int = 1500
    n_valid: int = 300
    n_test: int = 600
    text_len: int = 12  # max frames; vision and audio run at 2x and 3x the text rate
    vision_len: int = 24
    audio_len: int = 36
    text_dim: int = 16
    vision_dim: int = 12
    audio_dim: int = 8
    min_fraction: float = 0.5  # shortest clip as a fraction of the longest
    background: float = 0.5  # std of the background frames
    noise: float = 0.4  # std of the label noise
    w_agnostic: float = 0.8
    w_exclusive: float = 0.5
    w_crossmodal: float = 0.8

    def validate(self, source: str | None = None) -> None:
        from mmfusion.config import check_bounds
        from mmfusion.errors import ConfigError

        # metrics such as Corr need two clips of a split
        check_bounds(self, source=source, at_least={"n_train": 1, "n_valid": 2, "n_test": 2, "background": 0,
                                                    "noise": 0, "seed": 0}, below={"seed": 2**32})
        for key, low in (("text_dim", 8), ("vision_dim", 9), ("audio_dim", 4), ("text_len", 6),
                         ("vision_len", 10), ("audio_len", 4)):
            if getattr(self, key) < low:
                raise ConfigError("too small for the benchmark's events", source=source, key=key,
                                  expected=f">= {low}", actual=getattr(self, key))
        if not 0 < self.min_fraction <= 1:
            raise ConfigError("out of range", source=source, key="min_fraction", expected="(0, 1]",
                              actual=self.min_fraction)


def _place(rng: np.random.Generator, lengths: np.ndarray, T: int, k: int) -> np.ndarray:
    """k distinct random frame indices < lengths[i] for each sample: (N, k)."""
    keys = rng.random((len(lengths), T))
    keys[np.arange(T)[None, :] >= lengths[:, None]] = np.inf
    return np.argsort(keys, axis=1)[:, :k]


def _uniform(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), size=shape)  # unit variance, bounded


def _generate_split(cfg: SyntheticConfig, rng: np.random.Generator, n: int, rot: dict[str, np.ndarray],
                    name: str) -> tuple[SplitData, np.ndarray]:
    duration = rng.uniform(cfg.min_fraction, 1.0, size=n)
    T = {"text": cfg.text_len, "vision": cfg.vision_len, "audio": cfg.audio_len}
    dims = {"text": cfg.text_dim, "vision": cfg.vision_dim, "audio": cfg.audio_dim}
    n_events = {"text": 3, "vision": 5, "audio": 2}
    lengths = {m: np.maximum(np.round(duration * T[m]).astype(np.int64), n_events[m]) for m in T}

    z_agn = _uniform(rng, (n,))
    z_exc = {m: _uniform(rng, (n,)) for m in T}
    cue = rng.integers(0, 3, size=n)  # which key the text asks for
    cand_keys = np.argsort(rng.random((n, 3)), axis=1)  # a permutation of the 3 keys over the 3 candidates
    cand_vals = _uniform(rng, (n, 3))
    v_match = cand_vals[np.arange(n), np.argmax(cand_keys == cue[:, None], axis=1)]  # the candidate the cue selects

    terms = np.stack(
        [cfg.w_agnostic * z_agn] + [cfg.w_exclusive * z_exc[m] for m in ("text", "vision", "audio")]
        + [cfg.w_crossmodal * v_match], axis=1
    )  # (N, 5) in the order of TERMS

    rows = np.arange(n)
    features = {}
    for m in ("text", "vision", "audio"):
        x = rng.normal(0.0, cfg.background, size=(n, T[m], dims[m]))
        x[:, :, 0] = 0.0  # marker channels are silent except at events
        x[:, :, 2] = 0.0
        if m == "text":
            x[:, :, 7] = 0.0
        if m == "vision":
            x[:, :, 4] = 0.0
        pos = _place(rng, lengths[m], T[m], n_events[m])
        x[rows, pos[:, 0], 0], x[rows, pos[:, 0], 1] = 1.0, z_agn  # agnostic event
        x[rows, pos[:, 1], 2], x[rows, pos[:, 1], 3] = 1.0, z_exc[m]  # exclusive event
        if m == "text":  # the cue: marker + one-hot key
            x[rows, pos[:, 2], 4:7] = np.eye(3)[cue]
            x[rows, pos[:, 2], 7] = 1.0
        if m == "vision":  # three candidates: marker, one-hot key, value
            for j in range(3):
                p = pos[:, 2 + j]
                x[rows, p, 4] = 1.0
                x[rows, p, 5:8] = np.eye(3)[cand_keys[:, j]]
                x[rows, p, 8] = cand_vals[:, j]
        x = x @ rot[m]
        x[np.arange(T[m])[None, :] >= lengths[m][:, None]] = 0.0
        features[m] = x.astype(np.float32)

    if cfg.task == "regression":
        f = terms.sum(1)
        labels = np.clip(f + rng.normal(0.0, cfg.noise, size=n), -3, 3).astype(np.float32)
    else:
        F = terms @ EMOTION_MIX.T  # (N, 4)
        labels = (F + rng.normal(0.0, cfg.noise, size=F.shape) > 0).astype(np.int64)
    ids = [f"synthetic_{name}_{i:05d}" for i in range(n)]
    split = SplitData(features, lengths, labels, ids, extras={"terms": terms.astype(np.float32)})
    return split, terms


def make_synthetic(cfg: SyntheticConfig | None = None) -> DatasetBundle:
    """Generate the benchmark deterministically from ``cfg.seed``; the bundle carries its Bayes ceilings."""
    cfg = cfg or SyntheticConfig()
    cfg.validate()
    rng = np.random.default_rng(cfg.seed)
    dims = {"text": cfg.text_dim, "vision": cfg.vision_dim, "audio": cfg.audio_dim}
    rot = {m: np.linalg.qr(rng.normal(size=(d, d)))[0] for m, d in dims.items()}
    splits = {}
    for name, n in (("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test)):
        splits[name], _ = _generate_split(cfg, rng, n, rot, name)
    emotions = IEMOCAP_EMOTIONS if cfg.task == "emotion" else ()
    bundle = DatasetBundle(
        name="synthetic" if cfg.task == "regression" else "synthetic_emotion", task=cfg.task, splits=splits,
        source="synthetic", emotions=emotions, report=LoadReport(),
    )
    bundle.bayes = bayes_ceiling(splits["test"].extras["terms"], cfg, seed=cfg.seed)
    return bundle


def bayes_ceiling(terms: np.ndarray, cfg: SyntheticConfig, *, seed: int = 0, reps: int = 50) -> dict[str, float]:
    """Expected test metrics of the Bayes-optimal predictor for each metric (a ceiling per metric).

    The inputs fix ``f`` exactly, so only the label noise is random: draw ``reps`` noisy label sets for the test
    split's ``f`` and score each metric's optimal prediction with the same metric functions models are scored with.
    """
    from mmfusion.metrics import emotion_metrics, sentiment_metrics

    rng = np.random.default_rng(seed + 7919)
    sd = cfg.noise
    if cfg.task == "emotion":
        F = terms @ EMOTION_MIX.T
        pred = np.stack([np.zeros_like(F), F], axis=-1)  # logits whose argmax is 1[F > 0]
        runs = [emotion_metrics(pred, (F + rng.normal(0, sd, F.shape) > 0).astype(np.int64), IEMOCAP_EMOTIONS)
                for _ in range(reps)]
        return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}

    f = terms.sum(1)
    a, b = (-3 - f) / sd, (3 - f) / sd
    phi = np.exp(-0.5 * np.stack([a, b]) ** 2) / np.sqrt(2 * np.pi)
    mean = -3 * ndtr(a) + 3 * (1 - ndtr(b)) + f * (ndtr(b) - ndtr(a)) + sd * (phi[0] - phi[1])  # E[clip(f+eps)]

    def best_class(lo: int) -> np.ndarray:
        # most probable value of round(clip(y, lo, -lo)) given f
        ks = np.arange(lo, -lo + 1)
        edges_lo = np.where(ks == lo, -np.inf, ks - 0.5)
        edges_hi = np.where(ks == -lo, np.inf, ks + 0.5)
        p = ndtr((edges_hi[None] - f[:, None]) / sd) - ndtr((edges_lo[None] - f[:, None]) / sd)
        return ks[np.argmax(p, axis=1)].astype(np.float64)

    preds = {"median": np.clip(f, -3, 3), "mean": mean, "c7": best_class(-3), "c5": best_class(-2), "sign": f}
    use = {"mae": "median", "corr": "mean", "acc7": "c7", "acc5": "c5", "acc2_non0": "sign", "f1_non0": "sign",
           "acc2_has0": "sign", "f1_has0": "sign"}
    wanted = {name: [k for k, n in use.items() if n == name] for name in preds}  # each prediction's metrics
    totals = dict.fromkeys(use, 0.0)
    for _ in range(reps):
        y = np.clip(f + rng.normal(0, sd, f.shape), -3, 3)
        for name, p in preds.items():
            for k, v in sentiment_metrics(p, y, keys=wanted[name]).items():
                totals[k] += v
    return {k: v / reps for k, v in totals.items()}


def term_capture(pred: np.ndarray, terms: np.ndarray) -> dict[str, float]:
    """How much of each label term a regression model's predictions carry: ``cov(pred, t_k) / var(t_k)``.

    The terms are independent, so a perfect model scores 1 on every term and a model blind to a term scores 0.
    """
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    out = {}
    for k, name in enumerate(TERMS):
        t = terms[:, k].astype(np.float64)
        out[f"capture_{name}"] = float(np.cov(pred, t)[0, 1] / max(np.var(t, ddof=1), 1e-12))
    return out
