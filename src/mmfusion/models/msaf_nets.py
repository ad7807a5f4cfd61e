"""MSAF networks (Su et al., arXiv 2012.07175, Sec. 4), equal to the authors' released code by default (see
``docs/design/msaf-reference.md``).

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
from mmfusion.config import build_model_config
from mmfusion.models.registry import register_model
from mmfusion.modules.backbones import HCN, I3D, MFCCNet, ResNeXt3D
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
    # True: every step counts as real, masks are ignored, as the authors' code runs its LSTMs over the zero-padded
    # sequences (their released MOSEI weights give their logits on padded data only this way); False: padding-aware
    reference_padding: bool = False


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
        if self.config.reference_padding:  # the authors' treatment: padded steps are read like real ones
            masks = {m: torch.ones(features[m].shape[:2], dtype=torch.bool, device=features[m].device)
                     for m in self.modalities}
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
    return MSAFLSTM(feature_dims, output_dim, build_model_config(MSAFLSTMConfig, overrides, source="msaf_lstm"))


@register_model(MSAFLSTMConfig)
def msaf_lstm_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFLSTM:
    overrides = {"hidden": {"text": 16, "vision": 8, "audio": 12}, "block_size": 4, "split_block": 2, **overrides}
    return MSAFLSTM(feature_dims, output_dim, build_model_config(MSAFLSTMConfig, overrides, source="msaf_lstm_tiny"))


# ---------------------------------------------------------------------------------------------------------------------
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _normalize(video: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Video in [0, 1] (B, 3, T, H, W) -> (video - mean) / std per colour channel (identity for empty mean/std)."""
    if not mean:
        return video
    m = video.new_tensor(mean).reshape(1, -1, 1, 1, 1)
    s = video.new_tensor(std).reshape(1, -1, 1, 1, 1)
    return (video - m) / s


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
    reference_compat: bool = False  # block dropout applied twice in training, as the authors' code does
    stem_relu: bool = False  # the authors' fused network has no ReLU after the video stem's bn1
    video_mean: tuple[float, ...] = IMAGENET_MEAN  # the reader's [0, 1] frames are normalised with these
    video_std: tuple[float, ...] = IMAGENET_STD


