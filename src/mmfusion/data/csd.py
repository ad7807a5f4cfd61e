"""Reader for CMU-MultimodalSDK computational sequences (``.csd``, HDF5) — no SDK needed.
See docs/design/data-formats.md §3.

A ``.csd`` file has one root group holding ``data/<video_id>/features`` (n, d) and ``data/<video_id>/intervals``
(n, 2) in seconds, plus ``metadata/``. A directory holds one file per modality and one with labels.

**Which file is which.** The released file names of CMU-MOSI, CMU-MOSEI and POM are recognised
(:data:`mmfusion.data.releases.RELEASED_FILES`); where several feature sets of a modality are present, the one the
MulT and MEA papers use is read (GloVe, COVAREP, FACET) and ``audio=``/``vision=``/``text=`` choose another by its
name (``openSMILE_IS09``, ``OpenFace2``, ...; a name that fits several files is refused). Sequences that are not
numeric (the words as strings, phones) are skipped with a note. Files of other names are found by keywords in their
names (glove/text, covarep/opensmile/audio, facet/openface/vision, label/opinion/sentiment), or named in
``mmfusion_csd.json`` in the directory, whose every field is optional::

    {"text": "glove.csd", "audio": "covarep.csd", "vision": "facet.csd", "labels": "labels.csd",
     "splits": {"train": ["vid1", ...], "valid": [...], "test": [...]}}

**Splits.** Listed ``splits`` win. Otherwise, when the videos belong to CMU-MOSI, CMU-MOSEI or POM, that dataset's
standard folds (shipped with the SDK) are used and videos in none of its folds are counted and left out. Only videos
of no known dataset are split 70/10/20 by a fixed permutation, and every result then says "non-standard split".

**Labels.** Every label interval (an opinion segment) becomes one sample. ``labels="sentiment"`` reads the first
label column (CMU-MOSEI's label file holds sentiment and six emotion intensities); ``labels="emotions"`` reads
CMU-MOSEI's six emotions as six present/absent tasks (present: intensity above 0).

**Alignment.** With ``align="words"`` (default) audio and vision are collapsed onto the word intervals inside the
segment by averaging the frames that overlap each word; with ``align="none"`` each stream keeps its own frames
(unaligned). Sequences are padded to the longest one (``max_len`` caps a modality, or all with one number; every
truncated sample is counted in the load report).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from mmfusion.data import releases
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
from mmfusion.errors import ConfigError, DataError, did_you_mean

MODALITIES = ("text", "audio", "vision")
ROLES = (*MODALITIES, "labels")
MANIFEST = "mmfusion_csd.json"
MANIFEST_KEYS = (*ROLES, "splits")
ALIGN = ("words", "none")
LABEL_TASKS = ("sentiment", "emotions")
KEYWORDS = {
    "text": ("glove", "word", "text", "bert"),
    "audio": ("covarep", "opensmile", "audio", "acoustic"),
    "vision": ("facet", "openface", "vision", "visual"),
    "labels": ("label", "opinion", "sentiment"),
}


def _group(obj: Any, path: Path, key: str, expected: str) -> h5py.Group:
    if not isinstance(obj, h5py.Group):
        raise DataError("expected an HDF5 group", file=path, key=key, expected=expected,
                        actual=f"a dataset of shape {obj.shape}" if isinstance(obj, h5py.Dataset)
                        else type(obj).__name__)
    return obj


def _dataset(grp: h5py.Group, name: str, path: Path, key: str) -> np.ndarray:
    obj = grp.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError("expected an HDF5 dataset", file=path, key=key, expected="a (frames, d) array",
                        actual="a group" if isinstance(obj, h5py.Group) else type(obj).__name__)
    return obj[()]


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
        root = _group(h5[roots[0]], path, roots[0], "the root group holding data/ and metadata/")
        if "data" not in root:
            raise DataError("missing group", file=path, key=f"{roots[0]}/data", expected="data/<video>/...",
                            actual=list(root.keys()))
        data = _group(root["data"], path, f"{roots[0]}/data", "a group of one group per video")
        out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for vid in data:
            grp = _group(data[vid], path, f"data/{vid}", "a group holding features and intervals")
            for key in ("features", "intervals"):
                if key not in grp:
                    raise DataError("missing dataset", file=path, key=f"data/{vid}/{key}",
                                    expected="features and intervals", actual=list(grp.keys()))
            key = f"data/{vid}/features"
            feats = real_array(_dataset(grp, "features", path, key), file=str(path), split=None, key=key,
                               expected="(frames, d) numbers")
            if feats.ndim == 1:
                feats = feats[:, None]
            if feats.ndim != 2:
                raise DataError("wrong rank", file=path, key=key, expected="(frames, d)", actual=f"{feats.shape}")
            if feats.shape[1] == 0:
                raise DataError("no feature columns", file=path, key=key, expected="(frames, d) with d >= 1",
                                actual=f"{feats.shape}")
            if out and feats.shape[1] != (d := next(iter(out.values()))[0].shape[1]):
                raise DataError("feature size differs between videos", file=path, key=key,
                                expected=f"d={d} (as in data/{next(iter(out))})", actual=f"d={feats.shape[1]}")
            # NaN and +inf are refused; -inf (COVAREP's log features) is counted and replaced by the readers
            if np.isnan(feats).any() or np.isposinf(feats).any():
                raise DataError("contains NaN or +inf", file=path, key=key, expected="finite values or -inf",
                                actual=f"{int(np.isnan(feats).sum())} NaN, {int(np.isposinf(feats).sum())} +inf")
            key = f"data/{vid}/intervals"
            ivals = real_array(_dataset(grp, "intervals", path, key), file=str(path), split=None, key=key,
                               expected="(frames, 2) start and end times").astype(np.float64)
            if ivals.shape != (feats.shape[0], 2):
                raise DataError("intervals do not match features", file=path, key=key,
                                expected=f"({feats.shape[0]}, 2)", actual=f"{ivals.shape}")
            if not np.isfinite(ivals).all():
                raise DataError("intervals contain NaN or inf", file=path, key=key, expected="finite times",
                                actual=f"{int((~np.isfinite(ivals)).sum())} such values")
            if (back := ivals[:, 1] < ivals[:, 0]).any():
                i = int(np.argmax(back))
                raise DataError("interval ends before it starts", file=path, key=key, expected="start <= end",
                                actual=f"[{ivals[i, 0]:g}, {ivals[i, 1]:g}] in row {i} ({int(back.sum())} such rows)")
            out[vid] = (feats, ivals)
    return out


def is_numeric(path: Path) -> bool:
    """Whether a computational sequence holds numbers (False for words or phones stored as strings). A file whose
    layout is broken counts as numeric here, so that reading it reports what is wrong."""
    try:
        with h5py.File(path, "r") as h5:
            root = next(iter(h5.values()))
            for grp in root["data"].values():
                return grp["features"].dtype.kind in "iufb"
    except Exception:  # noqa: BLE001 - any damage is reported by read_sequence with the file's name
        return True
    return True


def _progress(items: list[str], what: str) -> Any:
    """A transient progress bar over the videos (a MOSEI-size directory takes minutes)."""
    from rich.progress import track

    return track(items, description=what, transient=True)


def _overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) bool: interval a_i and interval b_j share more than 1 µs (touching ends do not count)."""
    inter = np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0])
    return inter > 1e-6


