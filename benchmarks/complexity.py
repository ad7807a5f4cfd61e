"""Complexity bench: training-step time, inference latency, peak memory and FLOPs of every model as the vision and
audio streams grow (text fixed at 50 words), at a fixed batch. Each point runs in a fresh process (clean peak RSS).

    .venv/bin/python benchmarks/complexity.py [--models mea,mult,...] [--frames 50 100 200 500 1000] [--batch 8]

Writes ``benchmarks/out/complexity.{json,md,png}`` (log-log plot of step time and FLOPs against frames).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mmfusion.io import atomic_write_json, atomic_write_text

HERE = Path(__file__).resolve().parent
DEFAULT_MODELS = "mea,mult,msaf_lstm,misa,lf_lstm,ef_lstm,tfn,lmf"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated model names (default {DEFAULT_MODELS})")
    ap.add_argument("--frames", type=int, nargs="+", default=[50, 100, 200, 500, 1000],
                    help="vision and audio lengths to sweep (default 50 100 200 500 1000)")
    ap.add_argument("--batch", type=int, default=8, help="batch size of every point (default 8)")
    ap.add_argument("--repeat", type=int, default=2, help="timed repetitions per point (default 2)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per point; slower points are skipped")
    args = ap.parse_args()
    out_dir = HERE / "out" / "complexity"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for model in args.models.split(","):
        for frames in args.frames:
            path = out_dir / f"{model}_{frames}.json"
            cmd = [sys.executable, str(HERE / "speed.py"), "--model", model, "--shape", "mosei", "--frames",
                   str(frames), "--batch", str(args.batch), "--repeat", str(args.repeat), "--no-peak",
                   "--out", str(path)]
            try:
                subprocess.run(cmd, check=True, capture_output=True, timeout=args.timeout)
                r = json.loads(path.read_text())
                results.append(r)
                print(f"{model:10s} T={frames:5d} step {r['train_step_s']:.3f}s  infer {r['infer_batch_ms']:.0f}ms  "
                      f"mem {r['peak_memory_mb']:.0f}MB  {r['train_gflop']:.2f} GFLOP", flush=True)
            except subprocess.TimeoutExpired:
                print(f"{model:10s} T={frames:5d} over {args.timeout}s, skipped", flush=True)
            except subprocess.CalledProcessError as exc:
                print(f"{model:10s} T={frames:5d} failed: {exc.stderr.decode()[-300:]}", flush=True)
    atomic_write_json(HERE / "out" / "complexity.json", results)
    lines = [f"Batch {args.batch}, text 50 words, MOSEI feature sizes (300/35/74); vision = audio = T frames.", "",
             "| model | T | params | train step (s) | batch inference (ms) | peak memory (MB) | GFLOP / step |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['model']} | {r['lengths']['vision']} | {r['params']:,} | {r['train_step_s']:.3f} | "
                     f"{r['infer_batch_ms']:.1f} | {r['peak_memory_mb']:.0f} | {r['train_gflop']:.2f} |")
    atomic_write_text(HERE / "out" / "complexity.md", "\n".join(lines) + "\n")
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for model in args.models.split(","):
        pts = sorted((r["lengths"]["vision"], r) for r in results if r["model"] == model)
        if not pts:
            continue
        xs = [p[0] for p in pts]
        axes[0].plot(xs, [p[1]["train_step_s"] for p in pts], marker="o", label=model)
        axes[1].plot(xs, [max(p[1]["peak_memory_mb"], 1) for p in pts], marker="o", label=model)
        axes[2].plot(xs, [max(p[1]["train_gflop"], 1e-3) for p in pts], marker="o", label=model)
    for ax, title in zip(axes, ("training step (s)", "peak memory growth (MB)", "GFLOP per training step")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("frames per non-text modality")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(HERE / "out" / "complexity.png", dpi=110)


if __name__ == "__main__":
    from mmfusion.errors import run_reporting_errors

    sys.exit(run_reporting_errors("complexity.py", main))
