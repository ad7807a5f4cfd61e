"""What the command line prints: tables, progress bars, per-clip results, model lists."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def console() -> Any:
    """The console commands print to (quiet in the further processes of a multi-device run)."""
    from rich.console import Console

    from mmfusion.runtime import launched_worker

    # the further processes of a multi-device run repeat the command line in lockstep; the first one prints
    return Console(stderr=False, highlight=False, quiet=launched_worker())


def print_table(console: Any, title: str, rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str],
                bayes: dict[str, float] | None) -> None:
    """One column per model (and the Bayes-optimal ceiling when known), one row per metric."""
    from rich.table import Table

    from mmfusion.engine.report import fmt

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name, _ in rows:
        table.add_column(name, justify="right")
    if bayes:
        table.add_column("Bayes-optimal", justify="right", style="bold")
    for k in keys:
        cells = [fmt(stats.get(k), 3) for _, stats in rows]
        if bayes:
            cells.append(f"{bayes[k]:.3f}" if k in bayes else "–")
        table.add_row(k, *cells)
    console.print(table)


def quiet(lightning: bool = True) -> None:
    """Keep Lightning's start-up chatter (accelerator lines, tips, deprecations) out of the user's terminal.
    ``lightning=False`` (commands that never start Lightning) only sets the warning filters: importing Lightning to
    set its loggers' levels takes seconds."""
    import logging
    import warnings

    if lightning:
        import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|does not have many workers|exists and is not empty|"
                            "`training_step` returned `None`|functional.all_gather is deprecated|"
                            "smaller than the logging interval).*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def progress_bar(enabled: bool, what: str) -> tuple[Any, Callable[[int, int, str], None]]:
    """A rich progress bar on stderr (``(bar, update)``; ``bar`` is a context manager) or a no-op."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(), lambda done, total, name: None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   TextColumn("{task.description}"), console=Console(stderr=True), transient=True)
    task = bar.add_task("", total=None)

    def update(done: int, total: int, name: str) -> None:
        bar.update(task, completed=done, total=total, description=name)

    return bar, update


def print_clip_rows(rows: Sequence[dict[str, Any]]) -> None:
    """``predict`` on video files: each clip's reading, its WAL and DGF weights, frames and words."""
    for r in rows:
        if "error" in r:
            print(f"{r['id']}: failed: {r['error']}" + (f" ({r['detail']})" if r["detail"] else ""))
            continue
        print(f"{r['id']}: {r['reading']}" + (f" ({r['class']})" if "class" in r else ""))
        if "wal" in r:
            print("  WAL weights: " + ", ".join(f"{m} {v:.3f}" for m, v in r["wal"].items()))
        for branch, edges in r.get("dgf", {}).items():
            print(f"  DGF {branch}: " + ", ".join(f"{e} {v:.3f}" for e, v in edges.items()))
        lengths = ", ".join(f"{m} {n}" for m, n in r["lengths"].items())
        print(f"  frames: {lengths}; words from {r['notes']['text_source']}"
              + (f"; {r['notes']['faceless']} frames without a face dropped" if r["notes"]["faceless"] else ""))


def print_extract(summary: Any, out: str) -> None:
    """What ``extract`` wrote into ``out``, and the clips that failed."""
    from mmfusion.media.extract import errors_path

    ok = summary.clips - len(summary.failed)
    print(f"wrote {ok} of {summary.clips} clips to {out} ({summary.extracted} extracted now, "
          f"{summary.skipped} from an earlier run); splits " + ", ".join(f"{k} {v}" for k, v in summary.splits.items()))
    print(f"feature set: {summary.feature_set}")
    print(f"frames without a face dropped: {summary.faceless_frames}")
    print("words: " + ", ".join(f"{v} clip(s) {k}" for k, v in summary.text_sources.items()))
    if summary.failed:
        print(f"{len(summary.failed)} clip(s) failed (listed in {errors_path(Path(out))}):")
        for cid, f in sorted(summary.failed.items()):
            print(f"  {cid}: {f['reason']}")


