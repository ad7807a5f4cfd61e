"""Results as text: per-clip predictions (CSV), a run's Markdown summary, mean ± std over seeds, and the
Markdown/CSV tables of ``fit``, ``bench`` and ``robustness``.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmfusion.data import DatasetBundle
from mmfusion.engine.config import RunConfig
from mmfusion.io import atomic_write_text
from mmfusion.metrics import SENTIMENT_KEYS


def write_predictions(path: Path, ids: Sequence[str], pred: np.ndarray, labels: np.ndarray | None, task: str,
                      emotions: Sequence[str]) -> None:
    """One row per clip: its id, the prediction and (where ``labels`` is given) the label; atomically."""
    atomic_write_text(path, predictions_csv(ids, pred, labels, task, emotions))


def predictions_csv(ids: Sequence[str], pred: np.ndarray, labels: np.ndarray | None, task: str,
                    emotions: Sequence[str]) -> str:
    """The text of :func:`write_predictions`' file."""
    buf = io.StringIO()
    w = csv.writer(buf)
    known = labels is not None
    flat = labels.reshape(len(ids), -1) if known else None  # (N, 1) scores or classes, (N, E) emotions
    if task == "regression":
        w.writerow(["id", "prediction"] + ["label"] * known)
        for k, (i, p) in enumerate(zip(ids, pred.reshape(-1))):
            w.writerow([i, f"{p:.6f}"] + ([f"{flat[k, 0]:.6f}"] if known else []))
    elif task == "classification":
        w.writerow(["id", "prediction"] + ["label"] * known + ["prediction_name"] + ["label_name"] * known)
        for k, (i, p) in enumerate(zip(ids, pred.argmax(-1))):
            y = [int(flat[k, 0])] if known else []
            w.writerow([i, int(p), *y, emotions[int(p)], *[emotions[v] for v in y]])
    else:
        logits = pred.reshape(len(ids), len(emotions), 2)
        w.writerow(["id"] + [f"prediction_{e}" for e in emotions] + [f"label_{e}" for e in emotions] * known
                   + [f"p_{e}" for e in emotions])
        probs = torch.softmax(torch.from_numpy(logits), -1)[..., 1].numpy()
        for k, (i, row, pr) in enumerate(zip(ids, logits.argmax(-1), probs)):
            w.writerow([i, *row.tolist(), *(flat[k].tolist() if known else []), *[f"{v:.4f}" for v in pr]])
    return buf.getvalue()


def metric_keys(bundle: DatasetBundle) -> list[str]:
    if bundle.task == "regression":
        return list(SENTIMENT_KEYS)
    if bundle.task == "classification":
        return ["acc", "f1"]
    return [f"{p}_{e}" for e in bundle.emotions for p in ("acc", "f1")] + ["acc_mean", "f1_mean"]


def run_markdown(cfg: RunConfig, bundle: DatasetBundle, result: Mapping[str, Any]) -> str:
    keys = metric_keys(bundle)
    lines = [f"# {cfg.model}{' (' + cfg.ablation + ')' if cfg.ablation else ''} on {bundle.describe()}", "",
             f"Seed {result['seed']}; best epoch {result['best_epoch']} of {result['epochs_run']} (selected on "
             f"validation loss); {result['params']:,} parameters.", "",
             "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
             "| " + " | ".join(f"{result[k]:.4f}" for k in keys) + " |", ""]
    if bundle.bayes:
        lines += ["Bayes-optimal (expected on this test split):", "",
                  "| " + " | ".join(f"{bundle.bayes[k]:.4f}" for k in keys) + " |", ""]
    if bundle.task == "regression":
        lines.append("Acc2/F1 `_non0`: zero labels excluded (MulT convention); `_has0`: negative vs non-negative.")
    lines += diagnostics_markdown(result)
    lines += [f"\n**Warning:** {w}." for w in result.get("warnings", [])]
    lines += [f"\n**Data:** {c}." for c in bundle.report.caveats]
    return "\n".join(lines) + "\n"


DIAGNOSTIC_PREFIXES = ("capture_", "disc_acc_", "probe_acc_", "mlp_probe_acc_", "modality_chance")
"""Per-run diagnostics averaged over seeds beside the metrics: planted-term capture (built-in benchmark) and the
modality separability of decoupled codes (:mod:`mmfusion.engine.diagnostics`)."""


