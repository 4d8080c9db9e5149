"""The VGG family: CIFAR VGG16 with BatchNorm (the paper's VGG16: 315.11 M MACs on 3x32x32) and
CNNSplitter's SimCNN, the same 13-conv stack with its own head.

SimCNN has no BatchNorm in CNNSplitter; MwT gates scale a BN output, so like the MwT reference we
add it, which makes its conv stack exactly VGG16's.
"""

import torch.nn as nn

from mwt.models.layers import conv_stack, init_weights
from mwt.models.registry import register_model, scaled

VGG16_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]


class VGG(nn.Module):
    """A conv stack from ``cfg`` and three fully connected layers. ``dropout_first``: dropout
    before each hidden Linear (CNNSplitter's SimCNN) instead of after its ReLU (VGG16)."""

    def __init__(self, cfg, num_classes: int, in_channels: int, width: float, hidden: int = 512,
                 dropout_first: bool = False):
        super().__init__()
        self.features, c_in = conv_stack(cfg, in_channels, width)
        h = scaled(hidden, width)
        head: list[nn.Module] = [nn.Flatten()]
        for fan_in in (c_in, h):
            hidden_layer = [nn.Linear(fan_in, h), nn.ReLU(inplace=True)]
            head += [nn.Dropout(), *hidden_layer] if dropout_first else [*hidden_layer,
                                                                          nn.Dropout()]
        self.classifier = nn.Sequential(*head, nn.Linear(h, num_classes))
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def vgg16(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return VGG(VGG16_CFG, num_classes, in_channels, width)


@register_model
def simcnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return VGG(VGG16_CFG, num_classes, in_channels, width, dropout_first=True)
