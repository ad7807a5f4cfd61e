"""Readers of raw audio-visual datasets for MSAF's networks: RAVDESS (``ravdess:DIR``) and NTU RGB+D (``ntu:DIR``).

Decoding video is slow, so both readers decode once into a cache of ``.npy`` arrays inside the dataset directory
(``.mmfusion_cache/<settings>/``, memory-mapped afterwards); ``mmfusion prepare SPEC`` fills it ahead of training.
Decoding can be interrupted: every decoded clip is flushed to the cache with a progress record, and the next call
goes on from the first clip not yet written (``done.json`` marks a finished cache).
Video arrays are uint8 (N, 3, T, H, W); the batch collate turns them into floats in [0, 1].

RAVDESS (``Actor_XX/MM-VC-EE-II-SS-RR-AA.mp4``): audio-visual speech files (modality 01, vocal channel 01) by
default; emotion EE (01-08) is the class. Video as the MSAF authors prepared it (``docs/design/msaf-reference.md``):
``frames`` frames at times i·duration/frames, each cut to the tight box of its own 68 landmarks (the FacialTracking
archive's flat ``landmarks/<name>.csv`` folder, or ``<name>.csv`` beside the clip; all-zero rows take the nearest
tracked frame) and resized to ``size`` x ``size``; a clip without landmarks is an error unless ``crop="center"``.
Training batches get the authors' random resized crop and flip (``augment``). Audio: 44.1 kHz mono, 2.45 s from a
0.5 s offset (zero-padded), 13 MFCCs from librosa (13 x 212). Actor-wise 6-fold cross-validation: fold k tests
actors 4k+1..4k+4, the next fold's actors are the validation split (for model selection), the remaining 16 train.

NTU RGB+D (``SsssCcccPpppRrrrAaaa.skeleton`` and ``..._rgb.avi``; ``ntu:DIR`` actions A001-A060, ``ntu120:DIR``
A001-A120): the plain-text skeleton format (frame count; per frame a body count; per body an info line starting
with the body ID, a joint count and one line per joint: x y z, depth x y, colour x y, orientation w x y z, tracking
state). Up to two bodies in slots kept by body ID, x/y/z relative to the first person's joint 2, linearly resampled
to ``skeleton_frames``; files with no frames, more than two bodies in a frame or a truncated body, and the samples
of the reference's ``bad_skel.txt`` list, are skipped and counted. RGB: the whole frame resized to 256 x 256 (the
reference's ``avi_256x256_30``), ``frames`` frames picked as the authors' loader picks them (``rgb_sampling``:
:func:`ntu_frame_indices`), centre crop ``size``. Cross-subject split: the standard training subjects train
(subjects 2, 5, 9 and 14 validate, as in the original MFAS code), the others test.
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
NTU_VALID_SUBJECTS = (2, 5, 9, 14)  # the original MFAS code's "dev" subjects (the MSAF authors' fork trains on them and
# validates on test subjects 3, 6, 7, 10: docs/design/msaf-reference.md, NTU training recipe)
NTU120_TRAIN_SUBJECTS = (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38, 45, 46, 47, 49,
                         50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86, 89, 91, 92, 93,
                         94, 95, 97, 98, 100, 103)


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


def reference_indices(n: int, k: int) -> np.ndarray:
    """The authors' RAVDESS sampling: frames at times i·duration/k, i.e. indices floor(i·n/k) (repeats when
    n < k)."""
    if n <= 0:
        return np.zeros(k, dtype=np.int64)
    return np.minimum(np.floor(np.arange(k) * n / k).astype(np.int64), n - 1)


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


def read_landmarks(path: Path, frames: np.ndarray | None = None) -> np.ndarray | None:
    """(len(frames), 68, 2) landmarks (pixels) from an OpenFace / RAVDESS FacialTracking CSV, or None if the file
    does not exist. Column names may carry leading spaces (" x_0", as OpenFace writes them). Rows that are all zero
    (frames OpenFace failed to track) take the nearest tracked row; a file without any tracked row is None.
    ``frames`` None: every row. With ``frames``, row ceil(i·rows/k) for the i-th of k sampled frames, as the
    authors' preprocessing reads them."""
    if not path.exists():
        return None
    import csv

    with path.open() as fh:
        reader = csv.reader(fh, skipinitialspace=True)
        rows = list(reader)
    header = [h.strip() for h in rows[0]] if rows else []
    rows = [r for r in rows[1:] if any(c.strip() for c in r)]
    if "x_0" not in header or "y_67" not in header:
        raise DataError("landmark CSV without x_0..x_67 columns", file=path, expected="x_0..x_67, y_0..y_67",
                        actual=header[:6] if header else "empty file")
    cols = [header.index(f"x_{i}") for i in range(68)] + [header.index(f"y_{i}") for i in range(68)]
    try:
        flat = np.array([[float(r[c]) for c in cols] for r in rows], dtype=np.float64).reshape(-1, 136)
    except (IndexError, ValueError, TypeError) as exc:  # a short row or a cell that is not a number
        raise DataError(f"landmark CSV with a missing or non-numeric value ({type(exc).__name__}: {exc})",
                        file=path, expected="numbers in x_0..x_67, y_0..y_67 on every row") from None
    if not np.isfinite(flat).all():
        row = int(np.argwhere(~np.isfinite(flat))[0][0])
        raise DataError("landmark CSV with NaN or inf", file=path, expected="finite coordinates",
                        actual=f"non-finite value on data row {row + 1}")
    pts = np.stack([flat[:, :68], flat[:, 68:]], -1)  # (rows, 68, 2)
    tracked = np.flatnonzero(np.abs(flat).sum(1) > 0)
    if tracked.size == 0:
        return None
    nearest = tracked[np.abs(np.arange(len(pts))[:, None] - tracked[None]).argmin(1)]
    pts = pts[nearest]
    if frames is None:
        return pts
    k = len(frames)
    rows_at = np.minimum(np.ceil(np.arange(k) * len(pts) / k).astype(np.int64), len(pts) - 1)
    return pts[rows_at]


