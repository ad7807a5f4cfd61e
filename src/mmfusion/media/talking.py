"""``mmfusion make-dataset talking-faces``: clips with real text and real human ratings, a generated voice and a
generated face.

Text and labels are real: the movie-review snippets of the VADER ground truth (Hutto & Gilbert, ICWSM 2014; 10,605
snippets, each rated by 20 or more people on -4..4, the mean rescaled here to -3..3). They ship inside the
``vaderSentiment==3.3.2`` source distribution, which is fetched with ``pip download`` into the user's cache the first
time (``$MMFUSION_CACHE`` or ``~/.cache/mmfusion``); nothing of it is in mmfusion.

Voice and face are generated: espeak-ng reads the snippet, with rate, pitch and pitch range moved by the rating and
by the speaker; a real photograph (scikit-image's public-domain astronaut portrait; speakers differ by mirroring and
colour) is warped so the mouth opens with the speech energy and the mouth corners and brows follow the rating.
``voice_strength``/``face_strength`` scale how much of the rating each generated modality carries and
``voice_noise``/``face_noise`` add a per-clip random rating offset to it, so a study can decide what each modality
tells.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion.errors import DataError
from mmfusion.io import atomic_write_bytes, atomic_write_json, atomic_write_text
from mmfusion.media.decode import require

VADER = "vaderSentiment==3.3.2"
VADER_FILE = "movieReviewSnippets_GroundTruth.txt"
VOICES = ("en-us", "en-us+m3", "en-us+f3", "en+f2", "en-us+m7", "en+f4")


def cache_dir() -> Path:
    return Path(os.environ.get("MMFUSION_CACHE") or Path.home() / ".cache" / "mmfusion")


def vader_snippets(cache: Path | None = None) -> list[tuple[str, float]]:
    """``(text, rating)`` of the 10,605 VADER movie-review snippets, rating rescaled from -4..4 to -3..3; the first
    call fetches the sdist with pip into the cache."""
    path = (cache or cache_dir()) / "vader" / VADER_FILE
    if not path.exists():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", VADER,
                   "-d", tmp]
            res = subprocess.run(cmd, capture_output=True, text=True)
            sdists = list(Path(tmp).glob("*.tar.gz"))
            if res.returncode != 0 or not sdists:
                raise DataError(f"could not fetch the VADER ratings with pip ({res.stderr.strip()[-300:]})",
                                key=VADER, expected="pip download to succeed (network access to PyPI)",
                                actual=f"exit status {res.returncode}")
            atomic_write_bytes(path, _ground_truth(sdists[0]))
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.strip().split("\t")
        if len(parts) >= 3:
            out.append((parts[2].strip(), float(parts[1]) * 3 / 4))
    return out


def _ground_truth(sdist: Path) -> bytes:
    with tarfile.open(sdist) as outer:
        inner = next(m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz"))
        blob = outer.extractfile(inner).read()  # type: ignore[union-attr]
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith(VADER_FILE))
        return tar.extractfile(member).read()  # type: ignore[union-attr]


@dataclass
class Style:
    """How clips look and sound."""

    width: int = 640
    height: int = 360
    fps: float = 30.0
    audio_rate: int = 44100
    channels: int = 1
    container: str = "mp4"  # mp4 (H.264 + AAC), webm (VP9 + Opus), mkv (H.264 + AAC)
    voice_strength: float = 1.0
    face_strength: float = 1.0
    voice_noise: float = 0.0
    face_noise: float = 0.0
    max_words: int = 20


_PORTRAIT: dict[str, Any] = {}


def portrait() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut portrait cropped square around the face, and its 468 landmarks (x, y) in the crop."""
    if not _PORTRAIT:
        skdata = require("skimage.data")
        mp = require("mediapipe")
        img = skdata.astronaut()
        from mmfusion.media.features import native_stderr_silenced

        with native_stderr_silenced(), mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1) as fm:
            lm = fm.process(img).multi_face_landmarks[0].landmark
        pts = np.array([(q.x * img.shape[1], q.y * img.shape[0]) for q in lm])
        d = np.linalg.norm(pts[33] - pts[263])
        cx, cy = pts[1]
        half = int(2.1 * d)
        x0, y0 = int(max(cx - half, 0)), int(max(cy - half * 0.95, 0))
        crop = np.ascontiguousarray(img[y0:y0 + 2 * half, x0:x0 + 2 * half])
        _PORTRAIT.update(img=crop, pts=pts - (x0, y0))
    return _PORTRAIT["img"], _PORTRAIT["pts"]


