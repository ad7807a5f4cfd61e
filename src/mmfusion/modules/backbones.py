"""Backbones of MSAF's audio-visual networks (docs/design/msaf.md §2), trained from scratch or loaded from local files.

- :class:`ResNeXt3D`: 3-D ResNeXt (Hara et al.'s video ResNeXt: bottlenecks with grouped 3x3x3 convolutions,
  expansion 2, cardinality 32); ResNeXt-50 is ``layers=(3, 4, 6, 3)``, ``width=64`` with stage outputs
  256/512/1024/2048 channels.
- :class:`MFCCNet`: the 1-D CNN over 13 MFCCs of the RAVDESS network (Conv1d 13->32 k7, 32->32 k7, MaxPool 8,
  32->64 k5, Linear 1664->classes for 212 frames; "same" padding).
- :class:`InflatedInception3D`: an I3D-style inflated Inception-v1 with I3D's channel plan (Mixed_4f = 832 and
  Mixed_5c = 1024 channels).
- :class:`HCN`: the hierarchical co-occurrence network over skeleton sequences of up to two persons.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


# --- 3-D ResNeXt ------------------------------------------------------------------------------------------------
class ResNeXtBottleneck3D(nn.Module):
    expansion = 2

    def __init__(self, inplanes: int, planes: int, cardinality: int, stride: int = 1) -> None:
        super().__init__()
        mid = cardinality * max(planes // 32, 1)
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv3d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNeXt3D(nn.Module):
    """Video (B, 3, T, H, W) -> stage features. ``stem`` then ``layer1..layer4``; ``stage_channels`` lists their
    output channels. The classifier lives in the network that uses it."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64, cardinality: int = 32,
                 planes: Sequence[int] = (128, 256, 512, 1024)) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv3d(3, width, 7, stride=(1, 2, 2), padding=3, bias=False), nn.BatchNorm3d(width),
            nn.ReLU(inplace=True), nn.MaxPool3d(3, stride=2, padding=1))
        inplanes = width
        stages = []
        for i, (n, p) in enumerate(zip(layers, planes)):
            blocks = []
            for j in range(n):
                blocks.append(ResNeXtBottleneck3D(inplanes, p, cardinality, stride=2 if (i > 0 and j == 0) else 1))
                inplanes = p * ResNeXtBottleneck3D.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.stage_channels = [p * ResNeXtBottleneck3D.expansion for p in planes]


# --- audio CNN ------------------------------------------------------------------------------------------------------
class MFCCNet(nn.Module):
    """MFCCs (B, 13, F) through three conv stages; ``stage1`` (32 ch), ``stage2`` (32 ch), ``stage3`` (64 ch)."""

    def __init__(self, n_mfcc: int = 13, channels: Sequence[int] = (32, 32, 64), pool: int = 8) -> None:
        super().__init__()
        c1, c2, c3 = channels

        def block(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))

        self.stage1 = block(n_mfcc, c1, 7)
        self.stage2 = nn.Sequential(block(c1, c2, 7))
        self.pool = nn.MaxPool1d(pool)
        self.stage3 = block(c2, c3, 5)
        self.stage_channels = [c1, c2, c3]


# --- I3D-style inflated Inception ----------------------------------------------------------------------------------
def _unit(cin: int, cout: int, k: int | tuple[int, int, int] = 1, stride: int | tuple[int, int, int] = 1
          ) -> nn.Sequential:
    pad = tuple(x // 2 for x in k) if isinstance(k, tuple) else k // 2
    return nn.Sequential(nn.Conv3d(cin, cout, k, stride=stride, padding=pad, bias=False), nn.BatchNorm3d(cout),
                         nn.ReLU(inplace=True))


class InceptionBlock3D(nn.Module):
    """I3D's mixed block: 1x1x1 | 1x1x1->3x3x3 | 1x1x1->3x3x3 | maxpool->1x1x1, concatenated."""

    def __init__(self, cin: int, c: Sequence[int]) -> None:
        super().__init__()
        self.b0 = _unit(cin, c[0])
        self.b1 = nn.Sequential(_unit(cin, c[1]), _unit(c[1], c[2], 3))
        self.b2 = nn.Sequential(_unit(cin, c[3]), _unit(c[3], c[4], 3))
        self.b3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), _unit(cin, c[5]))
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1(x), self.b2(x), self.b3(x)], 1)