def zero_rows(path: Path) -> int:
    """How many rows of a landmark CSV are all zero (untracked frames)."""
    import csv

    with path.open() as fh:
        rows = [r for r in csv.reader(fh, skipinitialspace=True)][1:]
    count = 0
    for r in rows:
        try:
            vals = [float(c) for c in r[5:] if c.strip()]  # after frame, face_id, timestamp, confidence, success
        except ValueError:
            continue
        count += bool(vals) and not any(vals)
    return count


def _face_crops(frames: Sequence[np.ndarray], landmarks: np.ndarray, size: int) -> np.ndarray:
    """The authors' crop: each frame resized whole to size x size, then cut to the tight box of its own landmarks
    (pixel coordinates scaled by the frame's width and height) and resized to size x size again."""
    out = []
    for img, lm in zip(frames, landmarks):
        H, W = img.shape[:2]
        small = _resize(img, size)
        xs, ys = lm[:, 0] / W, lm[:, 1] / H
        top, bottom = int(ys.min() * size), int(ys.max() * size)
        left, right = int(xs.min() * size), int(xs.max() * size)
        top, left = min(max(top, 0), size - 1), min(max(left, 0), size - 1)
        bottom, right = max(min(bottom, size), top + 1), max(min(right, size), left + 1)
        out.append(_resize(small[top:bottom, left:right], size))
    return np.stack(out)


def _video_clip(path: Path, frames: int, size: int, landmarks_csv: Path | None) -> np.ndarray:
    allf = decode_frames(path)
    if not allf:
        raise DataError("video has no frames", file=path)
    if landmarks_csv is not None:  # the authors' sampling and per-frame face crop
        idx = reference_indices(len(allf), frames)
        lm = read_landmarks(landmarks_csv, idx)
        if lm is None:
            raise DataError("landmark CSV without any tracked frame", file=landmarks_csv,
                            expected="at least one row that is not all zero", actual="every row zero")
        clip = _face_crops([allf[i] for i in idx], lm, size)
    else:  # centre square (data_args.crop=center for clips without landmarks)
        idx = reference_indices(len(allf), frames)
        top, left, h, w = crop_box([allf[i] for i in idx], None)
        clip = np.stack([_resize(allf[i][top:top + h, left:left + w], size) for i in idx])  # (T, H, W, 3)
    return clip.transpose(3, 0, 1, 2)  # (3, T, H, W)