# ---- options and manifest ---------------------------------------------------------------------------------------

def _check_options(align: Any, max_len: Any, labels: Any, choices: dict[str, Any]) -> dict[str, int]:
    """Validate the reader options like config keys; return ``max_len`` as {modality: frames}."""
    if align not in ALIGN:
        raise ConfigError("unknown alignment", source="data_args", key="align", expected=f"one of {list(ALIGN)}",
                          actual=align, hint=did_you_mean(align, ALIGN))
    if labels not in LABEL_TASKS:
        raise ConfigError("unknown label task", source="data_args", key="labels",
                          expected=f"one of {list(LABEL_TASKS)}", actual=labels, hint=did_you_mean(labels, LABEL_TASKS))
    for m, want in choices.items():
        if want is not None and (not isinstance(want, str) or not want.strip()):
            raise ConfigError("expected a feature-set or file name", source="data_args", key=m,
                              expected="e.g. COVAREP, openSMILE_IS09, FACET_4.1, OpenFace2", actual=want)

    def frames(v: Any, key: str) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError("expected a positive whole number of frames", source="data_args", key=key,
                              expected="an integer >= 1", actual=v)
        return v

    if max_len is None:
        return {}
    if isinstance(max_len, dict):
        for m in max_len:
            if m not in MODALITIES:
                raise ConfigError("unknown modality", source="data_args", key=f"max_len.{m}",
                                  expected=f"one of {list(MODALITIES)}", actual=m, hint=did_you_mean(m, MODALITIES))
        return {m: frames(v, f"max_len.{m}") for m, v in max_len.items()}
    if isinstance(max_len, int) and not isinstance(max_len, bool):
        return dict.fromkeys(MODALITIES, frames(max_len, "max_len"))
    raise ConfigError("expected a number of frames, or one per modality", source="data_args", key="max_len",
                      expected="an integer >= 1 or {text: N, audio: N, vision: N}", actual=max_len)


def read_manifest(root: Path) -> dict[str, Any]:
    """``mmfusion_csd.json`` of a directory, checked ({} when there is none)."""
    path = root / MANIFEST
    if not path.exists():
        return {}
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError("not UTF-8 text", file=path, expected="a UTF-8 JSON object",
                        actual=f"byte 0x{raw[exc.start]:02x} at offset {exc.start}") from None
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc})", file=path) from None
    if not isinstance(spec, dict):
        raise DataError("expected a JSON object", file=path,
                        expected='{"text": FILE, "audio": FILE, "vision": FILE, "labels": FILE, "splits": {...}}',
                        actual=f"a JSON {type(spec).__name__}")
    for key, value in spec.items():
        if key not in MANIFEST_KEYS:
            raise ConfigError("unknown manifest key", source=str(path), key=key,
                              expected=f"one of {list(MANIFEST_KEYS)}", actual=key,
                              hint=did_you_mean(key, MANIFEST_KEYS))
        if key in ROLES:
            if not isinstance(value, str) or not value or Path(value).name != value:
                raise ConfigError("expected the name of a .csd file in this directory", source=str(path), key=key,
                                  expected="a file name such as CMU_MOSI_COVAREP.csd", actual=value)
            if not (root / value).is_file():
                raise DataError("the manifest names a file that is not there", file=path, key=key,
                                expected=f"a file in {root}", actual=value)
    if "splits" in spec:
        spec["splits"] = _check_listed_splits(spec["splits"], path)
    return spec


def _check_listed_splits(splits: Any, path: Path) -> dict[str, list[str]]:
    if not isinstance(splits, dict):
        raise ConfigError("expected an object of video-id lists", source=str(path), key="splits",
                          expected='{"train": [...], "valid": [...], "test": [...]}',
                          actual=f"a JSON {type(splits).__name__}")
    seen: dict[str, str] = {}
    for name, vids in splits.items():
        if name not in SPLITS:
            raise ConfigError("unknown split", source=str(path), key=f"splits.{name}",
                              expected=f"one of {list(SPLITS)}", actual=name, hint=did_you_mean(name, SPLITS))
        if not isinstance(vids, list) or not all(isinstance(v, str) for v in vids):
            raise ConfigError("expected a list of video ids (strings)", source=str(path), key=f"splits.{name}",
                              expected='["vid1", "vid2", ...]', actual=vids if not isinstance(vids, list) else
                              next(v for v in vids if not isinstance(v, str)))
        for v in vids:
            if v in seen:
                raise DataError("a video is listed twice", file=path, key=f"splits.{name}",
                                expected="each video in one split, once",
                                actual=f"{v!r} in {seen[v]!r} and {name!r}" if seen[v] != name else
                                f"{v!r} twice in {name!r}")
            seen[v] = name
    return {s: list(splits.get(s, [])) for s in SPLITS}


# ---- which file holds what ----------------------------------------------------------------------------------------

def _choose_named(root: Path, files: list[Path], role: str, want: str) -> Path:
    """The file of modality ``role`` whose feature set or name is ``want`` (exactly, else as a prefix)."""
    key = releases.normalise(want)

    def names(f: Path) -> list[str]:
        rel = releases.released_file(f.name)
        out = [releases.normalise(f.name)]
        return out + [releases.normalise(rel.feature_set)] if rel and rel.role == role else out

    def fits_role(f: Path) -> bool:
        rel = releases.released_file(f.name)
        return rel is None or rel.role == role

    exact = [f for f in files if key in names(f) and (fits_role(f) or releases.normalise(f.name) == key)]
    hits = exact or [f for f in files if fits_role(f) and any(key in n for n in names(f))]
    if len(hits) == 1:
        return hits[0]
    offered = sorted({r.feature_set for f in files if (r := releases.released_file(f.name)) and r.role == role})
    if not hits:
        raise DataError(f"no file holds the {role} feature set {want!r}", file=root, key=role,
                        expected=f"one of {offered} or a .csd file name" if offered else "a .csd file name",
                        actual=want)
    raise DataError(f"{role}={want!r} fits several files; name one", file=root, key=role,
                    expected="a name that fits one file (a full feature-set or file name)",
                    actual=[f.name for f in hits])


def _find_files(root: Path, manifest: dict[str, Any], choices: dict[str, str | None], labels_task: str,
                report: LoadReport) -> dict[str, str]:
    files = sorted(root.glob("*.csd"))
    if not files:
        raise DataError("no .csd files in directory", file=root)
    spec: dict[str, str] = {}
    skipped: list[str] = []
    for role in ROLES:
        want = choices.get(role) if role in MODALITIES else None
        if want is not None:
            spec[role] = _choose_named(root, files, role, want).name
            if role in manifest and manifest[role] != spec[role]:
                report.notes.append(f"{role}: {spec[role]} (data_args.{role}={want}) instead of {manifest[role]} "
                                    f"named in {MANIFEST}")
            continue
        if role in manifest:
            spec[role] = manifest[role]
            continue
        released = [(f, r) for f in files if (r := releases.released_file(f.name)) and r.role == role]
        if released:
            if role == "labels":
                order = ("Labels", "LabelsEmotions" if labels_task == "emotions" else "LabelsSentiment")
            else:
                order = releases.DEFAULT_FEATURE_SETS[role]
            ranked = sorted(released, key=lambda fr: order.index(fr[1].feature_set) if fr[1].feature_set in order
                            else len(order))
            best = ranked[0]
            if len(ranked) > 1 and best[1].feature_set not in order:
                raise DataError(f"several {role} feature sets and none of them the default; choose one with "
                                f"--set data_args.{role}=NAME", file=root, key=role,
                                expected=f"one of {[r.feature_set for _, r in ranked]}",
                                actual=[f.name for f, _ in ranked])
            spec[role] = best[0].name
            others = [f"{f.name} ({r.feature_set})" for f, r in ranked[1:]]
            if others and role in MODALITIES:
                report.notes.append(f"{role}: {best[1].feature_set} from {best[0].name}; also present: "
                                    f"{', '.join(others)} (choose with --set data_args.{role}=NAME)")
            continue
        hits = []
        for f in files:
            rel = releases.released_file(f.name)
            if rel is not None or not any(w in f.name.lower() for w in KEYWORDS[role]):
                continue
            if role != "labels" and not is_numeric(f):
                skipped.append(f.name)
                continue
            hits.append(f.name)
        if len(hits) != 1:
            raise DataError(f"cannot tell which file holds {role}; choose with --set data_args.{role}=NAME or name "
                            f"it in {MANIFEST}" if role in MODALITIES else
                            f"cannot tell which file holds labels; name it in {MANIFEST}", file=root, key=role,
                            expected=f"one file whose name contains one of {list(KEYWORDS[role])}", actual=hits)
        spec[role] = hits[0]
    for f in files:
        rel = releases.released_file(f.name)
        if f.name in spec.values():
            continue
        if rel is not None and rel.role in ("words", "phones"):
            skipped.append(f.name)
    if skipped:
        report.notes.append(f"skipped {len(set(skipped))} sequence(s) that are not numeric features (words or "
                            f"phones as strings): {', '.join(sorted(set(skipped)))}")
    return spec


# ---- splits -------------------------------------------------------------------------------------------------------

def _release_of(spec: dict[str, str]) -> str | None:
    """The dataset whose release names the chosen files carry (None when they are not all one release's)."""
    found = {r.dataset for name in spec.values() if (r := releases.released_file(name))}
    return found.pop() if len(found) == 1 else None


def _assign_splits(listed: dict[str, list[str]] | None, videos: list[str], report: LoadReport, root: Path,
                   named: str | None) -> tuple[dict[str, str], str | None]:
    """{video: split} and the standard dataset whose folds were used (None otherwise)."""
    if listed is not None:
        split_of = {v: s for s in SPLITS for v in listed[s]}
        report.split = f"listed in {MANIFEST}"
        missing = [v for v in videos if v not in split_of]
        if missing:
            report.notes.append(f"{len(missing)} videos are in no split listed in {MANIFEST} and were left out "
                                f"(first {missing[0]!r})")
        absent = sum(v not in set(videos) for v in split_of)
        if absent:
            report.notes.append(f"{absent} videos listed in {MANIFEST} are not in the directory (or lack a modality)")
        return split_of, None
    counts = {ds: sum(v in releases.fold_of(ds) for v in videos) for ds in releases.STANDARD_DATASETS}
    best = max(counts, key=lambda ds: (counts[ds], ds == named))
    if counts[best] and (2 * counts[best] >= len(videos) or best == named):
        folds = releases.fold_of(best)
        outside = [v for v in videos if v not in folds]
        if outside:
            report.notes.append(f"{len(outside)} videos belong to no standard {best} fold and were left out "
                                f"(first {outside[0]!r})")
        per = [sum(folds.get(v) == s for v in videos) for s in SPLITS]
        report.split = (f"standard {best} folds ({releases.standard_folds(best)['source'].split(' (')[0]}): "
                        f"{'/'.join(map(str, per))} videos")
        return {v: folds[v] for v in videos if v in folds}, best
    order = np.random.default_rng(0).permutation(len(videos))
    n_tr, n_va = int(round(0.7 * len(videos))), int(round(0.1 * len(videos)))
    report.split = "non-standard split: videos split 70/10/20 by a fixed permutation"
    whose = (f"only {counts[best]} of the {len(videos)} videos of {root.name} belong to a {best} fold"
             if counts[best] else f"the videos of {root.name} belong to no CMU-MOSI, CMU-MOSEI or POM fold")
    report.caveats.append(f"non-standard split: {whose} and no splits are listed in {MANIFEST}, so they were split "
                          "70/10/20 by a fixed permutation; results are not comparable with published ones")
    out = {}
    for rank, i in enumerate(order):
        out[videos[i]] = "train" if rank < n_tr else "valid" if rank < n_tr + n_va else "test"
    return out, None


# ---- the reader ---------------------------------------------------------------------------------------------------

def _labels_of(lab: np.ndarray, task: str, path: Path) -> np.ndarray:
    """(segments, 1) sentiment or (segments, 6) present/absent emotions from a label sequence's features."""
    d = lab.shape[1]
    if task == "sentiment":
        return lab[:, :1]
    if d == 7:
        return lab[:, 1:]
    rel = releases.released_file(path.name)
    if d == 6 and rel is not None and rel.feature_set == "LabelsEmotions":
        return lab
    raise DataError("emotion labels need CMU-MOSEI's label columns", file=path, key="labels",
                    expected="7 columns (sentiment, happy, sad, anger, surprise, disgust, fear)", actual=f"{d} columns")


def _describe_release(spec: dict[str, str], seqs: dict[str, Any], dataset: str | None) -> dict[str, Any]:
    """Which CMU-MultimodalSDK release the chosen files are, by their names, feature sizes and fold ids."""
    files = {}
    odd = []
    for role, name in spec.items():
        rel = releases.released_file(name)
        d = int(next(iter(seqs[role].values()))[0].shape[1]) if seqs[role] else None
        files[role] = {"file": name, "feature_set": rel.feature_set if rel else None, "dim": d,
                       "release_dim": rel.dim if rel else None}
        if rel and rel.dim is not None and d is not None and d != rel.dim:
            odd.append(f"{name} holds {d} features where the release has {rel.dim}")
    named = _release_of(spec)
    if named is None:
        line = "release: not a CMU-MultimodalSDK release (file names not recognised)"
        return {"release": None, "by": None, "files": files, "line": line}
    what = f"CMU-MultimodalSDK {named} computational sequences"
    sets = ", ".join(f"{r} {f['feature_set']} ({f['dim']})" for r, f in files.items() if r != "labels")
    if odd:
        return {"release": None, "by": "file names", "files": files,
                "line": f"release: file names of the {what} but not their sizes: {'; '.join(odd)}"}
    fold = "in its standard folds" if dataset == named else "not in its standard folds"
    return {"release": what, "by": "file names and feature sizes", "files": files,
            "line": f"release: {what} by file names and feature sizes ({sets}); video ids {fold}"}


