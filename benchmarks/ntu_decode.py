"""NTU RGB+D frame decoding on demand (``mmfusion.data.clips.LazyClips``): clips per second and peak memory of one
DataLoader worker, on generated 1920 x 1080 clips of the dataset's typical length (no real data needed).

    .venv/bin/python benchmarks/ntu_decode.py [--clips 4] [--length 90] [--frames 32] [--size 224]

Prints one JSON line and writes it to ``benchmarks/out/ntu_decode.json``. Each clip is decoded in a fresh process,
so the peak RSS it reports is one worker's for one clip (the interpreter, torch and PyAV included).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mmfusion.io import atomic_write_json

HERE = Path(__file__).resolve().parent


def write_clip(path: Path, length: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as box:
        v = box.add_stream("mpeg4", rate=30)
        v.width, v.height, v.pix_fmt = 1920, 1080, "yuv420p"
        base = (rng.random((1080, 1920, 3)) * 255).astype(np.uint8)
        for i in range(length):
            for pkt in v.encode(av.VideoFrame.from_ndarray(np.roll(base, i * 8, 1), format="rgb24")):
                box.mux(pkt)
        for pkt in v.encode():
            box.mux(pkt)


def one(path: str, frames: int, size: int) -> None:
    from mmfusion.data.clips import LazyClips

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    clip = LazyClips([Path(path)], frames, size)[[0]]
    seconds = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": r1.ru_maxrss / 1024,
                      "decode_rss_mb": (r1.ru_maxrss - r0.ru_maxrss) / 1024, "shape": list(clip.shape)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--length", type=int, default=90, help="frames per generated clip (NTU: about 2-5 s at 30 fps)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(args.one, args.frames, args.size)
        return
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "S001C001P001R001A001_rgb.avi"
        write_clip(clip, args.length)
        runs = []
        for _ in range(args.clips):
            out = subprocess.run([sys.executable, __file__, "--one", str(clip), "--frames", str(args.frames),
                                  "--size", str(args.size)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = sorted(r["seconds"] for r in runs)
    result = {"clip": f"1920x1080, {args.length} frames, mpeg4", "frames": args.frames, "size": args.size,
              "clips_per_second": 1 / seconds[len(seconds) // 2], "median_seconds": seconds[len(seconds) // 2],
              "median_cpu_seconds": sorted(r["cpu_seconds"] for r in runs)[len(runs) // 2],
              "peak_rss_mb_per_worker": max(r["peak_rss_mb"] for r in runs),
              "decode_rss_mb": max(r["decode_rss_mb"] for r in runs)}
    print(json.dumps(result))
    atomic_write_json(HERE / "out" / "ntu_decode.json", result)


if __name__ == "__main__":
    main()
