"""Reader for CMU-MultimodalSDK computational sequences (``.csd``, HDF5) — no SDK needed.
See docs/design/data-formats.md §3.

A ``.csd`` file has one root group holding ``data/<video_id>/features`` (n, d) and ``data/<video_id>/intervals``
(n, 2) in seconds, plus ``metadata/``. A directory holds one file per modality and one with labels. Which file is
which is taken from ``mmfusion_csd.json`` in the directory when present::

    {"text": "glove.csd", "audio": "covarep.csd", "vision": "facet.csd", "labels": "labels.csd",
     "splits": {"train": ["vid1", ...], "valid": [...], "test": [...]}}

otherwise from keywords in the file names (glove/words/text, covarep/opensmile/audio, facet/openface/vision,
label/opinion/sentiment). Without listed splits, videos are split 70/10/20 by a fixed permutation (reported).

Every label interval (an opinion segment) becomes one sample. With ``align="words"`` (default) audio and vision are
collapsed onto the word intervals inside the segment by averaging the frames that overlap each word; with
``align="none"`` each stream keeps its own frames (unaligned). Sequences are padded to the longest one
(``max_len`` caps a modality; every truncated sample is counted in the load report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np

from mmfusion.data.dataset import (
    SPLITS,
    DatasetBundle,
    LoadReport,
    SplitData,
    clean_features,
    count_empty,
    finite_float32,
    real_array,
)
from mmfusion.errors import DataError

KEYWORDS = {
    "text": ("glove", "word", "text", "bert"),
    "audio": ("covarep", "opensmile", "audio", "acoustic"),
    "vision": ("facet", "openface", "vision", "visual"),
    "labels": ("label", "opinion", "sentiment"),
}


def read_sequence(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{video_id: (features (n, d), intervals (n, 2))} of one computational sequence."""
    try:
        h5 = h5py.File(path, "r")
    except (OSError, FileNotFoundError) as exc:
        raise DataError(f"not a readable HDF5 computational sequence ({exc})", file=path) from None
    with h5:
        roots = list(h5.keys())
        if len(roots) != 1:
            raise DataError("expected one root group", file=path, expected="1 group", actual=roots)
        root = h5[roots[0]]
        if "data" not in root:
            raise DataError("missing group", file=path, key=f"{roots[0]}/data", expected="data/<video>/...",
                            actual=list(root.keys()))
        out = {}
        for vid, grp in root["data"].items():
            for key in ("features", "intervals"):
                if key not in grp:
                    raise DataError("missing dataset", file=path, key=f"data/{vid}/{key}",
                                    expected="features and intervals", actual=list(grp.keys()))
            key = f"data/{vid}/features"
            feats = real_array(grp["features"][()], file=str(path), split=None, key=key,
                               expected="(frames, d) numbers")
            if feats.ndim == 1:
                feats = feats[:, None]
            if feats.ndim != 2:
                raise DataError("wrong rank", file=path, key=key, expected="(frames, d)", actual=f"{feats.shape}")
            if out and feats.shape[1] != (d := next(iter(out.values()))[0].shape[1]):
                raise DataError("feature size differs between videos", file=path, key=key,
                                expected=f"d={d} (as in data/{next(iter(out))})", actual=f"d={feats.shape[1]}")
            # NaN and +inf are refused; -inf (COVAREP's log features) is counted and replaced by the readers
            if np.isnan(feats).any() or np.isposinf(feats).any():
                raise DataError("contains NaN or +inf", file=path, key=key, expected="finite values or -inf",
                                actual=f"{int(np.isnan(feats).sum())} NaN, {int(np.isposinf(feats).sum())} +inf")
            key = f"data/{vid}/intervals"
            ivals = real_array(grp["intervals"][()], file=str(path), split=None, key=key,
                               expected="(frames, 2) start and end times").astype(np.float64)
            if ivals.shape != (feats.shape[0], 2):
                raise DataError("intervals do not match features", file=path, key=key,
                                expected=f"({feats.shape[0]}, 2)", actual=f"{ivals.shape}")
            if not np.isfinite(ivals).all():
                raise DataError("intervals contain NaN or inf", file=path, key=key, expected="finite times",
                                actual=f"{int((~np.isfinite(ivals)).sum())} such values")
            out[vid] = (feats, ivals)
    return out