def diagnostics_markdown(result: Mapping[str, Any]) -> list[str]:
    """Summary lines for a run's diagnostics: modality separability of the codes and the learning curve."""
    lines: list[str] = []
    seps = [(b, s) for b in ("agnostic", "exclusive") for s in ("valid", "test")
            if f"probe_acc_{b}_{s}" in result or f"disc_acc_{b}_{s}" in result]
    if seps:
        chance = result.get("modality_chance", float("nan"))
        lines += ["", f"Which modality a code came from (accuracy; chance {chance:.3f}; agnostic codes should sit "
                  "near chance, exclusive codes near 1):", "", "| codes | split | modality discriminator | fresh "
                  "linear probe | fresh network probe |", "|---|---|---|---|---|"]
        for b, s in seps:
            cells = [result.get(f"{k}_acc_{b}_{s}") for k in ("disc", "probe", "mlp_probe")]
            lines.append(f"| {b} | {s} | " + " | ".join("–" if v is None else f"{v:.3f}" for v in cells) + " |")
    curve = [p for p in result.get("learning_curve", []) if "train_task_loss" in p and "val_loss" in p]
    if curve:
        lines += ["", "Learning curve (task loss; validation loss chooses the checkpoint):", "",
                  "| epoch | train | validation |", "|---|---|---|"]
        lines += [f"| {int(p['epoch'])} | {p['train_task_loss']:.4f} | {p['val_loss']:.4f} |" for p in curve]
    return lines


def run_notes(spec: str, results: Sequence[Mapping[str, Any]]) -> list[str]:
    """What a mean ± std would hide: the seeds of ``spec`` that diverged or whose predictions collapsed."""
    notes = []
    for r in results:
        if r.get("diverged"):
            d = r["diverged"]
            notes.append(f"{spec}, seed {r['seed']}: training diverged (loss {d['loss']} at epoch {d['epoch']}, "
                         f"step {d['step']}); the best checkpoint before it was tested")
        notes += [f"{spec}, seed {r['seed']}: {w}" for w in r.get("warnings", [])]
    return notes


def notes_markdown(notes: Sequence[str]) -> str:
    """The :func:`run_notes` of a table as a Markdown list under it ("" when there are none)."""
    if not notes:
        return ""
    return "\n**Runs to look at** (included in the means above):\n\n" + "".join(f"- {n}.\n" for n in notes)


def summarize(results: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    """Mean, sample std (ddof=1; 0 for one seed) and count ``n`` of each key over seeds."""
    out = {}
    for k in keys:
        vals = [r[k] for r in results if k in r]
        if len(vals):
            out[k] = mean_std(vals)
    return out


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """``mean``, sample ``std`` (ddof=1; 0 for one value) and count ``n``: how every table here reports runs."""
    vals = np.asarray(values, dtype=np.float64)
    return {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}


def fmt(stat: Mapping[str, float] | None, digits: int = 4, key: str = "") -> str:
    """``mean ± std``, or the value alone where it comes from one run (``n`` 1); counts (parameters) as plain
    integers, times with two decimals."""
    if not stat:
        return "–"
    if key == "params":
        return f"{stat['mean']:,.0f}"
    if key.endswith(("_seconds_per_epoch", "_ms_per_sample")):
        digits = 2
    if stat.get("n") == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def rows_markdown(rows: Sequence[tuple[str, Mapping[str, Any]]], cols: Sequence[str]) -> str:
    out = ["| model | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, stats in rows:
        out.append(f"| {name} | " + " | ".join(fmt(stats.get(k), key=k) for k in cols) + " |")
    return "\n".join(out) + "\n"


def results_markdown(rows: Sequence[tuple[str, Mapping[str, Any]]], keys: Sequence[str], bundle: DatasetBundle,
                     extra_cols: Sequence[str] = ()) -> str:
    cols = list(keys) + list(extra_cols)
    out = rows_markdown(rows, cols).rstrip("\n").split("\n")
    if bundle.bayes:
        out.append("| **Bayes-optimal** | " + " | ".join(
            f"{bundle.bayes[k]:.4f}" if k in bundle.bayes else "–" for k in cols) + " |")
    return "\n".join(out) + "\n"


def results_csv(rows: Sequence[tuple[str, Mapping[str, Any]]], keys: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model"] + [f"{k}_{s}" for k in keys for s in ("mean", "std")])
    for name, stats in rows:
        w.writerow([name] + [f"{stats[k][s]:.6g}" if k in stats else "" for k in keys for s in ("mean", "std")])
    return buf.getvalue()
