"""Backbones of MSAF's audio-visual networks (arXiv 2012.07175, Sec. 4), laid out as the authors' released weights
expect them: the same sub-module names, layer order, paddings and normalisation constants, so that their state dicts
map one to one (:mod:`mmfusion.models.reference`). See ``docs/design/msaf-reference.md``.

- :class:`ResNeXt3D`: the 3-D ResNeXt of Hara et al. (bottlenecks with grouped 3x3x3 convolutions, expansion 2,
  cardinality 32, shortcut type B); ResNeXt-50 is ``layers=(3, 4, 6, 3)`` with stage outputs 256/512/1024/2048.
  ``stem_relu=False`` drops the ReLU after ``bn1``, as the authors' fused RAVDESS network does.
- :class:`MFCCNet`: the 1-D CNN over 13 MFCCs: conv1 (13->32, k7, pad 2) -> ReLU -> bn1 -> conv2 (32->32, k7, pad 2)
  -> ReLU -> max-pool 8 -> bn2 -> dropout 0.2 -> conv3 (32->64, k5, pad 2) -> ReLU -> bn3 -> flatten -> dropout 0.4
  (-> fc1 in the unimodal network): 13 x 212 MFCCs give 64 x 26 = 1664 features.
- :class:`I3D`: the inflated Inception-v1 the NTU network uses, one ``features`` sequence of 19 stages (stage 12 is
  Mixed_4f, 832 channels; 14 Mixed_5b, 832; 15 Mixed_5c, 1024; 16-18 the classifier: average pool, dropout, a 1x1x1
  convolution to the classes, then the mean over the remaining time steps).
- :class:`HCN`: the hierarchical co-occurrence network of the MFAS code (per person point and motion streams, joints
  as channels, a maximum over the two persons after conv6, fc7 (512) and fc8).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
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
    """Video (B, 3, T, H, W) -> stage features: ``stem`` (conv1, bn1, [ReLU], maxpool), then ``layer1..layer4``
    (``stage_channels``). The classifier lives in the network that uses it."""

    def __init__(self, layers: Sequence[int] = (3, 4, 6, 3), width: int = 64, cardinality: int = 32,
                 planes: Sequence[int] = (128, 256, 512, 1024), stem_relu: bool = True) -> None:
        super().__init__()
        self.stem_relu = stem_relu
        self.conv1 = nn.Conv3d(3, width, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
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

    def stem(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(x))
        return self.maxpool(F.relu(x) if self.stem_relu else x)


# --- audio CNN ------------------------------------------------------------------------------------------------------
class MFCCNet(nn.Module):
    """MFCCs (B, 13, F): ``part1`` -> (B, c2, F - 4) after conv2 + ReLU (MSAF1's input), ``part2`` ->
    (B, c3, (F - 4) // 8) after bn3 (MSAF2's input), ``part3`` -> flattened features after dropout2."""

    def __init__(self, n_mfcc: int = 13, channels: Sequence[int] = (32, 32, 64), pool: int = 8) -> None:
        super().__init__()
        c1, c2, c3 = channels
        self.conv1 = nn.Conv1d(n_mfcc, c1, 7, padding=2)
        self.bn1 = nn.BatchNorm1d(c1)
        self.conv2 = nn.Conv1d(c1, c2, 7, padding=2)
        self.maxpool = nn.MaxPool1d(pool)
        self.bn2 = nn.BatchNorm1d(c2)
        self.dropout1 = nn.Dropout(0.2)
        self.conv3 = nn.Conv1d(c2, c3, 5, padding=2)
        self.bn3 = nn.BatchNorm1d(c3)
        self.dropout2 = nn.Dropout(0.4)
        self.pool = pool
        self.stage_channels = [c1, c2, c3]

    def out_frames(self, frames: int) -> int:
        """Time steps after conv3 for ``frames`` MFCC frames (26 for 212)."""
        return (frames - 4) // self.pool

    def part1(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.bn1(F.relu(self.conv1(x)))))

    def part2(self, x: Tensor) -> Tensor:
        return self.bn3(F.relu(self.conv3(self.dropout1(self.bn2(self.maxpool(x))))))

    def part3(self, x: Tensor) -> Tensor:
        return self.dropout2(x.flatten(1))


# --- I3D -------------------------------------------------------------------------------------------------------------
class BasicConv3d(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d (eps 1e-3, momentum 1e-3, the Sonnet values) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class Mixed3D(nn.Module):
    """I3D's mixed block: 1x1x1 | 1x1x1->3x3x3 | 1x1x1->3x3x3 | maxpool->1x1x1, concatenated."""

    def __init__(self, cin: int, c: Sequence[int]) -> None:
        super().__init__()
        self.branch0 = nn.Sequential(BasicConv3d(cin, c[0], 1))
        self.branch1 = nn.Sequential(BasicConv3d(cin, c[1], 1), BasicConv3d(c[1], c[2], 3, padding=1))
        self.branch2 = nn.Sequential(BasicConv3d(cin, c[3], 1), BasicConv3d(c[3], c[4], 3, padding=1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), BasicConv3d(cin, c[5], 1))
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1)


# I3D's channel plan (Carreira & Zisserman 2017), optionally scaled for small test networks
I3D_PLAN = {
    "3b": (64, 96, 128, 16, 32, 32), "3c": (128, 128, 192, 32, 96, 64),
    "4b": (192, 96, 208, 16, 48, 64), "4c": (160, 112, 224, 24, 64, 64), "4d": (128, 128, 256, 24, 64, 64),
    "4e": (112, 144, 288, 32, 64, 64), "4f": (256, 160, 320, 32, 128, 128),
    "5b": (256, 160, 320, 32, 128, 128), "5c": (384, 192, 384, 48, 128, 128),
}


class SizedAvgPool3d(nn.AvgPool3d):
    """AvgPool3d(kernel, stride 1) whose kernel is cut to the map where the map is smaller (small test inputs); at
    the reference geometry (224 x 224, 32 frames: a 4 x 7 x 7 map under a 2 x 7 x 7 kernel) it is the plain pool."""

    def forward(self, x: Tensor) -> Tensor:
        k = tuple(min(k, s) for k, s in zip(self.kernel_size, x.shape[2:]))  # type: ignore[arg-type]
        return F.avg_pool3d(x, k, stride=1)


class I3D(nn.Module):
    """RGB clip (B, 3, T, H, W) -> ``features`` stages; forward gives class scores (B, classes): the 1x1x1
    classifier on the (2, 7, 7) average pool, averaged over the remaining time steps."""

    def __init__(self, num_classes: int = 60, scale: float = 1.0, dropout: float = 0.5,
                 pool: Sequence[int] = (2, 7, 7)) -> None:
        super().__init__()

        def s(c: int) -> int:
            return max(int(round(c * scale)), 1)

        plan = {k: tuple(s(c) for c in v) for k, v in I3D_PLAN.items()}
        stages: list[nn.Module] = [
            BasicConv3d(3, s(64), 7, stride=2, padding=3),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            BasicConv3d(s(64), s(64), 1),
            BasicConv3d(s(64), s(192), 3, padding=1),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        ]
        cin = s(192)
        for name in ("3b", "3c", "pool", "4b", "4c", "4d", "4e", "4f", "pool5", "5b", "5c"):
            if name == "pool":
                stages.append(nn.MaxPool3d(3, stride=2, padding=1))
            elif name == "pool5":
                stages.append(nn.MaxPool3d(2, stride=2))
            else:
                block = Mixed3D(cin, plan[name])
                stages.append(block)
                cin = block.out_channels
                if name == "4f":
                    self.channels_4f = cin
                if name == "5b":
                    self.channels_5b = cin
        self.channels_5c = cin
        stages += [SizedAvgPool3d(tuple(pool), stride=1), nn.Dropout3d(dropout), nn.Conv3d(cin, num_classes, 1)]
        self.features = nn.Sequential(*stages)  # 19 stages: 0-15 as described above, 16-18 the classifier

    def classify(self, x: Tensor) -> Tensor:
        """Mixed_5c maps (B, 1024, T', H', W') -> class scores (B, classes)."""
        return self.features[16:](x).flatten(3).mean((2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.classify(self.features[:16](x))


# --- HCN -------------------------------------------------------------------------------------------------------------
class HCN(nn.Module):
    """Skeletons (B, 2 persons, 3, T, 25) -> class scores; the stages are methods so that MSAF can sit between them.

    ``window`` is the number of skeleton frames T the network is built for (conv2 has ``window`` output channels and
    fc7 reads 256·max((T // 16)², 1) features, as in HCN). ``width`` scales the channels for small test networks.
    """

    def __init__(self, num_classes: int = 60, window: int = 32, joints: int = 25, width: float = 1.0,
                 dropout: float = 0.5) -> None:
        super().__init__()

        def s(c: int) -> int:
            return max(int(round(c * width)), 1)

        c = s(64)
        self.window = window
        self.conv1 = nn.Sequential(nn.Conv2d(3, c, 1), nn.ReLU())
        self.conv2 = nn.Conv2d(c, window, (3, 1), padding=(1, 0))
        self.conv3 = nn.Sequential(nn.Conv2d(joints, c // 2, 3, padding=1), nn.MaxPool2d(2))
        self.conv4 = nn.Sequential(nn.Conv2d(c // 2, c, 3, padding=1), nn.Dropout2d(dropout), nn.MaxPool2d(2))
        self.conv1m = nn.Sequential(nn.Conv2d(3, c, 1), nn.ReLU())
        self.conv2m = nn.Conv2d(c, window, (3, 1), padding=(1, 0))
        self.conv3m = nn.Sequential(nn.Conv2d(joints, c // 2, 3, padding=1), nn.MaxPool2d(2))
        self.conv4m = nn.Sequential(nn.Conv2d(c // 2, c, 3, padding=1), nn.Dropout2d(dropout), nn.MaxPool2d(2))
        conv5: list[nn.Module] = [nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.ReLU(), nn.Dropout2d(dropout)]
        self.conv5 = nn.Sequential(*conv5, *([] if window == 8 else [nn.MaxPool2d(2)]))
        self.conv6 = nn.Sequential(nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.Dropout2d(dropout),
                                   nn.MaxPool2d(2))
        self.fc7 = nn.Sequential(nn.Linear(4 * c * max((window // 16) ** 2, 1), s(512)), nn.ReLU(),
                                 nn.Dropout(dropout))
        self.fc8 = nn.Linear(s(512), num_classes)
        self.person_channels, self.fc_channels = 2 * c, s(512)

    def check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[1] != 2 or x.shape[2] != 3 or x.shape[3] != self.window:
            raise ValueError(f"HCN built for skeletons (B, 2, 3, {self.window}, joints), got {tuple(x.shape)}")

    @staticmethod
    def motion(x: Tensor) -> Tensor:
        """(B, 3, T, V) -> frame differences (T - 1 of them) stretched back to T frames bilinearly, as HCN does."""
        T, V = x.shape[2:]
        return F.interpolate(x[:, :, 1:] - x[:, :, :-1], size=(T, V), mode="bilinear", align_corners=False)

    def person(self, x: Tensor) -> Tensor:
        """One person (B, 3, T, V) -> conv5 maps (B, 2·c, T/8, window/8)."""
        p = self.conv4(self.conv3(self.conv2(self.conv1(x)).permute(0, 3, 2, 1)))
        m = self.conv4m(self.conv3m(self.conv2m(self.conv1m(self.motion(x))).permute(0, 3, 2, 1)))
        return self.conv5(torch.cat([p, m], 1))

    def join(self, h0: Tensor, h1: Tensor) -> Tensor:
        """The two persons' conv5 maps -> fc7 features (B, 512): conv6 per person, maximum, flatten, fc7."""
        return self.fc7(torch.maximum(self.conv6(h0), self.conv6(h1)).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        self.check(x)
        return self.fc8(self.join(self.person(x[:, 0]), self.person(x[:, 1])))
