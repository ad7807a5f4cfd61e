"""Extraction speed of ``mmfusion extract``: seconds of computing per minute of video, per extractor and in all,
with 1 and 2 worker processes, on a generated 640x360, 30 fps talking-face clip with speech (H.264 + AAC).

    .venv/bin/python benchmarks/media_speed.py [--seconds 60] [--copies 4] [--out benchmarks/out/media_speed]

Per extractor (one process, models loaded beforehand, best of ``--repeat``): decoding alone (PyAV, audio and the
15 Hz frames converted to RGB), decoding + face geometry (MediaPipe FaceMesh), audio descriptors (openSMILE eGeMAPS,
and librosa MFCCs), text (MiniLM on the clip's words, with their times given), and one whole clip. Then
``run_extract`` over ``--copies`` copies of the clip with 1 and 2 workers: wall-clock time of the whole command
(worker start-up and model loading included). Real time is 60 s per minute: 3x faster than real time is 20 s per
minute or less. Writes ``<out>.json`` and ``<out>.md`` (default ``benchmarks/out/media_speed``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from mmfusion.io import atomic_write_json, atomic_write_text

SENTENCES = [
    "I went to see the new film on Saturday with two friends from work.",
    "The story starts slowly, but the second half is gripping and well paced.",
    "Honestly the acting was better than I expected from the trailer.",
    "Some scenes drag on, and the music is far too loud in places.",
    "Still, I would recommend it to anyone who likes a quiet drama.",
    "The ending surprised all of us, and we talked about it for an hour.",
]


def best(fn: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the generated clip (default 60)")
    ap.add_argument("--copies", type=int, default=4, help="clips in the 1- and 2-worker runs (default 4)")
    ap.add_argument("--repeat", type=int, default=2, help="timings per extractor, the best kept (default 2)")
    ap.add_argument("--out", default="benchmarks/out/media_speed", help="output stem")
    args = ap.parse_args()

    from mmfusion.media import FeatureSet
    from mmfusion.media.decode import decode_clip
    from mmfusion.media.extract import Extractor, run_extract
    from mmfusion.media.features import AudioFeatures, FaceTracker, TextEncoder
    from mmfusion.media.talking import Style, make_clip
    from mmfusion.media.transcript import read_transcript
    from mmfusion.runtime import describe_cpu

    tmp = Path(tempfile.mkdtemp(prefix="media_speed_"))
    try:
        clips = tmp / "clips"
        clips.mkdir()
        text = ""
        while len(text.split()) < args.seconds * 2.6:
            text += " " + SENTENCES[len(text.split()) % len(SENTENCES)]
        t = time.perf_counter()
        info = make_clip(clips / "talk.mp4", text.strip(), 1.0, 0, Style(), random.Random(0))
        print(f"generated a {info['duration']:.1f} s clip in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        clip, words_file = clips / "talk.mp4", clips / "talk.json"
        minutes = info["duration"] / 60
        fs = FeatureSet()
        ex = Extractor(fs)
        ex.text  # noqa: B018  (load MiniLM before timing)
        words, _ = read_transcript(words_file)
        dec = decode_clip(clip, fs.vision_rate, None)
        rows: dict[str, float] = {}

        def decode_rgb() -> None:
            decode_clip(clip, fs.vision_rate, lambda rgb, t: None)

        def vision() -> None:
            tr = FaceTracker()
            decode_clip(clip, fs.vision_rate, tr)
            tr.close()

        mfcc = AudioFeatures("mfcc", fs.audio_rate)
        t0 = time.perf_counter()
        TextEncoder()
        load_text = time.perf_counter() - t0
        rows["decode (PyAV: audio + 15 Hz RGB frames)"] = best(decode_rgb, args.repeat)
        rows["decode + vision (FaceMesh geometry)"] = best(vision, args.repeat)
        rows["audio: openSMILE eGeMAPS"] = best(lambda: ex.audio(dec.audio), args.repeat)
        rows["audio: librosa MFCC (alternative)"] = best(lambda: mfcc(dec.audio), args.repeat)
        rows["text: MiniLM per word"] = best(lambda: ex.text(words), args.repeat)
        rows["all extractors, one clip (warm)"] = best(lambda: ex.clip(clip, words_file), args.repeat)
        per_minute = {k: v / minutes for k, v in rows.items()}
        runs = {}
        for c in range(1, args.copies):
            shutil.copy(clip, clips / f"talk{c}.mp4")
            shutil.copy(words_file, clips / f"talk{c}.json")
        for workers in (1, 2):
            out = tmp / f"w{workers}.h5"
            t = time.perf_counter()
            s = run_extract(clips, out, split="test", workers=workers)
            wall = time.perf_counter() - t
            assert not s.failed, s.failed
            runs[workers] = wall / (minutes * args.copies)
        result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": describe_cpu(),
                  "load_average": list(os.getloadavg()),
                  "python": platform.python_version(), "clip": {"seconds": info["duration"], "size": "640x360",
                                                                "fps": 30, "words": len(words)},
                  "seconds_per_minute": per_minute, "minilm_load_seconds": load_text,
                  "run_extract_seconds_per_minute": {f"{w} worker(s)": v for w, v in runs.items()},
                  "copies": args.copies}
        out = Path(args.out)
        atomic_write_json(out.with_suffix(".json"), result)
        lines = ["# Extraction speed: seconds per minute of video (real time = 60 s; 3x faster = 20 s)", "",
                 f"Clip: generated talking face, 640x360, 30 fps, H.264 + AAC 44.1 kHz, "
                 f"{info['duration']:.1f} s, {len(words)} words.  ",
                 f"Machine: {result['machine']}, load average {result['load_average'][0]:.1f} at the end.  ",
                 f"Command: `{result['command']}`", "",
                 "| step | s per minute of video | x real time |", "|---|---:|---:|"]
        lines += [f"| {k} | {v:.1f} | {60 / v:.1f} |" for k, v in per_minute.items()]
        lines += [f"| `run_extract`, {w} worker(s), {args.copies} clips, start-up included | {v:.1f} | {60 / v:.1f} |"
                  for w, v in runs.items()]
        lines += ["", f"Loading MiniLM once per process: {load_text:.1f} s (included in the `run_extract` rows).", ""]
        atomic_write_text(out.with_suffix(".md"), "\n".join(lines))
        print("\n".join(lines))
        print(json.dumps(result["run_extract_seconds_per_minute"]), file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
