"""Training-step time, inference latency, peak memory and FLOPs of a model at the real MOSI / MOSEI shapes.

    .venv/bin/python benchmarks/speed.py --model mea --shape mosi [--batch 32] [--repeat 3] [--set key=value]
                                         [--compile]
    .venv/bin/python benchmarks/speed.py --model mea --shape mosi --inference-only [--compile] [--repeat 3] [--calls 20]

Writes ``benchmarks/out/speed_<model>_<shape>.json`` and prints a Markdown table. FLOPs come from
``torch.utils.flop_counter`` (matmuls, convolutions and attention; elementwise work is not counted; counted on the
PyTorch attention path, since the counter cannot see inside the compiled kernel, which computes the same function),
and the achieved FLOP/s is compared with this machine's measured float32 matmul peak. Peak memory on a CPU is the
growth of the process's resident set during the measured step (``ru_maxrss``), on a GPU
``torch.cuda.max_memory_allocated``.
A torch.profiler summary of one training step (top operators by self time) shows where the time goes.
``--compile`` also times inference through ``torch.compile`` (dynamic shapes, as ``mmfusion predict --compile`` runs
it; the kernel is a registered operator inside the compiled graph) and reports how long compiling took.
``--inference-only`` times one-clip latency in a process that runs no training step first, as ``mmfusion predict``
does: ``--repeat`` rounds of ``--calls`` calls, eager and (with ``--compile``) compiled rounds alternating, the best
and the median of each round reported (``benchmarks/out/speed_<model>_<shape>_inference.json``).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from mmfusion import kernels
from mmfusion.config import parse_value
from mmfusion.io import atomic_write_json
from mmfusion.models import build
from mmfusion.runtime import compile_model, describe_cpu, keep_freed_memory

SHAPES = {
    "mosi": ({"text": 300, "vision": 20, "audio": 5}, {"text": 50, "vision": 500, "audio": 375}),
    "mosei": ({"text": 300, "vision": 35, "audio": 74}, {"text": 50, "vision": 500, "audio": 500}),
}


def matmul_peak(n: int = 2048, repeat: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t)


def inputs(shape: str, batch: int, device: str) -> tuple[dict, dict]:
    dims, lens = SHAPES[shape]
    g = torch.Generator().manual_seed(0)
    feats = {m: torch.randn(batch, lens[m], d, generator=g).to(device) for m, d in dims.items()}
    masks = {m: torch.ones(batch, lens[m], dtype=torch.bool, device=device) for m in dims}
    return feats, masks


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def call_times(run: Any, feats: dict, masks: dict, device: str, calls: int) -> list[float]:
    """Wall time in seconds of each of ``calls`` forward passes (the device synchronised after each)."""
    ts = []
    for _ in range(calls):
        t = time.perf_counter()
        run(feats, masks)
        sync(device)
        ts.append(time.perf_counter() - t)
    return ts


def describe(model: torch.nn.Module, args: argparse.Namespace, allocator: str, overrides: dict) -> dict[str, Any]:
    """The fields every result file shares: what ran, where, at which shapes, and the machine's matmul peak."""
    dims, lens = SHAPES[args.shape]
    peak = matmul_peak() if args.device == "cpu" and not args.no_peak else float("nan")
    return {
        "model": args.model, "shape": args.shape, "device": args.device,
        "machine": torch.cuda.get_device_name(0) if args.device == "cuda" else
        f"{describe_cpu()}, {torch.get_num_threads()} threads",
        "params": sum(p.numel() for p in model.parameters()), "overrides": overrides,
        "matmul_peak_gflops": peak / 1e9, "lengths": lens, "feature_dims": dims, "torch": torch.__version__,
        "allocator": allocator, "attention_kernel": "compiled" if kernels.narrow_attention() is not None else
        f"PyTorch ({kernels.unavailable_reason()})",
    }


