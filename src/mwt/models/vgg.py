"""CIFAR VGG16 with BatchNorm (the paper's VGG16: 315.11 M MACs on 3x32x32)."""

import torch.nn as nn

from mwt.models.layers import conv_stack, init_weights
from mwt.models.registry import register_model, scaled

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


class VGG(nn.Module):
    def __init__(self, cfg, num_classes: int, in_channels: int, width: float, hidden: int = 512):
        super().__init__()
        self.features, c_in = conv_stack(cfg, in_channels, width)
        h = scaled(hidden, width)
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c_in, h), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(h, h), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(h, num_classes),
        )
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return VGG(VGG16_CFG, num_classes, in_channels, width)
