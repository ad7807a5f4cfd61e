"""Transcripts: reading ``<stem>.txt`` / ``.srt`` / ``.json``, aligning words to the audio, or recognising them.

* ``.txt``: plain text; its words are aligned to the audio with pocketsphinx (forced alignment with its bundled
  US-English model), or, where that fails (words outside its dictionary, non-speech audio), spread over the voiced
  part of the audio in proportion to their letters. The method used is recorded per clip.
* ``.srt``: subtitle cues; each cue's words share its time span evenly.
* ``.json``: ``[{"word": "...", "start": s, "end": s}, ...]`` or ``{"words": [...]}`` (times in seconds), or
  ``{"text": "..."}`` (treated as ``.txt``).
* none: the speech is recognised with pocketsphinx (English); audio with under 0.1 s above -40 dBFS has no
  speech and gives no words.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from mmfusion.media.decode import AUDIO_RATE, ClipFailure, require
from mmfusion.media.features import words_of

TRANSCRIPT_SUFFIXES = (".json", ".srt", ".txt")


def find_transcript(stem: str, folders: list[Path]) -> Path | None:
    for folder in folders:
        for suffix in TRANSCRIPT_SUFFIXES:
            p = folder / f"{stem}{suffix}"
            if p.is_file():
                return p
    return None


def read_transcript(path: Path) -> tuple[list[str], np.ndarray | None]:
    """Words and, where the file gives them, their (start, end) times in seconds (n, 2)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ClipFailure("unreadable transcript", path, str(exc)[:200]) from None
    if path.suffix == ".txt":
        return words_of(raw), None
    if path.suffix == ".srt":
        return _srt(raw, path)
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ClipFailure("unreadable transcript", path, f"not JSON: {exc}") from None
    if isinstance(obj, dict) and isinstance(obj.get("text"), str) and "words" not in obj:
        return words_of(obj["text"]), None
    items = obj.get("words") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise ClipFailure("unreadable transcript", path, "expected a list of {word, start, end} or {text}")
    words, times = [], []
    for i, item in enumerate(items):
        try:
            w, s, e = str(item["word"]), float(item["start"]), float(item["end"])
        except (KeyError, TypeError, ValueError):
            raise ClipFailure("unreadable transcript", path, f"entry {i} is not {{word, start, end}}") from None
        for piece in words_of(w):  # "don't," -> "don't"; "well-known" stays one word
            words.append(piece)
            times.append((s, e))
    return words, np.array(times, np.float64).reshape(-1, 2)


def _srt(raw: str, path: Path) -> tuple[list[str], np.ndarray]:
    stamp = re.compile(r"(\d+):(\d\d):(\d\d)[,.](\d{1,3})\s*-->\s*(\d+):(\d\d):(\d\d)[,.](\d{1,3})")
    words: list[str] = []
    times: list[tuple[float, float]] = []
    blocks = re.split(r"\n\s*\n", raw.replace("\r", "").strip())
    for block in blocks:
        lines = block.split("\n")
        at = next((i for i, line in enumerate(lines) if stamp.search(line)), None)
        if at is None:
            if block.strip():
                raise ClipFailure("unreadable transcript", path, f"a cue without a time line: {block[:40]!r}")
            continue
        g = [int(x) for x in stamp.search(lines[at]).groups()]  # type: ignore[union-attr]
        start = g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000
        end = g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000
        cue = words_of(" ".join(lines[at + 1:]))
        edges = np.linspace(start, end, len(cue) + 1)
        words += cue
        times += [(edges[i], edges[i + 1]) for i in range(len(cue))]
    return words, np.array(times, np.float64).reshape(-1, 2)


def _pcm(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype(np.int16).tobytes()


def _decoder(**kw: object) -> object:
    ps = require("pocketsphinx")
    return ps.Decoder(samprate=AUDIO_RATE, loglevel="FATAL", **kw)


def align(words: list[str], audio: np.ndarray) -> tuple[np.ndarray, str]:
    """(start, end) seconds for each word: pocketsphinx forced alignment where every word is in its dictionary and
    the alignment reaches the end, else the words spread over the voiced audio by letters. Returns the times and
    ``"pocketsphinx"`` or ``"spread"``."""
    if not words:
        return np.zeros((0, 2)), "none"
    try:
        d = _decoder(beam=1e-100, wbeam=1e-80, pbeam=1e-100)
        lower = [w.lower().replace("’", "'") for w in words]
        if all(d.lookup_word(w) for w in lower):
            d.set_align_text(" ".join(lower))
            d.start_utt()
            d.process_raw(_pcm(audio), full_utt=True)
            d.end_utt()
            segs = [s for s in (d.seg() or []) if not s.word.startswith(("<", "["))]
            if [re.sub(r"\(\d+\)$", "", s.word) for s in segs] == lower:
                return np.array([(s.start_frame / 100, (s.end_frame + 1) / 100) for s in segs]), "pocketsphinx"
    except RuntimeError:
        pass
    return spread(words, audio), "spread"


def spread(words: list[str], audio: np.ndarray) -> np.ndarray:
    """Word times in proportion to their letters over the span from the first to the last voiced 10 ms frame."""
    hop = AUDIO_RATE // 100
    n = len(audio) // hop
    if n == 0:
        return np.zeros((len(words), 2))
    energy = np.sqrt((audio[:n * hop].reshape(n, hop) ** 2).mean(1))
    voiced = np.flatnonzero(energy > max(energy.max() * 0.05, 1e-4))
    a, b = (voiced[0], voiced[-1] + 1) if len(voiced) else (0, n)
    weights = np.array([len(w) + 1 for w in words], np.float64)
    edges = (a + np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * (b - a)) / 100
    return np.stack([edges[:-1], edges[1:]], 1)


def recognise(audio: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Words pocketsphinx hears (its bundled US-English model), with their times; none in silence."""
    hop = AUDIO_RATE // 100
    n = len(audio) // hop
    rms = np.sqrt((audio[:n * hop].reshape(n, hop) ** 2).mean(1)) if n else np.zeros(0)
    if (rms > 0.01).sum() < 10:  # under 0.1 s above -40 dBFS: no speech (the recogniser would guess words in it)
        return [], np.zeros((0, 2))
    d = _decoder()
    d.start_utt()
    d.process_raw(_pcm(audio), full_utt=True)
    d.end_utt()
    words, times = [], []
    for s in d.seg() or []:
        if s.word.startswith(("<", "[")):
            continue
        words.append(re.sub(r"\(\d+\)$", "", s.word))
        times.append((s.start_frame / 100, (s.end_frame + 1) / 100))
    return words, np.array(times, np.float64).reshape(-1, 2)