def inference_rounds(model: torch.nn.Module, args: argparse.Namespace, allocator: str, overrides: dict) -> None:
    """One-clip latency in a process that only runs inference: rounds of eager and compiled calls, alternating."""
    model.eval()
    feats, masks = inputs(args.shape, 1, args.device)
    runs: dict[str, Any] = {"eager": model}
    compile_s = None
    with torch.inference_mode():
        if args.compile:
            runs["compiled"] = compile_model(model)
            t = time.perf_counter()
            runs["compiled"](feats, masks)
            sync(args.device)
            compile_s = time.perf_counter() - t
        for run in runs.values():  # warm-up
            for _ in range(3):
                run(feats, masks)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
        for r in range(args.repeat):
            for name, run in runs.items():
                ts = sorted(1000 * t for t in call_times(run, feats, masks, args.device, args.calls))
                best, median = ts[0], ts[len(ts) // 2]
                rounds[name].append({"best_ms": best, "median_ms": median})
                print(f"round {r + 1} of {args.repeat}, {name}: best {best:.1f} ms, median {median:.1f} ms", flush=True)
    result = {**describe(model, args, allocator, overrides),
              "calls_per_round": args.calls, "one_clip_rounds": rounds, "compile_s": compile_s}
    out = (Path(args.out) if args.out else
           Path(__file__).parent / "out" / f"speed_{args.model}_{args.shape}_inference.json")
    atomic_write_json(out, result)
    print(f"| model | shape | one clip, best of {args.calls} per round | median per round |")
    print("|---|---|---|---|")
    for name, rs in rounds.items():
        print(f"| {args.model}{' (compiled)' if name == 'compiled' else ''} | {args.shape} | "
              f"{min(r['best_ms'] for r in rs):.1f}–{max(r['best_ms'] for r in rs):.1f} ms | "
              f"{min(r['median_ms'] for r in rs):.1f}–{max(r['median_ms'] for r in rs):.1f} ms |")
    if compile_s is not None:
        print(f"compiling took {compile_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mea", help="registered model name (default mea)")
    ap.add_argument("--shape", default="mosi", choices=sorted(SHAPES),
                    help="feature sizes and lengths of the real MOSI or MOSEI files (default mosi)")
    ap.add_argument("--frames", type=int, help="override the vision and audio lengths (complexity sweeps)")
    ap.add_argument("--out", help="JSON output (default benchmarks/out/speed_<model>_<shape>.json)")
    ap.add_argument("--no-peak", action="store_true", help="skip measuring the matmul peak")
    ap.add_argument("--batch", type=int, default=32, help="training and batch-inference batch size (default 32)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed training steps and batch passes, best-of for latency (one clip: at least 5; default 3)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                    help="cpu or cuda (default: cuda when available)")
    ap.add_argument("--profile", action="store_true", help="print the operator profile of one training step")
    ap.add_argument("--compile", action="store_true",
                    help="also time inference through torch.compile (as `mmfusion predict --compile` runs it)")
    ap.add_argument("--inference-only", action="store_true",
                    help="time one-clip inference only, in rounds (no training step, no FLOP count)")
    ap.add_argument("--calls", type=int, default=20, help="calls per round with --inference-only (default 20)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="model overrides")
    args = ap.parse_args()
    for name in ("batch", "repeat", "calls"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    allocator = "glibc, freed memory kept" if keep_freed_memory() else "default"
    overrides = {k: parse_value(v) for k, _, v in (s.partition("=") for s in args.set)}
    dims, lens = SHAPES[args.shape]
    if args.frames:
        lens = {**lens, "vision": args.frames, "audio": args.frames}
        SHAPES[args.shape] = (dims, lens)
    model = build(args.model, dims, 1, **overrides).to(args.device)
    if args.inference_only:
        return inference_rounds(model, args, allocator, overrides)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    feats, masks = inputs(args.shape, args.batch, args.device)

    def train_step() -> None:
        out = model(feats, masks)
        loss = out["pred"].square().mean() + sum(out.get("losses", {}).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):  # warm-up: the allocator's heap reaches its working size during the first two steps
        train_step()
    sync(args.device)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        train_step()
        sync(args.device)
        times.append(time.perf_counter() - t)
    peak_mb = (torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda"
               else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024)
    # torch's counter does not see inside the compiled attention kernel: count the same step on the PyTorch path,
    # which computes the same function (q kᵀ and A v products, as the attention FLOPs are usually counted)
    with kernels.disabled(), FlopCounterMode(display=False) as fc:
        train_step()
    train_flops = fc.get_total_flops()

    model.eval()
    one = ({m: x[:1] for m, x in feats.items()}, {m: x[:1] for m, x in masks.items()})

    def latency(run: Any) -> dict[str, float]:
        """Best-of wall time of one forward pass, after one untimed call (which compiles a compiled model)."""
        result = {}
        with torch.inference_mode():
            for name, (f, k) in (("one_clip", one), ("batch", (feats, masks))):
                t = time.perf_counter()
                run(f, k)
                sync(args.device)
                result[f"{name}_first"] = time.perf_counter() - t
                calls = max(args.repeat, 5) if name == "one_clip" else args.repeat
                result[name] = min(call_times(run, f, k, args.device, calls))
        return result

    eager = latency(model)
    compiled = latency(compile_model(model)) if args.compile else None
    step = min(times)
    result = {
        **describe(model, args, allocator, overrides), "batch": args.batch,
        "train_step_s": step, "train_step_all_s": times, "infer_one_clip_ms": 1000 * eager["one_clip"],
        "infer_batch_ms": 1000 * eager["batch"], "peak_memory_mb": peak_mb, "train_gflop": train_flops / 1e9,
        "achieved_gflops": train_flops / step / 1e9,
    }
    if compiled is not None:  # torch.compile, dynamic shapes: what `mmfusion predict --compile` runs
        result.update({"infer_one_clip_compiled_ms": 1000 * compiled["one_clip"],
                       "infer_batch_compiled_ms": 1000 * compiled["batch"],
                       "compile_s": compiled["one_clip_first"] + compiled["batch_first"]})
    out = Path(args.out) if args.out else Path(__file__).parent / "out" / f"speed_{args.model}_{args.shape}.json"
    atomic_write_json(out, result)
    print(f"| model | shape | params | train step (B={args.batch}) | 1-clip inference | batch inference | peak mem | "
          "GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.model} | {args.shape} | {result['params']:,} | {step:.2f} s | {result['infer_one_clip_ms']:.1f} ms "
          f"| {result['infer_batch_ms']:.0f} ms | {peak_mb:.0f} MB | {result['train_gflop']:.1f} | "
          f"{result['achieved_gflops']:.1f} | {result['matmul_peak_gflops']:.0f} |")
    if compiled is not None:
        print(f"compiled (torch.compile, dynamic shapes; compiling took {result['compile_s']:.0f} s): 1-clip "
              f"inference {result['infer_one_clip_compiled_ms']:.1f} ms, batch inference "
              f"{result['infer_batch_compiled_ms']:.0f} ms")
    if args.profile:
        model.train()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            train_step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    from mmfusion.errors import run_reporting_errors

    sys.exit(run_reporting_errors("speed.py", main))
