"""How modality-specific a model's decoupled codes are: the modality discriminator's accuracy and a fresh probe's.

MEA's double discriminator (docs/design/mea.md §4) should leave the modality-agnostic codes h^a_m indistinguishable
by modality (accuracy near chance, 1/M) and the modality-exclusive codes h^e_m identifiable (accuracy near 1). Two
readings, on the codes of whole splits in evaluation mode:

- ``disc_acc_<branch>_<split>``: the model's own modality discriminator D_m. It is trained against the agnostic
  encoder, so a low value can also mean D_m is being fooled while another classifier would still separate the codes.
- ``probe_acc_<branch>_<split>``: a fresh multinomial logistic regression fitted on the codes of training clips and
  scored on ``split``: the separability that is left, whatever D_m has learned. A linear probe reads differences of
  the modalities' mean codes; where those are taken away by construction (MEA's ``agnostic_norm``) it sits at chance
  whatever else tells the modalities apart, so
- ``mlp_probe_acc_<branch>_<split>``: a fresh one-hidden-layer network (64 units), fitted and scored the same way,
  reads what is left beyond the means (spread, shape, directions).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mmfusion.data import DatasetBundle, FusionDataset

BRANCHES = ("agnostic", "exclusive")


def split_codes(model: Any, bundle: DatasetBundle, split: str, max_samples: int | None = None,
                batch_size: int = 64) -> dict[str, np.ndarray]:
    """The decoupled codes of (the first ``max_samples`` clips of) ``split``: {branch: (N, M, d_h)}, and under
    ``"present"`` (N, M) whether the clip has a real frame of each modality (a missing one has no code to judge)."""
    data = bundle.split(split, labeled=False)
    ds = FusionDataset(data)
    n = len(data) if max_samples is None else min(max_samples, len(data))
    codes: dict[str, list[np.ndarray]] = {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                b = ds.collate(range(start, min(n, start + batch_size)))
                for branch, c in model(b.features, b.masks)["inspect"]["codes"].items():
                    codes.setdefault(branch, []).append(c.detach().float().cpu().numpy())
                codes.setdefault("present", []).append(
                    np.stack([b.masks[m].any(1).cpu().numpy() for m in model.modalities], 1))
    finally:
        model.train(was_training)
    return {k: np.concatenate(v) for k, v in codes.items()}


def _flat(codes: np.ndarray, present: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(N, M, d) codes -> (K, d) rows of the present (clip, modality) pairs and their modality labels 0..M-1."""
    n, m, d = codes.shape
    keep = np.ones(n * m, bool) if present is None else present.reshape(n * m)
    return codes.reshape(n * m, d)[keep], np.tile(np.arange(m), n)[keep]


def fit_probe(train: np.ndarray, seed: int = 0, present: np.ndarray | None = None, kind: str = "linear") -> Any:
    """A classifier fitted on ``train`` (N, M, d) codes to tell their modality (only the pairs marked in the optional
    (N, M) ``present``): multinomial logistic regression (``kind="linear"``) or a 64-unit one-hidden-layer network
    (``"mlp"``), on standardised codes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _flat(train, present)
    # early stopping holds out a stratified tenth: only where that tenth has a few codes of every modality
    head = (LogisticRegression(max_iter=2000, random_state=seed) if kind == "linear" else
            MLPClassifier((64,), max_iter=300, early_stopping=len(x) >= 300, random_state=seed))
    return make_pipeline(StandardScaler(), head).fit(x, y)


def scored(probe: Any, test: np.ndarray, present: np.ndarray | None = None) -> float:
    """Accuracy of a :func:`fit_probe` classifier on ``test`` (N', M, d) codes."""
    xt, yt = _flat(test, present)
    return float((probe.predict(xt) == yt).mean())


def probe_accuracy(train: np.ndarray, test: np.ndarray, seed: int = 0, train_present: np.ndarray | None = None,
                   test_present: np.ndarray | None = None, kind: str = "linear") -> float:
    """Accuracy on ``test`` (N', M, d) of a probe (:func:`fit_probe`) fitted on ``train`` (N, M, d) to tell
    modalities (only the pairs marked in the optional (N, M) ``*_present`` masks)."""
    return scored(fit_probe(train, seed, train_present, kind), test, test_present)


def discriminator_accuracy(model: Any, codes: np.ndarray, present: np.ndarray | None = None) -> float | None:
    """Accuracy of the model's modality discriminator on (N, M, d) codes (None if it has none)."""
    disc = getattr(model, "modality_discriminator", None)
    if disc is None:
        return None
    x, y = _flat(codes, present)
    with torch.no_grad():
        pred = disc(torch.from_numpy(x).to(next(disc.parameters()).device)).argmax(-1).cpu().numpy()
    return float((pred == y).mean())


def modality_separability(model: Any, bundle: DatasetBundle, splits: Sequence[str] = ("valid", "test"),
                          probe_split: str | None = "train", max_probe: int = 1000) -> dict[str, float]:
    """``disc_acc_<branch>_<split>`` and ``probe_acc_<branch>_<split>`` for each branch the model has (see the module
    docstring), plus ``modality_chance`` (1/M). The probe is fitted on the first ``max_probe`` clips of
    ``probe_split`` (no probe where that is None or the data has no such split). Empty for a model without
    decoupled codes (only MEA has them)."""
    if not hasattr(model, "explain") or not hasattr(model, "modalities"):
        return {}
    out: dict[str, float] = {"modality_chance": 1.0 / len(model.modalities)}
    fit_codes = split_codes(model, bundle, probe_split, max_probe) if probe_split in bundle.splits else {}
    probes = {branch: {prefix: fit_probe(fit_codes[branch], 0, fit_codes["present"], kind)
                       for prefix, kind in (("probe", "linear"), ("mlp_probe", "mlp"))}
              for branch in BRANCHES if branch in fit_codes}
    for split in splits:
        codes = split_codes(model, bundle, split)
        for branch in BRANCHES:
            if branch not in codes:
                continue
            acc = discriminator_accuracy(model, codes[branch], codes["present"])
            if acc is not None:
                out[f"disc_acc_{branch}_{split}"] = acc
            for prefix, probe in probes.get(branch, {}).items():
                out[f"{prefix}_acc_{branch}_{split}"] = scored(probe, codes[branch], codes["present"])
    return out if len(out) > 1 else {}


def write_separability(model: Any, bundle: DatasetBundle, split: str, path: Any) -> str | None:
    """``explain``: the modality separability of ``split``'s codes written to ``path`` (JSON), and one line saying
    it; None for a model without decoupled codes."""
    from mmfusion.io import atomic_write_json

    sep = modality_separability(model, bundle, (split,))
    if not sep:
        return None
    atomic_write_json(path, sep)
    parts = [f"{b} codes: discriminator {sep.get(f'disc_acc_{b}_{split}', float('nan')):.3f}, fresh probe "
             f"{sep.get(f'probe_acc_{b}_{split}', float('nan')):.3f} (linear), "
             f"{sep.get(f'mlp_probe_acc_{b}_{split}', float('nan')):.3f} (network)" for b in ("agnostic", "exclusive")
             if f"disc_acc_{b}_{split}" in sep or f"probe_acc_{b}_{split}" in sep]
    return (f"which modality a code came from (accuracy on the {split} split; chance {sep['modality_chance']:.3f}): "
            + ", ".join(parts))
