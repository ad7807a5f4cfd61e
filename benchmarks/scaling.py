"""Accuracy of a model on a large draw of the built-in benchmark, trained for a fixed number of steps.

    .venv/bin/python benchmarks/scaling.py --model mea --set frontend=conv --set embed_dropout=0 \
        --n-train 200000 --steps 2800 --seeds 1111 1112 1113 [--device cuda] [--batch 128] [--lr 1e-3] [--every 400]

The default benchmark has 1,500 training clips, too few for any model here to learn its cross-modal term (a cue in
the text selects one of three vision events); this script asks what a model reaches when data is not the limit.
Every seed trains on the same draw (data seed 0; the seed sets the model's initialisation and batch order) with
Adam, gradient clipping at 0.8 and the model's own auxiliary losses, checks validation Corr every ``--every`` steps
and reports the test metrics and per-term capture at the best validation check, beside the Bayes-optimal ceiling.
Unlike ``mmfusion fit`` there are no epochs and no learning-rate schedule beyond an optional linear warm-up
(``--warmup N``, which also names the output): the budget is a step count.

Writes ``scaling_<tag>.json`` (in ``benchmarks/out/`` or ``--out-dir``) after every finished seed and a Markdown table
beside it. A run can be stopped and resumed: the seeds already in the JSON are skipped, and the seed in progress goes
on from its last validation check (``scaling_<tag>_seed<N>.pt``, written atomically at every check; ``--max-minutes``
stops there on purpose, e.g. to fit a job into time slots). A resumed seed ends with the same result as an
uninterrupted one.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from mmfusion.config import parse_value
from mmfusion.data.dataset import FusionDataset
from mmfusion.data.synthetic import SyntheticConfig, make_synthetic, term_capture
from mmfusion.engine.system import task_loss
from mmfusion.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from mmfusion.metrics import sentiment_metrics
from mmfusion.models import build
from mmfusion.runtime import describe_cpu

OUT = Path(__file__).parent / "out"


def evaluate(model: torch.nn.Module, ds: FusionDataset, device: str, batch: int = 300) -> dict[str, float]:
    """Sentiment metrics and per-term capture of ``model`` on a split of the benchmark."""
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            b = ds.collate(np.arange(i, min(i + batch, len(ds)))).to(device)
            preds.append(model(b.features, b.masks)["pred"].squeeze(-1).float().cpu())
    model.train()
    pred = torch.cat(preds).numpy()
    return {**sentiment_metrics(pred, ds.split.labels), **term_capture(pred, ds.split.extras["terms"])}


def run_seed(args: argparse.Namespace, seed: int, bundle: Any, progress: Progress,
             state_path: Path) -> dict[str, Any] | None:
    """Train one seed; returns its result, or None when ``--max-minutes`` ran out (the state is then saved at the
    last validation check, and the same command goes on from there)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train, valid, test = (FusionDataset(bundle.splits[k]) for k in ("train", "valid", "test"))
    model = build(args.model, bundle.feature_dims, bundle.output_dim, **args.overrides).to(args.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    best: dict[str, Any] = {"valid_corr": -2.0}
    history: list[dict[str, Any]] = []
    step, pos, seconds, order = 0, 0, 0.0, rng.permutation(len(train))
    if state_path.exists():  # an interrupted run of this seed: go on from its last validation check
        state = torch.load(state_path, map_location=args.device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        torch.set_rng_state(state["torch_rng"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        order, pos = state["order"].numpy(), state["pos"]
        step, seconds, best, history = state["step"], state["seconds"], state["best"], state["history"]
        progress.console.print(f"seed {seed}: going on from step {step} of {args.steps} ({state_path})", soft_wrap=True)
    task = progress.add_task(f"seed {seed}", total=args.steps, completed=step)
    start = time.time() - seconds
    session = time.time()
    while step < args.steps:
        if pos + args.batch > len(order):  # next epoch
            order, pos = rng.permutation(len(train)), 0
        b = train.collate(order[pos:pos + args.batch]).to(args.device)
        pos += args.batch
        out = model(b.features, b.masks)
        loss = task_loss(out["pred"], b.labels, "regression")
        loss = loss + sum(out.get("losses", {}).values(), torch.zeros((), device=loss.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.8)
        if args.warmup:  # linear warm-up: a function of the step alone, so a resumed run continues it exactly
            for group in opt.param_groups:
                group["lr"] = args.lr * min(1.0, (step + 1) / args.warmup)
        opt.step()
        step += 1
        progress.advance(task)
        if step % args.every == 0 or step == args.steps:
            v = evaluate(model, valid, args.device)
            history.append({"step": step, "valid_corr": v["corr"], "valid_capture_crossmodal":
                            v["capture_crossmodal"]})
            progress.console.print(f"seed {seed} step {step}: valid Corr {v['corr']:.4f}, "
                                   f"cross-modal term captured {v['capture_crossmodal']:.3f}")
            if v["corr"] > best["valid_corr"]:
                best = {"valid_corr": v["corr"], "step": step, "test": evaluate(model, test, args.device)}
            if step < args.steps:
                buf = io.BytesIO()
                torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
                            "numpy_rng": json.dumps(rng.bit_generator.state), "order": torch.from_numpy(order),
                            "pos": pos, "step": step, "seconds": time.time() - start, "best": best,
                            "history": history}, buf)
                atomic_write_bytes(state_path, buf.getvalue())
                if args.max_minutes is not None and time.time() - session > 60 * args.max_minutes:
                    progress.remove_task(task)
                    return None
    progress.remove_task(task)
    return {"seed": seed, "seconds": time.time() - start, **best, "history": history}


def table(result: dict[str, Any]) -> str:
    rows = result["seeds"]
    keys = ["corr", "mae", "acc7", "acc2_non0", "capture_agnostic", "capture_exclusive_text",
            "capture_exclusive_vision", "capture_exclusive_audio", "capture_crossmodal"]
    lines = [f"# {result['tag']}: {result['model']} {result['overrides']} on {result['n_train']:,} training clips, "
             f"{result['steps']} steps of batch {result['batch']} ({result['device']}, {result['machine']})", "",
             "| metric | " + " | ".join(f"seed {r['seed']}" for r in rows) + " | mean ± std | Bayes-optimal |",
             "|---|" + "---|" * (len(rows) + 2)]
    for k in keys:
        vals = [r["test"][k] for r in rows]
        ceiling = f"{result['bayes'][k]:.4f}" if k in result["bayes"] else "–"
        lines.append(f"| {k} | " + " | ".join(f"{v:.4f}" for v in vals)
                     + f" | {np.mean(vals):.4f} ± {np.std(vals):.4f} | {ceiling} |")
    lines.append("| best step (validation Corr) | " + " | ".join(str(r["step"]) for r in rows) + " | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mea", help="registered model name (default mea)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model override, e.g. frontend=conv")
    p.add_argument("--n-train", type=int, default=200_000, help="training clips in the draw (default 200000)")
    p.add_argument("--steps", type=int, default=2800, help="optimizer steps per seed (default 2800)")
    p.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--warmup", type=int, default=0,
                   help="raise the learning rate linearly over the first N steps (default 0: constant)")
    p.add_argument("--every", type=int, default=400, help="validate every N steps (default 400)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1111, 1112, 1113],
                   help="model seeds, one after another (default 1111 1112 1113)")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--tag", default=None, help="output name (default: model and overrides)")
    p.add_argument("--out-dir", type=Path, default=OUT, help=f"where results and resume states go (default {OUT})")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop at the first validation check after this long; the same command goes on from there")
    args = p.parse_args(argv)
    args.overrides = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    tag = args.tag or "_".join([args.model] + [f"{k}-{v}" for k, v in sorted(args.overrides.items())]
                               + ([f"warmup{args.warmup}"] if args.warmup else []))
    path = args.out_dir / f"scaling_{tag}.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"seeds": []}
    done = {r["seed"] for r in result["seeds"]}
    bundle = make_synthetic(SyntheticConfig(n_train=args.n_train))
    machine = (torch.cuda.get_device_name(0) if args.device == "cuda"
               else f"{describe_cpu()}, {torch.get_num_threads()} threads")
    result.update(tag=tag, model=args.model, overrides=args.overrides, n_train=args.n_train, steps=args.steps,
                  batch=args.batch, lr=args.lr, warmup=args.warmup, device=args.device, machine=machine,
                  torch=torch.__version__, bayes=bundle.bayes)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()) as bar:
        for seed in args.seeds:
            if seed in done:
                bar.console.print(f"seed {seed}: already in {path}, skipped", soft_wrap=True)
                continue
            state_path = args.out_dir / f"scaling_{tag}_seed{seed}.pt"
            finished = run_seed(args, seed, bundle, bar, state_path)
            if finished is None:
                print(f"stopped after --max-minutes {args.max_minutes}; state saved in {state_path}: "
                      "run the same command to go on")
                return
            result["seeds"].append(finished)
            atomic_write_json(path, result)
            state_path.unlink(missing_ok=True)
    atomic_write_text(path.with_suffix(".md"), table(result))
    print(table(result))
    print(f"results: {path} and {path.with_suffix('.md')}")


if __name__ == "__main__":
    from mmfusion.errors import run_reporting_errors

    sys.exit(run_reporting_errors("scaling.py", main, "; rerun the same command to go on from the last finished run"))
