"""MSAF networks (Su et al., arXiv 2012.07175; docs/design/msaf.md §2).

``msaf_lstm`` — the paper's sentiment network: per modality two stacked single-layer LSTMs with MSAF between them
on (B, H, T) (C=16, r=2, p=0.2, q=5), the last real step of each modality concatenated (224 = 128 + 32 + 64) and
a linear head. Masked LSTMs (equal to packed sequences) and masks make it padding-invariant, including MSAF's
squeeze and segments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mmfusion.batch import MODALITIES, check_modalities
from mmfusion.config import build_checked
from mmfusion.models.registry import register_model
from mmfusion.modules.backbones import HCN, InflatedInception3D, MFCCNet, ResNeXt3D
from mmfusion.modules.masking import masked_last
from mmfusion.modules.msaf import SequenceSplitAttentionFusion, SplitAttentionFusion
from mmfusion.modules.rnn import MaskedLSTM


@dataclass
class MSAFLSTMConfig:
    hidden: dict[str, int] = field(default_factory=lambda: {"text": 128, "vision": 32, "audio": 64})
    block_size: int = 16  # C
    reduction: int = 2  # r
    block_dropout: float = 0.2  # p
    lowest_atten: float = 0.0  # γ
    split_block: int = 5  # q time segments
    reference_compat: bool = False  # double-applied block dropout, as in the authors' code
    use_msaf: bool = True  # False: the same network without fusion between the LSTM layers


class MSAFLSTM(nn.Module):
    """features {m: (B, T_m, d_m)}, masks {m: (B, T_m)} -> {"pred": (B, output_dim), "inspect": {"msaf": α}}."""

    def __init__(self, feature_dims: Mapping[str, int], output_dim: int, config: MSAFLSTMConfig) -> None:
        super().__init__()
        self.config = c = config
        self.modalities = [m for m in MODALITIES if m in feature_dims]
        hidden = {m: c.hidden.get(m, 64) for m in self.modalities}
        self.lstm1 = nn.ModuleDict({m: MaskedLSTM(feature_dims[m], hidden[m]) for m in self.modalities})
        self.msaf = SequenceSplitAttentionFusion(hidden, c.block_size, c.reduction, c.block_dropout, c.lowest_atten,
                                                 c.split_block, c.reference_compat) if c.use_msaf else None
        self.lstm2 = nn.ModuleDict({m: MaskedLSTM(hidden[m], hidden[m]) for m in self.modalities})
        self.head = nn.Linear(sum(hidden.values()), output_dim)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_lstm")
        h = {m: self.lstm1[m](features[m], masks[m])[0] for m in self.modalities}  # (B, T_m, H_m)
        if self.msaf is not None:
            h = self.msaf(h, masks)
        h = {m: self.lstm2[m](h[m], masks[m])[0] for m in self.modalities}
        last = torch.cat([masked_last(h[m], masks[m]) for m in self.modalities], -1)  # (B, ΣH_m)
        inspect = {"msaf": self.msaf.msaf.last_attention} if self.msaf is not None else {}
        return {"pred": self.head(last), "inspect": inspect}


@register_model(MSAFLSTMConfig)
def msaf_lstm(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFLSTM:
    """The paper's CMU-MOSEI network (about 0.69 M parameters with BERT text features)."""
    return MSAFLSTM(feature_dims, output_dim, build_checked(MSAFLSTMConfig, overrides, source="msaf_lstm"))


@register_model(MSAFLSTMConfig)
def msaf_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFLSTM:
    overrides = {"hidden": {"text": 16, "vision": 8, "audio": 12}, "block_size": 4, "split_block": 2, **overrides}
    return MSAFLSTM(feature_dims, output_dim, build_checked(MSAFLSTMConfig, overrides, source="msaf_lstm_tiny"))


# ---------------------------------------------------------------------------------------------------------------------
@dataclass
class MSAFRavdessConfig:
    """The paper's RAVDESS network: 3-D ResNeXt-50 video branch, MFCC CNN audio branch, two MSAF blocks."""

    num_classes: int = 8
    resnext_layers: tuple[int, ...] = (3, 4, 6, 3)
    resnext_width: int = 64
    resnext_planes: tuple[int, ...] = (128, 256, 512, 1024)
    cardinality: int = 32
    audio_channels: tuple[int, ...] = (32, 32, 64)
    mfcc_frames: int = 212  # 2.45 s of 44.1 kHz audio
    block_sizes: tuple[int, ...] = (16, 32)  # C of MSAF1 and MSAF2
    reduction: int = 4
    block_dropout: float = 0.2
    reference_compat: bool = False