def read_csd(root: str | Path, *, align: str = "words", max_len: dict[str, int] | int | None = None,
             text: str | None = None, audio: str | None = None, vision: str | None = None,
             labels: str = "sentiment") -> DatasetBundle:
    """Read a directory of ``.csd`` files into fixed-length padded splits (see the module docstring).

    ``text``/``audio``/``vision`` choose a feature set (or file) of that modality; ``labels`` is ``sentiment`` or
    ``emotions`` (CMU-MOSEI)."""
    root = Path(root)
    choices = {"text": text, "audio": audio, "vision": vision}
    caps = _check_options(align, max_len, labels, choices)
    if not root.is_dir():
        raise DataError("expected a directory of .csd files", file=root)
    report = LoadReport()
    manifest = read_manifest(root)
    spec = _find_files(root, manifest, choices, labels, report)
    seqs = {m: read_sequence(root / spec[m]) for m in ROLES}
    videos = sorted(set(seqs["labels"]) & set(seqs["text"]) & set(seqs["audio"]) & set(seqs["vision"]))
    dropped = len(seqs["labels"]) - len(videos)
    if dropped:
        report.notes.append(f"{dropped} labelled videos lack a modality and were skipped")
    if not videos:
        raise DataError("no video has labels and all three modalities", file=root)
    split_of, dataset = _assign_splits(manifest.get("splits"), videos, report, root, _release_of(spec))
    videos = [v for v in videos if v in split_of]
    if not videos:
        raise DataError("no video is in any split", file=root, expected="videos listed in train, valid or test",
                        actual="none")
    report.release = _describe_release(spec, seqs, dataset)
    lab_path = root / spec["labels"]
    lab_d = next(iter(seqs["labels"].values()))[0].shape[1]
    if labels == "sentiment" and lab_d > 1:
        report.notes.append(f"{spec['labels']} holds {lab_d} label columns; the first (sentiment) is the target"
                            + (" (--set data_args.labels=emotions reads the six emotions)" if lab_d == 7 else ""))

    samples: list[tuple[str, str, dict[str, np.ndarray], np.ndarray]] = []
    for vid in _progress(videos, f"reading {root.name}"):
        lab, lab_iv = seqs["labels"][vid]
        targets = _labels_of(lab, labels, lab_path)
        t_feat, t_iv = seqs["text"][vid]
        if align == "words":  # -inf (COVAREP) -> 0 before averaging, counted once per video (count, report)
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
            samples.append((vid, f"{vid}[{i}]", streams, targets[i]))

    splits = {}
    for split in SPLITS:
        chosen = [smp for smp in samples if split_of.get(smp[0]) == split]
        features, lengths = {}, {}
        for m in ("text", "vision", "audio"):
            d = seqs[m][videos[0]][0].shape[1]
            longest = max([len(smp[2][m]) for smp in samples] + [1])
            T = caps.get(m, longest)
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
        width = 1 if labels == "sentiment" else len(releases.MOSEI_EMOTIONS)
        raw = np.array([smp[3] for smp in chosen], dtype=np.float64).reshape(len(chosen), width)
        if labels == "sentiment":
            y = finite_float32(raw.reshape(-1), file=str(lab_path), split=split, key="labels")
        else:
            finite_float32(raw, file=str(lab_path), split=split, key="labels")
            y = (raw > 0).astype(np.int64)
        splits[split] = SplitData(features, lengths, y, [smp[1] for smp in chosen])
        count_empty(splits[split], split, report)
    if labels == "sentiment":
        return DatasetBundle(name=root.name, task="regression", splits=splits, source=f"csd:{root}", report=report)
    return DatasetBundle(name=root.name, task="emotion", splits=splits, source=f"csd:{root}", report=report,
                         emotions=releases.MOSEI_EMOTIONS)


def write_csd(path: str | Path, name: str, data: dict[str, tuple[np.ndarray, np.ndarray]],
              metadata: dict[str, Any] | None = None) -> Path:
    """Write one computational sequence in the SDK's HDF5 layout: root group ``name`` holding
    ``data/<vid>/{features,intervals}`` and ``metadata/<key>``, one-element variable-length strings holding each
    value as JSON (as the SDK's writer stores them). Used by tests and for exporting."""
    path = Path(path)
    with h5py.File(path, "w") as h5:
        root = h5.create_group(name)
        grp = root.create_group("data")
        for vid, (feats, ivals) in data.items():
            g = grp.create_group(vid)
            g.create_dataset("features", data=feats)
            g.create_dataset("intervals", data=ivals)
        meta = root.create_group("metadata")
        for key, value in (metadata or {"root name": name}).items():
            meta.create_dataset(key, (1,), dtype=h5py.string_dtype())[0] = json.dumps(value)
    return path
