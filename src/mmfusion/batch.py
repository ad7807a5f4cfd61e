"""The one batch type every reader produces and every model consumes.

Shape legend: B batch, T_m frames of modality m, d_m its feature size.

- ``features``: ``{"text": (B, T_t, d_t), "vision": (B, T_v, d_v), "audio": (B, T_a, d_a)}`` float32
- ``masks``: ``{m: (B, T_m)}`` bool, True = real frame (the polarity of ``scaled_dot_product_attention``)
- ``labels``: (B,) float for sentiment regression, (B, E) int64 class indices for E binary emotions
- ``ids``: list of B strings

This module imports only torch so that models and data readers can both depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

#: Canonical modality order. It matches the discriminator labels of docs/design/mea.md §4 (L=0, V=1, A=2);
#: code iterates over this order (or a model's own ``modalities``), never over an incoming dict's order.
MODALITIES: tuple[str, ...] = ("text", "vision", "audio")

#: Order of IEMOCAP's four emotions in the standard files.
IEMOCAP_EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry")


def lengths_to_mask(lengths: torch.Tensor, max_len: int | None = None, side: str = "right") -> torch.Tensor:
    """Boolean mask (B, T) from lengths (B,); ``side`` says where the real frames sit ("right" padding puts
    them first)."""
    lengths = torch.as_tensor(lengths)
    T = int(lengths.max().item()) if max_len is None and lengths.numel() else int(max_len or 0)
    pos = torch.arange(T, device=lengths.device)
    if side == "right":
        return pos[None, :] < lengths[:, None]
    if side == "left":
        return pos[None, :] >= (T - lengths)[:, None]
    raise ValueError(f"side must be 'right' or 'left', got {side!r}")


def check_modalities(features: Mapping[str, torch.Tensor], expected: Sequence[str], where: str) -> None:
    """Raise a ValueError naming the missing modalities and the keys expected."""
    missing = [m for m in expected if m not in features]
    if missing:
        raise ValueError(f"{where}: missing modality {missing}; expected keys {list(expected)}, got {list(features)}")


@dataclass
class Batch:
    """Name-keyed features and masks plus labels and ids (see the module docstring for shapes)."""

    features: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    labels: torch.Tensor
    ids: list[str] = field(default_factory=list)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            {m: x.to(device) for m, x in self.features.items()},
            {m: x.to(device) for m, x in self.masks.items()},
            self.labels.to(device),
            self.ids,
        )

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def modalities(self) -> list[str]:
        return [m for m in MODALITIES if m in self.features] + [m for m in self.features if m not in MODALITIES]