class MSAFRavdess(nn.Module):
    """features {"video": (B, 3, T, H, W) in [0, 1], "audio": (B, 13, F)} -> {"pred": (B, classes)}: the sum of
    the two branches' logits. MSAF1 joins ResNeXt layer3 (1024 ch) with the audio after conv2 + ReLU (32 ch), MSAF2
    layer4 (2048 ch) with the audio after bn3 (64 ch); the video head averages layer4 over all positions."""

    modalities = ("video", "audio")

    def __init__(self, config: MSAFRavdessConfig) -> None:
        super().__init__()
        self.config = c = config
        self.video = ResNeXt3D(c.resnext_layers, c.resnext_width, c.cardinality, c.resnext_planes, c.stem_relu)
        self.audio = MFCCNet(13, c.audio_channels)
        v3, v4 = self.video.stage_channels[2], self.video.stage_channels[3]
        a2, a3 = c.audio_channels[1], c.audio_channels[2]
        self.msaf1 = SplitAttentionFusion([v3, a2], c.block_sizes[0], c.reduction, c.block_dropout,
                                          reference_compat=c.reference_compat)
        self.msaf2 = SplitAttentionFusion([v4, a3], c.block_sizes[1], c.reduction, c.block_dropout,
                                          reference_compat=c.reference_compat)
        self.video_fc = nn.Linear(v4, c.num_classes)
        self.audio_fc = nn.Linear(a3 * self.audio.out_frames(c.mfcc_frames), c.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_ravdess")
        c, vid = self.config, self.video
        if features["audio"].shape[-1] != c.mfcc_frames:
            raise ValueError(f"msaf_ravdess built for {c.mfcc_frames} MFCC frames (model_args.mfcc_frames), got "
                             f"{features['audio'].shape[-1]}")
        v = _normalize(features["video"], c.video_mean, c.video_std)
        v = vid.layer3(vid.layer2(vid.layer1(vid.stem(v))))
        a = self.audio.part1(features["audio"])
        v, a = self.msaf1([v, a])
        v, a = self.msaf2([vid.layer4(v), self.audio.part2(a)])
        logits = self.video_fc(v.mean((2, 3, 4))) + self.audio_fc(self.audio.part3(a))
        return {"pred": logits, "inspect": {"msaf1": self.msaf1.last_attention, "msaf2": self.msaf2.last_attention}}


@dataclass
class MSAFNTUConfig:
    """The paper's NTU RGB+D network: I3D RGB branch, HCN skeleton branch, two MSAF blocks (p=0, γ=0.5)."""

    num_classes: int = 60
    i3d_scale: float = 1.0  # channel scale of I3D (1.0: 832 / 1024 channels)
    hcn_width: float = 1.0  # channel scale of HCN (1.0: 128 per person, fc7 512)
    skeleton_frames: int = 32  # HCN's window: the skeleton frames the network is built for
    joints: int = 25
    block_sizes: tuple[int, ...] = (64, 256)
    reduction: int = 4
    block_dropout: float = 0.0
    lowest_atten: float = 0.5
    # the reference reads frames with OpenCV (BGR) and normalises them with ImageNet's RGB mean/std: its weights
    # expect exactly that, so the [0, 1] RGB frames are flipped to BGR first (rgb_bgr: false keeps RGB)
    rgb_bgr: bool = True
    rgb_mean: tuple[float, ...] = IMAGENET_MEAN
    rgb_std: tuple[float, ...] = IMAGENET_STD


def _ntu_rgb(rgb: Tensor, bgr: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    return _normalize(rgb.flip(1) if bgr else rgb, mean, std)


class MSAFNTU(nn.Module):
    """features {"rgb": (B, 3, T, H, W), "skeleton": (B, 2, 3, T_s, V)} -> {"pred": (B, classes), "branches"}.

    MSAF1 joins I3D after its 15th stage (Mixed_5b, 832 ch) with each person's HCN conv5 maps (128 ch each); the
    persons stay apart through conv6 and meet in a maximum after it; fc7 reads the flattened result; MSAF2 joins
    Mixed_5c (1024 ch) with fc7's 512 features. The prediction is the mean of the two branches' logits (the branches'
    own logits are under ``"branches"``: the reference trains each branch on its own loss)."""

    modalities = ("rgb", "skeleton")

    def __init__(self, config: MSAFNTUConfig) -> None:
        super().__init__()
        self.config = c = config
        self.rgb = I3D(c.num_classes, c.i3d_scale)
        self.skeleton = HCN(c.num_classes, c.skeleton_frames, c.joints, c.hcn_width)
        p = self.skeleton.person_channels
        self.msaf1 = SplitAttentionFusion([self.rgb.channels_5b, p, p], c.block_sizes[0], c.reduction,
                                          c.block_dropout, c.lowest_atten)
        self.msaf2 = SplitAttentionFusion([self.rgb.channels_5c, self.skeleton.fc_channels], c.block_sizes[1],
                                          c.reduction, c.block_dropout, c.lowest_atten)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, self.modalities, "msaf_ntu")
        sk, f = features["skeleton"], self.rgb.features
        self.skeleton.check(sk)
        h0, h1 = self.skeleton.person(sk[:, 0]), self.skeleton.person(sk[:, 1])
        c = self.config
        r = f[13:15](f[:13](_ntu_rgb(features["rgb"], c.rgb_bgr, c.rgb_mean, c.rgb_std)))
        r, h0, h1 = self.msaf1([r, h0, h1])
        s = self.skeleton.join(h0, h1)
        r, s = self.msaf2([f[15](r), s])
        rgb_logits, skeleton_logits = self.rgb.classify(r), self.skeleton.fc8(s)
        return {"pred": (rgb_logits + skeleton_logits) / 2, "branches": {"rgb": rgb_logits,
                                                                         "skeleton": skeleton_logits},
                "inspect": {"msaf1": self.msaf1.last_attention, "msaf2": self.msaf2.last_attention}}


@register_model(MSAFRavdessConfig, inputs="clips")
def msaf_ravdess(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFRavdess:
    """Full size: 25,940,724 parameters with 8 classes (the paper reports 25.94 M)."""
    overrides = {"num_classes": output_dim, **overrides}
    return MSAFRavdess(build_model_config(MSAFRavdessConfig, overrides, source="msaf_ravdess"))


@register_model(MSAFRavdessConfig, inputs="clips")
def msaf_ravdess_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFRavdess:
    overrides = {"num_classes": output_dim, "resnext_layers": (1, 1, 1, 1), "resnext_width": 8,
                 "resnext_planes": (16, 32, 32, 64), "cardinality": 4, "audio_channels": (8, 8, 16),
                 "mfcc_frames": 64, "block_sizes": (8, 16), **overrides}
    return MSAFRavdess(build_model_config(MSAFRavdessConfig, overrides, source="msaf_ravdess_tiny"))


@register_model(MSAFNTUConfig, inputs="clips")
def msaf_ntu(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFNTU:
    overrides = {"num_classes": output_dim, **overrides}
    return MSAFNTU(build_model_config(MSAFNTUConfig, overrides, source="msaf_ntu"))


@register_model(MSAFNTUConfig, inputs="clips")
def msaf_ntu_tiny(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MSAFNTU:
    overrides = {"num_classes": output_dim, "i3d_scale": 0.125, "hcn_width": 0.25, "block_sizes": (8, 16),
                 "skeleton_frames": 16, **overrides}
    return MSAFNTU(build_model_config(MSAFNTUConfig, overrides, source="msaf_ntu_tiny"))


# --- the unimodal branches, as the authors trained them (for their checkpoints and branch initialisation) ----------
@dataclass
class ResNeXtConfig:
    num_classes: int = 8
    video_mean: tuple[float, ...] = IMAGENET_MEAN
    video_std: tuple[float, ...] = IMAGENET_STD


class ResNeXtNet(nn.Module):
    """features {"video": (B, 3, T, H, W) in [0, 1]} -> {"pred"}: ResNeXt-50 (with its stem ReLU), average over all
    positions, fc."""

    def __init__(self, config: ResNeXtConfig) -> None:
        super().__init__()
        self.config = config
        self.video = ResNeXt3D()
        self.fc = nn.Linear(self.video.stage_channels[-1], config.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, ("video",), "resnext50")
        v, x = self.video, _normalize(features["video"], self.config.video_mean, self.config.video_std)
        x = v.layer4(v.layer3(v.layer2(v.layer1(v.stem(x)))))
        return {"pred": self.fc(x.mean((2, 3, 4)))}


@dataclass
class MFCCNetConfig:
    num_classes: int = 8
    mfcc_frames: int = 212


class MFCCClassifier(nn.Module):
    """features {"audio": (B, 13, 212)} -> {"pred"}: the MFCC CNN and its fc1."""

    def __init__(self, config: MFCCNetConfig) -> None:
        super().__init__()
        self.audio = MFCCNet()
        self.fc1 = nn.Linear(64 * self.audio.out_frames(config.mfcc_frames), config.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, ("audio",), "mfccnet")
        a = self.audio
        return {"pred": self.fc1(a.part3(a.part2(a.part1(features["audio"]))))}


@dataclass
class I3DConfig:
    num_classes: int = 60
    rgb_bgr: bool = True  # as in MSAFNTUConfig
    rgb_mean: tuple[float, ...] = IMAGENET_MEAN
    rgb_std: tuple[float, ...] = IMAGENET_STD


class I3DNet(nn.Module):
    """features {"rgb": (B, 3, T, H, W)} -> {"pred"}: I3D on its own."""

    def __init__(self, config: I3DConfig) -> None:
        super().__init__()
        self.config = config
        self.rgb = I3D(config.num_classes)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, ("rgb",), "i3d")
        c = self.config
        return {"pred": self.rgb(_ntu_rgb(features["rgb"], c.rgb_bgr, c.rgb_mean, c.rgb_std))}


@dataclass
class HCNConfig:
    num_classes: int = 60
    skeleton_frames: int = 32


class HCNNet(nn.Module):
    """features {"skeleton": (B, 2, 3, T, 25)} -> {"pred"}: HCN on its own."""

    def __init__(self, config: HCNConfig) -> None:
        super().__init__()
        self.skeleton = HCN(config.num_classes, config.skeleton_frames)

    def forward(self, features: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> dict[str, Any]:
        check_modalities(features, ("skeleton",), "hcn")
        return {"pred": self.skeleton(features["skeleton"])}


@register_model(ResNeXtConfig, inputs="clips")
def resnext50(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> ResNeXtNet:
    """The RAVDESS video branch alone (3-D ResNeXt-50, cardinality 32)."""
    return ResNeXtNet(build_model_config(ResNeXtConfig, {"num_classes": output_dim, **overrides}, source="resnext50"))


@register_model(MFCCNetConfig, inputs="clips")
def mfccnet(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> MFCCClassifier:
    """The RAVDESS audio branch alone (the MFCC CNN)."""
    return MFCCClassifier(build_model_config(MFCCNetConfig, {"num_classes": output_dim, **overrides}, source="mfccnet"))


@register_model(I3DConfig, inputs="clips")
def i3d(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> I3DNet:
    """The NTU RGB branch alone (I3D)."""
    return I3DNet(build_model_config(I3DConfig, {"num_classes": output_dim, **overrides}, source="i3d"))


@register_model(HCNConfig, inputs="clips")
def hcn(feature_dims: dict[str, int], output_dim: int, **overrides: Any) -> HCNNet:
    """The NTU skeleton branch alone (HCN)."""
    return HCNNet(build_model_config(HCNConfig, {"num_classes": output_dim, **overrides}, source="hcn"))