def _progress(items: list[str], what: str) -> Any:
    """A transient progress bar over the videos (a MOSEI-size directory takes minutes)."""
    from rich.progress import track

    return track(items, description=what, transient=True)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bool: interval a_i and interval b_j share more than 1 µs (touching ends do not count)."""
    inter = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])
    return inter > 1e-6


def _find_files(root: Path) -> dict[str, Any]:
    manifest = root / "mmfusion_csd.json"
    if manifest.exists():
        try:
            spec = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"not valid JSON ({exc})", file=manifest) from None
        for key in ("text", "audio", "vision", "labels"):
            if key not in spec:
                raise DataError("missing key", file=manifest, key=key, expected="text/audio/vision/labels",
                                actual=sorted(spec))
        return spec
    files = sorted(root.glob("*.csd"))
    if not files:
        raise DataError("no .csd files in directory", file=root)
    spec: dict[str, Any] = {}
    for role, words in KEYWORDS.items():
        hits = [f.name for f in files if any(w in f.name.lower() for w in words)]
        if len(hits) != 1:
            raise DataError(f"cannot tell which file holds {role}; name it in mmfusion_csd.json", file=root,
                            key=role, expected=f"one file whose name contains one of {list(words)}", actual=hits)
        spec[role] = hits[0]
    return spec


def read_csd(root: str | Path, *, align: Literal["words", "none"] = "words",
             max_len: dict[str, int] | None = None) -> DatasetBundle:
    """Read a directory of ``.csd`` files into fixed-length padded splits (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("expected a directory of .csd files", file=root)
    spec = _find_files(root)
    seqs = {m: read_sequence(root / spec[m]) for m in ("text", "audio", "vision", "labels")}
    report = LoadReport()
    videos = sorted(set(seqs["labels"]) & set(seqs["text"]) & set(seqs["audio"]) & set(seqs["vision"]))
    dropped = len(seqs["labels"]) - len(videos)
    if dropped:
        report.notes.append(f"{dropped} labelled videos lack a modality and were skipped")
    if not videos:
        raise DataError("no video has labels and all three modalities", file=root)

    samples: list[tuple[str, str, dict[str, np.ndarray], float]] = []
    for vid in _progress(videos, f"reading {root.name}"):
        lab, lab_iv = seqs["labels"][vid]
        t_feat, t_iv = seqs["text"][vid]
        if align == "words":  # -inf (COVAREP) -> 0 before averaging, counted once per video (spec: count, report)
            clean = {}
            for m in ("audio", "vision"):
                feat = seqs[m][vid][0]
                bad = np.isneginf(feat)
                if bad.any():
                    report.neg_inf[spec[m]] = report.neg_inf.get(spec[m], 0) + int(bad.sum())
                    feat = np.where(bad, 0.0, feat)
                clean[m] = feat
        for i, (s, e) in enumerate(lab_iv):
            seg = np.array([[s, e]])
            words = _overlap(seg, t_iv)[0]
            streams = {"text": t_feat[words].astype(np.float64)}
            for m in ("audio", "vision"):
                feat, iv = seqs[m][vid]
                if align == "words":
                    # only frames within the words' span can overlap a word: the overlap matrix stays small
                    span = np.array([[t_iv[words, 0].min(), t_iv[words, 1].max()]]) if words.any() else seg
                    near = _overlap(span, iv)[0]
                    ov = _overlap(t_iv[words], iv[near]).astype(np.float64)  # (words, nearby frames)
                    cnt = ov.sum(1, keepdims=True)
                    streams[m] = (ov @ clean[m][near]) / np.maximum(cnt, 1)  # average of the overlapping frames
                else:
                    streams[m] = feat[_overlap(seg, iv)[0]]
            samples.append((vid, f"{vid}[{i}]", streams, float(np.asarray(lab[i]).reshape(-1)[0])))

    split_of = _assign_splits(spec.get("splits"), videos, report, root)
    splits = {}
    for split in SPLITS:
        chosen = [smp for smp in samples if split_of.get(smp[0]) == split]
        features, lengths = {}, {}
        for m in ("text", "vision", "audio"):
            d = seqs[m][videos[0]][0].shape[1]
            longest = max([len(smp[2][m]) for smp in samples] + [1])
            T = (max_len or {}).get(m, longest)
            arr = np.zeros((len(chosen), T, d), dtype=np.float64)
            L = np.zeros(len(chosen), dtype=np.int64)
            cut = 0
            for j, smp in enumerate(chosen):
                x = smp[2][m]
                if len(x) > T:
                    cut += 1
                    x = x[:T]
                arr[j, : len(x)] = x
                L[j] = len(x)
            if cut:
                report.notes.append(f"{cut} {split} samples truncated to {T} {m} frames (max_len)")
            features[m] = clean_features(arr, file=str(root / spec[m]), split=split, key=m, report=report)
            lengths[m] = L
        labels = finite_float32(np.array([smp[3] for smp in chosen], dtype=np.float64).reshape(-1),
                                file=str(root / spec["labels"]), split=split, key="labels")
        splits[split] = SplitData(features, lengths, labels, [smp[1] for smp in chosen])
        count_empty(splits[split], split, report)
    return DatasetBundle(name=root.name, task="regression", splits=splits, source=f"csd:{root}", report=report)


def _assign_splits(listed: Any, videos: list[str], report: LoadReport, root: Path) -> dict[str, str]:
    if listed:
        return {v: s for s in SPLITS for v in listed.get(s, [])}
    order = np.random.default_rng(0).permutation(len(videos))
    n_tr, n_va = int(round(0.7 * len(videos))), int(round(0.1 * len(videos)))
    report.notes.append(f"{root}: no splits listed in mmfusion_csd.json; videos split 70/10/20 by a fixed "
                        "permutation")
    out = {}
    for rank, i in enumerate(order):
        out[videos[i]] = "train" if rank < n_tr else "valid" if rank < n_tr + n_va else "test"
    return out


def write_csd(path: str | Path, name: str, data: dict[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write one computational sequence in the SDK's HDF5 layout (used by tests and for exporting)."""
    path = Path(path)
    with h5py.File(path, "w") as h5:
        root = h5.create_group(name)
        grp = root.create_group("data")
        for vid, (feats, ivals) in data.items():
            g = grp.create_group(vid)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=ivals)
        meta = root.create_group("metadata")
        meta.create_dataset("root name", data=np.array([name.encode()]))
    return path
