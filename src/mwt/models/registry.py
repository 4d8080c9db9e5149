"""A tiny model registry (timm-style): models are created by name from plain factory functions."""

import math
from collections.abc import Callable

import torch.nn as nn

from mwt.errors import MwtError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
MAX_WIDTH = 4.0  # 16x the parameters of the paper's models: beyond that a typo, not a model


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(num_classes, in_channels, width) -> nn.Module`` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0) -> nn.Module:
    """Build a standard (gate-free) model; ``mwt.make_modular`` turns it into a modular one."""
    key = str(name).lower()
    if key not in _MODELS:
        raise MwtError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    if not _is_int(num_classes) or not 2 <= num_classes <= 100_000:
        raise MwtError(f"num_classes must be an integer from 2 to 100000, got {num_classes!r}")
    if not _is_int(in_channels) or not 1 <= in_channels <= 1024:
        raise MwtError(f"in_channels must be an integer from 1 to 1024, got {in_channels!r}")
    if (isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width)
            or not 0 < width <= MAX_WIDTH):
        raise MwtError(f"width must be a number in (0, {MAX_WIDTH:g}], got {width!r}")
    model = _MODELS[key](num_classes=num_classes, in_channels=in_channels, width=width)
    model.mwt_config = {"name": key, "num_classes": num_classes, "in_channels": in_channels,
                        "width": width}
    return model


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier, never below 1."""
    return max(1, int(round(channels * width)))
