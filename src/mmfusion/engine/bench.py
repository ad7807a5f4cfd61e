"""``mmfusion bench``: several models x seeds on one dataset, one table (Markdown, CSV, JSON) and one plot.

Each model reads ``<config_dir>/<model>/<dataset>.yaml`` when it exists (dataset = synthetic, mosi, mosei or
iemocap, guessed from the data's name), then the shared command-line flags. Runs reuse finished seeds, so an
interrupted bench continues where it stopped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmfusion.data import load_data
from mmfusion.engine.runs import (
    check_devices_available,
    check_model_reads,
    fit_one,
    metric_keys,
    notes_markdown,
    require_training_splits,
    resolve_config,
    results_csv,
    results_markdown,
    run_notes,
    summarize,
)
from mmfusion.errors import ConfigError
from mmfusion.inspect.plots import pyplot, save_figure
from mmfusion.io import atomic_write_json, atomic_write_text
from mmfusion.metrics import main_metric
from mmfusion.runtime import launched_worker

EXTRA = ("params", "train_seconds_per_epoch", "test_ms_per_sample")


def dataset_key(name: str) -> str:
    low = name.lower()
    for key in ("synthetic_emotion", "synthetic", "mosei", "mosi", "iemocap"):
        if key in low:
            return key
    return low


def config_dirs() -> list[Path]:
    """Where model configs are looked for, in order: ``./configs`` (a checkout, or the user's own), the configs
    shipped inside the installed package (``mmfusion/configs``, copied from the repository's ``configs/`` when the
    wheel is built), and the source tree's ``configs/`` (an editable install or ``PYTHONPATH=src``)."""
    package = Path(__file__).resolve().parents[1]  # .../mmfusion
    return [Path.cwd() / "configs", package / "configs", package.parents[1] / "configs"]


def default_config_dir() -> Path:
    """The first of :func:`config_dirs` that exists; none: a ConfigError naming the places searched."""
    for path in config_dirs():
        if path.is_dir():
            return path
    raise ConfigError("no model configs found (the package was built without its configs?)", source="--config-dir",
                      key="config_dir", expected="a directory of <model>/<dataset>.yaml files, one of "
                      + ", ".join(str(p) for p in config_dirs()) + ", or pass --config-dir", actual="none exists")


def shipped_config(path: str) -> str:
    """``path`` itself when it exists; else, for a repository-relative ``configs/<model>/<file>.yaml``, the file of
    that name among :func:`config_dirs` (so the README's ``--config configs/...`` works from a wheel install)."""
    given = Path(path)
    if given.exists() or given.parts[:1] != ("configs",):
        return path
    for root in config_dirs()[1:]:
        candidate = root.joinpath(*given.parts[1:])
        if candidate.is_file():
            return str(candidate)
    return path  # reading it names the missing file


def run_bench(models: Sequence[str], flags: Mapping[str, Any], sets: Sequence[str], *, config_dir: str | None = None,
              name: str | None = None, resume: bool = True, console: Any = None) -> dict[str, Any]:
    repeated = sorted({m for m in models if list(models).count(m) > 1})
    if repeated or not models:  # a repeat would reuse the first one's run and fill two rows with the same numbers
        raise ConfigError("each model once" if models else "no model to bench", source="--models", key="models",
                          expected="distinct names", actual=repeated or list(models))
    data_spec = flags.get("data") or "synthetic"
    probe = resolve_config(None, {**flags, "model": models[0].partition(":")[0]}, sets)
    check_devices_available(probe.train)
    bundle = load_data(data_spec, probe.data_args, source="data_args")
    require_training_splits(bundle)
    cdir = Path(config_dir) if config_dir else default_config_dir()
    rows, per_model, notes = [], {}, []
    extra_keys: list[str] = []
    plans = []  # every model's config checked (and its fit to the data) before the first one trains
    for spec in models:
        model, _, ablation = spec.partition(":")  # "mea:no_hca" is MEA with that ablation
        cfile = cdir / model / f"{dataset_key(bundle.name)}.yaml"
        extra = {"model": model, **({"ablation": ablation} if ablation else {})}
        cfg = resolve_config(str(cfile) if cfile.exists() else None, {**flags, **extra}, sets)
        check_model_reads(cfg.model, bundle)
        plans.append((spec, cfile, cfg))
    for spec, cfile, cfg in plans:
        if console:
            console.rule(f"{spec} ({cfile if cfile.exists() else 'default config'})", characters="-")
        results = [fit_one(cfg, bundle, s, resume=resume, console=console) for s in cfg.seeds]
        extra_keys = [k for k in results[0] if k.startswith("capture_")]
        keys = metric_keys(bundle) + extra_keys + list(EXTRA)
        stats = summarize(results, keys)
        per_model[spec] = {"config": str(cfile) if cfile.exists() else None, "seeds": list(cfg.seeds),
                           "metrics": stats, "notes": run_notes(spec, results)}
        notes += per_model[spec]["notes"]
        rows.append((spec, stats))
    keys = metric_keys(bundle)
    out_root = Path(probe.out)
    stem = out_root / (name or f"bench_{bundle.name}")
    seeds = list(probe.seeds)
    title = (f"{bundle.describe()}: test split, " + (f"mean ± std over seeds {seeds}" if len(seeds) > 1
                                                       else f"seed {seeds[0]}"))
    md = f"# {title}\n\n" + results_markdown(rows, keys + extra_keys, bundle, EXTRA)
    if bundle.task == "regression":
        md += ("\nAcc2/F1 `_non0`: zero labels excluded (MulT convention); `_has0`: negative vs non-negative. "
               "Checkpoints selected on validation loss.\n")
    if extra_keys:
        md += ("`capture_<term>`: cov(prediction, term) / var(term) on the built-in benchmark — 1 means the model "
               "carries that label term fully, 0 that it ignores it.\n")
    if bundle.bayes:
        md += "Bayes-optimal: expected score of the best possible predictor for each metric on this test split.\n"
    md += notes_markdown(notes)
    files = {"md": f"{stem}.md", "csv": f"{stem}.csv", "json": f"{stem}.json", "png": f"{stem}.png"}
    result = {"title": title, "rows": rows, "keys": keys + extra_keys, "bayes": bundle.bayes, "files": files,
              "notes": notes}
    if launched_worker():  # the first process of a multi-device run writes the table
        return result
    atomic_write_text(files["md"], md)
    atomic_write_text(files["csv"], results_csv(rows, keys + extra_keys + list(EXTRA)))
    atomic_write_json(files["json"], {"data": bundle.describe(), "task": bundle.task, "models": per_model,
                                      "bayes": bundle.bayes})
    _plot(files["png"], rows, bundle)
    return result


def _plot(path: str, rows: Sequence[tuple[str, Mapping[str, Any]]], bundle: Any) -> None:
    plt = pyplot()

    key, _ = main_metric(bundle.task)
    names = [n for n, _ in rows]
    means = [s[key]["mean"] for _, s in rows]
    stds = [s[key]["std"] for _, s in rows]
    several = any(s[key].get("n", 1) > 1 for _, s in rows)  # one seed: no error bars, no "± std"
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(rows), 3.6 + (0.6 if len(rows) > 6 else 0.0)))
    ax.bar(names, means, yerr=stds if several else None, capsize=4, color="#4c72b0")
    if len(rows) > 6 or max(map(len, names)) > 12:  # long labels side by side would overlap
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    if bundle.bayes and key in bundle.bayes:
        ax.axhline(bundle.bayes[key], color="#c44e52", linestyle="--", label="Bayes-optimal")
        ax.legend(loc="lower right")
    ax.set_ylabel(f"test {key}" + (" (mean ± std)" if several else ""))
    ax.set_title(bundle.name)
    save_figure(fig, path)
