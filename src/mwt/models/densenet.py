"""A small DenseNet for 28x28 / 32x32 inputs: dense blocks that concatenate feature maps.

Each dense layer is Conv 3x3 -> BN -> ReLU producing ``growth`` new channels, concatenated to its
input (``torch.cat([x, new], 1)``, Huang et al. 2017); a transition (Conv 1x1 -> BN -> ReLU, then
2x2 average pooling) halves the channels between blocks. The layers are post-activation
(conv, then its own BN), where DenseNet-BC is pre-activation (BN -> ReLU -> conv): a gate scales
a conv's own BatchNorm output, so every conv here has one. Widths scale with ``width``.
"""

import torch
import torch.nn as nn

from mwt.models.layers import conv_bn_relu, init_weights
from mwt.models.registry import register_model, scaled


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int):
        super().__init__()
        self.body = conv_bn_relu(c_in, growth)

    def forward(self, x):
        return torch.cat([x, self.body(x)], 1)


def _transition(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.AvgPool2d(2, ceil_mode=True))


class DenseNet(nn.Module):
    def __init__(self, blocks, growth: int, num_classes: int, in_channels: int, width: float):
        super().__init__()
        g = scaled(growth, width)
        c = 2 * g
        layers: list[nn.Module] = [conv_bn_relu(in_channels, c)]
        for i, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, g))
                c += g
            if i < len(blocks) - 1:
                layers.append(_transition(c, c // 2))
                c //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_model
def densenet(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """Three dense blocks of 4 layers, growth rate 32 (at width 1)."""
    return DenseNet([4, 4, 4], 32, num_classes, in_channels, width)
