"""Batch augmentation on tensors, on whatever device the batch lives (CPU or GPU).

All randomness comes from the ``generator`` argument, so a run seeded with
``torch.Generator(device=x.device.type).manual_seed(s)`` is reproducible.  The generator must be
on the same device *type* as ``x`` (a CPU generator for a CPU batch, a ``"cuda"`` generator for a
CUDA batch) -- torch cannot draw numbers for one device from another device's generator.  With
``generator=None`` torch's global generator for that device is used (reproducible only through
``torch.manual_seed``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mwt.errors import MwtError

__all__ = ["random_crop", "random_hflip", "augment"]


def _check(x: torch.Tensor, generator: torch.Generator | None, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MwtError(f"{what} needs a batch tensor [N, C, H, W], got {shape}.")
    if generator is not None and generator.device.type != x.device.type:
        raise MwtError(
            f"{what} got a {generator.device.type} generator for a {x.device.type} batch; create "
            f"it with torch.Generator(device={x.device.type!r})."
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
        raise MwtError(f"random_crop padding must be >= 0, got {padding}.")
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
