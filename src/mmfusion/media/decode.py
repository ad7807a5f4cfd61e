"""Reading a clip with PyAV in one pass: its audio as 16 kHz mono and its picture sampled at a fixed rate.

Any container and codec FFmpeg reads (mp4, mkv, webm, mov, avi; H.264, VP9, AV1, AAC, Opus, ...), any frame rate,
resolution or orientation (a rotation flag is applied), mono or multi-channel audio at any sample rate. What cannot
be read raises :class:`ClipFailure` with a short named reason (it goes to the errors file as it is).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion.errors import DataError

AUDIO_RATE = 16000
MAX_SIDE = 640  # larger pictures are scaled down before face tracking (FaceMesh works at 192 x 192 internally)


class ClipFailure(DataError):
    """One clip cannot be extracted; ``reason`` is a short name for the errors file (``no audio track``...)."""

    def __init__(self, reason: str, file: Any, detail: str = "") -> None:
        super().__init__(reason + (f" ({detail})" if detail else ""), file=file)
        self.reason, self.detail = reason, detail


@dataclass
class Decoded:
    audio: np.ndarray  # (S,) float32 at AUDIO_RATE
    video_duration: float  # seconds from the first frame to the end of the last
    n_frames: int  # decoded video frames
    size: tuple[int, int]  # (width, height) as shown (after rotation)


def require(module: str) -> Any:
    """Import a package of the ``media`` extra, or say how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"extracting features needs the media extra: pip install 'mmfusion[media]' ({module} "
                        "missing)", key=module, expected="installed", actual="missing") from None


def decode_clip(path: Path, rate: float, on_frame: Callable[[np.ndarray, float], None] | None,
                need_audio: bool = True) -> Decoded:
    """Decode ``path`` once. ``on_frame(rgb, t)`` is called for the frame shown at each time ``t = k / rate``
    (k = 0, 1, ...) up to the end of the last frame, in order (the same frame may be given for several times when
    ``rate`` exceeds the clip's frame rate). Returns the audio and the picture's duration."""
    av = require("av")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ClipFailure("unreadable file", path, exc.strerror or str(exc)) from None
    if size == 0:
        raise ClipFailure("empty file (0 bytes)", path)
    try:
        box = av.open(str(path))
    except Exception as exc:  # FFmpeg's InvalidDataError and friends
        raise ClipFailure("corrupt or truncated file", path, f"{type(exc).__name__}: {exc}"[:200]) from None
    with box:
        if not box.streams.video:
            raise ClipFailure("no video track", path)
        if need_audio and not box.streams.audio:
            raise ClipFailure("no audio track", path)
        vs = box.streams.video[0]
        vs.thread_type = "AUTO"
        streams = [vs] + ([box.streams.audio[0]] if need_audio else [])
        resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE) if need_audio else None
        chunks: list[np.ndarray] = []
        state = {"k": 0, "prev": None, "prev_t": 0.0, "t0": None, "n": 0, "dt": 0.0, "shape": (0, 0)}

        def emit(until: float) -> None:
            """Give the previous frame for every sample time before ``until``."""
            prev = state["prev"]
            if prev is None:
                return
            rgb = None
            while state["k"] / rate < until - 1e-9:
                if on_frame is not None:
                    if rgb is None:
                        rgb = _to_rgb(prev)
                    on_frame(rgb, state["k"] / rate)
                state["k"] += 1

        def video_frame(frame: Any) -> None:
            t = float(frame.time) if frame.time is not None else state["n"] / float(vs.average_rate or 25)
            if state["t0"] is None:
                state["t0"] = t
            t -= state["t0"]
            if state["prev"] is not None:
                state["dt"] = max(t - state["prev_t"], 1e-3)
                emit(t)
            state["prev"], state["prev_t"] = frame, t
            state["n"] += 1

        try:
            for packet in box.demux(*streams):
                for frame in packet.decode():
                    if packet.stream.type == "video":
                        video_frame(frame)
                    elif resampler is not None:
                        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            if resampler is not None:
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except Exception as exc:
            if state["n"] == 0 and not chunks:
                raise ClipFailure("corrupt or truncated file", path, f"{type(exc).__name__}: {exc}"[:200]) from None
            # a damaged tail: keep what decoded (the lengths say how much that is)
        if state["n"] == 0:
            raise ClipFailure("no video frames", path)
        fps = float(vs.average_rate) if vs.average_rate else 0.0
        last = state["dt"] or (1.0 / fps if fps else 1.0 / 25)
        end = state["prev_t"] + last
        emit(end)
        prev = state["prev"]
        shape = _to_rgb(prev).shape if prev is not None else (0, 0)
    audio = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if need_audio and audio.size == 0:
        raise ClipFailure("no audio samples", path, "the audio track decodes to nothing")
    return Decoded(audio, end, state["n"], (int(shape[1]), int(shape[0])))


def _to_rgb(frame: Any) -> np.ndarray:
    w, h = frame.width, frame.height
    scale = MAX_SIDE / max(w, h)
    if scale < 1:
        frame = frame.reformat(width=2 * math.floor(w * scale / 2), height=2 * math.floor(h * scale / 2))
    rgb = frame.to_ndarray(format="rgb24")
    rotation = int(getattr(frame, "rotation", 0) or 0) % 360  # phone clips: the picture is stored on its side
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb
