"""``mmfusion extract``: a folder of video files -> one dataset in the mmfusion HDF5 format (docs/extract.md).

Each clip is extracted on its own (in ``--workers`` processes) into ``OUT.parts/<n>.npz``, written atomically; when
every clip is done the parts are gathered, in clip order, into ``OUT`` (written atomically too) and removed. A run
that is interrupted keeps its finished parts, and a rerun extracts only the clips that have none, so an interrupted
run followed by a rerun writes the same file as one run. Clips already in an existing ``OUT`` (extracted with the
same feature set) are skipped as well.

A clip that cannot be extracted is written with its reason to ``OUT.errors.csv`` (``id,file,reason,detail``) and
left out of the dataset; the rest of the folder goes on. Per-clip notes (duration, frames without a face, where the
words came from) go to ``OUT.clips.csv``.

Beyond docs/custom-data.md the file holds: root attribute ``feature_set`` (see :class:`FeatureSet`),
``/<split>/vision/dropped`` (N,) frames dropped for having no face, ``/<split>/text/times`` (N, T, 2) word
start/end seconds, ``/<split>/audio/rate`` and ``/<split>/vision/rate`` attributes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mmfusion.errors import ConfigError, DataError
from mmfusion.io import atomic_path, atomic_write_text
from mmfusion.media import FeatureSet
from mmfusion.media.decode import ClipFailure, decode_clip
from mmfusion.media.features import AudioFeatures, FaceTracker, TextEncoder, words_of
from mmfusion.media.transcript import align, find_transcript, read_transcript, recognise

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
SPLITS = ("train", "valid", "test")
MODS = ("text", "audio", "vision")


def list_clips(root: Path) -> list[tuple[str, Path]]:
    """``(id, path)`` of every video file under ``root`` (or ``root`` itself), ordered by id. The id is the path
    below ``root`` without its suffix (``speaker1/clip03``)."""
    root = Path(root)
    if root.is_file():
        return [(root.stem, root)]
    if not root.is_dir():
        raise DataError("no such file or folder", file=root)
    found = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return sorted(((p.relative_to(root).with_suffix("").as_posix(), p) for p in found), key=lambda x: x[0])


class Extractor:
    """The three extractors of one feature set, made once per process."""

    def __init__(self, fs: FeatureSet) -> None:
        self.fs = fs
        self.audio = AudioFeatures(fs.audio, fs.audio_rate)
        self._text: TextEncoder | None = None

    @property
    def text(self) -> TextEncoder:
        if self._text is None:  # loading MiniLM takes seconds: only when a clip has words
            self._text = TextEncoder()
        return self._text

    def clip(self, path: Path, transcript: Path | None = None, text: str | None = None,
             word_times: bool = True) -> dict[str, Any]:
        """Features of one clip: ``{"text", "audio", "vision", "text_times", "meta"}``; raises :class:`ClipFailure`.
        ``word_times=False``: words without times (a plain transcript, ``text``) are not aligned to the audio and
        ``text_times`` is NaN for them; the features are the same (the text stream has one vector per word,
        whatever its times), only the alignment's seconds are saved (what ``predict`` does)."""
        tracker = FaceTracker()
        try:
            dec = decode_clip(path, self.fs.vision_rate, tracker)
        finally:
            tracker.close()
        audio = self.audio(dec.audio)
        if text is not None:
            words, times, source = words_of(text), None, "given text"
        elif transcript is not None:
            words, times = read_transcript(transcript)
            source = transcript.suffix[1:]
        else:
            words, times = recognise(dec.audio)
            source = "recognised (pocketsphinx)"
        if times is None and word_times:
            times, how = align(words, dec.audio)
            source += f", aligned ({how})"
        elif times is None:
            times = np.full((len(words), 2), np.nan)
        emb = self.text(words) if words else np.zeros((0, 384), np.float32)
        vision = tracker.features()
        meta = {"duration": round(dec.video_duration, 4), "audio_seconds": round(len(dec.audio) / 16000, 4),
                "frames": dec.n_frames, "width": dec.size[0], "height": dec.size[1], "words": len(words),
                "vision_frames": len(vision), "faceless": tracker.faceless, "text_source": source}
        return {"text": emb, "audio": audio, "vision": vision, "text_times": np.asarray(times, np.float32),
                "meta": meta}


_WORKER: dict[str, Any] = {}


def _init_worker(fs: dict[str, Any], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["ex"] = Extractor(FeatureSet(**fs))


def _extract_one(job: tuple[str, str, str | None, str]) -> tuple[str, str | None, str]:
    """Extract one clip into its part file; returns ``(id, None, "")`` or ``(id, reason, detail)``."""
    cid, path, transcript, part = job
    try:
        res = _WORKER["ex"].clip(Path(path), Path(transcript) if transcript else None)
    except ClipFailure as exc:
        return cid, exc.reason, exc.detail
    except DataError as exc:
        return cid, "unreadable", str(exc)[:300]
    except Exception as exc:  # a decoder or model failing on one clip must not stop the folder
        return cid, "extraction failed", f"{type(exc).__name__}: {exc}"[:300]
    write_part(Path(part), cid, res)
    return cid, None, ""


def write_part(path: Path, cid: str, res: dict[str, Any]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, id=np.array(cid), text=res["text"], audio=res["audio"], vision=res["vision"],
                 text_times=res["text_times"], meta=np.array(json.dumps(res["meta"], sort_keys=True)))


def read_part(path: Path) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        return {"id": str(z["id"]), **{k: z[k] for k in ("text", "audio", "vision", "text_times")},
                "meta": json.loads(str(z["meta"]))}


@dataclass
class Labels:
    task: str  # regression | emotion
    emotions: tuple[str, ...]
    values: dict[str, np.ndarray]


def read_labels(path: Path) -> Labels:
    """``id,label`` (a score per clip) or ``id,<emotion>,...`` (0 or 1 per emotion)."""
    try:
        rows = list(csv.reader(io.StringIO(Path(path).read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the labels ({exc})", file=path) from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 2 or rows[0][0].strip() != "id":
        raise DataError("not a labels file", file=path, key="header", expected="id,label or id,<emotion>,...",
                        actual=",".join(rows[0]) if rows else "an empty file")
    cols = [c.strip() for c in rows[0][1:]]
    values: dict[str, np.ndarray] = {}
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(cols) + 1:
            raise DataError("wrong number of columns", file=path, key=f"line {n}", expected=len(cols) + 1,
                            actual=len(r))
        try:
            v = np.array([float(c) for c in r[1:]])
        except ValueError:
            raise DataError("not a number", file=path, key=f"line {n}", expected="numbers", actual=r[1:]) from None
        if not np.isfinite(v).all():
            raise DataError("not a finite number", file=path, key=f"line {n}", expected="finite", actual=r[1:])
        if len(cols) > 1 and not np.isin(v, (0, 1)).all():
            raise DataError("emotion labels are 0 or 1", file=path, key=f"line {n}", expected="0 or 1",
                            actual=r[1:])
        values[r[0].strip()] = v
    if len(cols) == 1:
        return Labels("regression", (), {k: v.astype(np.float32) for k, v in values.items()})
    return Labels("emotion", tuple(cols), {k: v.astype(np.int64) for k, v in values.items()})


def assign_splits(ids: Sequence[str], how: str, seed: int = 0) -> dict[str, str]:
    """Split of each clip. ``how``: ``random`` (clips shuffled with ``seed``, 70/15/15, each split at least one
    clip when there are three or more), ``speaker`` (the same, whole groups of clips whose ids share the part before
    the first ``_``), ``train`` / ``valid`` / ``test`` (all clips), or a CSV file ``id,split``."""
    ids = list(ids)
    if how in SPLITS:
        return {i: how for i in ids}
    if how in ("random", "speaker"):
        key = (lambda i: i.split("/")[-1].split("_")[0]) if how == "speaker" else (lambda i: i)
        groups = sorted({key(i) for i in ids})
        random.Random(seed).shuffle(groups)
        n = len(groups)
        n_valid = max(round(0.15 * n), 1 if n >= 3 else 0)
        n_test = max(round(0.15 * n), 1 if n >= 3 else 0)
        which = {g: ("valid" if k < n_valid else "test" if k < n_valid + n_test else "train")
                 for k, g in enumerate(groups)}
        return {i: which[key(i)] for i in ids}
    path = Path(how)
    if not path.is_file():
        raise ConfigError("unknown split assignment", key="--split",
                          expected="random, speaker, train, valid, test or a CSV file id,split", actual=how)
    rows = [r for r in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))) if r]
    table = {r[0].strip(): r[1].strip() for r in rows[1:] if len(r) >= 2}
    bad = {k: v for k, v in table.items() if v not in SPLITS}
    if bad:
        k = next(iter(bad))
        raise DataError("unknown split", file=path, key=k, expected=" or ".join(SPLITS), actual=bad[k])
    missing = [i for i in ids if i not in table]
    if missing:
        raise DataError("clips without a split", file=path, key=missing[0], expected="a row for every clip",
                        actual=f"{len(missing)} clip(s) missing, first {missing[0]!r}")
    return {i: table[i] for i in ids}


@dataclass
class Summary:
    out: str
    feature_set: str
    clips: int = 0
    extracted: int = 0
    skipped: int = 0  # already done by an earlier run
    failed: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {file, reason, detail}
    faceless_frames: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    text_sources: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def errors_path(out: Path) -> Path:
    return out.with_name(out.name + ".errors.csv")


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def run_extract(clips: Path, out: Path, *, fs: FeatureSet | None = None, transcripts: Path | None = None,
                labels: Path | None = None, split: str = "random", seed: int = 0, workers: int = 1,
                progress: Callable[[int, int, str], None] | None = None) -> Summary:
    """Extract every clip under ``clips`` into ``out`` (see the module's docstring). ``progress(done, total, id)``
    is called after each clip."""
    fs = fs or FeatureSet()
    out = Path(out)
    found = list_clips(Path(clips))
    if not found:
        raise DataError("no video files", file=clips, expected=f"files ending in {', '.join(VIDEO_SUFFIXES)}",
                        actual="none")
    lab = read_labels(labels) if labels else None
    parts = parts_dir(out)
    parts.mkdir(parents=True, exist_ok=True)
    part_of = {cid: parts / f"{n:06d}.npz" for n, (cid, _) in enumerate(found)}
    _adopt_existing(out, fs, part_of)
    summary = Summary(str(out), fs.name, clips=len(found))
    folders = [Path(transcripts)] if transcripts else []
    jobs = []
    for cid, path in found:
        if _part_ok(part_of[cid], cid):
            summary.skipped += 1
            continue
        t = find_transcript(path.stem, folders + [path.parent])
        jobs.append((cid, str(path), str(t) if t else None, str(part_of[cid])))
    done = summary.skipped
    path_of = dict(found)
    if progress:
        progress(done, len(found), "")
    for cid, reason, detail in _run_jobs(jobs, fs, workers):
        done += 1
        if reason is None:
            summary.extracted += 1
        else:
            summary.failed[cid] = {"file": str(path_of[cid]), "reason": reason, "detail": detail}
        if progress:
            progress(done, len(found), cid)
    ok = [(cid, p) for cid, p in found if cid not in summary.failed]
    if lab is not None:
        for cid, path in ok:
            if cid not in lab.values:
                summary.failed[cid] = {"file": str(path), "reason": "no label", "detail": f"not in {labels}"}
        ok = [(cid, p) for cid, p in ok if cid not in summary.failed]
    _write_errors(out, summary.failed)
    if not ok:
        raise DataError("no clip could be extracted", file=clips, expected="at least one clip",
                        actual=f"{len(summary.failed)} failed (see {errors_path(out)})")
    which = assign_splits([cid for cid, _ in ok], split, seed)
    records = [read_part(part_of[cid]) for cid, _ in ok]
    _write_dataset(out, fs, records, which, lab)
    for r in records:
        summary.faceless_frames += int(r["meta"]["faceless"])
        src = r["meta"]["text_source"]
        summary.text_sources[src] = summary.text_sources.get(src, 0) + 1
    summary.splits = {s: sum(1 for v in which.values() if v == s) for s in SPLITS if s in which.values()}
    _write_clip_notes(out, records, which)
    shutil.rmtree(parts, ignore_errors=True)
    return summary


def _part_ok(path: Path, cid: str) -> bool:
    if not path.exists():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["id"]) == cid
    except Exception:  # a damaged part is extracted again
        return False