def landmark_file(root: Path, clip: Path) -> Path | None:
    """The clip's landmark CSV: ``<root>/landmarks/<name>.csv`` (the FacialTracking archive's flat folder) or
    ``<name>.csv`` beside the clip."""
    for cand in (root / "landmarks" / f"{clip.stem}.csv", clip.with_suffix(".csv")):
        if cand.exists():
            return cand
    return None


class RandomResizedCropFlip:
    """The authors' RAVDESS training augmentation, per frame: a random resized crop (area 0.8-1.4 of the frame,
    aspect 3/4-4/3, ten tries, else the whole frame) back to the frame size, and a horizontal flip with probability
    1/2. Applied to the training batches only (``{"video": (B, 3, T, H, W)}`` floats)."""

    def __init__(self, scale: tuple[float, float] = (0.8, 1.4), ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.scale, self.ratio = scale, ratio

    def __call__(self, features: dict[str, Any]) -> dict[str, Any]:
        import math

        import torch
        import torch.nn.functional as F

        video = features["video"]
        B, C, T, H, W = video.shape
        out = torch.empty_like(video)
        for b in range(B):
            for t in range(T):
                img = video[b, :, t]
                top, left, h, w = 0, 0, H, W
                for _ in range(10):
                    area = H * W * float(torch.empty(1).uniform_(*self.scale))
                    r = math.exp(float(torch.empty(1).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]))))
                    cw, ch = int(round(math.sqrt(area * r))), int(round(math.sqrt(area / r)))
                    if 0 < cw <= W and 0 < ch <= H:
                        top = int(torch.randint(0, H - ch + 1, (1,)))
                        left = int(torch.randint(0, W - cw + 1, (1,)))
                        h, w = ch, cw
                        break
                crop = F.interpolate(img[None, :, top:top + h, left:left + w], size=(H, W), mode="bilinear",
                                     align_corners=False)[0]
                out[b, :, t] = crop.flip(-1) if float(torch.rand(1)) < 0.5 else crop
        return {**features, "video": out}


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
def prepare_ravdess(root: str | Path, *, frames: int = 30, size: int = 224, speech_only: bool = True,
                    crop: str = "landmarks") -> Path:
    """Decode every clip once into the cache; returns the cache directory.

    ``crop="landmarks"`` (default): every clip needs its landmark CSV (:func:`landmark_file`), else an error naming
    it; ``crop="center"``: clips without one get a centre square, counted in ``crop_report.json``. The cache is
    keyed by every setting and by the landmark files (names, sizes, modification times)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("expected the RAVDESS directory (with Actor_XX folders)", file=root)
    if crop not in ("landmarks", "center"):
        raise DataError("unknown crop", file=root, key="crop", expected="landmarks or center", actual=crop)
    clips = []
    for path in sorted(root.glob("Actor_*/*.mp4")):
        m = RAVDESS_NAME.match(path.stem)
        if not m:
            continue
        modality, channel, emotion, *_rest, actor = (int(g) for g in m.groups())
        if modality != 1 or (speech_only and channel != 1):
            continue
        clips.append((path, emotion - 1, actor, landmark_file(root, path)))
    if not clips:
        raise DataError("no audio-visual RAVDESS clips found", file=root,
                        expected="Actor_XX/01-01-EE-II-SS-RR-AA.mp4", actual="none")
    missing = [c[0] for c in clips if c[3] is None]
    if missing and crop != "center":
        raise DataError(f"no landmark CSV for {len(missing)} clip(s) (pass --set data_args.crop=center to "
                        "centre-crop them instead)", file=missing[0],
                        expected=f"{root / 'landmarks' / (missing[0].stem + '.csv')} or "
                                 f"{missing[0].with_suffix('.csv')}", actual="none")
    marks = [(str(c[3].relative_to(root)), c[3].stat().st_size, c[3].stat().st_mtime_ns) for c in clips
             if c[3] is not None]
    settings = {"frames": frames, "size": size, "speech_only": speech_only, "crop": crop,
                "landmarks": hashlib.sha1(json.dumps(marks).encode()).hexdigest()[:12], "v": 2}
    cache = _cache_dir(root, settings)
    if (cache / "done.json").exists():
        return cache

    def decode(i: int) -> dict[str, np.ndarray]:
        path, lm = clips[i][0], clips[i][3]
        coeffs = mfcc(decode_audio(path))[:, :212]
        audio = np.zeros((13, 212), dtype=np.float32)
        audio[:, : coeffs.shape[1]] = coeffs
        return {"video": _video_clip(path, frames, size, lm), "audio": audio}

    _decode_into_cache(cache, [c[0].stem for c in clips],
                       {"video": ((len(clips), 3, frames, size, size), np.uint8),
                        "audio": ((len(clips), 13, 212), np.float32)}, decode, "decoding RAVDESS")
    atomic_write_json(cache / "crop_report.json", {
        "centre_cropped": [p.stem for p in missing],
        "untracked_landmark_rows": sum(zero_rows(c[3]) for c in clips if c[3] is not None)})
    _finish_cache(cache, [c[0].stem for c in clips], settings,
                  labels=[c[1] for c in clips], actors=[c[2] for c in clips])
    return cache


def read_ravdess(root: str | Path, *, fold: int = 0, frames: int = 30, size: int = 224,
                 speech_only: bool = True, crop: str = "landmarks", augment: bool = True) -> DatasetBundle:
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < RAVDESS_FOLDS:
        raise DataError("fold out of range", file=root, key="fold", actual=fold,
                        expected=f"0..{RAVDESS_FOLDS - 1} (fold=all, every fold in turn, is for `mmfusion fit`)")
    cache = prepare_ravdess(root, frames=frames, size=size, speech_only=speech_only, crop=crop)
    video = np.load(cache / "video.npy", mmap_mode="r")
    audio, labels = np.load(cache / "audio.npy"), np.load(cache / "labels.npy")
    actors, ids = np.load(cache / "actors.npy"), json.loads((cache / "ids.json").read_text())
    test_actors = set(range(4 * fold + 1, 4 * fold + 5))
    valid_actors = set(range(4 * ((fold + 1) % 6) + 1, 4 * ((fold + 1) % 6) + 5))
    which = np.where(np.isin(actors, list(test_actors)), 2, np.where(np.isin(actors, list(valid_actors)), 1, 0))
    splits = _splits(which, {"video": video, "audio": audio}, labels, ids)
    if augment:
        splits["train"].augment = RandomResizedCropFlip()
    crops = json.loads((cache / "crop_report.json").read_text()) if (cache / "crop_report.json").exists() else {}
    notes = [f"fold {fold}: test actors {sorted(test_actors)}, validation actors "
             f"{sorted(valid_actors)} (model selection), 16 training actors"]
    if crops.get("centre_cropped"):
        notes.append(f"{len(crops['centre_cropped'])} clip(s) without landmarks centre-cropped (crop=center)")
    if crops.get("untracked_landmark_rows"):
        notes.append(f"{crops['untracked_landmark_rows']} untracked (all-zero) landmark rows took the nearest "
                     "tracked frame's landmarks")
    report = LoadReport(notes=notes)
    return DatasetBundle(name=f"ravdess_fold{fold}", task="classification", splits=splits, source=f"ravdess:{root}",
                         emotions=RAVDESS_EMOTIONS, report=report)


# --- NTU RGB+D -----------------------------------------------------------------------------------------------------
def read_skeleton(path: Path, bodies: int = 2, joints: int = 25) -> np.ndarray:
    """Parse an NTU ``.skeleton`` text file -> (bodies, 3, T, joints) float32 (x, y, z; absent bodies zero).

    Person slots follow the body IDs (the first token of each body's info line): a body keeps its slot in every
    frame it appears in, also after frames where it is missing; a new ID takes a slot free in that frame. A file
    with no frames, a frame with more than ``bodies`` bodies or a truncated body is a :class:`DataError` naming it.
    """
    try:
        tokens = path.read_text().split("\n")
    except OSError as exc:
        raise DataError(f"cannot read ({exc})", file=path) from None
    lines = iter(line.strip() for line in tokens)
    slots: list[str | None] = [None] * bodies
    try:
        n_frames = int(next(lines))
        if n_frames <= 0:
            raise DataError("skeleton file with no frames", file=path, expected="at least one frame",
                            actual=n_frames)
        out = np.zeros((bodies, 3, n_frames, joints), dtype=np.float32)
        for t in range(n_frames):
            n_bodies = int(next(lines))
            if n_bodies > bodies:
                raise DataError(f"more than {bodies} bodies in a frame", file=path,
                                expected=f"at most {bodies} bodies", actual=f"{n_bodies} in frame {t + 1}")
            present: list[str] = []
            for _ in range(n_bodies):
                info = next(lines).split()
                if not info:
                    raise ValueError("an empty body info line")
                body_id = info[0]
                if body_id in slots:
                    slot = slots.index(body_id)
                else:  # a new body: the first slot no body of this frame holds (never seen ones first)
                    free = [k for k in range(bodies) if slots[k] not in present and slots[k] != body_id]
                    free.sort(key=lambda k: slots[k] is not None)
                    slot = free[0]
                    slots[slot] = body_id
                present.append(body_id)
                n_joints = int(next(lines))
                for j in range(n_joints):
                    vals = next(lines).split()
                    if len(vals) < 3:
                        raise ValueError("a joint line with fewer than 3 coordinates")
                    if j < joints:
                        out[slot, :, t, j] = [float(v) for v in vals[:3]]
    except DataError:
        raise
    except (StopIteration, ValueError, IndexError) as exc:
        raise DataError(f"malformed skeleton file ({type(exc).__name__})", file=path,
                        expected="frame count, then per frame body count, body info, joint count, joint lines",
                        actual="truncated or non-numeric content") from None
    if not np.isfinite(out).all():
        raise DataError("skeleton file with NaN or inf coordinates", file=path, expected="finite x, y, z",
                        actual=f"{int((~np.isfinite(out)).sum())} non-finite values")
    return out


def normalize_skeleton(sk: np.ndarray, frames: int) -> np.ndarray:
    """The MFAS/MSAF skeleton preprocessing: every joint of every person minus joint 2 (spine middle) of the first
    person in the same frame, then the sequence resampled to ``frames`` steps by linear interpolation
    (``F.interpolate`` bilinear, align_corners=False). (bodies, 3, T, V) -> (bodies, 3, frames, V)."""
    import torch
    import torch.nn.functional as F

    sk = sk - sk[0:1, :, :, 1:2]
    P, C, T, V = sk.shape
    x = torch.from_numpy(np.ascontiguousarray(sk)).permute(0, 1, 3, 2).reshape(1, P * C * V, T, 1)
    y = F.interpolate(x, size=(frames, 1), mode="bilinear", align_corners=False)
    return y.reshape(P, C, V, frames).permute(0, 1, 3, 2).numpy().astype(np.float32)


NTU_DECODED_FRAMES = 24
"""Frames the authors' loader decodes per clip (``load_video``'s default in their ``mfas`` fork, ``datasets/ntu.py``)
before ``NormalizeLen`` picks the network's frames among them."""


