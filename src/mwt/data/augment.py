"""Batch augmentation on tensors, on whatever device the batch lives (CPU or GPU).

All randomness comes from the ``generator`` argument, so a run seeded with
``torch.Generator(device=x.device.type).manual_seed(s)`` is reproducible.  The generator must be
on the same device *type* as ``x`` (a CPU generator for a CPU batch, a ``"cuda"`` generator for a
CUDA batch) -- torch cannot draw numbers for one device from another device's generator.  With
``generator=None`` torch's global generator for that device is used (reproducible only through
``torch.manual_seed``).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mwt.errors import MwtError

__all__ = ["Augmentation", "default_crop_padding", "random_crop", "random_hflip", "augment"]


@dataclass(frozen=True)
class Augmentation:
    """What training augmentation suits a dataset: random crop with zero padding, horizontal flip.

    ``crop_padding`` pixels of zero padding before a random crop back to the image size (0: no
    crop); ``hflip`` whether mirroring left-right keeps an image's class (False for digits).
    """

    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        pad = self.crop_padding
        try:
            if isinstance(pad, bool):
                raise TypeError
            pad = operator.index(pad)
        except TypeError:
            pad = -1
        if pad < 0:
            raise MwtError(f"Augmentation crop_padding must be an integer >= 0, got "
                           f"{self.crop_padding!r}")
        if not isinstance(self.hflip, bool | np.bool_):
            raise MwtError(f"Augmentation hflip must be True or False, got {self.hflip!r}")
        object.__setattr__(self, "crop_padding", pad)
        object.__setattr__(self, "hflip", bool(self.hflip))

    @property
    def enabled(self) -> bool:
        """Whether this augmentation changes anything."""
        return self.crop_padding > 0 or self.hflip


def default_crop_padding(height: int, width: int) -> int:
    """Crop padding for images of ``height`` x ``width``: the paper's 4 pixels on 32x32 images,
    scaled with the image side (1/8 of the smaller side, rounded, at least 1)."""
    side = min(int(height), int(width))
    if side <= 0:
        raise MwtError(f"default_crop_padding needs a positive image size, got {height}x{width}")
    return max(1, int(side / 8 + 0.5))


def _check(x: torch.Tensor, generator: torch.Generator | None, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MwtError(f"{what} needs a batch tensor [N, C, H, W], got {shape}")
    if generator is not None and generator.device.type != x.device.type:
        raise MwtError(
            f"{what} got a {generator.device.type} generator for a {x.device.type} batch; create "
            f"it with torch.Generator(device={x.device.type!r})"
        )


def random_crop(
    x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels, then crop it back to H x W at a random offset.

    Each sample gets its own offset, drawn uniformly from ``0..2*padding`` on both axes; the crop
    is one gather over the padded batch (no per-sample Python loop).  ``padding=0`` returns ``x``.
    """
    _check(x, generator, "random_crop")
    padding = int(padding)
    if padding < 0:
        raise MwtError(f"random_crop padding must be >= 0, got {padding}")
    if padding == 0 or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator, device=x.device)
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(
    x: torch.Tensor, generator: torch.Generator | None = None, p: float = 0.5
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p`` (independently per sample)."""
    _check(x, generator, "random_hflip")
    if x.shape[0] == 0:
        return x
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def augment(
    x: torch.Tensor,
    padding: int = 4,
    hflip: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Standard CIFAR-style augmentation: :func:`random_crop` then (if ``hflip``) a random flip."""
    out = random_crop(x, padding, generator)
    if hflip:
        out = random_hflip(out, generator)
    return out