def _run_jobs(jobs: list[tuple[str, str, str | None, str]], fs: FeatureSet, workers: int):  # type: ignore[no-untyped-def]
    if not jobs:
        return
    if workers <= 1:
        if "ex" not in _WORKER or _WORKER["ex"].fs != fs:
            _WORKER["ex"] = Extractor(fs)
        for job in jobs:
            yield _extract_one(job)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker,
                             initargs=(asdict(fs), threads)) as pool:
        pending = set()
        queue = list(jobs)
        while queue or pending:  # at most 2 jobs per worker in flight: an interrupt loses only those
            while queue and len(pending) < 2 * workers:
                pending.add(pool.submit(_extract_one, queue.pop(0)))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                yield f.result()


def _adopt_existing(out: Path, fs: FeatureSet, part_of: dict[str, Path]) -> None:
    """Clips already in ``out`` become parts, so they are not extracted again."""
    if not out.exists():
        return
    import h5py  # here and in _write_dataset: one clip's ``predict`` never reads or writes a dataset

    try:
        h5 = h5py.File(out, "r")
    except OSError as exc:
        raise DataError(f"the output exists and is not a readable HDF5 file ({exc}); give another --out",
                        file=out) from None
    with h5:
        had = str(h5.attrs.get("feature_set", ""))
        if had != fs.name:
            raise ConfigError("the output holds clips extracted with another feature set; give another --out",
                              source=str(out), key="feature_set", expected=fs.name, actual=had or "none recorded")
        for s in SPLITS:
            if s not in h5:
                continue
            g = h5[s]
            ids = [v.decode() if isinstance(v, bytes) else str(v) for v in g["ids"][()]]
            for n, cid in enumerate(ids):
                if cid not in part_of or _part_ok(part_of[cid], cid):
                    continue
                res: dict[str, Any] = {}
                for m in MODS:
                    L = int(g[m]["lengths"][n])
                    res[m] = g[m]["features"][n, :L]
                L = int(g["text"]["lengths"][n])
                res["text_times"] = g["text"]["times"][n, :L]
                res["meta"] = json.loads(g["meta"][n])
                write_part(part_of[cid], cid, res)


