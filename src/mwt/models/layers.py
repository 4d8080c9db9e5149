"""Building blocks shared by the registered CNNs."""

import torch.nn as nn

from mwt.models.registry import scaled


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    """3x3 conv -> BatchNorm -> ReLU: the unit that MwT gates (the gate scales the BN output)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def conv_stack(cfg, in_channels: int, width: float) -> tuple[nn.Sequential, int]:
    """VGG-style features from a config of channel counts and "M" (max-pool); returns
    (features, output channels)."""
    layers, c_in = [], in_channels
    for v in cfg:
        if v == "M":
            layers.append(max_pool())
        else:
            c_out = scaled(v, width)
            layers.append(conv_bn_relu(c_in, c_out))
            c_in = c_out
    return nn.Sequential(*layers), c_in


def max_pool() -> nn.MaxPool2d:
    # ceil_mode lets five 2x2 pools reduce 28x28 (28->14->7->4->2->1) as well as 32x32; at even
    # sizes it is identical to floor mode, so 32x32 results and MAC counts are unchanged.
    return nn.MaxPool2d(2, 2, ceil_mode=True)


def init_weights(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model
