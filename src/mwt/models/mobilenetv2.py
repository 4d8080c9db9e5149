"""MobileNetV2 (Sandler et al. 2018), the CIFAR-style variant for 28x28 / 32x32 inputs.

Inverted residual blocks: a 1x1 expansion conv (ratio 6), a 3x3 depthwise conv, a 1x1 linear
projection, and a residual add where the stride is 1 and the channels match; ReLU6 throughout.
As in the CIFAR ports of the model, the stem is a stride-1 3x3 conv and the second stage keeps
stride 1, so 32x32 inputs reach the last stage at 4x4 (28x28 at 4x4 too). Every conv has its own
BatchNorm, so MwT gates every kernel but the stem's: the depthwise convs' too, one gate value
per channel (``mwt.gates``). ``width`` scales every channel count, the last 1x1 conv's included.
"""

import torch.nn as nn

from mwt.models.layers import init_weights
from mwt.models.registry import register_model, scaled

# (expansion t, output channels c, blocks n, stride of the first block s): the paper's Table 2,
# with the CIFAR ports' stride 1 in the second row.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1)]


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    layers = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expansion: int):
        super().__init__()
        hidden = c_in * expansion
        layers = _conv_bn(c_in, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)  # depthwise
        layers += _conv_bn(hidden, c_out, 1, act=False)               # linear bottleneck
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float):
        super().__init__()
        c = scaled(32, width)
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn(in_channels, c, 3))]
        for t, c_out, n, s in STAGES:
            c_out = scaled(c_out, width)
            for i in range(n):
                layers.append(InvertedResidual(c, c_out, s if i == 0 else 1, t))
                c = c_out
        last = scaled(1280, width)
        layers.append(nn.Sequential(*_conv_bn(c, last, 1)))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


@register_model
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """17 inverted residual blocks, 52 convs (the stem and 1x1 head conv included)."""
    return MobileNetV2(num_classes, in_channels, width)
