"""The ``mmfusion`` command line: parse -> config -> engine. Nothing else lives here."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mmfusion.cli import show
from mmfusion.cli.parser import RESUME_HINT, _train_flags, build_parser
from mmfusion.errors import ConfigError, MMFusionError, run_reporting_errors
from mmfusion.runtime import keep_freed_memory


def cmd_fit(args: argparse.Namespace) -> int:
    from mmfusion.engine.bench import shipped_config
    from mmfusion.engine.config import resolve_config
    from mmfusion.engine.train import fit

    console = show.console()
    flags, sets = _train_flags(args)
    cfg = resolve_config([shipped_config(c) for c in args.config or ()], flags, sets)
    summary = fit(cfg, resume=bool(args.resume), console=console)
    show.print_fit(console, cfg, summary)
    console.print(f"results: {summary['summary_dir']}/summary.{{md,csv,json}}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from mmfusion.engine.config import resolve_config
    from mmfusion.engine.tune import tune

    console = show.console()
    flags, sets = _train_flags(args)
    flags.setdefault("train", {}).setdefault("progress", False)  # one line per trial instead
    cfg = resolve_config(args.config, flags, sets)
    out = tune(cfg, args.space, args.trials, storage=args.storage, study_name=args.study, metric=args.metric,
               pruner=args.pruner, heartbeat=args.heartbeat, sampler_seed=args.sampler_seed,
               say=lambda line: console.print(line, markup=False, soft_wrap=True))
    show.print_tune(console, out)
    console.print("trials: " + ", ".join(out["files"][:2]), markup=False, soft_wrap=True)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from mmfusion.engine.bench import run_bench

    console = show.console()
    flags, sets = _train_flags(args)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    out = run_bench(models, flags, sets, config_dir=args.config_dir, name=args.name, resume=True, console=console)
    show.print_table(console, out["title"], out["rows"], out["keys"], out["bayes"])
    show.print_notes(console, out["notes"])
    console.print(f"table: {out['files']['md']} (+ .csv, .json, .png)")
    return 0


def cmd_eval(args: argparse.Namespace, write_predictions_only: bool) -> int:
    if write_predictions_only and (args.clips or not args.data):
        return cmd_predict_clips(args)  # video files: nothing of evaluate (Lightning, metrics) is imported
    from mmfusion.engine.evaluate import evaluate_checkpoint

    console = show.console()
    if Path(args.ckpt).is_dir():
        if write_predictions_only:
            raise MMFusionError(f"--ckpt {args.ckpt}: predict reads one checkpoint, not a folder")
        return _eval_folds(args, console)
    wanted = ".csv" if write_predictions_only else ".json"
    if args.out and Path(args.out).suffix.lower() != wanted:
        what = "predictions as CSV" if write_predictions_only else "metrics as JSON"
        raise MMFusionError(f"--out {args.out}: {args.command} writes {what}; expected a path ending in {wanted}, "
                            f"got {Path(args.out).suffix or 'no suffix'}")
    done = evaluate_checkpoint(args.ckpt, args.data, args.split, _data_args(args.set),
                               predictions_only=write_predictions_only, out=args.out, batch_size=args.batch_size,
                               compile=args.compile, say=console.print)
    args.metrics_file = done.out
    if write_predictions_only:
        console.print(f"wrote {done.samples} predictions to {done.out}")
        return 0
    show.print_table(console, f"{done.model_name} on {done.bundle.describe()} [{args.split}]",
                 [(done.model_name, {k: {"mean": v, "std": 0.0, "n": 1} for k, v in done.metrics.items()})],
                 list(done.metrics), done.bundle.bayes if args.split == "test" else None)
    for warning in done.notes:
        console.print(f"warning: {warning}", style="bold yellow", markup=False)
    console.print(f"metrics: {done.out}\npredictions: {done.predictions}")
    return 0


def cmd_predict_clips(args: argparse.Namespace) -> int:
    import json

    from mmfusion.engine.clip_predict import predict_clips

    if not args.clips:
        raise ConfigError("nothing to predict", key="--data", expected="--data SPEC or video files", actual=None)
    if args.data:
        raise ConfigError("give --data or video files, not both", key="--data", expected="one of them",
                          actual=f"--data {args.data} and {len(args.clips)} file(s)")
    if args.out:
        raise ConfigError("--out is for --data; video files print their results (--json for JSON)", key="--out")
    bar, update = show.progress_bar(not args.json and sys.stderr.isatty(), "predict")
    with bar:
        rows = predict_clips(args.ckpt, args.clips, text=args.transcript,
                             transcript=Path(args.transcript_file) if args.transcript_file else None,
                             progress=update, threads=args.threads)
    if args.json:
        print(json.dumps(rows if len(rows) > 1 else rows[0], indent=2))
    else:
        show.print_clip_rows(rows)
    return 1 if any("error" in r for r in rows) else 0


def cmd_extract(args: argparse.Namespace) -> int:
    from mmfusion.io import atomic_write_json
    from mmfusion.media import FeatureSet
    from mmfusion.media.extract import run_extract

    fs = FeatureSet(args.audio, args.audio_rate, args.vision_rate)
    bar, update = show.progress_bar(not args.no_progress, "extract")
    with bar:
        summary = run_extract(Path(args.clips), Path(args.out), fs=fs,
                              transcripts=Path(args.transcripts) if args.transcripts else None,
                              labels=Path(args.labels) if args.labels else None, split=args.split, seed=args.seed,
                              workers=args.workers, progress=update)
    show.print_extract(summary, args.out)
    if args.json:
        atomic_write_json(args.json, summary.as_dict())
    return 1 if summary.failed else 0


def cmd_make_dataset(args: argparse.Namespace) -> int:
    from mmfusion.media.talking import Style, make_talking_faces

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError("not a frame size", key="--size", expected="WIDTHxHEIGHT", actual=args.size) from None
    style = Style(width=width, height=height, fps=args.fps, container=args.container,
                  voice_strength=args.voice_strength, face_strength=args.face_strength, voice_noise=args.voice_noise,
                  face_noise=args.face_noise)
    bar, update = show.progress_bar(not args.no_progress, "make-dataset")
    with bar:
        res = make_talking_faces(Path(args.out), args.n, seed=args.seed, style=style, speakers=args.speakers,
                                 progress=update)
    print(f"wrote {res['clips']} clips, their transcripts (.json) and labels.csv to {res['out']}")
    print("text and labels are real (VADER movie-review snippets, mean human rating rescaled to -3..3); voice and "
          "face are generated")


def _eval_folds(args: argparse.Namespace, console: Any) -> int:
    """``test --ckpt DIR``: each ``fold_K`` checkpoint on RAVDESS fold K (1-based, the authors' numbering), then
    the mean ± std over the folds (sample std), written to DIR/test_folds.json."""
    import json

    from mmfusion.engine.evaluate import fold_checkpoints, fold_summary

    folder = Path(args.ckpt)
    files = fold_checkpoints(folder)
    if args.out:
        raise MMFusionError("--out names one file; with a folder of checkpoints each fold's metrics are written "
                            "beside its checkpoint and the summary to test_folds.json")
    per_fold = {}
    for k, f in files:
        one = argparse.Namespace(**vars(args))
        one.ckpt, one.set = str(f), [*args.set, f"fold={k - 1}"]
        cmd_eval(one, False)
        per_fold[k] = json.loads(Path(one.metrics_file).read_text())
    summary, out = fold_summary(folder, per_fold)
    show.print_folds(console, per_fold, summary, out)
    return 0


def cmd_import_weights(args: argparse.Namespace) -> int:
    from mmfusion.engine.checkpoints import import_reference
    from mmfusion.io import atomic_write_json

    summary = import_reference(args.name, args.path, args.out)
    if args.json:
        atomic_write_json(args.json, summary)
    print(f"{args.name}: {summary['tensors']} tensors, {summary['parameters']:,} parameters from {args.path} -> "
          f"{args.out}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from mmfusion.engine.checkpoints import load_system, run_dir
    from mmfusion.engine.evaluate import checkpoint_data
    from mmfusion.engine.explain import embed_codes, explain_sample, sample_index

    system = load_system(args.ckpt)
    bundle, _ = checkpoint_data(system, args.ckpt, args.data, _data_args(args.set), print)
    index = args.index if args.id is None else sample_index(bundle, args.split, args.id)
    out = Path(args.out) if args.out else run_dir(args.ckpt) / "explain" / f"{args.split}_{index}"
    meta = explain_sample(system.model, bundle, args.split, index, out)
    print(f"sample {meta['id']}: {meta['reading']}")
    print(f"wrote {len(meta['files'])} plots and arrays.npz to {out}")
    if args.embedding != "none":
        path = embed_codes(system.model, bundle, args.split, out, args.embedding, args.max_samples)
        print(f"embedding of the codes: {path}")
        from mmfusion.engine.diagnostics import write_separability

        line = write_separability(system.model, bundle, args.split, out / "separability.json")
        if line:
            print(line)
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    from mmfusion.engine.robustness import robustness_data, run_robustness

    console = show.console()
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    bundle, data_args = robustness_data(Path(args.runs), args.data, _data_args(args.set), models,
                                        lambda line: console.print(line, markup=False))
    res = run_robustness(Path(args.runs), bundle, models, Path(args.out) if args.out else None, console,
                         progress=not args.no_progress, spec=args.data, data_args=data_args)
    show.print_robustness(console, res)
    console.print(f"table: {res['files'][0]} (+ .csv, .json, .png)")
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from mmfusion.data.convert import convert

    bundle, path, layout = convert(args.data, args.out, args.layout, _data_args(args.set), overwrite=args.overwrite)
    print(f"wrote {bundle.describe()} to {path} ({layout} layout)")
    return 0


def _data_args(sets: Sequence[str]) -> dict[str, Any]:
    """Reader options from repeated ``--set key=value`` flags (imported when needed: ``--help`` stays quick)."""
    from mmfusion.engine.config import data_args_from_sets

    return data_args_from_sets(sets)


def cmd_prepare(args: argparse.Namespace) -> int:
    from mmfusion.data import load_data

    bundle = load_data(args.data, _data_args(args.set), source="--set")
    print(f"ready: {bundle.describe()}")
    for line in bundle.report.lines():
        print(f"  note: {line}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from mmfusion.data import load_data
    from mmfusion.data.describe import describe_bundle
    from mmfusion.io import atomic_write_json

    info, lines = describe_bundle(load_data(args.data, _data_args(args.set), source="--set"))
    print("\n".join(lines))
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
    show.print_models(args.ablations)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "fit": cmd_fit, "tune": cmd_tune,
    "bench": cmd_bench, "test": lambda a: cmd_eval(a, False), "predict": lambda a: cmd_eval(a, True),
    "explain": cmd_explain, "robustness": cmd_robustness, "convert": cmd_convert, "prepare": cmd_prepare,
    "data": cmd_data, "models": cmd_models, "extract": cmd_extract, "make-dataset": cmd_make_dataset,
    "import-weights": cmd_import_weights,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command not in ("extract", "make-dataset"):  # these never start Lightning, nor predict on video files
        show.quiet(lightning=not (args.command == "predict" and not args.data))
    keep_freed_memory()  # reuse freed memory instead of page-faulting every large tensor in again (runtime.py)
    return run_reporting_errors(f"mmfusion {args.command}", lambda: COMMANDS[args.command](args),
                                RESUME_HINT.get(args.command, ""))


if __name__ == "__main__":
    sys.exit(main())
