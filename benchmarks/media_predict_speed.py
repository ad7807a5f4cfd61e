"""``mmfusion predict --ckpt CKPT clip.mp4`` end to end on a 10 s generated clip (640x360, 30 fps): the whole
command as a user runs it (start-up, model loading, extraction, the model), and the same clip again in a process
that has everything loaded. The checkpoint is an untrained ``mea_tiny`` for the default feature set (its weights do
not change the time).

    .venv/bin/python benchmarks/media_predict_speed.py [--seconds 10] [--repeat 3]
                                                       [--out benchmarks/out/media_predict_speed]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mmfusion.io import atomic_write_json, atomic_write_text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/out/media_predict_speed")
    args = ap.parse_args()

    from mmfusion.engine.clip_predict import predict_clips
    from mmfusion.engine.system import FusionSystem
    from mmfusion.media import FeatureSet
    from mmfusion.media.talking import Style, make_clip
    from mmfusion.runtime import describe_cpu

    fs = FeatureSet()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "talk.mp4"
        words = " ".join(["this film was a real pleasure to watch from start to end"] * 20).split()
        text = " ".join(words[:max(int(args.seconds * 3.4), 1)])  # espeak speaks about 3.4 words a second
        info = make_clip(clip, text, 1.0, 0, Style(), random.Random(0))
        system = FusionSystem("mea_tiny", {}, fs.dims, 1, "regression", meta={"feature_set": fs.name})
        ckpt = Path(tmp) / "mea_tiny.ckpt"
        torch.save({"hyper_parameters": dict(system.hparams), "state_dict": system.state_dict()}, ckpt)
        cold = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "mmfusion", "predict", "--ckpt", str(ckpt), str(clip), "--json"],
                           check=True, capture_output=True)
            cold.append(time.perf_counter() - t)
        predict_clips(ckpt, [clip])  # loads everything once
        warm = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            predict_clips(ckpt, [clip])
            warm.append(time.perf_counter() - t)
    res = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": describe_cpu(),
           "load_average": list(os.getloadavg()),
           "clip_seconds": info["duration"], "words": info["words"],
           "command_seconds": {"best": min(cold), "all": cold},
           "loaded_process_seconds": {"best": min(warm), "all": warm}}
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), res)
    md = "\n".join([
        f"# `mmfusion predict` on one {info['duration']:.1f} s clip (640x360, 30 fps, {info['words']} words)", "",
        f"Machine: {res['machine']}, load average {res['load_average'][0]:.1f} at the end.  ",
                 f"Command: `{res['command']}`", "",
        f"| | best of {args.repeat} (s) |", "|---|---:|",
        f"| whole command (start-up, models loaded, extraction, mea_tiny) | {min(cold):.2f} |",
        f"| in a process with everything loaded | {min(warm):.2f} |", ""])
    atomic_write_text(out.with_suffix(".md"), md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