def ntu_frame_indices(n: int, frames: int, sampling: str = "reference") -> np.ndarray:
    """Which of a clip's ``n`` frames make the ``frames`` network frames; -1 marks an all-black frame.

    ``reference``: as the authors' loader: 24 slots filled with the frames at linspace(0, n, 24) that exist (the
    last, index n, never does, so its slot and any slot left by repeated indices of a short clip stay black), then
    the slots at linspace(0, 23, frames). ``uniform``: the frames at linspace(0, n - 1, frames).
    """
    if sampling == "uniform":
        return np.linspace(0, n - 1, frames).astype(np.int64)
    taken = np.unique(np.linspace(0, n, NTU_DECODED_FRAMES).astype(np.int64))
    taken = taken[taken < n]  # the slots the decoding loop fills, in order
    slots = np.full(NTU_DECODED_FRAMES, -1, dtype=np.int64)
    slots[:len(taken)] = taken
    return slots[np.linspace(0, NTU_DECODED_FRAMES - 1, frames).astype(np.int64)]


def _ntu_frames(path: Path, frames: int, size: int, resize: int = 256, sampling: str = "reference") -> np.ndarray:
    """RGB frames as the reference prepares them: the whole frame resized to 256 x 256 (``avi_256x256_30``), the
    frames :func:`ntu_frame_indices` picks, then a centre crop of ``size`` (the 256 scaled with ``size`` below 224;
    the authors' ``VisualRandomCrop(cropsize=(224, 224), central=True)`` in their ``mfas`` fork's
    ``main_found_ntu.py``, in training and test) -> (3, k, size, size) uint8.

    Frames are decoded in order and only the sampled ones are converted and kept: memory is one decoded frame
    (about 6 MB at 1920 x 1080) plus the k small ones (k x 256 x 256 x 3 bytes, 6.3 MB for 32), whatever the clip's
    length. The frame count comes from the container (a second pass counts the frames where it does not say)."""
    av = _require_av()
    big = max(int(round(resize * size / 224)), size)
    off = (big - size) // 2
    try:
        with av.open(str(path)) as box:
            n = int(box.streams.video[0].frames or 0)
        if n <= 0:
            with av.open(str(path)) as box:
                n = sum(1 for _ in box.decode(video=0))
        if n <= 0:
            raise DataError("video has no frames", file=path)
        idx = ntu_frame_indices(n, frames, sampling)
        wanted = {int(i): [k for k, j in enumerate(idx) if j == i] for i in np.unique(idx) if i >= 0}
        out = np.zeros((frames, size, size, 3), dtype=np.uint8)
        last = None
        with av.open(str(path)) as box:
            for t, frame in enumerate(box.decode(video=0)):
                if t in wanted:
                    last = _resize(frame.to_ndarray(format="rgb24"), big)[off:off + size, off:off + size]
                    for k in wanted[t]:
                        out[k] = last
                if t >= idx.max():
                    break
            else:  # fewer frames than the header said: the rest repeat the last decoded sample
                for k in range(frames):
                    if idx[k] > t and last is not None:
                        out[k] = last
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot decode video ({type(exc).__name__}: {exc})", file=path) from None
    return out.transpose(3, 0, 1, 2)


