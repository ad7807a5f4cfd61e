"""Speech from text with espeak-ng through its C library, with the time of every word.

The library and its voice data come from the ``espeakng-loader`` wheel, so ``pip`` alone installs them; a system
``libespeak-ng`` (Debian's ``libespeak-ng1``) is used when the wheel is missing. One synthesiser per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass

import numpy as np

from mmfusion.errors import DataError

_SYNCHRONOUS, _CHARS_UTF8 = 2, 1
_EV_END, _EV_WORD = 0, 1
_RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass
class Speech:
    audio: np.ndarray  # (S,) float32 in [-1, 1]
    rate: int
    words: list[tuple[str, float, float]]  # (word, start s, end s)


class Synth:
    """espeak-ng, synchronous: ``say(text, voice, rate, pitch)`` returns the waveform and word times."""

    _lock = threading.Lock()

    def __init__(self) -> None:
        try:
            import espeakng_loader

            lib_path, data = espeakng_loader.get_library_path(), os.path.dirname(espeakng_loader.get_data_path())
        except ImportError:
            lib_path, data = ctypes.util.find_library("espeak-ng"), None
        if not lib_path:
            raise DataError("speech needs espeak-ng: pip install 'mmfusion[media]' (the espeakng-loader wheel)",
                            key="espeak-ng", expected="installed", actual="missing")
        self._lib = ctypes.CDLL(lib_path)
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                           ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = self._lib.espeak_Initialize(_SYNCHRONOUS, 0, data.encode() if data else None, 0)
        if self.rate <= 0:
            raise DataError("espeak-ng did not start", file=lib_path, key="espeak_Initialize",
                            expected="a sample rate", actual=self.rate)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int]] = []
        self._cb = _CALLBACK(self._collect)  # kept referenced: the library calls it
        self._lib.espeak_SetSynthCallback(self._cb)

    def _collect(self, wav: ctypes.Array, n: int, events: ctypes.Array) -> int:  # type: ignore[type-arg]
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EV_END:
            e = events[i]
            if e.type == _EV_WORD:
                self._events.append((e.text_position, e.length, e.sample))
            i += 1
        return 0

    def say(self, text: str, voice: str = "en-us", rate: int = 165, pitch: int = 50, pitch_range: int = 50) -> Speech:
        raw = text.encode("utf-8")
        with self._lock:
            self._chunks, self._events = [], []
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise DataError("espeak-ng has no such voice", key="voice", expected="e.g. en-us, en+f3",
                                actual=voice)
            self._lib.espeak_SetParameter(_RATE, int(rate), 0)
            self._lib.espeak_SetParameter(_PITCH, int(pitch), 0)
            self._lib.espeak_SetParameter(_RANGE, int(pitch_range), 0)
            self._lib.espeak_Synth(raw, len(raw) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
            self._lib.espeak_Synchronize()
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            events = list(self._events)
        audio = pcm.astype(np.float32) / 32768
        words = []
        for k, (pos, length, sample) in enumerate(events):
            b = raw[pos - 1:pos - 1 + length] if pos >= 1 else b""
            start = sample / self.rate
            end = events[k + 1][2] / self.rate if k + 1 < len(events) else _speech_end(audio, self.rate, start)
            words.append((b.decode("utf-8", "replace"), start, max(end, start + 0.01)))
        return Speech(audio, self.rate, words)


def _speech_end(audio: np.ndarray, rate: int, start: float) -> float:
    """End of the last voiced 10 ms after ``start`` (espeak gives word starts only)."""
    hop = rate // 100
    n = len(audio) // hop
    if n == 0:
        return start
    energy = np.abs(audio[:n * hop]).reshape(n, hop).max(1)
    voiced = np.flatnonzero(energy > 0.01)
    return float((voiced[-1] + 1) * hop / rate) if len(voiced) else len(audio) / rate
