"""The ``mmfusion`` argument parser: every command, its flags and their help."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mmfusion.errors import ConfigError

EPILOG_FIT = """examples:
  mmfusion fit --model lf_lstm --data synthetic --seeds 1111 1112 1113
  mmfusion fit --model mea --config configs/mea/mosi.yaml --data mult:data/mosi_data_noalign.pkl
  mmfusion fit --model mea --config configs/mea/mosi.yaml --ablation no_hca --data mmsa:data/unaligned_50.pkl
  mmfusion fit --config configs/mea/mosi.yaml --config configs/mea/small_data.yaml --data mult:data/mosi.pkl
  mmfusion fit --model lf_lstm --data synthetic --resume        # continue an interrupted run
  mmfusion fit --config configs/msaf/ntu.yaml --data ntu:data/NTU --resume ntu.ckpt   # from import-weights' file
  mmfusion fit --config configs/msaf/ravdess.yaml --data ravdess:data/RAVDESS   # 6-fold CV (data_args.fold=all)

data SPEC: synthetic | synthetic:emotion | mult:PATH | mmsa:PATH | csd:DIR | h5:PATH | ravdess:DIR | ntu:DIR
  (reader options with --set data_args.KEY=VALUE, e.g. --set data_args.n_train=40000 for synthetic)
"""


EPILOG_TUNE = """examples:
  mmfusion tune --model mea --config configs/mea/synthetic.yaml --space configs/mea/space.yaml --trials 40
  mmfusion tune --model mult --data mult:data/mosi_data_noalign.pkl --space configs/mult/space.yaml --trials 40 \\
      --storage postgresql://user@db-host/optuna --study mult-mosi      # the same command on every machine

A trial trains the first of --seeds. Each worker stops once the study holds --trials finished (complete or
pruned) trials; an interrupted or killed worker's trial is marked failed and the study goes on when any worker
runs. Writes <out>/tune/<study>/: trial_<n>/ (each trial's run directory, as fit writes it), trials.csv,
trials.md, history.png, importance.png, best.yaml (mmfusion fit --config takes it) and best.json.
See docs/scaling.md.
"""


def _add_train_flags(p: argparse.ArgumentParser, resume: bool = True, config: bool = True) -> None:
    p.add_argument("--data", help="data SPEC (default: synthetic, or the config's)")
    if config:
        p.add_argument("--config", action="append", metavar="FILE",
                       help="YAML file with overrides (see configs/); repeat it to layer files, later ones winning, "
                            "e.g. --config configs/mea/mosi.yaml --config configs/mea/small_data.yaml")
    p.add_argument("--seeds", type=int, nargs="+", help="one or more seeds; several give mean ± std")
    p.add_argument("--max-epochs", type=int, help="maximum training epochs")
    p.add_argument("--batch-size", type=int, help="training batch size (global: shared by all processes)")
    p.add_argument("--lr", type=float, help="learning rate (Adam)")
    p.add_argument("--out", help="output root directory (default: runs)")
    p.add_argument("--precision", help="32-true (default), 16-mixed or bf16-mixed (Lightning's short names 32, 16, "
                                       "bf16 and 64 are read as 32-true, 16-mixed, bf16-mixed and 64-true)")
    p.add_argument("--accelerator", help="auto (default), cpu or gpu")
    p.add_argument("--devices", type=int, help="devices per node (default 1); N > 1 trains with DDP, one process "
                   "per device, the global --batch-size split evenly across them")
    p.add_argument("--num-nodes", type=int, help="machines training together (default 1); start the command on "
                   "each (torchrun, srun or Lightning's NODE_RANK/MASTER_ADDR variables; see docs/scaling.md)")
    p.add_argument("--strategy", help="Lightning's distributed strategy: auto (default: ddp for several "
                   "processes), ddp, ddp_spawn, or fsdp (GPUs; shards the model's weights)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--num-workers", type=int, help="DataLoader worker processes that read and batch the data "
                   "(default 0: the training process itself); useful with HDF5 data read lazily")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config value, e.g. --set train.patience=5 --set model_args.dim=32 "
                        "--set model_args.kernels.audio=5 (one entry of a per-modality table)")
    if resume:
        p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CKPT",
                       help="reuse finished runs and continue interrupted ones from their last checkpoint, with the "
                            "settings they were made with (others are refused, naming the first that differs); a "
                            "larger --max-epochs trains a finished run on. --resume CKPT starts a new run from the "
                            "weights of a checkpoint (such as import-weights writes; same as --pretrained "
                            "model=CKPT: fresh optimiser, epoch 0, the checkpoint's network must be the run's) and "
                            "continues it from its own last checkpoint when rerun")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--pretrained", action="append", default=[], metavar="BRANCH=PATH",
                   help="local weights for a model branch, e.g. --pretrained video=fold_{fold}_resnext50_best.pth "
                        "(a state dict of the branch, or the MSAF authors' unimodal file; {fold} is the fold, "
                        "1-based; BRANCH 'model' loads a whole checkpoint such as import-weights writes); every "
                        "tensor must match")
    p.add_argument("--pretrained-partial", action="store_true",
                   help="with --pretrained: load the tensors that match and keep the rest at their initial "
                        "values (listed in pretrained.json) instead of refusing a partial match")


def _train_flags(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    flags: dict[str, Any] = {"data": args.data, "seeds": args.seeds, "out": args.out}
    if getattr(args, "model", None):
        flags["model"] = args.model
    if getattr(args, "ablation", None):
        flags["ablation"] = args.ablation
    if args.pretrained:
        flags["pretrained"] = dict(p.partition("=")[::2] for p in args.pretrained)
    resume_from = getattr(args, "resume", False)
    if isinstance(resume_from, str):  # --resume CKPT: the run starts from the checkpoint's whole model
        if args.pretrained:
            raise ConfigError("--resume CKPT loads the whole model from CKPT; it cannot be combined with --pretrained",
                              key="--pretrained", expected="--resume CKPT alone, or --pretrained BRANCH=PATH ...",
                              actual=" ".join(args.pretrained))
        flags["pretrained"] = {"model": resume_from}
    if getattr(args, "pretrained_partial", False):
        flags["pretrained_partial"] = True
    train = {"max_epochs": args.max_epochs, "batch_size": args.batch_size, "lr": args.lr,
             "precision": args.precision, "accelerator": args.accelerator, "devices": args.devices,
             "num_nodes": args.num_nodes, "strategy": args.strategy, "threads": args.threads,
             "num_workers": args.num_workers}
    train = {k: v for k, v in train.items() if v is not None}
    if args.no_progress:
        train["progress"] = False
    if train:
        flags["train"] = train
    return flags, list(args.set)


EPILOG_EXTRACT = """examples:
  mmfusion extract clips/ --out mine.h5 --labels clips/labels.csv --workers 2
  mmfusion extract clips/ --out mine.h5 --transcripts transcripts/ --split speaker --seed 1

Clips that fail are listed with their reason in OUT.errors.csv; the exit status is 1 when any failed.
An interrupted run keeps the finished clips (OUT.parts/): rerun the same command to go on.
"""

EPILOG_PREDICT = """examples:
  mmfusion predict --ckpt runs/mea_tiny/talking/seed_1111/checkpoints/best.ckpt clip.mp4
  mmfusion predict --ckpt best.ckpt clip.mp4 --transcript "what a lovely film" --json
  mmfusion predict --ckpt best.ckpt clips/            # every video file in the folder
  mmfusion predict --ckpt best.ckpt --data h5:new.h5   # a dataset file
"""

READER_OPTIONS_HELP = ("reader options (data_args), e.g. fold=3; by default those the checkpoint was trained with "
                       "when --data goes to the same reader, and these override them")


RESUME_HINT = {
    "tune": "; the study keeps its finished trials: rerun the same command to go on",
    "fit": "; the finished epochs are in the last checkpoint: rerun with --resume to continue from it",
    "bench": "; finished runs are kept and the interrupted one has its last checkpoint: rerun the same command to "
             "continue",
    "prepare": "; the decoded clips are kept: rerun the same command to continue",
    "extract": "; the extracted clips are kept: rerun the same command to continue",
    "make-dataset": "; the finished clips are kept: rerun the same command to continue",
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
    """The ``mmfusion`` parser, its commands in the order ``--help`` lists them."""
    parser = argparse.ArgumentParser(
        prog="mmfusion",
        description="Fusion of asynchronous multimodal video sequences: MEA, MSAF and baselines on the standard "
                    "data files, with the standard metrics.",
    )
    parser.add_argument("--version", action="version", version=version_text(),
                        help="print mmfusion's version and those of Python, PyTorch and Lightning, then exit")
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_fit, _add_tune, _add_bench, _add_test_predict, _add_extract, _add_make_dataset, _add_explain,
                _add_robustness, _add_convert, _add_prepare, _add_data, _add_import_weights, _add_models):
        add(sub)
    return parser


def _add_fit(sub: Any) -> None:
    """The ``fit`` command."""
    p = sub.add_parser("fit", help="train a model (several seeds give mean ± std)", epilog=EPILOG_FIT,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name (see `mmfusion models`)")
    p.add_argument("--ablation", help="a named ablation of the model (see `mmfusion models --ablations`)")
    _add_train_flags(p)


def _add_tune(sub: Any) -> None:
    """The ``tune`` command."""
    p = sub.add_parser("tune", help="search hyperparameters with Optuna (a study shared by any number of workers)",
                       epilog=EPILOG_TUNE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="registered model name (see `mmfusion models`)")
    p.add_argument("--ablation", help="a named ablation of the model")
    p.add_argument("--space", required=True, help="YAML search space, e.g. configs/mea/space.yaml")
    p.add_argument("--trials", required=True, type=_positive_int,
                   help="finished trials the study should hold, counted over all its workers")
    p.add_argument("--storage", help="Optuna database URL (default: sqlite:///<out>/tune/<study>/study.db); "
                                     "postgresql://... or mysql://... for workers on several machines")
    p.add_argument("--study", help="study name (default: <model>-<dataset>)")
    p.add_argument("--metric", default="val_loss",
                   help="validation metric to optimise (default val_loss; losses and val_mae are minimised, "
                        "others maximised)")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"],
                   help="stop unpromising trials early (default median)")
    p.add_argument("--heartbeat", type=float, default=30.0,
                   help="seconds between a worker's heartbeats; a trial silent for twice as long is marked failed "
                        "(default 30)")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (one worker: a repeatable search)")
    _add_train_flags(p, resume=False)


def _add_bench(sub: Any) -> None:
    """The ``bench`` command."""
    # allow_abbrev=False: --config is refused, not taken as short for --config-dir
    p = sub.add_parser("bench", help="train several models x seeds on one dataset and write one comparison table",
                       formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                       epilog="example:\n  mmfusion bench --models mea,lf_lstm --data synthetic --seeds 1111 1112 1113")
    p.add_argument("--models", default="mea,lf_lstm",
                   help="comma-separated model names; NAME:ABLATION adds an ablation (e.g. mea:no_hca)")
    p.add_argument("--config-dir", default=None,
                   help="directory with <model>/<dataset>.yaml configs (default: ./configs, else the ones shipped "
                        "with the package)")
    p.add_argument("--name", default=None, help="name of the table files (default: bench_<dataset>)")
    _add_train_flags(p, config=False)  # each model reads its own config from --config-dir


def _add_test_predict(sub: Any) -> None:
    """The ``test`` and ``predict`` commands."""
    for name, helptext in (("test", "evaluate a checkpoint on a split and write metrics"),
                           ("predict", "write predictions of a checkpoint for a split")):
        p = sub.add_parser(name, help=helptext, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog=EPILOG_PREDICT if name == "predict" else None)
        p.add_argument("--ckpt", required=True, help="checkpoint file (e.g. runs/.../checkpoints/best.ckpt); for test "
                       "also a folder of fold_K*.ckpt files (RAVDESS cross-validation: each on its fold, then "
                       "mean ± std)")
        if name == "predict":
            p.add_argument("clips", nargs="*", help="video files or folders of them: extracted with the "
                           "checkpoint's feature set, then predicted (instead of --data)")
            p.add_argument("--data", help="data SPEC (or give video files)")
            words = p.add_mutually_exclusive_group()
            words.add_argument("--transcript", help="the words spoken in the one clip given (default: "
                               "<stem>.txt/.srt/.json beside it, else recognised)")
            words.add_argument("--transcript-file", help="a transcript file (.txt, .srt, .json) for the one clip")
            p.add_argument("--json", action="store_true", help="video files: print the results as JSON")
            p.add_argument("--threads", type=_positive_int, default=1,
                           help="video files: torch CPU threads (default 1: the text encoder and the model on one "
                                "clip are small work that more threads slow down, by as much as tenfold on a "
                                "busy machine)")
        else:
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


def _add_extract(sub: Any) -> None:
    """The ``extract`` command."""
    p = sub.add_parser("extract", help="turn a folder of video files into a dataset (text, audio and face features)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG_EXTRACT)
    p.add_argument("clips", help="folder of video files (mp4, mkv, webm, mov, avi), searched recursively")
    p.add_argument("--out", required=True, help="the dataset file to write (.h5); an existing one is added to")
    p.add_argument("--transcripts", help="folder of <stem>.txt / .srt / .json transcripts (default: beside each "
                                         "clip; none: the speech is recognised)")
    p.add_argument("--labels", help="CSV id,label (sentiment score) or id,<emotion>,... (0/1 each)")
    p.add_argument("--split", default="random",
                   help="random (default: 70/15/15 by clip), speaker (whole groups of ids sharing the part before "
                        "the first '_'), train|valid|test (every clip), or a CSV file id,split")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--workers", type=_positive_int, default=1, help="clips extracted in parallel (default 1)")
    p.add_argument("--audio", default="egemaps", choices=["egemaps", "mfcc"],
                   help="audio features: openSMILE eGeMAPS descriptors (default) or librosa MFCCs")
    p.add_argument("--audio-rate", type=float, default=20.0, help="audio frames per second (default 20)")
    p.add_argument("--vision-rate", type=float, default=15.0, help="face frames per second (default 15)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", help="also write the summary to this JSON file")


def _add_make_dataset(sub: Any) -> None:
    """The ``make-dataset`` command."""
    p = sub.add_parser("make-dataset", help="generate clips: talking-faces (real text and human ratings, generated "
                                            "voice and face)", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="example:\n  mmfusion make-dataset talking-faces --n 200 --out clips\n"
                              "  mmfusion extract clips --out talking.h5 --labels clips/labels.csv --split speaker")
    p.add_argument("kind", choices=["talking-faces"], help="which dataset")
    p.add_argument("--n", type=_positive_int, default=100, help="number of clips (default 100)")
    p.add_argument("--out", required=True, help="folder for the clips, transcripts and labels.csv")
    p.add_argument("--seed", type=int, default=0, help="which snippets, and the noise (default 0)")
    p.add_argument("--speakers", type=_positive_int, default=4, help="number of speakers (default 4)")
    p.add_argument("--size", default="640x360", help="WIDTHxHEIGHT (default 640x360)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    p.add_argument("--container", default="mp4", choices=["mp4", "webm", "mkv"], help="file type (default mp4)")
    for m in ("voice", "face"):
        p.add_argument(f"--{m}-strength", type=float, default=1.0,
                       help=f"how much of the rating the {m} carries (default 1; 0: none)")
        p.add_argument(f"--{m}-noise", type=float, default=0.0,
                       help=f"standard deviation of a per-clip random offset to the rating the {m} shows (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_explain(sub: Any) -> None:
    """The ``explain`` command."""
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


def _add_robustness(sub: Any) -> None:
    """The ``robustness`` command."""
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


def _add_convert(sub: Any) -> None:
    """The ``convert`` command."""
    p = sub.add_parser("convert", help="convert a dataset to mmfusion's own HDF5 format (or MulT/MMSA pickles)",
                       description="Convert a dataset. A MulT or MMSA pickle is always read whole into memory; "
                                   "converted to mmfusion's HDF5 format (a .h5 file), a large one is read lazily, "
                                   "batch by batch (automatically above 2 GiB of features, or with --set "
                                   "data_args.lazy=true).")
    p.add_argument("data", help="data SPEC to read")
    p.add_argument("out", help="output file: .h5 (mmfusion format) or .pkl with --layout mult or mmsa")
    p.add_argument("--layout", choices=["h5", "mult", "mmsa"],
                   help="h5 (default for a .h5 file): mmfusion's HDF5 format; mult / mmsa: that project's pickle "
                        "layout (a .pkl file)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="reader options (data_args)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace OUT if it exists (by default an existing file is kept and convert stops; the file "
                        "being read is never replaced)")


def _add_prepare(sub: Any) -> None:
    """The ``prepare`` command."""
    p = sub.add_parser("prepare", help="decode raw clips (ravdess:DIR, ntu:DIR) once into the dataset's cache "
                       "(interrupted, it goes on from the last decoded clip)")
    p.add_argument("data", help="data SPEC, e.g. ravdess:data/RAVDESS")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="reader options, e.g. frames=30 size=224 (ravdess) or skeleton_frames=32 (ntu)")


def _add_data(sub: Any) -> None:
    """The ``data`` command."""
    p = sub.add_parser("data", help="load a dataset and print what is in it (shapes, lengths, load report)")
    p.add_argument("data", help="data SPEC")
    p.add_argument("--json", help="also write the description to this JSON file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="reader options (data_args), e.g. n_train=40000 (synthetic), fold=3 (ravdess) or "
                   "audio=openSMILE_IS09 (csd)")


def _add_import_weights(sub: Any) -> None:
    """The ``import-weights`` command."""
    p = sub.add_parser("import-weights", help="convert the MSAF authors' released weights into an mmfusion checkpoint",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  mmfusion import-weights msaf_ravdess ckpts/fold_1_msaf_ravdess_best.pth "
                              "--out imported/fold_1.ckpt\n  mmfusion test --ckpt imported/ --data ravdess:data/RAVDESS"
                              "   # each fold_K file on its fold, then mean ± std")
    p.add_argument("name", help="msaf_ravdess, msaf_ntu, msaf_lstm (MOSEI), or a branch: resnext50, mfccnet, i3d, hcn")
    p.add_argument("path", help="the authors' .pth / .checkpoint file (bare state dict, under state_dict or "
                                "model_state_dict, with or without 'module.')")
    p.add_argument("--out", required=True, help="checkpoint to write (.ckpt)")
    p.add_argument("--json", help="also write the summary to this JSON file")


def _add_models(sub: Any) -> None:
    """The ``models`` command."""
    p = sub.add_parser("models", help="list registered models (and their ablations)")
    p.add_argument("--ablations", action="store_true", help="also list each model's named ablations")
    p.add_argument("--json", help="also write every model, what it reads and its ablations to this JSON file")


def _positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (argparse names the flag and the value in its error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value
