"""CIFAR ResNet18: 3x3 stride-1 stem, no max-pool, BasicBlocks [2, 2, 2, 2], 1x1 shortcuts."""

import torch.nn as nn
import torch.nn.functional as F

from mwt.models.layers import init_weights
from mwt.models.registry import register_model, scaled


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks, num_classes: int, in_channels: int, width: float):
        super().__init__()
        c = scaled(64, width)
        self.conv1 = nn.Conv2d(in_channels, c, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        stages = []
        for i, n in enumerate(blocks):
            c_out = scaled(64 * 2**i, width)
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(c, c_out, stride if j == 0 else 1))
                c = c_out
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.fc(self.avgpool(out).flatten(1))


@register_model
def resnet18(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return ResNet([2, 2, 2, 2], num_classes, in_channels, width)