class MSAFRavdess(nn.Module):
    """features {"video": (B, 3, T, H, W), "audio": (B, 13, F)} -> {"pred": (B, classes)}: the sum of the two
    branches' logits. MSAF1 joins ResNeXt layer3 (1024 ch) with the second audio conv (32 ch), MSAF2 layer4
    (2048 ch) with the third audio conv (64 ch)."""

    modalities = ("video", "audio")

    def __init__(self, config: MSAFRavdessConfig) -> None:
        super().__init__()
        self.config = c = config
        self.video = ResNeXt3D(c.resnext_layers, c.resnext_width, c.cardinality, c.resnext_planes)
        self.audio = MFCCNet(13, c.audio_channels)
        v3, v4 = self.video.stage_channels[2], self.video.stage_channels[3]
        a2, a3 = c.audio_channels[1], c.audio_channels[2]
        self.msaf1 = SplitAttentionFusion([v3, a2], c.block_sizes[0], c.reduction, c.block_dropout,
                                          reference_compat=c.reference_compat)
        self.msaf2 = SplitAttentionFusion([v4, a3], c.block_sizes[1], c.reduction, c.block_dropout,
                                          reference_compat=c.reference_compat)
        self.video_fc = nn.Linear(v4, c.num_classes)
        self.audio_fc = nn.Linear(a3 * (c.mfcc_frames // 8), c.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_ravdess")
        v = self.video.layer3(self.video.layer2(self.video.layer1(self.video.stem(features["video"]))))
        a = self.audio.stage2(self.audio.stage1(features["audio"]))
        v, a = self.msaf1([v, a])
        v, a = self.msaf2([self.video.layer4(v), self.audio.stage3(self.audio.pool(a))])
        logits = self.video_fc(v.mean((2, 3, 4))) + self.audio_fc(a.flatten(1))
        return {"pred": logits, "inspect": {"msaf1": self.msaf1.last_attention, "msaf2": self.msaf2.last_attention}}


@dataclass
class MSAFNTUConfig:
    """The paper's NTU RGB+D network: I3D-style RGB branch, HCN skeleton branch, two MSAF blocks (p=0, γ=0.5)."""

    num_classes: int = 60
    i3d_scale: float = 1.0  # channel scale of the inflated Inception (1.0: 832 / 1024 channels)
    hcn_width: float = 1.0  # channel scale of HCN (1.0: 128 per person, fc 512)
    joints: int = 25
    block_sizes: tuple[int, ...] = (64, 256)
    reduction: int = 4
    block_dropout: float = 0.0
    lowest_atten: float = 0.5


class MSAFNTU(nn.Module):
    """features {"rgb": (B, 3, T, H, W), "skeleton": (B, 2, 3, T_s, V)} -> {"pred": (B, classes)}.

    MSAF1 on [RGB Mixed_4f (832), person-1 maps (128), person-2 maps (128)]; MSAF2 on [RGB Mixed_5c (1024),
    skeleton fc (512)]; the prediction is the sum of the two branches' logits."""

    modalities = ("rgb", "skeleton")

    def __init__(self, config: MSAFNTUConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rgb = InflatedInception3D(c.i3d_scale)
        self.skeleton = HCN(c.joints, width=c.hcn_width)
        p = self.skeleton.person_channels
        self.msaf1 = SplitAttentionFusion([self.rgb.channels_4f, p, p], c.block_sizes[0], c.reduction, c.block_dropout,
                                          c.lowest_atten)
        self.msaf2 = SplitAttentionFusion([self.rgb.channels_5c, self.skeleton.fc_channels], c.block_sizes[1],
                                          c.reduction, c.block_dropout, c.lowest_atten)
        self.rgb_fc = nn.Linear(self.rgb.channels_5c, c.num_classes)
        self.skeleton_fc = nn.Linear(self.skeleton.fc_channels, c.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_ntu")
        sk = features["skeleton"]  # (B, 2, 3, T, V)
        r = self.rgb.to_4f(features["rgb"])
        p1, p2 = self.skeleton.person(sk[:, 0]), self.skeleton.person(sk[:, 1])
        r, p1, p2 = self.msaf1([r, p1, p2])
        s = self.skeleton.fc(self.skeleton.fuse(torch.maximum(p1, p2)))  # (B, 512)
        r, s = self.msaf2([self.rgb.to_5c(r), s])
        return {"pred": self.rgb_fc(r.mean((2, 3, 4))) + self.skeleton_fc(s)}


@register_model(MSAFRavdessConfig, inputs="clips")
def msaf_ravdess(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFRavdess:
    """Full size: about 25.9 M parameters (the paper reports 25.94 M)."""
    overrides = {"num_classes": output_dim, **overrides}
    return MSAFRavdess(build_checked(MSAFRavdessConfig, overrides, source="msaf_ravdess"))


@register_model(MSAFRavdessConfig, inputs="clips")
def msaf_ravdess_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFRavdess:
    overrides = {"num_classes": output_dim, "resnext_layers": (1, 1, 1, 1), "resnext_width": 8,
                 "resnext_planes": (16, 32, 32, 64), "cardinality": 4, "audio_channels": (8, 8, 16),
                 "mfcc_frames": 64, "block_sizes": (8, 16), **overrides}
    return MSAFRavdess(build_checked(MSAFRavdessConfig, overrides, source="msaf_ravdess_tiny"))


@register_model(MSAFNTUConfig, inputs="clips")
def msaf_ntu(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFNTU:
    overrides = {"num_classes": output_dim, **overrides}
    return MSAFNTU(build_checked(MSAFNTUConfig, overrides, source="msaf_ntu"))


@register_model(MSAFNTUConfig, inputs="clips")
def msaf_ntu_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFNTU:
    overrides = {"num_classes": output_dim, "i3d_scale": 0.125, "hcn_width": 0.25, "block_sizes": (8, 16),
                 **overrides}
    return MSAFNTU(build_checked(MSAFNTUConfig, overrides, source="msaf_ntu_tiny"))
