"""The picture of docs/extract.md: a generated talking-face frame with its FaceMesh landmarks, and the three
extracted streams of the clip over time.

    .venv/bin/python benchmarks/media_figure.py [--out docs/media/talking_face_streams.png]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/media/talking_face_streams.png")
    ap.add_argument("--text", default="A gorgeous, funny and moving film that I would happily watch again")
    ap.add_argument("--rating", type=float, default=2.5)
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmfusion.io import atomic_path
    from mmfusion.media import FeatureSet
    from mmfusion.media.decode import decode_clip
    from mmfusion.media.extract import Extractor
    from mmfusion.media.features import VISION_NAMES, FaceTracker
    from mmfusion.media.talking import Style, make_clip

    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "talk.mp4"
        make_clip(clip, args.text, args.rating, 0, Style(), random.Random(0))
        fs = FeatureSet()
        res = Extractor(fs).clip(clip, clip.with_suffix(".json"))
        frames: list[tuple[float, np.ndarray, np.ndarray]] = []
        tracker = FaceTracker()

        def keep(rgb: np.ndarray, t: float) -> None:
            tracker(rgb, t)
            if tracker.last_points is not None and not frames and t >= 0.9:
                frames.append((t, rgb.copy(), tracker.last_points.copy()))

        decode_clip(clip, fs.vision_rate, keep)
        tracker.close()
    t_frame, rgb, pts = frames[0]
    fig = plt.figure(figsize=(13, 5.2))
    grid = fig.add_gridspec(3, 2, width_ratios=[1.05, 1.6], hspace=0.35, wspace=0.12)
    ax = fig.add_subplot(grid[:, 0])
    ax.imshow(rgb)
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c="#7fffd4", linewidths=0)
    key = [13, 14, 61, 291, 105, 334, 107, 336, 159, 145, 386, 374, 33, 263, 1, 152, 10]
    ax.scatter(pts[key, 0], pts[key, 1], s=14, c="#ff4060", linewidths=0)
    ax.set_title(f"generated frame at {t_frame:.2f} s with its 468 FaceMesh landmarks\n(red: the points the "
                 "geometry features use)", fontsize=9)
    ax.axis("off")
    duration = res["meta"]["duration"]
    a = res["audio"]
    ta = np.arange(len(a)) / fs.audio_rate
    ax1 = fig.add_subplot(grid[0, 1])
    for j, name in ((0, "loudness"), (10, "F0 (semitones/10)")):
        ax1.plot(ta, a[:, j] / (10 if j == 10 else 1), label=name)
    ax1.set_title(f"audio: openSMILE eGeMAPS low-level descriptors averaged to {fs.audio_rate:g} Hz "
                  f"({a.shape[1]} values, 2 shown)", fontsize=9)
    ax1.legend(fontsize=7, loc="upper right")
    ax2 = fig.add_subplot(grid[1, 1], sharex=ax1)
    v = res["vision"]
    tv = np.arange(len(v)) / fs.vision_rate
    for j in (0, 2, 4):
        ax2.plot(tv, v[:, j], label=VISION_NAMES[j].replace("_", " "))
    ax2.set_title(f"vision: pose-normalised face geometry at {fs.vision_rate:g} Hz ({v.shape[1]} values, 3 shown)",
                  fontsize=9)
    ax2.legend(fontsize=7, loc="upper right")
    ax3 = fig.add_subplot(grid[2, 1], sharex=ax1)
    emb = res["text"]
    proj = (emb - emb.mean(0)) @ np.linalg.svd(emb - emb.mean(0), full_matrices=False)[2][0]
    for (s, e), y, w in zip(res["text_times"], proj, args.text.replace(",", "").split(), strict=False):
        ax3.add_patch(plt.Rectangle((s, 0), e - s, y, color="#4060c0" if y >= 0 else "#c06040", alpha=0.7))
        ax3.text((s + e) / 2, 0, w, rotation=90, fontsize=7, ha="center", va="bottom" if y < 0 else "top")
    lim = float(np.abs(proj).max()) * 1.1
    ax3.set_ylim(-lim, lim)
    ax3.set_xlim(0, duration)
    ax3.set_title("text: MiniLM embedding per word (384 values; first principal component shown over each "
                  "word's time)", fontsize=9)
    ax3.set_xlabel("seconds")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_png:
        fig.savefig(tmp_png, dpi=110, bbox_inches="tight", format="png")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
