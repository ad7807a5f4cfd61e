"""Which part of MEA's front end delays the cross-modal matching? Front-end variants on a small benchmark draw.

    .venv/bin/python benchmarks/frontend_proxy.py [--variants paper conv residual ...] [--seeds 0 1 2] [--steps 1200]

On a 200,000-clip draw the paper's front end (Conv1d -> positions -> Bi-LSTM) learns to match the text cue to the
right vision event thousands of steps later than the same model without the Bi-LSTM, and for some seeds not within
8,000 steps (docs/results/mea_synthetic_scale.md). Those runs take an hour per seed on a 2-core CPU; this script asks
the same question in about two minutes per run: the draw of the test
``test_without_hca_mea_loses_the_crossmodal_term`` (4,000 training clips of 8/12/8 frames, label = the agnostic term
plus a large cross-modal term, quiet background), MEA at test size (``mea_tiny``: width 16, 2 heads, no dropout),
Adam 3e-3 (``--weight-decay W``: AdamW with decoupled weight decay W), batch 32, gradient clipping at 1.0, one
thread. Every ``--every`` steps it measures how much of the cross-modal term the prediction carries on the
validation split (``term_capture``: about 1/3 is what averaging the three candidate events gives, 1 is the full
term) and reports, per variant and seed, the first check at which the capture reached ``--learned`` (default 0.8).

Variants (each changes only what it names, after the model is built with the seed):

- ``paper``: the paper's front end (``frontend: conv_lstm``, the default model);
- ``conv``: no Bi-LSTM (``frontend: conv``); ``residual``: Z = H + BiLSTM(H) (``frontend: conv_lstm_residual``);
- ``unscaled``: the convolution's output is not scaled by sqrt(D) before the positions are added;
- ``scale_x2``, ``scale_x4``: scaled by 2·sqrt(D), 4·sqrt(D);
- ``no_positions``: no sinusoidal positions before the Bi-LSTM (not the paper's: docs/design/mea.md §1 adds them);
- ``forget_bias_1``: the input-side forget-gate bias of every Bi-LSTM set to 1 (the recurrent side keeps
  PyTorch's initialisation);
- ``orthogonal_recurrent``: each gate's recurrent weight block initialised orthogonal;
- ``lstm_out_scaled``, ``lstm_out_scaled_x2``: the Bi-LSTM's output multiplied by sqrt(D), 2·sqrt(D) (it is bounded
  by 1, while the front end without it hands on sqrt(D)-scaled values: is it the scale of what reaches the
  attention stacks?).

Writes ``frontend_proxy.json`` (in ``benchmarks/out/`` or ``--out-dir``) after every run, atomically, and a Markdown
table beside it; a run already in the JSON is skipped, so an interrupted call goes on with the next one.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import Tensor, nn

from mmfusion.data import FusionDataset, load_data
from mmfusion.data.synthetic import term_capture
from mmfusion.io import atomic_write_json, atomic_write_text
from mmfusion.models import build
from mmfusion.modules.frontend import ModalityFrontEnd
from mmfusion.runtime import describe_cpu

OUT = Path(__file__).parent / "out"
DATA = {"n_train": 4000, "n_valid": 1000, "n_test": 8, "w_exclusive": 0.0, "w_agnostic": 0.5, "w_crossmodal": 1.5,
        "noise": 0.2, "background": 0.1, "text_len": 8, "vision_len": 12, "audio_len": 8, "seed": 3}
TINY = {"dim": 16, "rep_dim": 16, "num_heads": 2, "embed_dropout": 0.0, "res_dropout": 0.0, "out_dropout": 0.0}


class _NoPositions(nn.Module):
    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        return x


class _ScaledOutput(nn.Module):
    """A masked Bi-LSTM whose output sequence is multiplied by a constant."""

    def __init__(self, lstm: nn.Module, factor: float) -> None:
        super().__init__()
        self.lstm, self.factor = lstm, factor

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        out, last = self.lstm(x, mask)
        return out * self.factor, last


def _front_ends(model: nn.Module) -> list[ModalityFrontEnd]:
    return [m for m in model.modules() if isinstance(m, ModalityFrontEnd)]


def _lstms(model: nn.Module) -> list[nn.LSTM]:
    return [m for m in model.modules() if isinstance(m, nn.LSTM)]


def _scale(factor: float | None) -> Callable[[nn.Module], None]:
    """Scale the convolution's output by factor·sqrt(D) (None: not at all) before the positions are added."""
    def apply(model: nn.Module) -> None:
        for fe in _front_ends(model):
            fe.scale = 1.0 if factor is None else factor * math.sqrt(fe.conv.out_channels)
    return apply


