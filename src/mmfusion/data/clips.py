"""Readers of raw audio-visual datasets for MSAF's networks: RAVDESS (``ravdess:DIR``) and NTU RGB+D (``ntu:DIR``).

Decoding video is slow, so both readers decode once into a cache of ``.npy`` arrays inside the dataset directory
(``.mmfusion_cache/<settings>/``, memory-mapped afterwards); ``mmfusion prepare SPEC`` fills it ahead of training.
Decoding can be interrupted: every decoded clip is flushed to the cache with a progress record, and the next call
goes on from the first clip not yet written (``done.json`` marks a finished cache).
Video arrays are uint8 (N, 3, T, H, W); the batch collate turns them into floats in [0, 1].

RAVDESS (``Actor_XX/MM-VC-EE-II-SS-RR-AA.mp4``): audio-visual speech files (modality 01, vocal channel 01) by
default; emotion EE (01-08) is the class. ``frames`` frames are sampled uniformly; the face is cropped with the
RAVDESS landmark CSV of the clip when one lies beside it (``<name>.csv``, OpenFace columns ``x_0..x_67``,
``y_0..y_67``), otherwise a centred square is used. Audio: 44.1 kHz mono, 2.45 s from a 0.5 s offset (zero-padded),
13 MFCCs from librosa (13 x 212). Actor-wise 6-fold cross-validation: fold k tests actors 4k+1..4k+4, the next fold's
actors are the validation split (for model selection), the remaining 16 train.

NTU RGB+D (``SsssCcccPpppRrrrAaaa.skeleton`` and ``..._rgb.avi``): the plain-text skeleton format (frame count; per
frame a body count; per body an info line, a joint count and one line per joint: x y z, depth x y, colour x y,
orientation w x y z, tracking state). Up to two bodies, x/y/z, resampled to ``skeleton_frames``; RGB resampled to
``frames`` frames, centre-cropped. Cross-subject split: the 20 standard training subjects train (subjects 35 and 38
held out for validation), the other 20 test.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion.data.dataset import DatasetBundle, LoadReport, SplitData
from mmfusion.errors import DataError
from mmfusion.io import atomic_write_json

RAVDESS_EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
RAVDESS_FOLDS = 6  # actor-wise cross-validation folds, 4 actors each
RAVDESS_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
NTU_NAME = re.compile(r"^S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
NTU_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38)
NTU_VALID_SUBJECTS = (35, 38)


def _require_av() -> Any:
    try:
        import av
    except ImportError:
        raise DataError("reading video needs PyAV: pip install 'mmfusion[video]'", key="av",
                        expected="PyAV installed", actual="missing") from None
    return av


def sample_indices(n: int, k: int) -> np.ndarray:
    """k frame indices spread uniformly over n frames (repeats when n < k)."""
    if n <= 0:
        return np.zeros(k, dtype=np.int64)
    return np.minimum((np.arange(k) * n / k + n / (2 * k)).astype(np.int64), n - 1)


def decode_frames(path: Path) -> list[np.ndarray]:
    av = _require_av()
    try:
        with av.open(str(path)) as box:
            return [f.to_ndarray(format="rgb24") for f in box.decode(video=0)]
    except Exception as exc:
        raise DataError(f"cannot decode video ({type(exc).__name__}: {exc})", file=path) from None


def decode_audio(path: Path, rate: int = 44100) -> np.ndarray:
    av = _require_av()
    try:
        with av.open(str(path)) as box:
            if not box.streams.audio:
                raise DataError("no audio stream", file=path, expected="an audio track", actual="video only")
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in box.decode(audio=0):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot decode audio ({type(exc).__name__}: {exc})", file=path) from None
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)


def mfcc(signal: np.ndarray, rate: int = 44100, offset: float = 0.5, duration: float = 2.45,
         n_mfcc: int = 13) -> np.ndarray:
    """13 MFCCs of ``duration`` seconds from ``offset`` (zero-padded): (13, 212) at 44.1 kHz."""
    import librosa

    n = int(round(duration * rate))
    seg = signal[int(offset * rate):][:n]
    seg = np.pad(seg, (0, n - len(seg)))
    return librosa.feature.mfcc(y=seg.astype(np.float32), sr=rate, n_mfcc=n_mfcc).astype(np.float32)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    import torch

    t = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    out = torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return out[0].round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def crop_box(frames: Sequence[np.ndarray], landmarks: np.ndarray | None) -> tuple[int, int, int, int]:
    """Square crop (top, left, side) around the landmarks (with a 20 % margin) or the centre of the frame."""
    H, W = frames[0].shape[:2]
    if landmarks is not None and landmarks.size:
        xs, ys = landmarks[..., 0], landmarks[..., 1]
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        side = int(min(max(xs.max() - xs.min(), ys.max() - ys.min()) * 1.2, H, W))
    else:
        cx, cy, side = W / 2, H / 2, min(H, W)
    top = int(np.clip(cy - side / 2, 0, H - side))
    left = int(np.clip(cx - side / 2, 0, W - side))
    return top, left, side, side


def read_landmarks(path: Path, frames: np.ndarray) -> np.ndarray | None:
    """(len(frames), 68, 2) landmarks from a RAVDESS/OpenFace CSV beside the clip, or None."""
    if not path.exists():
        return None
    import csv

    with path.open() as fh:
        rows = list(csv.DictReader(fh, skipinitialspace=True))
    if not rows or "x_0" not in rows[0]:
        raise DataError("landmark CSV without x_0..x_67 columns", file=path, expected="x_0..x_67, y_0..y_67",
                        actual=sorted(rows[0])[:6] if rows else "empty file")
    try:
        pts = np.array([[[float(r[f"x_{i}"]), float(r[f"y_{i}"])] for i in range(68)] for r in rows])
    except (KeyError, ValueError, TypeError) as exc:  # a missing column or a cell that is not a number
        raise DataError(f"landmark CSV with a missing or non-numeric value ({type(exc).__name__}: {exc})",
                        file=path, expected="numbers in x_0..x_67, y_0..y_67 on every row") from None
    if not np.isfinite(pts).all():
        row = int(np.argwhere(~np.isfinite(pts))[0][0])
        raise DataError("landmark CSV with NaN or inf", file=path, expected="finite coordinates",
                        actual=f"non-finite value on data row {row + 1}")
    return pts[np.minimum(frames, len(pts) - 1)]


def _video_clip(path: Path, frames: int, size: int, landmarks_csv: Path | None) -> np.ndarray:
    allf = decode_frames(path)
    if not allf:
        raise DataError("video has no frames", file=path)
    idx = sample_indices(len(allf), frames)
    lm = read_landmarks(landmarks_csv, idx) if landmarks_csv is not None else None
    top, left, h, w = crop_box([allf[i] for i in idx], lm)
    clip = np.stack([_resize(allf[i][top:top + h, left:left + w], size) for i in idx])  # (T, H, W, 3)
    return clip.transpose(3, 0, 1, 2)  # (3, T, H, W)


def _cache_dir(root: Path, settings: dict[str, Any]) -> Path:
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return root / ".mmfusion_cache" / key


def _splits(which: np.ndarray, features: dict[str, np.ndarray], labels: np.ndarray, ids: list[str]
            ) -> dict[str, SplitData]:
    """Splits sharing the (memory-mapped) arrays; ``which`` holds 0/1/2 for train/valid/test per sample."""
    out = {}
    for k, name in enumerate(("train", "valid", "test")):
        idx = np.flatnonzero(which == k)
        out[name] = SplitData(features, {}, labels[idx], [ids[i] for i in idx], rows=idx)
    return out


def _progress(items: Sequence[Any], what: str) -> Any:
    from rich.progress import track

    return track(items, description=what, transient=True)


def _decode_into_cache(cache: Path, ids: list[str], arrays: dict[str, tuple[tuple[int, ...], Any]],
                       decode: Callable[[int], dict[str, np.ndarray]], what: str) -> None:
    """Fill ``cache/<name>.npy`` (shape, dtype as in ``arrays``, first axis = clip) clip by clip with ``decode(i)``.

    After every clip the arrays are flushed and ``progress.json`` (the clip list's hash, clips done) is replaced
    atomically, so an interrupted call loses at most the clip in progress; a call over the same clip list goes on
    from there, any other list starts afresh."""
    cache.mkdir(parents=True, exist_ok=True)
    record = cache / "progress.json"
    listing = hashlib.sha1(json.dumps(ids).encode()).hexdigest()
    start = 0
    if record.exists():
        try:
            previous = json.loads(record.read_text())
            maps = {k: np.lib.format.open_memmap(cache / f"{k}.npy", mode="r+") for k in arrays}
            if previous.get("ids") == listing and all(
                    maps[k].shape == shape and maps[k].dtype == np.dtype(dt) for k, (shape, dt) in arrays.items()):
                start = int(previous["done"])
        except (OSError, ValueError, KeyError):
            start = 0  # an unreadable record or array: decode everything again
    if start == 0:
        maps = {}  # release any mapping of the old files before they are rewritten
        maps = {k: np.lib.format.open_memmap(cache / f"{k}.npy", mode="w+", dtype=dt, shape=shape)
                for k, (shape, dt) in arrays.items()}
    label = f"{what} (resuming at clip {start + 1} of {len(ids)})" if start else what
    for i in _progress(range(start, len(ids)), label):
        for k, value in decode(i).items():
            maps[k][i] = value
        for m in maps.values():
            m.flush()
        atomic_write_json(record, {"ids": listing, "done": i + 1})
    del maps


def _finish_cache(cache: Path, ids: list[str], settings: dict[str, Any], **columns: list[int]) -> None:
    """Write one int64 array per clip column (``<name>.npy``) and the clip ids, then mark the cache finished:
    ``done.json`` comes last, so a call interrupted before it is completed by the next one."""
    for name, values in columns.items():
        np.save(cache / f"{name}.npy", np.array(values, dtype=np.int64))
    (cache / "ids.json").write_text(json.dumps(ids))
    atomic_write_json(cache / "done.json", settings)
    (cache / "progress.json").unlink(missing_ok=True)


# --- RAVDESS -----------------------------------------------------------------------------------------------------
def prepare_ravdess(root: str | Path, *, frames: int = 30, size: int = 224, speech_only: bool = True) -> Path:
    """Decode every clip once into the cache; returns the cache directory."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("expected the RAVDESS directory (with Actor_XX folders)", file=root)
    settings = {"frames": frames, "size": size, "speech_only": speech_only, "v": 1}
    cache = _cache_dir(root, settings)
    if (cache / "done.json").exists():
        return cache
    clips = []
    for path in sorted(root.glob("Actor_*/*.mp4")):
        m = RAVDESS_NAME.match(path.stem)
        if not m:
            continue
        modality, channel, emotion, *_rest, actor = (int(g) for g in m.groups())
        if modality != 1 or (speech_only and channel != 1):
            continue
        clips.append((path, emotion - 1, actor))
    if not clips:
        raise DataError("no audio-visual RAVDESS clips found", file=root,
                        expected="Actor_XX/01-01-EE-II-SS-RR-AA.mp4", actual="none")

    def decode(i: int) -> dict[str, np.ndarray]:
        path = clips[i][0]
        coeffs = mfcc(decode_audio(path))[:, :212]
        audio = np.zeros((13, 212), dtype=np.float32)
        audio[:, : coeffs.shape[1]] = coeffs
        return {"video": _video_clip(path, frames, size, path.with_suffix(".csv")), "audio": audio}

    _decode_into_cache(cache, [c[0].stem for c in clips],
                       {"video": ((len(clips), 3, frames, size, size), np.uint8),
                        "audio": ((len(clips), 13, 212), np.float32)}, decode, "decoding RAVDESS")
    _finish_cache(cache, [c[0].stem for c in clips], settings,
                  labels=[c[1] for c in clips], actors=[c[2] for c in clips])
    return cache


def read_ravdess(root: str | Path, *, fold: int = 0, frames: int = 30, size: int = 224,
                 speech_only: bool = True) -> DatasetBundle:
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < RAVDESS_FOLDS:
        raise DataError("fold out of range", file=root, key="fold", actual=fold,
                        expected=f"0..{RAVDESS_FOLDS - 1} (fold=all, every fold in turn, is for `mmfusion fit`)")
    cache = prepare_ravdess(root, frames=frames, size=size, speech_only=speech_only)
    video = np.load(cache / "video.npy", mmap_mode="r")
    audio, labels = np.load(cache / "audio.npy"), np.load(cache / "labels.npy")
    actors, ids = np.load(cache / "actors.npy"), json.loads((cache / "ids.json").read_text())
    test_actors = set(range(4 * fold + 1, 4 * fold + 5))
    valid_actors = set(range(4 * ((fold + 1) % 6) + 1, 4 * ((fold + 1) % 6) + 5))
    which = np.where(np.isin(actors, list(test_actors)), 2, np.where(np.isin(actors, list(valid_actors)), 1, 0))
    splits = _splits(which, {"video": video, "audio": audio}, labels, ids)
    report = LoadReport(notes=[f"fold {fold}: test actors {sorted(test_actors)}, validation actors "
                               f"{sorted(valid_actors)} (model selection), 16 training actors"])
    return DatasetBundle(name=f"ravdess_fold{fold}", task="classification", splits=splits, source=f"ravdess:{root}",
                         emotions=RAVDESS_EMOTIONS, report=report)


# --- NTU RGB+D -----------------------------------------------------------------------------------------------------
def read_skeleton(path: Path, bodies: int = 2, joints: int = 25) -> np.ndarray:
    """Parse an NTU ``.skeleton`` text file -> (bodies, 3, T, joints) float32 (x, y, z; missing bodies zero)."""
    try:
        tokens = path.read_text().split("\n")
    except OSError as exc:
        raise DataError(f"cannot read ({exc})", file=path) from None
    lines = iter(line.strip() for line in tokens)
    try:
        n_frames = int(next(lines))
        out = np.zeros((bodies, 3, n_frames, joints), dtype=np.float32)
        for t in range(n_frames):
            n_bodies = int(next(lines))
            for b in range(n_bodies):
                next(lines)  # body info: id, clipped edges, hand states, lean, tracking state
                n_joints = int(next(lines))
                for j in range(n_joints):
                    vals = next(lines).split()
                    if len(vals) < 3:
                        raise ValueError("a joint line with fewer than 3 coordinates")
                    if b < bodies and j < joints:
                        out[b, :, t, j] = [float(v) for v in vals[:3]]
    except (StopIteration, ValueError, IndexError) as exc:
        raise DataError(f"malformed skeleton file ({type(exc).__name__})", file=path,
                        expected="frame count, then per frame body count, body info, joint count, joint lines",
                        actual="truncated or non-numeric content") from None
    if not np.isfinite(out).all():
        raise DataError("skeleton file with NaN or inf coordinates", file=path, expected="finite x, y, z",
                        actual=f"{int((~np.isfinite(out)).sum())} non-finite values")
    return out


def prepare_ntu(root: str | Path, *, frames: int = 32, size: int = 224, skeleton_frames: int = 32) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError("expected the NTU RGB+D directory (.skeleton files and _rgb.avi videos)", file=root)
    settings = {"frames": frames, "size": size, "skeleton_frames": skeleton_frames, "v": 1}
    cache = _cache_dir(root, settings)
    if (cache / "done.json").exists():
        return cache
    videos = {p.name.removesuffix("_rgb.avi"): p for p in root.rglob("*_rgb.avi")}  # one walk, not one per sample
    samples = []
    for sk in sorted(root.rglob("*.skeleton")):
        m = NTU_NAME.match(sk.stem)
        if not m:
            continue
        if sk.stem not in videos:
            raise DataError("no RGB video for skeleton file", file=sk, expected=f"{sk.stem}_rgb.avi", actual="none")
        samples.append((sk, videos[sk.stem], int(m.group(3)), int(m.group(5)) - 1))
    if not samples:
        raise DataError("no NTU samples found", file=root, expected="SsssCcccPpppRrrrAaaa.skeleton", actual="none")

    def decode(i: int) -> dict[str, np.ndarray]:
        sk, vid = samples[i][:2]
        s = read_skeleton(sk)
        return {"skeleton": s[:, :, sample_indices(s.shape[2], skeleton_frames)],
                "rgb": _video_clip(vid, frames, size, None)}

    _decode_into_cache(cache, [s[0].stem for s in samples],
                       {"rgb": ((len(samples), 3, frames, size, size), np.uint8),
                        "skeleton": ((len(samples), 2, 3, skeleton_frames, 25), np.float32)},
                       decode, "decoding NTU RGB+D")
    _finish_cache(cache, [s[0].stem for s in samples], settings,
                  labels=[s[3] for s in samples], subjects=[s[2] for s in samples])
    return cache


def read_ntu(root: str | Path, *, frames: int = 32, size: int = 224, skeleton_frames: int = 32,
             num_classes: int = 60) -> DatasetBundle:
    cache = prepare_ntu(root, frames=frames, size=size, skeleton_frames=skeleton_frames)
    rgb = np.load(cache / "rgb.npy", mmap_mode="r")
    skel, labels = np.load(cache / "skeleton.npy"), np.load(cache / "labels.npy")
    subjects, ids = np.load(cache / "subjects.npy"), json.loads((cache / "ids.json").read_text())
    which = np.where(np.isin(subjects, NTU_VALID_SUBJECTS), 1, np.where(np.isin(subjects, NTU_TRAIN_SUBJECTS), 0, 2))
    splits = _splits(which, {"rgb": rgb, "skeleton": skel}, labels, ids)
    classes = tuple(f"A{i + 1:03d}" for i in range(num_classes))
    report = LoadReport(notes=["cross-subject split; subjects 35 and 38 of the training subjects validate"])
    return DatasetBundle(name="ntu_xsub", task="classification", splits=splits, source=f"ntu:{root}",
                         emotions=classes, report=report)