class LazyClips:
    """A (N, 3, frames, size, size) uint8 array-like whose rows are decoded when indexed (``x[rows]``), in the
    DataLoader worker that asks for them: NTU RGB+D at full size without a cache of its decoded frames (56,880 clips
    x 32 x 224 x 224 x 3 bytes would be 274 GB)."""

    def __init__(self, paths: Sequence[Path], frames: int, size: int, sampling: str = "reference") -> None:
        self.paths, self.frames, self.size, self.sampling = list(paths), frames, size, sampling
        self.shape = (len(self.paths), 3, frames, size, size)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 5

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, rows: Any) -> np.ndarray:
        if isinstance(rows, (int, np.integer)):
            return _ntu_frames(self.paths[int(rows)], self.frames, self.size, sampling=self.sampling)
        rows = np.arange(len(self.paths))[rows]
        return np.stack([_ntu_frames(self.paths[int(i)], self.frames, self.size, sampling=self.sampling)
                         for i in rows]).reshape(
            len(rows), *self.shape[1:])


def _bad_skeletons(root: Path, bad_skel: str | None) -> set[str]:
    """Sample names of the reference's ``bad_skel.txt`` list (samples with missing skeletons), one per line."""
    path = Path(bad_skel) if bad_skel else root / "bad_skel.txt"
    if not path.exists():
        if bad_skel:
            raise DataError("bad skeleton list not found", file=path, key="bad_skel")
        return set()
    return {line.strip().removesuffix(".skeleton") for line in path.read_text().splitlines() if line.strip()}