def _no_positions(model: nn.Module) -> None:
    for fe in _front_ends(model):
        fe.positions = _NoPositions()


@torch.no_grad()
def _forget_bias_1(model: nn.Module) -> None:
    for lstm in _lstms(model):
        for name, p in lstm.named_parameters():
            if name.startswith("bias_ih"):  # gate order i, f, g, o
                p[lstm.hidden_size:2 * lstm.hidden_size] = 1.0


@torch.no_grad()
def _orthogonal_recurrent(model: nn.Module) -> None:
    for lstm in _lstms(model):
        for name, p in lstm.named_parameters():
            if name.startswith("weight_hh"):
                for block in p.chunk(4, 0):
                    nn.init.orthogonal_(block)


def _lstm_out_scale(factor: float) -> Callable[[nn.Module], None]:
    """Multiply the Bi-LSTM's output by factor·sqrt(D)."""
    def apply(model: nn.Module) -> None:
        for fe in _front_ends(model):
            fe.lstm = _ScaledOutput(fe.lstm, factor * math.sqrt(fe.conv.out_channels))
    return apply


# variant -> (frontend option, change applied to the built model)
VARIANTS: dict[str, tuple[str, Callable[[nn.Module], None] | None]] = {
    "paper": ("conv_lstm", None),
    "conv": ("conv", None),
    "residual": ("conv_lstm_residual", None),
    "unscaled": ("conv_lstm", _scale(None)),
    "scale_x2": ("conv_lstm", _scale(2.0)),
    "scale_x4": ("conv_lstm", _scale(4.0)),
    "no_positions": ("conv_lstm", _no_positions),
    "forget_bias_1": ("conv_lstm", _forget_bias_1),
    "orthogonal_recurrent": ("conv_lstm", _orthogonal_recurrent),
    "lstm_out_scaled": ("conv_lstm", _lstm_out_scale(1.0)),
    "lstm_out_scaled_x2": ("conv_lstm", _lstm_out_scale(2.0)),
}


def build_variant(variant: str, bundle: Any, seed: int) -> nn.Module:
    """``mea_tiny`` with the seed's initialisation and the variant's change."""
    frontend, change = VARIANTS[variant]
    torch.manual_seed(seed)
    model = build("mea_tiny", bundle.feature_dims, 1, frontend=frontend, **TINY)
    if change is not None:
        change(model)
    return model


def run(variant: str, seed: int, bundle: Any, steps: int, every: int, progress: Progress,
        weight_decay: float = 0.0) -> dict[str, Any]:
    """Train one variant and seed; the validation capture of the cross-modal term at every check."""
    model = build_variant(variant, bundle, seed)
    if weight_decay > 0:
        opt: torch.optim.Optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train, valid = FusionDataset(bundle.splits["train"]), FusionDataset(bundle.splits["valid"])
    vb = valid.collate(range(len(valid)))
    terms = bundle.splits["valid"].extras["terms"]
    rng = np.random.default_rng(seed)
    task = progress.add_task(f"{variant}, seed {seed}", total=steps)
    history, start = [], time.time()
    for step in range(1, steps + 1):
        model.train()
        b = train.collate(rng.choice(len(train), 32, replace=False))
        out = model(b.features, b.masks)
        loss = torch.nn.functional.mse_loss(out["pred"].squeeze(-1), b.labels) + sum(out.get("losses", {}).values())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        progress.advance(task)
        if step % every == 0:
            model.eval()
            with torch.no_grad():
                pred = model(vb.features, vb.masks)["pred"].squeeze(-1).numpy()
            history.append({"step": step, "capture_crossmodal": term_capture(pred, terms)["capture_crossmodal"]})
    progress.remove_task(task)
    return {"variant": variant, "seed": seed, "seconds": time.time() - start, "history": history}


