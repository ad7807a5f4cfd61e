"""Robustness of trained models: test metrics with one modality missing, Gaussian noise on one modality at
increasing levels, and random frame drops. ``mmfusion robustness`` runs it over the best checkpoints of a bench.

Perturbations act on the batch the model sees, through the masks where frames disappear, so every model meets
exactly the same corrupted inputs:

- ``missing:<m>``: every frame of modality m masked out (and zeroed);
- ``noise:<m>:<s>``: Gaussian noise with s times the per-feature standard deviation of m's real training frames;
- ``drop:<p>``: each real frame of every modality masked out with probability p (at least one kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from mmfusion.batch import Batch
from mmfusion.data import DatasetBundle, FusionDataset
from mmfusion.engine.checkpoints import (
    check_compatible,
    check_same_reader_options,
    load_system,
    read_hparams,
    reader_options,
    run_dir,
)
from mmfusion.engine.report import mean_std
from mmfusion.engine.system import compute_metrics
from mmfusion.errors import DataError
from mmfusion.inspect.plots import pyplot, save_figure
from mmfusion.io import atomic_write_json, atomic_write_text, run_lock
from mmfusion.metrics import main_metric

NOISE_LEVELS = (0.5, 1.0, 2.0)
DROP_RATES = (0.25, 0.5, 0.75)


def conditions(modalities: Sequence[str]) -> list[str]:
    out = ["clean"] + [f"missing:{m}" for m in modalities]
    out += [f"noise:{m}:{s:g}" for m in modalities for s in NOISE_LEVELS]
    return out + [f"drop:{p:g}" for p in DROP_RATES]


def perturb(batch: Batch, condition: str, feature_std: Mapping[str, torch.Tensor], gen: torch.Generator) -> Batch:
    """Apply one condition to a batch (a new Batch; the input is unchanged)."""
    feats, masks = dict(batch.features), dict(batch.masks)
    kind, _, arg = condition.partition(":")
    if kind == "missing":
        masks[arg] = torch.zeros_like(masks[arg])
        feats[arg] = torch.zeros_like(feats[arg])
    elif kind == "noise":
        m, _, level = arg.partition(":")
        noise = torch.randn(feats[m].shape, generator=gen) * feature_std[m] * float(level)
        feats[m] = (feats[m] + noise) * masks[m][..., None].to(feats[m].dtype)
    elif kind == "drop":
        p = float(arg)
        for m in masks:
            keep = (torch.rand(masks[m].shape, generator=gen) >= p) & masks[m]
            first = masks[m].float().argmax(1)  # keep one real frame so a present stream stays present
            keep[torch.arange(len(keep)), first] |= masks[m].any(1)
            masks[m] = keep
            feats[m] = feats[m] * keep[..., None].to(feats[m].dtype)
    elif kind != "clean":
        raise DataError("unknown perturbation", key="condition", expected="clean, missing, noise or drop",
                        actual=condition)
    return Batch(feats, masks, batch.labels, batch.ids)


def feature_std(bundle: DatasetBundle) -> dict[str, torch.Tensor]:
    """Per-feature standard deviation of the real training frames of each modality: {m: (d_m,)}."""
    out = {}
    s = bundle.split("train", labeled=False)
    for m in s.modalities:
        real = s.features[m][np.arange(s.features[m].shape[1])[None, :] < s.lengths[m][:, None]]
        out[m] = torch.from_numpy(real.std(0).astype(np.float32) if len(real) else np.ones(real.shape[-1], "f4"))
    return out


@torch.no_grad()
def evaluate(model: torch.nn.Module, bundle: DatasetBundle, condition: str, *, split: str = "test",
             batch_size: int = 64, seed: int = 0, std: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
    model.eval()
    ds = FusionDataset(bundle.split(split))
    gen = torch.Generator().manual_seed(seed)
    std = std if std is not None else feature_std(bundle)
    preds, labels = [], []
    for start in range(0, len(ds), batch_size):
        batch = perturb(ds.collate(range(start, min(len(ds), start + batch_size))), condition, std, gen)
        preds.append(model(batch.features, batch.masks)["pred"].float())
        labels.append(batch.labels)
    return compute_metrics(torch.cat(preds).numpy(), torch.cat(labels).numpy(), bundle.task, bundle.emotions)


def trained_checkpoints(root: Path, dataset: str, models: Sequence[str] | None = None) -> list[Path]:
    """Every ``<root>/<model>/<dataset>/seed_*/checkpoints/best.ckpt`` (of ``models`` only, when given: names as
    their run directories have them, ``mea-no_hca``, or as ``bench`` takes them, ``mea:no_hca``)."""
    found = sorted(root.glob(f"*/{dataset}/seed_*/checkpoints/best.ckpt"))
    if models and found:
        wanted = {m.replace(":", "-", 1) for m in models}  # bench's "mea:no_hca" trains into "mea-no_hca/"
        have = sorted({p.parts[-5] for p in found})
        if wanted - set(have):  # a misspelt name would otherwise drop out of the table unnoticed
            raise DataError(f"no trained checkpoints of {sorted(wanted - set(have))} for {dataset}", file=root,
                            key="--models", expected=f"some of {have}", actual=list(models))
        found = [p for p in found if p.parts[-5] in wanted]
    if not found:
        raise DataError("no trained checkpoints found", file=root,
                        expected=f"<model>/{dataset}/seed_*/checkpoints/best.ckpt (run mmfusion bench first)",
                        actual="none")
    return found


def shared_training_options(checkpoints: Sequence[Path], spec: str) -> dict[str, Any]:
    """The reader options every checkpoint was trained with when it read ``spec``'s reader, if they all agree
    (else, or when none recorded any, ``{}``: the per-checkpoint check then names what differs)."""
    seen = [reader_options(read_hparams(ckpt), ckpt, spec)[1] for ckpt in checkpoints]
    return seen[0] if all(s == seen[0] for s in seen) else {}


def robustness_data(root: Path, spec: str, data_args: Mapping[str, Any], models: Sequence[str] | None,
                    say: Callable[[str], Any]) -> tuple[DatasetBundle, dict[str, Any]]:
    """The data to perturb and its reader options: ``data_args``, else (as test and predict do) the options the
    models under ``root`` were trained with, when they all agree."""
    from mmfusion.data import load_data

    data_args = dict(data_args)
    bundle = load_data(spec, data_args, source="--set")
    if not data_args:
        inherited = shared_training_options(trained_checkpoints(root, bundle.name, models), spec)
        if inherited:
            say("reader options from the checkpoints' training runs: "
                + ", ".join(f"{k}={v}" for k, v in inherited.items()))
            data_args = inherited
            bundle = load_data(spec, data_args, source="checkpoints' training runs")
    return bundle, data_args


def run_robustness(root: Path, bundle: DatasetBundle, models: Sequence[str] | None = None,
                   out: Path | None = None, console: Any = None, progress: bool = True, *,
                   spec: str | None = None, data_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate every ``<root>/<model>/<dataset>/seed_*/checkpoints/best.ckpt`` under every condition.

    ``spec`` and ``data_args``, the SPEC and reader options ``bundle`` was loaded with, are checked against each
    checkpoint's training run: a model is never scored on data read with other options than it was trained on.
    With a rich ``console`` and ``progress``, a progress bar counts the (checkpoint, condition) evaluations."""
    key, _ = main_metric(bundle.task)
    found = trained_checkpoints(root, bundle.name, models)
    conds = conditions(bundle.modalities)
    std = feature_std(bundle)
    scores: dict[str, dict[str, list[float]]] = {}
    with _progress(console, progress) as bar:
        task = bar.add_task("robustness", total=len(found) * len(conds))
        for ckpt in found:
            model_name = ckpt.parts[-5]
            # a shared lock: refused while a fit or bench trains this run (its best checkpoint may change)
            with run_lock(run_dir(ckpt), shared=True):
                system = load_system(ckpt)
            check_compatible(system, bundle, ckpt)
            if spec is not None:
                check_same_reader_options(system.hparams, ckpt, spec, data_args)
            for cond in conds:
                bar.update(task, description=f"{model_name} {ckpt.parts[-3]} {cond}")
                value = evaluate(system.model, bundle, cond, std=std)[key]
                scores.setdefault(model_name, {}).setdefault(cond, []).append(value)
                bar.advance(task)
    table = {m: {c: _over_seeds(v) for c, v in per.items()} for m, per in scores.items()}
    out = out or root / f"robustness_{bundle.name}"
    lines = [f"# Robustness on {bundle.describe()}: test {key}, mean ± std over seeds", "",
             "| condition | " + " | ".join(table) + " |", "|---|" + "---|" * len(table)]
    for c in conds:
        lines.append(f"| {c} | " + " | ".join(f"{table[m][c]['mean']:.3f} ± {table[m][c]['std']:.3f}"
                                              for m in table) + " |")
    lines += ["", "missing:m — modality m masked out; noise:m:s — Gaussian noise of s x the feature std on m; "
                  "drop:p — each frame of every modality dropped with probability p."]
    atomic_write_text(f"{out}.md", "\n".join(lines) + "\n")
    csv_lines = ["condition," + ",".join(f"{m}_mean,{m}_std" for m in table)]
    csv_lines += [c + "," + ",".join(f"{table[m][c]['mean']:.6g},{table[m][c]['std']:.6g}" for m in table)
                  for c in conds]
    atomic_write_text(f"{out}.csv", "\n".join(csv_lines) + "\n")
    atomic_write_json(f"{out}.json", {"data": bundle.describe(), "data_args": dict(data_args or {}), "metric": key,
                                      "conditions": conds, "models": table})
    _plot(Path(f"{out}.png"), table, conds, key, bundle.name)
    return {"table": table, "conditions": conds, "metric": key, "files": [f"{out}.{e}" for e in
                                                                        ("md", "csv", "json", "png")]}


def _over_seeds(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample std of one condition's score over the seeds, and how many seeds (``seeds``)."""
    stat = mean_std(values)
    return {"mean": stat["mean"], "std": stat["std"], "seeds": stat["n"]}


def _progress(console: Any, show: bool) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    return Progress(*columns, console=console, disable=console is None or not show)


def _plot(path: Path, table: Mapping[str, Any], conds: Sequence[str], key: str, name: str) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(conds)), 3.8))
    x = np.arange(len(conds))
    for model, per in table.items():
        ax.errorbar(x, [per[c]["mean"] for c in conds], yerr=[per[c]["std"] for c in conds], marker="o", ms=3,
                    capsize=2, label=model)
    ax.set_xticks(x, conds, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(f"test {key}")
    ax.set_title(f"Robustness on {name}")
    ax.legend(fontsize=7)
    save_figure(fig, path)