def prepare_ntu(root: str | Path, *, frames: int = 32, size: int = 224, skeleton_frames: int = 32,
                classes: int = 60, bad_skel: str | None = None, rgb_cache: bool = False,
                rgb_sampling: str = "reference") -> Path:
    root = Path(root)
    if rgb_sampling not in ("reference", "uniform"):
        raise DataError("unknown RGB frame sampling", file=root, key="rgb_sampling", expected="reference or uniform",
                        actual=rgb_sampling)
    if not root.is_dir():
        raise DataError("expected the NTU RGB+D directory (.skeleton files and _rgb.avi videos)", file=root)
    bad = _bad_skeletons(root, bad_skel)
    videos = {p.name.removesuffix("_rgb.avi"): p for p in root.rglob("*_rgb.avi")}  # one walk, not one per sample
    samples, skipped, refused = [], {"listed": [], "unreadable": []}, []
    for sk in sorted(root.rglob("*.skeleton")):
        m = NTU_NAME.match(sk.stem)
        if not m:
            continue
        if int(m.group(5)) > classes:
            refused.append(sk)
            continue
        if sk.stem in bad:
            skipped["listed"].append(sk.stem)
            continue
        if sk.stem not in videos:
            raise DataError("no RGB video for skeleton file", file=sk, expected=f"{sk.stem}_rgb.avi", actual="none")
        samples.append((sk, videos[sk.stem], int(m.group(3)), int(m.group(5)) - 1))
    if refused and classes == 60:
        raise DataError("NTU RGB+D 120 sample in an NTU-60 dataset (read it with ntu120:DIR)", file=refused[0],
                        expected="actions A001-A060", actual=f"{len(refused)} file(s) of actions above A060")
    if not samples:
        raise DataError("no NTU samples found", file=root, expected="SsssCcccPpppRrrrAaaa.skeleton", actual="none")
    settings = {"frames": frames, "size": size, "skeleton_frames": skeleton_frames, "classes": classes,
                "bad": hashlib.sha1(json.dumps(sorted(bad)).encode()).hexdigest()[:12], "rgb_cache": rgb_cache,
                "rgb_sampling": rgb_sampling, "v": 2}
    cache = _cache_dir(root, settings)
    if (cache / "done.json").exists():
        return cache
    skeletons: dict[int, np.ndarray] = {}
    keep = []
    for i, (sk, *_rest) in enumerate(samples):  # parse first: unreadable skeletons are skipped and counted
        try:
            skeletons[len(keep)] = normalize_skeleton(read_skeleton(sk), skeleton_frames)
            keep.append(samples[i])
        except DataError as exc:
            skipped["unreadable"].append(f"{sk.stem}: {exc}")
    samples = keep
    if not samples:
        raise DataError("no readable NTU skeleton", file=root, actual=skipped["unreadable"][:3])

    def decode(i: int) -> dict[str, np.ndarray]:
        out = {"skeleton": skeletons[i]}
        if rgb_cache:
            out["rgb"] = _ntu_frames(samples[i][1], frames, size, sampling=rgb_sampling)
        return out

    arrays = {"skeleton": ((len(samples), 2, 3, skeleton_frames, 25), np.float32)}
    if rgb_cache:
        arrays["rgb"] = ((len(samples), 3, frames, size, size), np.uint8)
    _decode_into_cache(cache, [s[0].stem for s in samples], arrays, decode, "reading NTU RGB+D")
    (cache / "videos.json").write_text(json.dumps([str(s[1].relative_to(root)) for s in samples]))
    atomic_write_json(cache / "skip_report.json", skipped)
    _finish_cache(cache, [s[0].stem for s in samples], settings,
                  labels=[s[3] for s in samples], subjects=[s[2] for s in samples])
    return cache


