"""SimCNN from CNNSplitter: 13 convs and 3 fully connected layers, with BatchNorm added.

The original has no BatchNorm; MwT gates scale a BN output, so like the MwT reference we add it.
"""

import torch.nn as nn

from mwt.models.layers import conv_stack, init_weights
from mwt.models.registry import register_model, scaled

SIMCNN_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
              512, 512, 512, "M"]


class SimCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float):
        super().__init__()
        self.features, c_in = conv_stack(SIMCNN_CFG, in_channels, width)
        h = scaled(512, width)
        # CNNSplitter's head: dropout before each of the two hidden FC layers.
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(), nn.Linear(c_in, h), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(h, h), nn.ReLU(inplace=True),
            nn.Linear(h, num_classes),
        )
        init_weights(self)

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def simcnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return SimCNN(num_classes, in_channels, width)