# I3D's channel plan (Carreira & Zisserman 2017), optionally scaled for tests
I3D_PLAN = {
    "3b": (64, 96, 128, 16, 32, 32), "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64), "4c": (160, 112, 224, 24, 64, 64), "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64), "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128), "5c": (384, 192, 384, 48, 128, 128),
}


class InflatedInception3D(nn.Module):
    """RGB clip (B, 3, T, H, W) -> ``to_4f`` features (832 ch at full width), then ``to_5c`` (1024 ch)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()

        def s(c: int) -> int:
            return max(int(round(c * scale)), 1)

        plan = {k: tuple(s(c) for c in v) for k, v in I3D_PLAN.items()}
        stem = [_unit(3, s(64), 7, stride=2), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
                _unit(s(64), s(64)), _unit(s(64), s(192), 3), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2),
                                                                           padding=(0, 1, 1))]
        cin = s(192)
        blocks: list[nn.Module] = []
        for name in ("3b", "3c", "4b", "4c", "4d", "4e", "4f"):
            if name == "4b":
                blocks.append(nn.MaxPool3d(3, stride=2, padding=1))
            block = InceptionBlock3D(cin, plan[name])
            blocks.append(block)
            cin = block.out_channels
        self.to_4f = nn.Sequential(*stem, *blocks)
        self.channels_4f = cin
        b5 = InceptionBlock3D(cin, plan["5b"])
        b5c = InceptionBlock3D(b5.out_channels, plan["5c"])
        self.to_5c = nn.Sequential(nn.MaxPool3d(2, stride=2), b5, b5c)
        self.channels_5c = b5c.out_channels


# --- HCN -------------------------------------------------------------------------------------------------------------
class HCNPerson(nn.Module):
    """HCN's per-person point and motion streams with joint co-occurrence: (B, 3, T, V) -> (B, 2·c4, T/4, V')."""

    def __init__(self, joints: int = 25, c1: int = 64, c2: int = 32, c3: int = 32, c4: int = 64) -> None:
        super().__init__()

        def stream() -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(3, c1, 1), nn.ReLU(inplace=True), nn.Conv2d(c1, c2, (3, 1), padding=(1, 0)))

        self.point, self.motion = stream(), stream()

        def cooc() -> nn.Sequential:  # joints become channels: co-occurrence over all joints
            return nn.Sequential(
                nn.Conv2d(joints, c3, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(c3, c4, 3, padding=1),
                nn.Dropout2d(0.5), nn.MaxPool2d(2))

        self.point_cooc, self.motion_cooc = cooc(), cooc()
        self.out_channels = 2 * c4

    def forward(self, x: Tensor) -> Tensor:
        motion = torch.cat([x[:, :, 1:] - x[:, :, :-1], torch.zeros_like(x[:, :, :1])], 2)  # (B, 3, T, V)
        p = self.point(x).permute(0, 3, 2, 1)  # (B, V, T, c2): joints as channels
        m = self.motion(motion).permute(0, 3, 2, 1)
        return torch.cat([self.point_cooc(p), self.motion_cooc(m)], 1)  # (B, 2·c4, T/4, c2/4)


class HCN(nn.Module):
    """Skeletons (B, P=2, 3, T, V) -> per-person maps (``person``), then ``fuse`` (conv over the max of persons)
    and ``fc`` (512 at full width)."""

    def __init__(self, joints: int = 25, frames: int = 32, width: float = 1.0, fc: int = 512) -> None:
        super().__init__()

        def s(c: int) -> int:
            return max(int(round(c * width)), 1)

        self.person = HCNPerson(joints, s(64), s(32), s(32), s(64))
        self.person_channels = self.person.out_channels
        self.fuse = nn.Sequential(nn.Conv2d(self.person_channels, s(128), 3, padding=1), nn.ReLU(inplace=True),
                                  nn.Dropout2d(0.5), nn.MaxPool2d(2, ceil_mode=True),
                                  nn.Conv2d(s(128), s(256), 3, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(0.5),
                                  nn.MaxPool2d(2, ceil_mode=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(s(256), s(fc)), nn.ReLU(inplace=True), nn.Dropout(0.5))
        self.fc_channels = s(fc)
