"""The public releases of the benchmark data: their file names, standard folds and how to recognise them.

* **Standard folds** of CMU-MOSI, CMU-MOSEI and POM: the video-id lists the CMU-MultimodalSDK ships
  (``mmsdk/mmdatasdk/dataset/standard_datasets/*/*_std_folds.py``), stored as package data in ``standard/*.json``
  with their source named in each file.
* **Released ``.csd`` file names** of those datasets (the SDK's ``standard_datasets`` lists, plus the names of its
  earlier releases that tutorials still use), each with its modality and feature set.
* **Known pickles**: MMSA's feature files by the SHA-256 its README publishes, and the MulT and MMSA pickles by their
  recorded feature sizes, lengths and split sizes (``docs/datasets.md`` lists them all).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from mmfusion.data.dataset import SPLITS, DatasetBundle

STANDARD_DATASETS: dict[str, str] = {"CMU-MOSI": "cmu_mosi", "CMU-MOSEI": "cmu_mosei", "POM": "pom"}
MOSEI_EMOTIONS: tuple[str, ...] = ("happy", "sad", "anger", "surprise", "disgust", "fear")


@cache
def standard_folds(dataset: str) -> dict[str, Any]:
    """``{"dataset", "source", "train", "valid", "test"}`` of one of :data:`STANDARD_DATASETS`."""
    text = resources.files("mmfusion.data").joinpath("standard", f"{STANDARD_DATASETS[dataset]}_folds.json")
    return json.loads(text.read_text(encoding="utf-8"))


@cache
def fold_of(dataset: str) -> dict[str, str]:
    """{video id: split} of a standard dataset (one shared dict: do not modify)."""
    folds = standard_folds(dataset)
    return {v: s for s in SPLITS for v in folds[s]}


@dataclass(frozen=True)
class ReleasedFile:
    """One released computational sequence: the dataset, the modality it holds (``words``/``phones`` for the
    non-numeric ones), the feature set's name (what ``data_args.<modality>`` selects) and its sizes where the
    publishers give them."""

    dataset: str
    role: str  # text, audio, vision, labels, words, phones
    feature_set: str
    dim: int | None = None


def _rel(dataset: str, role: str, feature_set: str, dim: int | None, *stems: str) -> dict[str, ReleasedFile]:
    return {s: ReleasedFile(dataset, role, feature_set, dim) for s in stems}


# File stems of the CMU-MultimodalSDK releases (standard_datasets/CMU_MOSI/cmu_mosi.py, CMU_MOSEI/cmu_mosei.py,
# POM/pom.py, and the earlier names that the SDK's tutorials and many projects read).
RELEASED_FILES: dict[str, ReleasedFile] = {
    **_rel("CMU-MOSI", "words", "words", None, "CMU_MOSI_TimestampedWords", "CMU_MOSI_ModifiedTimestampedWords"),
    **_rel("CMU-MOSI", "phones", "phones", None, "CMU_MOSI_TimestampedPhones"),
    **_rel("CMU-MOSI", "text", "GloVe", 300, "CMU_MOSI_TimestampedWordVectors",
           "CMU_MOSI_TimestampedWordVectors_1.1"),
    **_rel("CMU-MOSI", "audio", "COVAREP", 74, "CMU_MOSI_COVAREP"),
    **_rel("CMU-MOSI", "audio", "openSMILE_IS09", None, "CMU_MOSI_openSMILE_IS09"),
    **_rel("CMU-MOSI", "audio", "openSMILE_EB10", None, "CMU_MOSI_OpenSmile_EB10"),
    **_rel("CMU-MOSI", "vision", "FACET_4.1", 47, "CMU_MOSI_Visual_Facet_41", "CMU_MOSI_VisualFacet_4.1"),
    **_rel("CMU-MOSI", "vision", "FACET_4.2", None, "CMU_MOSI_Visual_Facet_42"),
    **_rel("CMU-MOSI", "vision", "OpenFace1", None, "CMU_MOSI_Visual_OpenFace_1", "CMU_MOSI_OpenFace_V1"),
    **_rel("CMU-MOSI", "vision", "OpenFace2", None, "CMU_MOSI_Visual_OpenFace_2", "CMU_MOSI_OpenFace2"),
    **_rel("CMU-MOSI", "labels", "Opinion_Labels", 1, "CMU_MOSI_Opinion_Labels"),
    **_rel("CMU-MOSEI", "words", "words", None, "CMU_MOSEI_TimestampedWords"),
    **_rel("CMU-MOSEI", "phones", "phones", None, "CMU_MOSEI_TimestampedPhones"),
    **_rel("CMU-MOSEI", "text", "GloVe", 300, "CMU_MOSEI_TimestampedWordVectors"),
    **_rel("CMU-MOSEI", "text", "GloVe_with_SP", 300, "CMU_MOSEI_TimestampedGloveVectors_with_SP"),
    **_rel("CMU-MOSEI", "audio", "COVAREP", 74, "CMU_MOSEI_COVAREP"),
    **_rel("CMU-MOSEI", "audio", "openSMILE_IS09", None, "CMU_MOSEI_openSMILE_IS09"),
    **_rel("CMU-MOSEI", "vision", "FACET_4.2", 35, "CMU_MOSEI_VisualFacet42"),
    **_rel("CMU-MOSEI", "vision", "OpenFace2", None, "CMU_MOSEI_VisualOpenFace2"),
    **_rel("CMU-MOSEI", "labels", "Labels", 7, "CMU_MOSEI_Labels"),
    **_rel("CMU-MOSEI", "labels", "LabelsSentiment", 1, "CMU_MOSEI_LabelsSentiment"),
    **_rel("CMU-MOSEI", "labels", "LabelsEmotions", 6, "CMU_MOSEI_LabelsEmotions"),
    **_rel("POM", "words", "words", None, "POM_TimestampedWords"),
    **_rel("POM", "phones", "phones", None, "POM_TimestampedPhones"),
    **_rel("POM", "text", "GloVe", 300, "POM_TimestampedWordVectors"),
    **_rel("POM", "audio", "COVAREP", None, "POM_COVAREP"),
    **_rel("POM", "vision", "FACET_4.2", None, "POM_Facet_42"),
    **_rel("POM", "vision", "OpenFace2", None, "POM_OpenFace2"),
    **_rel("POM", "labels", "Labels", None, "POM_Labels"),
}

# The feature sets the MulT and MEA papers use (GloVe, COVAREP, FACET), in order of preference per modality.
DEFAULT_FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "text": ("GloVe",), "audio": ("COVAREP",), "vision": ("FACET_4.1", "FACET_4.2")}


def released_file(name: str) -> ReleasedFile | None:
    """The release entry of a ``.csd`` file name, or None."""
    return RELEASED_FILES.get(name[:-4] if name.endswith(".csd") else name)


def normalise(name: str) -> str:
    """A feature-set or file name compared without case, separators and the ``.csd`` suffix."""
    return re.sub(r"[^a-z0-9]", "", name.lower().removesuffix(".csd"))


# ---- known pickles ------------------------------------------------------------------------------------------------

# SHA-256 of MMSA's feature files as published in its README (github.com/thuiar/MMSA, README "SHA-256 for feature
# files"), keyed by checksum.
MMSA_SHA256: dict[str, str] = {
    "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524": "MMSA CMU-MOSI MOSI/Processed/unaligned_50.pkl",
    "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9": "MMSA CMU-MOSI MOSI/Processed/aligned_50.pkl",
    "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f":
        "MMSA CMU-MOSEI MOSEI/Processed/unaligned_50.pkl",
    "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791": "MMSA CMU-MOSEI MOSEI/Processed/aligned_50.pkl",
    "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f": "MMSA CH-SIMS SIMS/Processed/unaligned_39.pkl",
}
# file names whose content is worth hashing (the checksums above belong to these)
HASHED_NAMES = ("unaligned_50.pkl", "aligned_50.pkl", "unaligned_39.pkl")


@dataclass(frozen=True)
class ShapeRecord:
    """The recorded shapes of a released pickle: feature sizes, padded lengths (None: not compared), split sizes
    (None: not published) and the label kind."""

    release: str
    reader: str  # mult or mmsa
    dims: tuple[int, int, int]  # text, audio, vision
    lengths: tuple[int, int, int] | None
    splits: tuple[int, int, int] | None
    task: str = "regression"


SHAPE_RECORDS: tuple[ShapeRecord, ...] = (
    ShapeRecord("MulT CMU-MOSI mosi_data_noalign.pkl", "mult", (300, 5, 20), (50, 375, 500), (1284, 229, 686)),
    ShapeRecord("MulT CMU-MOSI mosi_data.pkl", "mult", (300, 5, 20), (50, 50, 50), (1284, 229, 686)),
    ShapeRecord("MulT CMU-MOSEI mosei_senti_data_noalign.pkl", "mult", (300, 74, 35), (50, 500, 500),
                (16326, 1871, 4659)),
    ShapeRecord("MulT CMU-MOSEI mosei_senti_data.pkl", "mult", (300, 74, 35), (50, 50, 50), (16326, 1871, 4659)),
    ShapeRecord("MulT IEMOCAP iemocap_data_noalign.pkl", "mult", (300, 74, 35), (20, None, None), None, "emotion"),
    ShapeRecord("MulT IEMOCAP iemocap_data.pkl", "mult", (300, 74, 35), (20, 20, 20), None, "emotion"),
    ShapeRecord("MMSA CMU-MOSI unaligned_50.pkl", "mmsa", (768, 5, 20), (50, None, None), (1284, 229, 686)),
    ShapeRecord("MMSA CMU-MOSI aligned_50.pkl", "mmsa", (768, 5, 20), (50, 50, 50), (1284, 229, 686)),
    ShapeRecord("MMSA CMU-MOSEI unaligned_50.pkl", "mmsa", (768, 74, 35), (50, None, None), (16326, 1871, 4659)),
    ShapeRecord("MMSA CMU-MOSEI aligned_50.pkl", "mmsa", (768, 74, 35), (50, 50, 50), (16326, 1871, 4659)),
    ShapeRecord("MMSA CH-SIMS unaligned_39.pkl", "mmsa", (768, 33, 709), (39, None, None), (1368, 456, 457)),
)


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def shapes_of(bundle: DatasetBundle) -> dict[str, Any]:
    """Feature sizes, padded lengths (text/audio/vision) and split sizes of a loaded pickle."""
    first = bundle.splits.get("train") or next(iter(bundle.splits.values()))
    mods = ("text", "audio", "vision")
    return {"dims": [bundle.feature_dims.get(m) for m in mods],
            "lengths": [int(first.features[m].shape[1]) if m in first.features else None for m in mods],
            "splits": [len(bundle.splits[s]) if s in bundle.splits else None for s in SPLITS],
            "task": bundle.task}


def _shape_match(rec: ShapeRecord, reader: str, shapes: dict[str, Any]) -> bool:
    if rec.reader != reader or tuple(shapes["dims"]) != rec.dims or shapes["task"] != rec.task:
        return False
    if rec.lengths and any(want is not None and want != got for want, got in zip(rec.lengths, shapes["lengths"])):
        return False
    return rec.splits is None or tuple(shapes["splits"]) == rec.splits


def identify_pickle(path: Path, reader: str, bundle: DatasetBundle) -> dict[str, Any]:
    """Which known release a MulT or MMSA pickle is: by SHA-256 where its publisher gives one, else by its recorded
    shapes and split sizes. ``{"release", "by", "sha256", "shapes", "line"}``; ``release`` is None for none."""
    shapes = shapes_of(bundle)
    out: dict[str, Any] = {"release": None, "by": None, "sha256": None, "shapes": shapes}
    if path.name in HASHED_NAMES:
        out["sha256"] = digest = sha256_of(path)
        if digest in MMSA_SHA256:
            out.update(release=MMSA_SHA256[digest], by="sha256")
            out["line"] = f"release: {out['release']} (SHA-256 matches the checksum MMSA publishes)"
            return out
    hits = [r for r in SHAPE_RECORDS if _shape_match(r, reader, shapes)]
    desc = (f"feature sizes {'/'.join(map(str, shapes['dims']))}, lengths "
            f"{'/'.join(map(str, shapes['lengths']))}, splits {'/'.join(map(str, shapes['splits']))}")
    if out["sha256"] is not None:
        # a file under a checksummed name whose content differs: never call it the release, whatever its shapes
        also = f"; its shapes are those of {hits[0].release}" if hits else ""
        out["line"] = (f"release: matches no known release (SHA-256 {out['sha256'][:16]}… is not a published "
                       f"checksum{also}; {desc})")
        return out
    if hits:
        names = " or ".join(r.release for r in hits)
        out.update(release=names, by="shapes")
        extra = "" if all(r.splits for r in hits) else " (its split sizes are not published)"
        out["line"] = f"release: {names} by its recorded shapes and split sizes{extra} ({desc}); no checksum published"
    else:
        out["line"] = f"release: matches no known release ({desc})"
    return out