def read_ntu(root: str | Path, *, frames: int = 32, size: int = 224, skeleton_frames: int = 32,
             num_classes: int = 60, bad_skel: str | None = None, rgb_cache: bool = False,
             rgb_sampling: str = "reference") -> DatasetBundle:
    """NTU RGB+D 60, cross-subject (see the module docstring); ``bad_skel``: the reference's list of samples with
    missing skeletons (default ``<root>/bad_skel.txt`` when present), skipped and counted. RGB frames are decoded
    when a batch asks for them (:class:`LazyClips`), or once into a uint8 cache with ``rgb_cache``;
    ``rgb_sampling``: which frames (:func:`ntu_frame_indices`)."""
    return _read_ntu(root, frames, size, skeleton_frames, num_classes, bad_skel, rgb_cache, 60,
                     NTU_TRAIN_SUBJECTS, NTU_VALID_SUBJECTS, "ntu_xsub", rgb_sampling)


def read_ntu120(root: str | Path, *, frames: int = 32, size: int = 224, skeleton_frames: int = 32,
                num_classes: int = 120, bad_skel: str | None = None, rgb_cache: bool = False,
                rgb_sampling: str = "reference") -> DatasetBundle:
    """NTU RGB+D 120, cross-subject: 120 actions, its 53 training subjects (validation: the NTU-60 ones)."""
    return _read_ntu(root, frames, size, skeleton_frames, num_classes, bad_skel, rgb_cache, 120,
                     NTU120_TRAIN_SUBJECTS, NTU_VALID_SUBJECTS, "ntu120_xsub", rgb_sampling)


