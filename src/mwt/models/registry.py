"""A tiny model registry (timm-style): models are created by name from plain factory functions."""

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch.nn as nn

from mwt.checks import is_int, is_real
from mwt.errors import MwtError

_MODELS: dict[str, Callable[..., nn.Module]] = {}
MAX_WIDTH = 4.0  # 16x the parameters of the paper's models: beyond that a typo, not a model


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn(num_classes, in_channels, width) -> nn.Module`` under its function name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


@dataclass(frozen=True)
class ModelSpec:
    """How a registered model is built: what checkpoints, module sets and module files record
    about their model, and all that is needed to build it again."""

    name: str
    num_classes: int = 10
    in_channels: int = 3
    width: float = 1.0

    def validate(self) -> "ModelSpec":
        if not isinstance(self.name, str) or self.name.lower() not in _MODELS:
            raise MwtError(f"unknown model {self.name!r}; known models: "
                           f"{', '.join(list_models())}")
        if not is_int(self.num_classes) or not 2 <= self.num_classes <= 100_000:
            raise MwtError(f"num_classes must be an integer from 2 to 100000, got "
                           f"{self.num_classes!r}")
        if not is_int(self.in_channels) or not 1 <= self.in_channels <= 1024:
            raise MwtError(f"in_channels must be an integer from 1 to 1024, got "
                           f"{self.in_channels!r}")
        w = self.width
        if not is_real(w) or not 0 < w <= MAX_WIDTH:
            raise MwtError(f"width must be a number in (0, {MAX_WIDTH:g}], got {w!r}")
        return self

    def build(self) -> nn.Module:
        """The standard (gate-free) model, carrying this spec as ``model.mwt_spec``."""
        self.validate()
        key = self.name.lower()
        model = _MODELS[key](num_classes=self.num_classes, in_channels=self.in_channels,
                             width=self.width)
        model.mwt_spec = ModelSpec(key, self.num_classes, self.in_channels, self.width)
        return model

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, fields) -> "ModelSpec":
        """A spec read from a file: an object with exactly these fields, checked."""
        if not isinstance(fields, dict):
            raise MwtError("a model description must be an object")
        try:
            spec = cls(**{k: fields[k] for k in cls.__dataclass_fields__})
        except KeyError as exc:
            raise MwtError(f"a model description lacks {exc.args[0]!r}") from exc
        return spec.validate()


def create_model(name: str, num_classes: int = 10, in_channels: int = 3,
                 width: float = 1.0) -> nn.Module:
    """Build a standard (gate-free) model; ``mwt.make_modular`` turns it into a modular one."""
    return ModelSpec(str(name), num_classes, in_channels, width).build()


def scaled(channels: int, width: float) -> int:
    """Channel count under a width multiplier, never below 1."""
    return max(1, int(round(channels * width)))
