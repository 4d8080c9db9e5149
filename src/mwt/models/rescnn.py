"""ResCNN from CNNSplitter: 12 convs with residual adds conv1->conv3, conv5->conv7, conv9->conv11.

As in the MwT reference, each conv is Conv -> BN -> ReLU and the shortcut adds the earlier block's
(pooled) output to the later block's output, with no ReLU after the add.
"""

import torch.nn as nn

from mwt.models.layers import conv_bn_relu, init_weights, max_pool
from mwt.models.registry import register_model, scaled

RESCNN_CHANNELS = [64, 128, 128, 128, 256, 512, 512, 512, 512, 512, 512, 512]


class ResCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float):
        super().__init__()
        ch = [scaled(c, width) for c in RESCNN_CHANNELS]
        c_in = [in_channels] + ch[:-1]
        self.convs = nn.ModuleList(conv_bn_relu(a, b) for a, b in zip(c_in, ch))
        self.pool = max_pool()
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5),
                                        nn.Linear(ch[-1], num_classes))
        init_weights(self)

    def forward(self, x):
        c, pool = self.convs, self.pool
        out = pool(c[1](c[0](x)))
        out = c[3](c[2](out)) + out
        out = pool(c[4](out))
        out = pool(c[5](out))
        out = c[7](c[6](out)) + out
        out = pool(c[8](out))
        out = pool(c[9](out))
        out = c[11](c[10](out)) + out
        return self.classifier(out)


@register_model
def rescnn(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return ResCNN(num_classes, in_channels, width)