class FaceRenderer:
    """Warps the portrait: ``frame(opening, expression, visible)`` with opening in 0..1 and expression in -1..1."""

    def __init__(self, style: Style, speaker: int) -> None:
        import cv2

        self.cv2 = cv2
        img, pts = portrait()
        if speaker % 2:
            img = np.ascontiguousarray(img[:, ::-1])
            pts = pts.copy()
            pts[:, 0] = img.shape[1] - 1 - pts[:, 0]
        tint = np.array([[1.0, 1.0, 1.0], [1.08, 0.97, 0.9], [0.92, 1.0, 1.1], [1.0, 0.92, 1.02]])[(speaker // 2) % 4]
        img = np.clip(img * tint, 0, 255).astype(np.uint8)
        side = min(style.width, style.height)
        s = side / img.shape[0]
        self.face = cv2.resize(img, (side, side), interpolation=cv2.INTER_AREA)
        self.pts = pts * s
        self.D = float(np.linalg.norm(self.pts[33] - self.pts[263]))
        self.style = style
        self.offset = ((style.width - side) // 2, (style.height - side) // 2)
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        self.grid = (xx, yy)
        self.background = np.full((style.height, style.width, 3), (70, 80, 90), np.uint8)

    def frame(self, opening: float, expression: float, visible: bool = True) -> np.ndarray:
        out = self.background.copy()
        if not visible:
            return out
        p, D = self.pts, self.D
        moves: list[tuple[int, float, float, float]] = []  # landmark, dx, dy, sigma (pixels)
        o, e = float(np.clip(opening, 0, 1)), float(np.clip(expression, -1, 1))
        for i in (14, 17, 15, 16):  # lower lip and chin go down as the mouth opens
            moves.append((i, 0.0, 0.28 * D * o, 0.18 * D))
        moves.append((152, 0.0, 0.18 * D * o, 0.35 * D))
        moves.append((13, 0.0, -0.04 * D * o, 0.12 * D))
        for i, side in ((61, -1), (291, 1)):  # lip corners: up and out for a positive rating, down for negative
            moves.append((i, side * 0.06 * D * e, -0.12 * D * e, 0.14 * D))
        for i in (105, 334, 70, 300):  # brows: raised when positive
            moves.append((i, 0.0, -0.08 * D * max(e, 0), 0.18 * D))
        for i, side in ((107, 1), (336, -1)):  # inner brows: down and together when negative
            moves.append((i, side * 0.06 * D * max(-e, 0), 0.08 * D * max(-e, 0), 0.14 * D))
        xx, yy = self.grid
        dx = np.zeros_like(xx)
        dy = np.zeros_like(yy)
        for i, mx, my, sig in moves:
            if mx == 0 and my == 0:
                continue
            cx, cy = p[i]
            r = max(int(3 * sig), 1)
            y0, y1 = max(int(cy) - r, 0), min(int(cy) + r, xx.shape[0])
            x0, x1 = max(int(cx) - r, 0), min(int(cx) + r, xx.shape[1])
            w = np.exp(-((xx[y0:y1, x0:x1] - cx) ** 2 + (yy[y0:y1, x0:x1] - cy) ** 2) / (2 * sig * sig))
            dx[y0:y1, x0:x1] += mx * w
            dy[y0:y1, x0:x1] += my * w
        warped = self.cv2.remap(self.face, xx - dx, yy - dy, self.cv2.INTER_LINEAR, borderMode=self.cv2.BORDER_REFLECT)
        if o > 0.05:  # the dark of the open mouth between the parted lips
            c = (p[13] + p[14]) / 2 + (0, 0.12 * D * o)
            axes = (int(0.35 * np.linalg.norm(p[61] - p[291])), max(int(0.11 * D * o), 1))
            self.cv2.ellipse(warped, (int(c[0]), int(c[1])), axes, 0, 0, 360, (60, 20, 25), -1,
                             lineType=self.cv2.LINE_AA)
        x, y = self.offset
        out[y:y + warped.shape[0], x:x + warped.shape[1]] = warped
        return out


def write_clip(path: Path, frames: Iterable[np.ndarray], fps: float, audio: np.ndarray | None, rate: int,
               channels: int = 1, video_codec: str | None = None, audio_codec: str | None = None) -> Path:
    """Encode RGB frames and mono float audio with PyAV (H.264 + AAC in .mp4/.mkv/.mov, VP9 + Opus in .webm unless
    codecs are given); stereo repeats the channel. Written to a temporary name, then renamed."""
    av = require("av")
    from fractions import Fraction

    from mmfusion.io import atomic_path

    suffix = Path(path).suffix.lower()
    vcodec = video_codec or ("libvpx-vp9" if suffix == ".webm" else "libx264")
    acodec = audio_codec or ("libopus" if suffix == ".webm" else "aac")
    fmt = {".mp4": "mp4", ".webm": "webm", ".mkv": "matroska", ".mov": "mov", ".avi": "avi"}[suffix]
    frames = iter(frames)
    first = next(frames)
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format=fmt) as box:
            vs = box.add_stream(vcodec, rate=Fraction(fps).limit_denominator(1001))
            vs.width, vs.height, vs.pix_fmt = first.shape[1], first.shape[0], "yuv420p"
            if vcodec == "libx264":
                vs.options = {"preset": "veryfast", "crf": "23"}
            elif vcodec == "libvpx-vp9":
                vs.options = {"deadline": "realtime", "cpu-used": "8", "crf": "35", "b": "0"}
            aus = None
            if audio is not None:
                aus = box.add_stream(acodec, rate=rate, layout="stereo" if channels == 2 else "mono")
            for img in _chain(first, frames):
                for pkt in vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                    box.mux(pkt)
            for pkt in vs.encode(None):
                box.mux(pkt)
            if aus is not None and audio is not None:
                pcm = np.tile(audio.astype(np.float32)[None], (channels, 1))
                frame_size = aus.codec_context.frame_size or 1024
                for k in range(0, pcm.shape[1], frame_size):
                    piece = np.ascontiguousarray(pcm[:, k:k + frame_size])
                    if piece.shape[1] < frame_size:
                        piece = np.pad(piece, ((0, 0), (0, frame_size - piece.shape[1])))
                    af = av.AudioFrame.from_ndarray(piece, format="fltp", layout="stereo" if channels == 2
                                                    else "mono")
                    af.sample_rate, af.pts = rate, k
                    for pkt in aus.encode(af):
                        box.mux(pkt)
                for pkt in aus.encode(None):
                    box.mux(pkt)
    return Path(path)


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest


def resample(audio: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return audio
    n = int(round(len(audio) * dst / src))
    return np.interp(np.arange(n) * src / dst, np.arange(len(audio)), audio).astype(np.float32)


def make_clip(path: Path, text: str, rating: float, speaker: int, style: Style, rng: random.Random,
              hide: tuple[float, float] | None = None, synth: Any = None) -> dict[str, Any]:
    """One talking-face clip of ``text`` rated ``rating`` (-3..3) by ``speaker``; writes the video and
    ``<stem>.json`` (the words and their times). ``hide``: seconds during which the face is out of the picture."""
    from mmfusion.media.speech import Synth

    synth = synth or Synth()
    rv = float(np.clip(style.voice_strength * rating + rng.gauss(0, 1) * style.voice_noise, -3, 3))
    rf = float(np.clip(style.face_strength * rating + rng.gauss(0, 1) * style.face_noise, -3, 3))
    voice = VOICES[speaker % len(VOICES)]
    sp = synth.say(text, voice=voice, rate=int(165 + 10 * rv + 8 * (speaker % 3)),
                   pitch=int(45 + 7 * rv + 6 * (speaker % 4)), pitch_range=int(50 + 12 * rv))
    lead = 0.3  # seconds of silence before and after the speech
    audio = np.concatenate([np.zeros(int(lead * sp.rate), np.float32), sp.audio,
                            np.zeros(int(lead * sp.rate), np.float32)])
    duration = len(audio) / sp.rate
    renderer = FaceRenderer(style, speaker)
    hop = sp.rate / style.fps
    n_frames = int(np.ceil(duration * style.fps))
    env = np.array([np.sqrt(np.mean(audio[int(k * hop):int((k + 1) * hop)] ** 2) + 1e-12) for k in range(n_frames)])
    env = np.clip(env / (np.percentile(env, 95) + 1e-6), 0, 1)
    env = np.convolve(env, [0.25, 0.5, 0.25], mode="same")

    def frames() -> Iterable[np.ndarray]:
        for k in range(n_frames):
            t = k / style.fps
            visible = not (hide and hide[0] <= t < hide[1])
            yield renderer.frame(float(env[k]), rf / 3, visible)

    write_clip(path, frames(), style.fps, resample(audio, sp.rate, style.audio_rate), style.audio_rate,
               style.channels)
    words = [{"word": w, "start": round(s + lead, 3), "end": round(e + lead, 3)} for w, s, e in sp.words]
    atomic_write_json(Path(path).with_suffix(".json"), {"text": text, "words": words})
    return {"duration": duration, "voice_rating": rv, "face_rating": rf, "voice": voice, "words": len(words)}


def make_talking_faces(out: Path, n: int, *, seed: int = 0, style: Style | None = None, speakers: int = 4,
                       snippets: Sequence[tuple[str, float]] | None = None,
                       progress: Any = None) -> dict[str, Any]:
    """Write ``n`` clips ``spk<k>_<i>.mp4`` with transcripts, ``labels.csv`` (``id,label``) and ``clips.csv`` (what
    each clip was made from) into ``out``. Clips already there are kept (a rerun finishes an interrupted one)."""
    style = style or Style()
    snippets = list(snippets) if snippets is not None else vader_snippets()
    rng = random.Random(seed)
    pool = [s for s in snippets if 0 < len(s[0].split()) <= style.max_words] or list(snippets)
    chosen = rng.sample(pool, min(n, len(pool))) if n <= len(pool) else [rng.choice(pool) for _ in range(n)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    from mmfusion.media.speech import Synth

    synth = Synth()
    rows = []
    for i, (text, rating) in enumerate(chosen):
        speaker = i % speakers
        cid = f"spk{speaker}_{i:05d}"
        path = out / f"{cid}.{style.container}"
        clip_rng = random.Random(f"{seed}-{i}")
        if path.exists() and path.with_suffix(".json").exists():
            info: dict[str, Any] = {}
        else:
            info = make_clip(path, text, rating, speaker, style, clip_rng, synth=synth)
        rows.append({"id": cid, "label": round(rating, 4), "speaker": speaker, "text": text, **info})
        if progress:
            progress(i + 1, len(chosen), cid)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "label"])
    for r in rows:
        w.writerow([r["id"], r["label"]])
    atomic_write_text(out / "labels.csv", buf.getvalue())
    atomic_write_text(out / "clips.json", json.dumps(rows, indent=1) + "\n")
    return {"clips": len(rows), "out": str(out)}
