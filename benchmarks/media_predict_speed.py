"""``mmfusion predict --ckpt CKPT clip.mp4`` end to end on a generated 10 s clip (640x360, 30 fps, speech with word
times beside it): the whole command as a user runs it (start-up, model loading, extraction, the model), and the
same clip again in a process that has everything loaded. Each is timed in wall seconds and in CPU seconds (user +
system, of the command's process and its threads): on a machine shared with other work the wall time grows with the
load, the CPU time much less. The checkpoint is an untrained ``mea_tiny`` for the default feature set (its weights
do not change the time).

The clip's words are chosen so that it lasts ``--seconds`` (within 0.5 s): espeak-ng speaks faster or slower with
the voice, so the text is lengthened or shortened until the synthesised clip fits.

    .venv/bin/python benchmarks/media_predict_speed.py [--seconds 10] [--repeat 5]
                                                       [--out benchmarks/out/media_predict_speed]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from mmfusion.io import atomic_write_json, atomic_write_text

SENTENCE = "this film was a real pleasure to watch from start to end and the actors were warm and funny"
TOLERANCE = 0.5


def fitting_clip(path: Path, seconds: float) -> dict[str, Any]:
    """Write a talking-face clip of about ``seconds`` (within :data:`TOLERANCE`) to ``path``; returns make_clip's
    info. The voice depends only on the rating, speaker and seed, so short low-resolution trial clips find the
    number of words, then the full-size clip is made once."""
    from mmfusion.media.speech import Synth
    from mmfusion.media.talking import Style, make_clip

    synth = Synth()
    words = (SENTENCE.split()) * (1 + int(seconds))
    n = max(int(seconds * 2.8), 1)
    trial, small = path.with_name("trial.mp4"), Style(width=64, height=64, fps=5)
    for _ in range(8):
        info = make_clip(trial, " ".join(words[:n]), 1.0, 0, small, random.Random(0), synth=synth)
        if abs(info["duration"] - seconds) <= TOLERANCE / 2:
            break
        n = max(1, round(n * seconds / info["duration"]))
    trial.unlink()
    trial.with_suffix(".json").unlink()
    info = make_clip(path, " ".join(words[:n]), 1.0, 0, Style(), random.Random(0), synth=synth)
    if abs(info["duration"] - seconds) > TOLERANCE:
        raise SystemExit(f"could not make a {seconds} s clip: {n} words last {info['duration']:.2f} s")
    return info


def run_command(cmd: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system of the child and its threads) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "all": [round(v, 3) for v in values]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/out/media_predict_speed")
    args = ap.parse_args()

    from mmfusion.engine.clip_predict import predict_clips
    from mmfusion.engine.system import FusionSystem
    from mmfusion.media import FeatureSet
    from mmfusion.runtime import describe_cpu

    fs = FeatureSet()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "talk.mp4"
        info = fitting_clip(clip, args.seconds)
        print(f"clip: {info['duration']:.2f} s, {info['words']} words", flush=True)
        system = FusionSystem("mea_tiny", {}, fs.dims, 1, "regression", meta={"feature_set": fs.name})
        ckpt = Path(tmp) / "mea_tiny.ckpt"
        torch.save({"hyper_parameters": dict(system.hparams), "state_dict": system.state_dict()}, ckpt)
        cmd = [sys.executable, "-m", "mmfusion", "predict", "--ckpt", str(ckpt), str(clip), "--json"]
        load_before = os.getloadavg()[0]
        run_command(cmd)  # a first run fills the file cache (and builds the attention kernel once per checkout)
        cold_wall, cold_cpu = zip(*(run_command(cmd) for _ in range(args.repeat)), strict=True)
        rows = predict_clips(ckpt, [clip])  # loads everything once
        warm_wall, warm_cpu = [], []
        for _ in range(args.repeat):
            c, t = time.process_time(), time.perf_counter()
            predict_clips(ckpt, [clip])
            warm_wall.append(time.perf_counter() - t)
            warm_cpu.append(time.process_time() - c)
    res = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": describe_cpu(),
           "load_average": {"start": load_before, "end": os.getloadavg()[0]},
           "clip_seconds": info["duration"], "video_seconds": rows[0]["notes"]["duration"], "words": info["words"],
           "whole_command": {"wall": summary(list(cold_wall)), "cpu": summary(list(cold_cpu))},
           "loaded_process": {"wall": summary(warm_wall), "cpu": summary(warm_cpu)},
           "predict_command": "mmfusion predict --ckpt mea_tiny.ckpt talk.mp4 --json"}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), res)
    n = args.repeat
    md = "\n".join([
        f"# `mmfusion predict` on one {info['duration']:.1f} s clip (640x360, 30 fps, {info['words']} words)", "",
        f"| median of {n} runs | wall (s) | CPU, user + system (s) |", "|---|---:|---:|",
        f"| whole command: start-up, model, extraction, mea_tiny | {statistics.median(cold_wall):.2f} | "
        f"{statistics.median(cold_cpu):.2f} |",
        f"| the same clip in a process with everything loaded | {statistics.median(warm_wall):.2f} | "
        f"{statistics.median(warm_cpu):.2f} |", "",
        f"Command: `{res['command']}`; each run is `{res['predict_command']}`.  ",
        f"Machine: {res['machine']}; load average {load_before:.1f} at the start, "
        f"{res['load_average']['end']:.1f} at the end.", ""])
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