def _write_dataset(out: Path, fs: FeatureSet, records: list[dict[str, Any]], which: dict[str, str],
                   lab: Labels | None) -> None:
    import h5py

    from mmfusion.data.custom import FORMAT_VERSION

    with atomic_path(out) as tmp, h5py.File(tmp, "w") as h5:
        h5.attrs["format"] = "mmfusion"
        h5.attrs["version"] = FORMAT_VERSION
        h5.attrs["task"] = lab.task if lab else "regression"
        h5.attrs["emotions"] = ",".join(lab.emotions) if lab else ""
        h5.attrs["feature_set"] = fs.name
        for s in SPLITS:
            recs = [r for r in records if which[r["id"]] == s]
            if not recs:
                continue
            g = h5.create_group(s)
            for m in MODS:
                arrs = [r[m] for r in recs]
                T = max(1, max(len(a) for a in arrs))
                x = np.zeros((len(arrs), T, fs.dims[m]), np.float32)
                for i, a in enumerate(arrs):
                    x[i, :len(a)] = a
                gm = g.create_group(m)
                gm.create_dataset("features", data=x, compression="gzip", compression_opts=1)
                gm.create_dataset("lengths", data=np.array([len(a) for a in arrs], np.int64))
                if m == "text":
                    t = np.zeros((len(arrs), T, 2), np.float32)
                    for i, r in enumerate(recs):
                        t[i, :len(r["text_times"])] = r["text_times"]
                    gm.create_dataset("times", data=t)
                if m == "vision":
                    gm.create_dataset("dropped", data=np.array([r["meta"]["faceless"] for r in recs], np.int64))
                    gm.attrs["rate"] = fs.vision_rate
                if m == "audio":
                    gm.attrs["rate"] = fs.audio_rate
            if lab is not None:
                g.create_dataset("labels", data=np.stack([lab.values[r["id"]] for r in recs]).reshape(
                    len(recs), *(() if lab.task == "regression" else (len(lab.emotions),))))
            g.create_dataset("ids", data=np.array([r["id"] for r in recs], dtype=object),
                             dtype=h5py.string_dtype())
            g.create_dataset("meta", data=np.array([json.dumps(r["meta"], sort_keys=True) for r in recs],
                                                   dtype=object), dtype=h5py.string_dtype())


def _write_errors(out: Path, failed: dict[str, dict[str, str]]) -> None:
    path = errors_path(out)
    if not failed:
        path.unlink(missing_ok=True)
        return
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "file", "reason", "detail"])
    for cid in sorted(failed):
        f = failed[cid]
        w.writerow([cid, f["file"], f["reason"], f["detail"]])
    atomic_write_text(path, buf.getvalue())


def _write_clip_notes(out: Path, records: list[dict[str, Any]], which: dict[str, str]) -> None:
    buf = io.StringIO()
    keys = ["duration", "audio_seconds", "frames", "width", "height", "words", "vision_frames", "faceless",
            "text_source"]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "split", *keys])
    for r in records:
        w.writerow([r["id"], which[r["id"]], *[r["meta"].get(k, "") for k in keys]])
    atomic_write_text(out.with_name(out.name + ".clips.csv"), buf.getvalue())
