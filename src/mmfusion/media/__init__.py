"""From recordings to features: ``mmfusion extract`` (video files -> the mmfusion HDF5 format) and the generated
talking-face clips of ``mmfusion make-dataset talking-faces``.

Data-side layer: it reads files and writes datasets; the engine and the command line import it, it imports
neither. Everything heavy (PyAV, openSMILE, MediaPipe, MiniLM, pocketsphinx, espeak-ng) is imported where it is
used and comes with the optional extra ``pip install 'mmfusion[media]'``; all of them carry their models, so nothing
is downloaded while extracting.

A *feature set* names what was extracted and how (encoders and frame rates) with a version; it is stored in the
file (attribute ``feature_set``), and a checkpoint trained on the file remembers it, so ``predict`` extracts new
clips the same way and refuses data extracted another way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mmfusion.errors import ConfigError

FEATURE_VERSION = 1
"""Version of the extractors' definitions: raise it when a change alters the numbers an extractor writes."""

AUDIO_SETS = ("egemaps", "mfcc")
TEXT_DIM = 384  # MiniLM-L6's hidden size
AUDIO_DIMS = {"egemaps": 25, "mfcc": 40}
VISION_DIM = 12


@dataclass(frozen=True)
class FeatureSet:
    """What ``extract`` computes: the audio descriptor set and the frame rates of audio and vision (text has one
    frame per word)."""

    audio: str = "egemaps"
    audio_rate: float = 20.0
    vision_rate: float = 15.0
    version: int = FEATURE_VERSION

    def __post_init__(self) -> None:
        if self.audio not in AUDIO_SETS:
            raise ConfigError("unknown audio feature set", key="audio", expected=" or ".join(AUDIO_SETS),
                              actual=self.audio)
        for key in ("audio_rate", "vision_rate"):
            value = getattr(self, key)
            if not 0.5 <= value <= 100:
                raise ConfigError("frame rate out of range", key=key, expected="0.5 to 100 Hz", actual=value)

    @property
    def name(self) -> str:
        """``text=minilm-l6-words;audio=egemaps-lld@20hz;vision=facemesh-geometry@15hz;v1``: stored in the file and
        in checkpoints, and parsed back by :meth:`parse`."""
        audio = "egemaps-lld" if self.audio == "egemaps" else "librosa-mfcc"
        return (f"text=minilm-l6-words;audio={audio}@{self.audio_rate:g}hz;"
                f"vision=facemesh-geometry@{self.vision_rate:g}hz;v{self.version}")

    @property
    def dims(self) -> dict[str, int]:
        return {"text": TEXT_DIM, "audio": AUDIO_DIMS[self.audio], "vision": VISION_DIM}

    @classmethod
    def parse(cls, name: str) -> FeatureSet:
        m = re.fullmatch(r"text=minilm-l6-words;audio=(egemaps-lld|librosa-mfcc)@([0-9.]+)hz;"
                         r"vision=facemesh-geometry@([0-9.]+)hz;v(\d+)", name.strip())
        if not m:
            raise ConfigError("not a feature set this mmfusion extracts", key="feature_set",
                              expected="text=minilm-l6-words;audio=...;vision=...;vN", actual=name)
        fs = cls("egemaps" if m[1] == "egemaps-lld" else "mfcc", float(m[2]), float(m[3]), int(m[4]))
        if fs.version != FEATURE_VERSION:
            raise ConfigError("feature set of another mmfusion version", key="feature_set",
                              expected=f"v{FEATURE_VERSION}", actual=name)
        return fs