def _read_ntu(root: str | Path, frames: int, size: int, skeleton_frames: int, num_classes: int,
              bad_skel: str | None, rgb_cache: bool, classes: int, train_subjects: Sequence[int],
              valid_subjects: Sequence[int], name: str, rgb_sampling: str = "reference") -> DatasetBundle:
    cache = prepare_ntu(root, frames=frames, size=size, skeleton_frames=skeleton_frames, classes=classes,
                        bad_skel=bad_skel, rgb_cache=rgb_cache, rgb_sampling=rgb_sampling)
    if rgb_cache:
        rgb: Any = np.load(cache / "rgb.npy", mmap_mode="r")
    else:
        rgb = LazyClips([Path(root) / v for v in json.loads((cache / "videos.json").read_text())], frames, size,
                        rgb_sampling)
    skel, labels = np.load(cache / "skeleton.npy"), np.load(cache / "labels.npy")
    subjects, ids = np.load(cache / "subjects.npy"), json.loads((cache / "ids.json").read_text())
    which = np.where(np.isin(subjects, valid_subjects), 1, np.where(np.isin(subjects, train_subjects), 0, 2))
    splits = _splits(which, {"rgb": rgb, "skeleton": skel}, labels, ids)
    names = tuple(f"A{i + 1:03d}" for i in range(num_classes))
    skipped = json.loads((cache / "skip_report.json").read_text()) if (cache / "skip_report.json").exists() else {}
    notes = [f"cross-subject split; subjects {list(valid_subjects)} of the training subjects validate"]
    if skipped.get("listed"):
        notes.append(f"{len(skipped['listed'])} sample(s) of the bad skeleton list skipped")
    if skipped.get("unreadable"):
        notes.append(f"{len(skipped['unreadable'])} unreadable skeleton file(s) skipped: "
                     + "; ".join(skipped["unreadable"][:3]))
    return DatasetBundle(name=name, task="classification", splits=splits, source=f"{name.split('_')[0]}:{root}",
                         emotions=names, report=LoadReport(notes=notes))
