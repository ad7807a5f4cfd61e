"""The ``mmfusion`` command line: parse -> config -> engine. Nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmfusion.errors import ConfigError, MMFusionError
from mmfusion.runtime import keep_freed_memory

EPILOG_FIT = """examples:
  mmfusion fit --model lf_lstm --data synthetic --seeds 1111 1112 1113
  mmfusion fit --model mea --config configs/mea/mosi.yaml --data mult:data/mosi_data_noalign.pkl
  mmfusion fit --model mea --config configs/mea/mosi.yaml --ablation no_hca --data mmsa:data/unaligned_50.pkl
  mmfusion fit --model lf_lstm --data synthetic --resume        # continue an interrupted run
  mmfusion fit --config configs/msaf/ravdess.yaml --data ravdess:data/RAVDESS   # 6-fold CV (data_args.fold=all)

data SPEC: synthetic | synthetic:emotion | mult:PATH | mmsa:PATH | csd:DIR | h5:PATH | ravdess:DIR | ntu:DIR
  (reader options with --set data_args.KEY=VALUE, e.g. --set data_args.n_train=40000 for synthetic)
"""


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="data SPEC (default: synthetic, or the config's)")
    p.add_argument("--config", help="YAML file with overrides (see configs/)")
    p.add_argument("--seeds", type=int, nargs="+", help="one or more seeds; several give mean ± std")
    p.add_argument("--max-epochs", type=int, help="maximum training epochs")
    p.add_argument("--batch-size", type=int, help="training batch size")
    p.add_argument("--lr", type=float, help="learning rate (Adam)")
    p.add_argument("--out", help="output root directory (default: runs)")
    p.add_argument("--precision", help="32-true (default), 16-mixed or bf16-mixed (Lightning's short names 32, 16, "
                                       "bf16 and 64 are read as 32-true, 16-mixed, bf16-mixed and 64-true)")
    p.add_argument("--accelerator", help="auto (default), cpu or gpu")
    p.add_argument("--devices", type=int, help="number of devices (default 1); N > 1 trains with DDP, one process "
                   "per device")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.patience=5 --set model_args.dim=32 "
                        "--set model_args.kernels.audio=5 (one entry of a per-modality table)")
    p.add_argument("--resume", action="store_true",
                   help="reuse finished runs and continue interrupted ones from their last checkpoint, with the "
                        "settings they were made with (others are refused, naming the first that differs); a "
                        "larger --max-epochs trains a finished run on")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--pretrained", action="append", default=[], metavar="BRANCH=PATH",
                   help="local weights for a model branch, e.g. --pretrained video=resnext50.pth (state dict)")


def _train_flags(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    flags: dict[str, Any] = {"data": args.data, "seeds": args.seeds, "out": args.out}
    if getattr(args, "model", None):
        flags["model"] = args.model
    if getattr(args, "ablation", None):
        flags["ablation"] = args.ablation
    if args.pretrained:
        flags["pretrained"] = dict(p.partition("=")[::2] for p in args.pretrained)
    train = {"max_epochs": args.max_epochs, "batch_size": args.batch_size, "lr": args.lr,
             "precision": args.precision, "accelerator": args.accelerator, "devices": args.devices,
             "threads": args.threads}
    train = {k: v for k, v in train.items() if v is not None}
    if args.no_progress:
        train["progress"] = False
    if train:
        flags["train"] = train
    return flags, list(args.set)


READER_OPTIONS_HELP = ("reader options (data_args), e.g. fold=3; by default those the checkpoint was trained with "
                       "when --data goes to the same reader, and these override them")


RESUME_HINT = {
    "fit": "; the finished epochs are in the last checkpoint: rerun with --resume to continue from it",
    "bench": "; finished runs are kept and the interrupted one has its last checkpoint: rerun the same command to "
             "continue",
    "prepare": "; the decoded clips are kept: rerun the same command to continue",
}
"""What an interrupted command kept, and how to go on (commands not listed are simply run again)."""


def version_text() -> str:
    """``mmfusion X (Python Y, torch Z, lightning W)``: the versions a bug report needs, read without importing
    torch (an installed package's metadata; "not installed" where it is missing)."""
    from importlib import metadata

    import mmfusion

    def installed(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    python = sys.version.split()[0]
    return (f"mmfusion {mmfusion.__version__} (Python {python}, torch {installed('torch')}, "
            f"lightning {installed('lightning')})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mmfusion",
        description="Fusion of asynchronous multimodal video sequences: MEA, MSAF and baselines on the standard "
                    "data files, with the standard metrics.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print mmfusion's version and those of Python, PyTorch and Lightning, then exit")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("fit", help="train a model (several seeds give mean ± std)", epilog=EPILOG_FIT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name (see `mmfusion models`)")
    p.add_argument("--ablation", help="a named ablation of the model (see `mmfusion models --ablations`)")
    _add_train_flags(p)

    p = sub.add_parser("bench", help="train several models x seeds on one dataset and write one comparison table",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mmfusion bench --models mea,lf_lstm --data synthetic --seeds 1111 1112 1113")
    p.add_argument("--models", default="mea,lf_lstm",
                   help="comma-separated model names; NAME:ABLATION adds an ablation (e.g. mea:no_hca)")
    p.add_argument("--config-dir", default=None,
                   help="directory with <model>/<dataset>.yaml configs (default: ./configs, else the ones shipped "
                        "with the package)")
    p.add_argument("--name", default=None, help="name of the table files (default: bench_<dataset>)")
    _add_train_flags(p)

    for name, helptext in (("test", "evaluate a checkpoint on a split and write metrics"),
                           ("predict", "write predictions of a checkpoint for a split")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--ckpt", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.ckpt)")
        p.add_argument("--data", required=True, help="data SPEC")
        p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                       help="split to evaluate (default test)")
        p.add_argument("--out", help="output file: test writes metrics to X.json and per-clip predictions to "
                                     "X.predictions.csv; predict writes a .csv (default: <split>_<data>.metrics.json "
                                     "/ .predictions.csv in the checkpoint's run directory, <run> for "
                                     "<run>/checkpoints/x.ckpt, else the checkpoint's own folder)")
        p.add_argument("--batch-size", type=_positive_int, default=64, help="clips per forward pass (default 64)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=READER_OPTIONS_HELP)
        p.add_argument("--compile", action="store_true",
                       help="run the model through torch.compile: less per-operator overhead after a first batch "
                            "that compiles for a minute or two (lengths that change per batch compile once more, "
                            "for dynamic shapes); worth it for many clips or a long-running process; on a CPU "
                            "needs a C++ compiler")

    p = sub.add_parser("explain", help="save attention maps, WAL and DGF weights of one sample, and a code embedding",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mmfusion explain --ckpt runs/mea/synthetic/seed_1111/checkpoints/best.ckpt "
                              "--data synthetic --index 0")
    p.add_argument("--ckpt", required=True, help="checkpoint of a model with attention maps (mea)")
    p.add_argument("--data", required=True, help="data SPEC")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"],
                   help="split the sample and the embedded codes come from (default test)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=0, help="sample index within the split (default 0)")
    which.add_argument("--id", help="the sample's id instead of its index, as in predictions.csv (e.g. a video "
                                    "segment's name)")
    p.add_argument("--out", help="output directory (default: explain/<split>_<index> in the checkpoint's run "
                                 "directory, as for test)")
    p.add_argument("--embedding", default="tsne", choices=["tsne", "pca", "none"],
                   help="2-D plot of exclusive vs agnostic codes of the split (default tsne)")
    p.add_argument("--max-samples", type=_positive_int, default=300, help="samples in the embedding plot")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=READER_OPTIONS_HELP)

    p = sub.add_parser("robustness", help="evaluate a bench's trained models with a modality missing, noise, "
                                          "frame drops", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mmfusion robustness --runs runs/demo --data synthetic")
    p.add_argument("--runs", default="runs", help="output root of `mmfusion bench`/`fit` (default: runs)")
    p.add_argument("--data", default="synthetic", help="data SPEC the models were trained on")
    p.add_argument("--models", help="comma-separated subset of the trained models, named as bench takes them "
                                    "(mea:no_hca) or as their run directories (mea-no_hca); default: all found")
    p.add_argument("--out", help="output stem (default: <runs>/robustness_<dataset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="reader options (data_args); by default those every checkpoint was trained with, when "
                        "they agree; checkpoints trained with other options are refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("convert", help="convert a dataset to mmfusion's own HDF5 format (or MulT/MMSA pickles)")
    p.add_argument("data", help="data SPEC to read")
    p.add_argument("out", help="output file: .h5 (mmfusion format) or .pkl with --layout mult or mmsa")
    p.add_argument("--layout", choices=["h5", "mult", "mmsa"],
                   help="h5 (default for a .h5 file): mmfusion's HDF5 format; mult / mmsa: that project's pickle "
                        "layout (a .pkl file)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="reader options (data_args)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (by default an existing file is kept and convert stops; the file "
                        "being read is never replaced)")

    p = sub.add_parser("prepare", help="decode raw clips (ravdess:DIR, ntu:DIR) once into the dataset's cache "
                       "(interrupted, it goes on from the last decoded clip)")
    p.add_argument("data", help="data SPEC, e.g. ravdess:data/RAVDESS")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="reader options, e.g. frames=30 size=224 (ravdess) or skeleton_frames=32 (ntu)")

    p = sub.add_parser("data", help="load a dataset and print what is in it (shapes, lengths, load report)")
    p.add_argument("data", help="data SPEC")
    p.add_argument("--json", help="also write the description to this JSON file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="reader options (data_args), e.g. n_train=40000 (synthetic), fold=3 (ravdess) or "
                   "audio=openSMILE_IS09 (csd)")

    p = sub.add_parser("models", help="list registered models (and their ablations)")
    p.add_argument("--ablations", action="store_true", help="also list each model's named ablations")
    p.add_argument("--json", help="also write every model, what it reads and its ablations to this JSON file")
    return parser


def _console() -> Any:
    from rich.console import Console

    from mmfusion.runtime import launched_worker

    # the further processes of a multi-device run repeat the command line in lockstep; the first one prints
    return Console(stderr=False, highlight=False, quiet=launched_worker())


def _print_table(console: Any, title: str, rows: Sequence[tuple[str, dict[str, Any]]], keys: Sequence[str],
                 bayes: dict[str, float] | None) -> None:
    """One column per model (and the Bayes-optimal ceiling when known), one row per metric."""
    from rich.table import Table

    from mmfusion.engine.runs import fmt

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


def _quiet() -> None:
    """Keep Lightning's start-up chatter (accelerator lines, tips, deprecations) out of the user's terminal."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*(LeafSpec|does not have many workers|exists and is not empty|"
                            "`training_step` returned `None`|functional.all_gather is deprecated|"
                            "smaller than the logging interval).*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)


def cmd_fit(args: argparse.Namespace) -> int:
    from mmfusion.engine.bench import shipped_config
    from mmfusion.engine.runs import fit, resolve_config

    console = _console()
    flags, sets = _train_flags(args)
    cfg = resolve_config(shipped_config(args.config) if args.config else None, flags, sets)
    summary = fit(cfg, resume=args.resume, console=console)
    keys = [k for k in summary["metrics"] if not k.startswith(("params", "train_", "test_"))]
    name = cfg.model + (f" ({cfg.ablation})" if cfg.ablation else "")
    rows = [(f"{name}, fold {k}", m) for k, m in zip(summary.get("folds", []), summary.get("per_fold", []),
                                                       strict=True)]
    rows.append((f"{name}, mean over folds" if rows else name, summary["metrics"]))
    _print_table(console, f"{cfg.model} on {summary['data']} ({len(cfg.seeds)} seed(s), test split)", rows, keys,
                 summary["bayes"])
    for note in summary["notes"]:  # seeds that diverged or collapsed, inside the means above
        console.print(f"note: {note}", style="yellow", markup=False)
    console.print(f"results: {summary['summary_dir']}/summary.{{md,csv,json}}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mmfusion.engine.bench import run_bench

    console = _console()
    flags, sets = _train_flags(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = run_bench(models, flags, sets, config_dir=args.config_dir, name=args.name, resume=True, console=console)
    _print_table(console, out["title"], out["rows"], out["keys"], out["bayes"])
    for note in out["notes"]:  # seeds that diverged or collapsed, inside the means above
        console.print(f"note: {note}", style="yellow", markup=False)
    console.print(f"table: {out['files']['md']} (+ .csv, .json, .png)")
    return 0


def cmd_eval(args: argparse.Namespace, write_predictions_only: bool) -> int:
    import lightning as L

    from mmfusion.engine.checkpoints import load_system, run_dir
    from mmfusion.engine.runs import make_loader, predict_arrays, write_predictions
    from mmfusion.engine.system import compute_metrics
    from mmfusion.io import atomic_write_json
    from mmfusion.metrics import metric_warnings

    console = _console()
    wanted = ".csv" if write_predictions_only else ".json"
    if args.out and Path(args.out).suffix.lower() != wanted:
        what = "predictions as CSV" if write_predictions_only else "metrics as JSON"
        raise MMFusionError(f"--out {args.out}: {args.command} writes {what}; expected a path ending in {wanted}, "
                            f"got {Path(args.out).suffix or 'no suffix'}")
    system = load_system(args.ckpt)
    bundle, data_args = _checkpoint_data(system, args, console.print)
    if args.compile:
        from mmfusion.runtime import compile_model

        system.model = compile_model(system.model)
    loader = make_loader(bundle, args.split, args.batch_size, False, labeled=not write_predictions_only)
    trainer = L.Trainer(accelerator="auto", devices=1, logger=False, enable_progress_bar=True,
                        enable_model_summary=False)
    ids, pred, labels, _ = predict_arrays(trainer, system, loader)
    stem = f"{args.split}_{bundle.name}"
    if write_predictions_only:
        out = Path(args.out) if args.out else run_dir(args.ckpt) / f"{stem}.predictions.csv"
        write_predictions(out, ids, pred, labels if bundle.splits[args.split].labeled else None, bundle.task,
                          bundle.emotions)
        console.print(f"wrote {len(ids)} predictions to {out}")
        return 0
    metrics = compute_metrics(pred, labels, bundle.task, bundle.emotions)
    notes = metric_warnings(pred, labels, bundle.task)
    out = Path(args.out) if args.out else run_dir(args.ckpt) / f"{stem}.metrics.json"
    predictions = predictions_beside(out)
    atomic_write_json(out, {"checkpoint": str(args.ckpt), "data": bundle.source, "data_args": data_args,
                            "split": args.split, "predictions": predictions.name, **metrics,
                            "warnings": notes})
    write_predictions(predictions, ids, pred, labels, bundle.task, bundle.emotions)
    _print_table(console, f"{system.hparams['model_name']} on {bundle.describe()} [{args.split}]",
                 [(system.hparams["model_name"], {k: {"mean": v, "std": 0.0, "n": 1} for k, v in metrics.items()})],
                 list(metrics), bundle.bayes if args.split == "test" else None)
    for warning in notes:
        console.print(f"warning: {warning}", style="bold yellow", markup=False)
    console.print(f"metrics: {out}\npredictions: {predictions}")
    return 0


def predictions_beside(metrics: Path) -> Path:
    """Where ``test`` writes its per-sample predictions beside the metrics JSON ``metrics``:
    ``X.metrics.json`` and ``X.json`` -> ``X.predictions.csv``."""
    name = metrics.name.removesuffix(".json").removesuffix(".metrics")
    return metrics.with_name(name + ".predictions.csv")


def _checkpoint_data(system: Any, args: argparse.Namespace, say: Any) -> tuple[Any, dict[str, Any]]:
    """Load ``--data`` with the reader options the checkpoint was trained with (``--set`` overrides them)."""
    from mmfusion.data import load_data
    from mmfusion.engine.checkpoints import check_compatible, reader_options

    options, inherited = reader_options(system.hparams, args.ckpt, args.data, _data_args(args.set))
    if inherited:
        say("reader options from the checkpoint's training run: "
            + ", ".join(f"{k}={v}" for k, v in inherited.items()) + " (override with --set KEY=VALUE)")
    bundle = load_data(args.data, options, source="--set")
    check_compatible(system, bundle, args.ckpt)
    return bundle, options


def cmd_explain(args: argparse.Namespace) -> int:
    from mmfusion.engine.checkpoints import load_system, run_dir
    from mmfusion.engine.explain import embed_codes, explain_sample, sample_index

    system = load_system(args.ckpt)
    bundle, _ = _checkpoint_data(system, args, print)
    index = args.index if args.id is None else sample_index(bundle, args.split, args.id)
    out = Path(args.out) if args.out else run_dir(args.ckpt) / "explain" / f"{args.split}_{index}"
    meta = explain_sample(system.model, bundle, args.split, index, out)
    print(f"sample {meta['id']}: {meta['reading']}")
    print(f"wrote {len(meta['files'])} plots and arrays.npz to {out}")
    if args.embedding != "none":
        path = embed_codes(system.model, bundle, args.split, out, args.embedding, args.max_samples)
        print(f"embedding of the codes: {path}")
        from mmfusion.engine.diagnostics import modality_separability
        from mmfusion.io import atomic_write_json

        sep = modality_separability(system.model, bundle, (args.split,))
        if sep:
            atomic_write_json(out / "separability.json", sep)
            print(f"which modality a code came from (accuracy on the {args.split} split; chance "
                  f"{sep['modality_chance']:.3f}): " + ", ".join(
                      f"{b} codes: discriminator {sep.get(f'disc_acc_{b}_{args.split}', float('nan')):.3f}, fresh "
                      f"probe {sep.get(f'probe_acc_{b}_{args.split}', float('nan')):.3f}"
                      for b in ("agnostic", "exclusive") if f"disc_acc_{b}_{args.split}" in sep
                      or f"probe_acc_{b}_{args.split}" in sep))
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from mmfusion.data import load_data
    from mmfusion.engine.robustness import run_robustness, shared_training_options, trained_checkpoints

    console = _console()
    data_args = _data_args(args.set)
    bundle = load_data(args.data, data_args, source="--set")
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    if not data_args:  # as test and predict: the options the models were trained with, when they all agree
        inherited = shared_training_options(trained_checkpoints(Path(args.runs), bundle.name, models), args.data)
        if inherited:
            console.print("reader options from the checkpoints' training runs: "
                          + ", ".join(f"{k}={v}" for k, v in inherited.items()), markup=False)
            data_args = inherited
            bundle = load_data(args.data, data_args, source="checkpoints' training runs")
    res = run_robustness(Path(args.runs), bundle, models, Path(args.out) if args.out else None, console,
                         progress=not args.no_progress, spec=args.data, data_args=data_args)
    rows = [(m, per) for m, per in res["table"].items()]
    from rich.table import Table

    from mmfusion.engine.runs import fmt

    table = Table(title=f"test {res['metric']} under perturbation (mean ± std over seeds)", title_justify="left")
    table.add_column("condition")
    for m, _ in rows:
        table.add_column(m, justify="right")
    for c in res["conditions"]:
        table.add_row(c, *[fmt({**per[c], "n": per[c]["seeds"]}, 3) for _, per in rows])  # one seed: no ±
    console.print(table)
    console.print(f"table: {res['files'][0]} (+ .csv, .json, .png)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mmfusion.data import data_path, load_data

    suffix = Path(args.out).suffix.lower()
    pickled = suffix in (".pkl", ".pickle")
    if args.layout is None and pickled:  # MulT's or MMSA's? Both are .pkl
        raise ConfigError("a .pkl output is one of two pickle layouts", source=args.out, key="--layout",
                          expected="--layout mult or --layout mmsa (or a .h5 file for mmfusion's format)",
                          actual=None)
    args.layout = args.layout or "h5"
    suffixes = (".h5", ".hdf5") if args.layout == "h5" else (".pkl", ".pickle")
    if suffix not in suffixes:  # a file whose name says another format than it holds goes to the wrong reader
        raise ConfigError(f"the {args.layout} layout is written to a '{suffixes[0]}' (or {suffixes[1]}) file",
                          source=args.out, key="out", expected="a matching suffix", actual=suffix or "no suffix")
    out = Path(args.out)
    source = data_path(args.data)
    if source is not None and out.exists() and source.exists() and out.resolve() == source.resolve():
        raise ConfigError("the output is the file being read", source=args.out, key="out",
                          expected="another file", actual=args.out)
    if out.exists() and not args.overwrite:
        raise ConfigError("the output file exists", source=args.out, key="out",
                          expected="a new file (or --overwrite to replace it)", actual="an existing file")
    bundle = load_data(args.data, _data_args(args.set), source="--set")
    if args.layout != "h5":  # the pickle layouts hold three labelled splits
        from mmfusion.engine.runs import require_training_splits

        require_training_splits(bundle)
    if args.layout == "h5":
        from mmfusion.data.custom import write_custom

        path = write_custom(args.out, bundle)
    elif args.layout == "mult":
        from mmfusion.data.mult import write_mult

        path = write_mult(args.out, bundle.splits, emotions=bundle.emotions)
    else:
        if bundle.task != "regression":
            raise MMFusionError("the MMSA layout holds sentiment scores only; use --layout mult or h5")
        from mmfusion.data.mmsa import write_mmsa

        path = write_mmsa(args.out, bundle.splits)
    print(f"wrote {bundle.describe()} to {path} ({args.layout} layout)")
    return 0


def _data_args(sets: Sequence[str]) -> dict[str, Any]:
    """Reader options from repeated ``--set key=value`` flags (``data_args.key=value``, as ``fit`` spells them, too)."""
    from mmfusion.config import parse_value

    return {k.removeprefix("data_args."): parse_value(v) for k, _, v in (s.partition("=") for s in sets)}


def cmd_prepare(args: argparse.Namespace) -> int:
    from mmfusion.data import load_data

    bundle = load_data(args.data, _data_args(args.set), source="--set")
    print(f"ready: {bundle.describe()}")
    for line in bundle.report.lines():
        print(f"  note: {line}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    import numpy as np

    from mmfusion.data import load_data
    from mmfusion.io import atomic_write_json

    bundle = load_data(args.data, _data_args(args.set), source="--set")
    info: dict[str, Any] = {"name": bundle.name, "source": bundle.source, "task": bundle.task,
                            "emotions": list(bundle.emotions), "feature_dims": bundle.feature_dims, "splits": {},
                            "report": bundle.report.as_dict(), "bayes": bundle.bayes}
    print(bundle.describe())
    for name, s in bundle.splits.items():
        info["splits"][name] = {"n": len(s), "lengths": {}}
        for m in s.modalities:
            x = s.features[m]
            if m not in s.lengths:  # clip data: one fixed-size array per clip
                info["splits"][name].setdefault("shapes", {})[m] = list(x.shape[1:])
                print(f"  {name:5s} {m:6s} N={len(s):6d} clip shape {'x'.join(map(str, x.shape[1:]))}")
                continue
            L = s.lengths[m]
            if len(s) == 0:
                info["splits"][name]["lengths"][m] = {"max_frames": int(x.shape[1])}
                print(f"  {name:5s} {m:6s} N={0:6d} T={x.shape[1]:4d} d={x.shape[2]:4d} (no clips)")
                continue
            info["splits"][name]["lengths"][m] = {"max_frames": int(x.shape[1]), "min": int(L.min()),
                                                  "mean": float(L.mean()), "max": int(L.max())}
            print(f"  {name:5s} {m:6s} N={len(s):6d} T={x.shape[1]:4d} d={x.shape[2]:4d} "
                  f"length min/mean/max {L.min()}/{np.mean(L):.1f}/{L.max()}")
    for line in bundle.report.lines():
        print(f"  note: {line}")
    if args.json:
        atomic_write_json(args.json, info)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mmfusion.io import atomic_write_json
    from mmfusion.models import config_class, list_models, model_inputs

    if args.json:
        info = {}
        for name in list_models():
            cls = config_class(name)
            table, notes = getattr(cls, "ABLATIONS", {}), getattr(cls, "ABLATION_NOTES", {})
            info[name] = {"reads": model_inputs(name),
                          "ablations": {a: {"settings": dict(table[a]), "note": notes.get(a)} for a in sorted(table)}}
        atomic_write_json(args.json, info)
    listed: set[type] = set()
    for name in list_models():
        cls = config_class(name)
        table = getattr(cls, "ABLATIONS", {}) if cls else {}
        if not (args.ablations and table):
            print(name)
        elif cls in listed:  # a variant of a model listed above (e.g. its _tiny size): the same switches
            print(f"{name}   ablations: as above")
        else:
            listed.add(cls)
            notes = getattr(cls, "ABLATION_NOTES", {})
            print(f"{name}   ablations (--ablation NAME, or the settings beside it with --set model_args.KEY=VALUE):")
            settings = {a: " ".join(f"{k}={_yaml_value(v)}" for k, v in table[a].items()) for a in table}
            width = max(map(len, table)), max(map(len, settings.values()))
            for a in sorted(table):
                print(f"  {a:<{width[0]}}  {settings[a]:<{width[1]}}  {notes.get(a, '')}".rstrip())
    return 0


def _yaml_value(value: object) -> str:
    """A setting as it is written on the command line (``false``, not ``False``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the flag and the value in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": cmd_fit, "bench": cmd_bench, "test": lambda a: cmd_eval(a, False), "predict": lambda a: cmd_eval(a, True),
    "explain": cmd_explain, "robustness": cmd_robustness, "convert": cmd_convert, "prepare": cmd_prepare,
    "data": cmd_data, "models": cmd_models,
}


def run_reporting_errors(name: str, body: Callable[[], int | None], resume_hint: str = "") -> int:
    """Run a command's ``body`` and turn the errors a user causes into one line on stderr and an exit status:
    mmfusion's own errors (bad input, config, data) and file-system refusals 2, Ctrl-C 130 (with ``resume_hint``),
    a closed output pipe 141 (quietly). Used by ``mmfusion`` and by the scripts in ``benchmarks/``."""
    try:
        return body() or 0
    except MMFusionError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted{resume_hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`mmfusion data ... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit does not raise again
        return 141  # 128 + SIGPIPE, as a shell reports a command a closed pipe stopped
    except OSError as exc:  # the file system refused (not a directory, no permission, disk full): one line
        where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
        print(f"{name}: error: {where + ': ' if where else ''}{exc.strerror or exc}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet()
    keep_freed_memory()  # reuse freed memory instead of page-faulting every large tensor in again (runtime.py)
    return run_reporting_errors(f"mmfusion {args.command}", lambda: COMMANDS[args.command](args),
                                RESUME_HINT.get(args.command, ""))


if __name__ == "__main__":
    sys.exit(main())