def print_models(ablations: bool) -> None:
    """The registered models, with their named ablations when ``ablations``."""
    from mmfusion.models import config_class, list_models

    listed: set[type] = set()
    for name in list_models():
        cls = config_class(name)
        table = getattr(cls, "ABLATIONS", {}) if cls else {}
        if not (ablations and table):
            print(name)
        elif cls in listed:  # a variant of a model listed above (e.g. its _tiny size): the same switches
            print(f"{name}   ablations: as above")
        else:
            listed.add(cls)
            notes = getattr(cls, "ABLATION_NOTES", {})
            print(f"{name}   ablations (--ablation NAME, or the settings beside it with --set model_args.KEY=VALUE):")
            settings = {a: " ".join(f"{k}={yaml_value(v)}" for k, v in table[a].items()) for a in table}
            width = max(map(len, table)), max(map(len, settings.values()))
            for a in sorted(table):
                print(f"  {a:<{width[0]}}  {settings[a]:<{width[1]}}  {notes.get(a, '')}".rstrip())


def yaml_value(value: object) -> str:
    """A setting as it is written on the command line (``false``, not ``False``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def print_robustness(console: Any, res: dict[str, Any]) -> None:
    """The robustness table: one column per model, one row per condition."""
    rows = [(m, per) for m, per in res["table"].items()]
    from rich.table import Table

    from mmfusion.engine.report import fmt

    table = Table(title=f"test {res['metric']} under perturbation (mean ± std over seeds)", title_justify="left")
    table.add_column("condition")
    for m, _ in rows:
        table.add_column(m, justify="right")
    for c in res["conditions"]:
        table.add_row(c, *[fmt({**per[c], "n": per[c]["seeds"]}, 3) for _, per in rows])  # one seed: no ±
    console.print(table)


def print_notes(console: Any, notes: Sequence[str]) -> None:
    """The seeds that diverged or collapsed, inside the means of the table above."""
    for note in notes:
        console.print(f"note: {note}", style="yellow", markup=False)


def print_fit(console: Any, cfg: Any, summary: dict[str, Any]) -> None:
    """``fit``'s table: the mean over seeds (and each fold's, with cross-validation) beside the Bayes ceiling."""
    keys = [k for k in summary["metrics"] if not k.startswith(("params", "train_", "test_"))]
    name = cfg.model + (f" ({cfg.ablation})" if cfg.ablation else "")
    rows = [(f"{name}, fold {k}", m) for k, m in zip(summary.get("folds", []), summary.get("per_fold", []),
                                                       strict=True)]
    rows.append((f"{name}, mean over folds" if rows else name, summary["metrics"]))
    print_table(console, f"{cfg.model} on {summary['data']} ({len(cfg.seeds)} seed(s), test split)", rows, keys,
                summary["bayes"])
    print_notes(console, summary["notes"])


def print_tune(console: Any, out: dict[str, Any]) -> None:
    """``tune``'s best trial and the config file that holds its setting."""
    best = out["best"]
    if best:
        console.print(f"best: trial {best['trial']}, {out['metric']} {best['value']:.4f}, "
                      + ", ".join(f"{k}={v}" for k, v in best["params"].items()), markup=False, soft_wrap=True)
        console.print(f"config: {best['config']} (mmfusion fit --config {best['config']})", markup=False,
                      soft_wrap=True)
    else:
        console.print(f"no trial completed ({out['finished']} finished, all pruned): no best setting to export",
                      style="yellow", markup=False)


def print_folds(console: Any, per_fold: dict[int, dict[str, Any]], summary: dict[str, Any], out: Path) -> None:
    """``test`` of a folder of fold checkpoints: each fold's metrics, their mean ± std, and where it is written."""
    for k, r in per_fold.items():
        console.print(f"fold {k}: " + ", ".join(f"{m} {r[m]:.4f}" for m in summary), markup=False)
    console.print("mean ± std over folds: " + ", ".join(f"{m} {v['mean']:.4f} ± {v['std']:.4f}"
                                                        for m, v in summary.items()), markup=False)
    console.print(f"summary: {out}")
