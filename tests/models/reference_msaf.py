"""Re-creations of the MSAF authors' networks (public repository anita-hu/MSAF, and the HCN / I3D branches its NTU
network takes from the MFAS code), written for these tests from reading that code: the same module tree, hence the
same state-dict keys, and the same forward. mmfusion's own networks must give their logits from their weights.

Only the geometry constants that the reference ties to its 224 x 224 inputs (ResNeXt's and I3D's average-pool
kernels, HCN's window) are parameters here, so that the tests can run on small inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# --- MSAF.py ------------------------------------------------------------------------------------------------------
class RefMSAFBlock(nn.Module):
    def __init__(self, in_channels, block_channel, block_dropout=0.0, lowest_atten=0.0, reduction_factor=4):
        super().__init__()
        self.block_channel, self.in_channels, self.lowest_atten = block_channel, in_channels, lowest_atten
        reduced = block_channel // reduction_factor
        self.joint_features = nn.Sequential(nn.Linear(block_channel, reduced), nn.BatchNorm1d(reduced),
                                            nn.ReLU(inplace=True))
        self.num_blocks = [math.ceil(c / block_channel) for c in in_channels]
        self.dense_group = nn.ModuleList([nn.Linear(reduced, block_channel) for _ in range(sum(self.num_blocks))])

    def forward(self, X):  # eval only: block dropout is inactive there
        blocks = [x.reshape(x.shape[0], n, self.block_channel, *x.shape[2:]) for x, n in zip(X, self.num_blocks)]
        gap = [b.sum(1).reshape(b.shape[0], self.block_channel, -1).mean(-1) for b in blocks]
        z = self.joint_features(torch.stack(gap).sum(0))
        atten = torch.softmax(torch.stack([d(z) for d in self.dense_group]), 0).permute(1, 0, 2)
        atten = self.lowest_atten + atten * (1 - self.lowest_atten)
        out, start = [], 0
        for x, b, n in zip(X, blocks, self.num_blocks):
            a = atten[:, start:start + n].reshape(b.shape[0], n, self.block_channel, *([1] * (b.dim() - 3)))
            start += n
            out.append((b * a).reshape(x.shape))
        return out


class RefMSAF(nn.Module):
    def __init__(self, in_channels, block_channel, block_dropout, lowest_atten=0.0, reduction_factor=4,
                 split_block=1):
        super().__init__()
        self.split_block = split_block
        self.blocks = nn.ModuleList([RefMSAFBlock(in_channels, block_channel, block_dropout, lowest_atten,
                                                  reduction_factor) for _ in range(split_block)])

    def forward(self, X):
        if self.split_block == 1:
            return self.blocks[0](X)
        segs = [list(torch.split(x, x.shape[2] // self.split_block, dim=2)) for x in X]
        for s in segs:
            if len(s) > self.split_block:
                s[-2] = torch.cat(s[-2:], dim=2)
        rets = [self.blocks[i]([s[i] for s in segs]) for i in range(self.split_block)]
        return [torch.cat([r[m] for r in rets], dim=2) for m in range(len(X))]


# --- RAVDESS: Hara's 3-D ResNeXt, the MFCC CNN, MSAFNet ------------------------------------------------------------
class RefBottleneck(nn.Module):
    expansion = 2

    def __init__(self, inplanes, planes, cardinality, stride=1, downsample=None):
        super().__init__()
        mid = cardinality * int(planes / 32)
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, planes * 2, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 2)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


class RefResNeXt(nn.Module):
    def __init__(self, layers=(3, 4, 6, 3), sample_size=224, sample_duration=30, cardinality=32, num_classes=8):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv3d(3, 64, 7, stride=(1, 2, 2), padding=(3, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(128, layers[0], cardinality)
        self.layer2 = self._make_layer(256, layers[1], cardinality, 2)
        self.layer3 = self._make_layer(512, layers[2], cardinality, 2)
        self.layer4 = self._make_layer(1024, layers[3], cardinality, 2)
        self.avgpool = nn.AvgPool3d((math.ceil(sample_duration / 16), math.ceil(sample_size / 32),
                                     math.ceil(sample_size / 32)), stride=1)
        self.fc = nn.Linear(cardinality * 32 * 2, num_classes)

    def _make_layer(self, planes, blocks, cardinality, stride=1):
        down = None
        if stride != 1 or self.inplanes != planes * 2:
            down = nn.Sequential(nn.Conv3d(self.inplanes, planes * 2, 1, stride=stride, bias=False),
                                 nn.BatchNorm3d(planes * 2))
        layers = [RefBottleneck(self.inplanes, planes, cardinality, stride, down)]
        self.inplanes = planes * 2
        layers += [RefBottleneck(self.inplanes, planes, cardinality) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


class RefFlatten(nn.Module):
    def forward(self, x):
        return x.view(x.size(0), -1)


class RefMFCCNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(13, 32, 7, padding=2)
        self.bn1 = nn.BatchNorm1d(32)
        self.conv2 = nn.Conv1d(32, 32, 7, padding=2)
        self.maxpool = nn.MaxPool1d(8)
        self.bn2 = nn.BatchNorm1d(32)
        self.dropout1 = nn.Dropout(0.2)
        self.conv3 = nn.Conv1d(32, 64, 5, padding=2)
        self.bn3 = nn.BatchNorm1d(64)
        self.flatten = RefFlatten()
        self.dropout2 = nn.Dropout(0.4)
        self.fc1 = nn.Linear(1664, 8)

    def forward(self, x):
        x = self.bn1(F.relu(self.conv1(x)))
        x = self.dropout1(self.bn2(self.maxpool(F.relu(self.conv2(x)))))
        x = self.bn3(F.relu(self.conv3(x)))
        return self.fc1(self.dropout2(self.flatten(x)))


class RefRavdessNet(nn.Module):
    """MSAFNet of ravdess/networks/msaf_ravdess.py, given the unimodal networks."""

    def __init__(self, video_model, audio_model):
        super().__init__()
        self.msaf = nn.ModuleList([RefMSAF([1024, 32], 16, 0.2, reduction_factor=4),
                                   RefMSAF([2048, 64], 32, 0.2, reduction_factor=4)])
        v = nn.Sequential(video_model.conv1, video_model.bn1, video_model.maxpool, video_model.layer1,
                          video_model.layer2, video_model.layer3, video_model.layer4, video_model.avgpool,
                          RefFlatten(), video_model.fc)
        a = nn.Sequential(audio_model.conv1, nn.ReLU(inplace=True), audio_model.bn1, audio_model.conv2,
                          nn.ReLU(inplace=True), audio_model.maxpool, audio_model.bn2, audio_model.dropout1,
                          audio_model.conv3, nn.ReLU(inplace=True), audio_model.bn3, audio_model.flatten,
                          audio_model.dropout2, audio_model.fc1)
        self.video_model_blocks = self._blocks(v, [6, 7])
        self.audio_model_blocks = self._blocks(a, [5, 11])

    @staticmethod
    def _blocks(model, recipe):
        children = list(model.children())
        return nn.ModuleList([nn.Sequential(*children[i:j]) for i, j in zip([0] + recipe, recipe + [None])])

    def forward(self, x):
        x = list(x)
        for i in range(3):
            x[0] = self.video_model_blocks[i](x[0])
            x[1] = self.audio_model_blocks[i](x[1])
            if i < 2:
                x = self.msaf[i](x)
        return sum(x)


# --- NTU: I3D, HCN (MFAS's Skeleton), msaf_ntu.MSAFNet -------------------------------------------------------------
class RefBasicConv3d(nn.Module):
    def __init__(self, cin, cout, kernel_size, stride, padding=0):
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, momentum=0.001, affine=True)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.bn(self.conv(x)))


class RefMixed(nn.Module):
    def __init__(self, cin, c):
        super().__init__()
        self.branch0 = nn.Sequential(RefBasicConv3d(cin, c[0], 1, 1))
        self.branch1 = nn.Sequential(RefBasicConv3d(cin, c[1], 1, 1), RefBasicConv3d(c[1], c[2], 3, 1, 1))
        self.branch2 = nn.Sequential(RefBasicConv3d(cin, c[3], 1, 1), RefBasicConv3d(c[3], c[4], 3, 1, 1))
        self.branch3 = nn.Sequential(nn.MaxPool3d(3, stride=1, padding=1), RefBasicConv3d(cin, c[5], 1, 1))

    def forward(self, x):
        return torch.cat((self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)), 1)


class RefI3D(nn.Module):
    def __init__(self, num_classes=60, dropout_drop_prob=0.5, pool=(2, 7, 7)):
        super().__init__()
        self.features = nn.Sequential(
            RefBasicConv3d(3, 64, 7, 2, 3), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            RefBasicConv3d(64, 64, 1, 1), RefBasicConv3d(64, 192, 3, 1, 1),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            RefMixed(192, (64, 96, 128, 16, 32, 32)), RefMixed(256, (128, 128, 192, 32, 96, 64)),
            nn.MaxPool3d(3, stride=2, padding=1),
            RefMixed(480, (192, 96, 208, 16, 48, 64)), RefMixed(512, (160, 112, 224, 24, 64, 64)),
            RefMixed(512, (128, 128, 256, 24, 64, 64)), RefMixed(512, (112, 144, 288, 32, 64, 64)),
            RefMixed(528, (256, 160, 320, 32, 128, 128)),
            nn.MaxPool3d(2, stride=2),
            RefMixed(832, (256, 160, 320, 32, 128, 128)), RefMixed(832, (384, 192, 384, 48, 128, 128)),
            nn.AvgPool3d(pool, stride=1), nn.Dropout3d(dropout_drop_prob),
            nn.Conv3d(1024, num_classes, 1, stride=1, bias=True))
        self.spatial_squeeze = True

    def forward(self, x):
        logits = self.features(x).squeeze(3).squeeze(3)
        return torch.mean(logits, 2)


class RefSkeleton(nn.Module):
    def __init__(self, window_size=32, num_classes=60, drpt=0.4):
        super().__init__()
        self.num_person = 2
        oc = 64
        self.conv1 = nn.Sequential(nn.Conv2d(3, oc, 1), nn.ReLU())
        self.conv2 = nn.Conv2d(oc, window_size, (3, 1), padding=(1, 0))
        self.conv3 = nn.Sequential(nn.Conv2d(25, oc // 2, 3, padding=1), nn.MaxPool2d(2))
        self.conv4 = nn.Sequential(nn.Conv2d(oc // 2, oc, 3, padding=1), nn.Dropout2d(drpt), nn.MaxPool2d(2))
        self.conv1m = nn.Sequential(nn.Conv2d(3, oc, 1), nn.ReLU())
        self.conv2m = nn.Conv2d(oc, window_size, (3, 1), padding=(1, 0))
        self.conv3m = nn.Sequential(nn.Conv2d(25, oc // 2, 3, padding=1), nn.MaxPool2d(2))
        self.conv4m = nn.Sequential(nn.Conv2d(oc // 2, oc, 3, padding=1), nn.Dropout2d(drpt), nn.MaxPool2d(2))
        self.conv5 = nn.Sequential(nn.Conv2d(oc * 2, oc * 2, 3, padding=1), nn.ReLU(), nn.Dropout2d(drpt),
                                   nn.MaxPool2d(2))
        self.conv6 = nn.Sequential(nn.Conv2d(oc * 2, oc * 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(drpt),
                                   nn.MaxPool2d(2))
        self.fc7 = nn.Sequential(nn.Linear(oc * 4 * max((window_size // 16) ** 2, 1), 512), nn.ReLU(),
                                 nn.Dropout2d(drpt))
        self.fc8 = nn.Linear(512, num_classes)

    def motion(self, x):
        N, C, T, V, M = x.size()
        m = (x[:, :, 1:] - x[:, :, :-1]).permute(0, 1, 4, 2, 3).contiguous().view(N, C * M, T - 1, V)
        m = F.interpolate(m, size=(T, V), mode="bilinear", align_corners=False)
        return m.contiguous().view(N, C, M, T, V).permute(0, 1, 3, 4, 2)

    def person(self, x, motion, i):
        out_p = self.conv4(self.conv3(self.conv2(self.conv1(x[..., i])).permute(0, 3, 2, 1).contiguous()))
        out_m = self.conv4m(self.conv3m(self.conv2m(self.conv1m(motion[..., i])).permute(0, 3, 2, 1).contiguous()))
        return torch.cat((out_p, out_m), 1)

    def forward(self, x):
        motion = self.motion(x)
        outs = [self.conv6(self.conv5(self.person(x, motion, i))) for i in range(2)]
        out7 = torch.max(outs[0], outs[1])
        return self.fc8(self.fc7(out7.view(out7.size(0), -1)))


class RefNTUNet(nn.Module):
    """msaf_ntu.MSAFNet with rgb_net='i3d' and set_visual_skeleton_nets(I3D, Skeleton)."""

    def __init__(self, visual, skeleton):
        super().__init__()
        self.msaf1 = RefMSAF([832, 128, 128], 64, 0, lowest_atten=0.5, reduction_factor=4)
        self.msaf2 = RefMSAF([1024, 512], 256, 0, lowest_atten=0.5, reduction_factor=4)
        self.visual, self.skeleton = visual, skeleton

    def forward(self, frames, skeleton):
        """frames (B, T, H, W, C); skeleton (N, C, T, V, M)."""
        motion = self.skeleton.motion(skeleton)
        out4 = [self.skeleton.person(skeleton, motion, i) for i in range(2)]
        out5 = [self.skeleton.conv5(o) for o in out4]
        B, T, W, H, C = frames.size()
        frames = frames.view(B, 1, T, W, H, C).transpose(1, -1).reshape(B, C, T, W, H).contiguous()
        fm3 = self.visual.features[13:15](self.visual.features[:13](frames))
        fm3, p0, p1 = self.msaf1([fm3, out5[0], out5[1]])
        out7 = torch.max(self.skeleton.conv6(p0), self.skeleton.conv6(p1))
        out8 = self.skeleton.fc7(out7.view(out7.size(0), -1))
        final_fm = self.visual.features[15](fm3)
        final_fm, out8 = self.msaf2([final_fm, out8])
        outf = self.skeleton.fc8(out8)
        vis = self.visual.features[16:](final_fm).squeeze(3).squeeze(3).mean(2)
        return (outf + vis) / 2


# --- CMU-MOSEI: MSAFLSTMNet -----------------------------------------------------------------------------------------
class RefMOSEINet(nn.Module):
    def __init__(self, dims=(35, 74, 768), hidden=(32, 64, 128)):
        super().__init__()
        self.msaf = nn.ModuleList([RefMSAF(list(hidden), 16, 0.2, 0.0, 2, split_block=5)])
        self.visual_model = nn.ModuleList([nn.LSTM(dims[0], hidden[0], batch_first=True),
                                           nn.LSTM(hidden[0], hidden[0], batch_first=True)])
        self.audio_model = nn.ModuleList([nn.LSTM(dims[1], hidden[1], batch_first=True),
                                          nn.LSTM(hidden[1], hidden[1], batch_first=True)])
        self.text_model = nn.ModuleList([nn.LSTM(dims[2], hidden[2], batch_first=True),
                                         nn.LSTM(hidden[2], hidden[2], batch_first=True)])
        self.multimodal_classifier = nn.Sequential(nn.Linear(sum(hidden), 1))

    def forward(self, x):
        """x: [visual (B, T, 35), audio (B, T, 74), bert (B, T, 768)]."""
        x = list(x)
        for i in range(2):
            if i == 1:
                x = [t.permute(0, 2, 1) for t in self.msaf[0]([t.permute(0, 2, 1) for t in x])]
            x[0], _ = self.visual_model[i](x[0])
            x[1], _ = self.audio_model[i](x[1])
            x[2], _ = self.text_model[i](x[2])
        return self.multimodal_classifier(torch.cat([t[:, -1, :] for t in x], -1))


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (so that eval mode differs from training mode and from defaults)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif name.endswith("running_mean"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            else:
                fan = t[0].numel() if t.dim() > 1 else 1
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(max(fan, 1)))
    return model.eval()
