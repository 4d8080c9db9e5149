"""A tiny model registry (timm-style): models are created by name from plain factory functions."""

from collections.abc import Callable

import torch.nn as nn

from mwt.errors import MwtError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(num_classes, in_channels, width) -> nn.Module`` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0) -> nn.Module:
    """Build a standard (gate-free) model; ``mwt.make_modular`` turns it into a modular one."""
    key = name.lower()
    if key not in _MODELS:
        raise MwtError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if num_classes < 2:
        raise MwtError(f"num_classes must be at least 2, got {num_classes}")
    if in_channels < 1:
        raise MwtError(f"in_channels must be positive, got {in_channels}")
    if not width > 0:
        raise MwtError(f"width must be positive, got {width}")
    model = _MODELS[key](num_classes=num_classes, in_channels=in_channels, width=width)
    model.mwt_config = {"name": key, "num_classes": num_classes, "in_channels": in_channels,
                        "width": width}
    return model


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier, never below 1."""
    return max(1, int(round(channels * width)))