def learned_at(history: list[dict[str, Any]], threshold: float) -> int | None:
    """The first checked step whose capture reached ``threshold`` (None: not within the budget)."""
    return next((h["step"] for h in history if h["capture_crossmodal"] >= threshold), None)


def table(result: dict[str, Any]) -> str:
    thr, steps = result["learned"], result["steps"]
    wd = result.get("weight_decay", 0.0)
    optimizer = f"AdamW, weight decay {wd:g}" if wd else "Adam"
    seeds = sorted({r["seed"] for r in result["runs"]})
    lines = [f"# Front-end variants: first step at which the cross-modal term's validation capture reached {thr} "
             f"(mea_tiny, {steps} steps of batch 32, {optimizer}; {result['machine']}, torch {result['torch']})", "",
             "| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | learned | capture at each check |",
             "|---|" + "---|" * (len(seeds) + 2)]
    for variant in [v for v in VARIANTS if any(r["variant"] == v for r in result["runs"])]:
        runs = {r["seed"]: r for r in result["runs"] if r["variant"] == variant}
        at = {s: learned_at(runs[s]["history"], thr) if s in runs else None for s in seeds}
        cells = [("–" if s not in runs else str(at[s]) if at[s] else f"> {steps}") for s in seeds]
        n = sum(a is not None for a in at.values())
        curves = "; ".join(" ".join(f"{h['capture_crossmodal']:.2f}" for h in runs[s]["history"]) for s in runs)
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {n} of {len(runs)} | {curves} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="VARIANT",
                   help=f"front-end variants, in this order (default all: {' '.join(VARIANTS)})")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (default 0 1 2)")
    p.add_argument("--steps", type=int, default=1200, help="Adam steps per run (default 1200)")
    p.add_argument("--every", type=int, default=100, help="check the capture every N steps (default 100)")
    p.add_argument("--learned", type=float, default=0.8,
                   help="capture that counts as the matching learned (default 0.8)")
    p.add_argument("--n-train", type=int, default=DATA["n_train"], help="training clips (default 4000)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="decoupled weight decay (AdamW) instead of plain Adam (default 0: Adam)")
    p.add_argument("--out-dir", type=Path, default=OUT, help=f"where the results go (default {OUT})")
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # the figures in docs/results were measured on one thread; more changes the rounding
    path = args.out_dir / "frontend_proxy.json"
    if args.weight_decay < 0:
        p.error(f"--weight-decay must be >= 0, got {args.weight_decay}")
    settings = {"steps": args.steps, "every": args.every, "n_train": args.n_train, "weight_decay": args.weight_decay}
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"runs": []}
    held = {k: result.get(k, 0.0 if k == "weight_decay" else None) for k in settings}  # (older files: Adam)
    if result["runs"] and held != settings:
        raise SystemExit(f"{path} holds runs with {held}, not {settings}: give another --out-dir")
    bundle = load_data("synthetic", {**DATA, "n_train": args.n_train})
    result.update(settings, learned=args.learned, torch=torch.__version__,
                  machine=f"{describe_cpu()}, 1 thread")
    done = {(r["variant"], r["seed"]) for r in result["runs"]}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        for variant in args.variants:
            for seed in args.seeds:
                if (variant, seed) in done:
                    bar.console.print(f"{variant}, seed {seed}: already in {path}, skipped", soft_wrap=True)
                    continue
                result["runs"].append(run(variant, seed, bundle, args.steps, args.every, bar, args.weight_decay))
                atomic_write_json(path, result)
    atomic_write_text(path.with_suffix(".md"), table(result))
    print(table(result))
    print(f"results: {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    from mmfusion.errors import run_reporting_errors

    sys.exit(run_reporting_errors("frontend_proxy.py", main,
                                  "; rerun the same command to go on from the last finished run"))
