"""In-memory image data: :class:`ImageData`, and :func:`as_tensors`, which the algorithms call on
whatever data they are given."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from mwt.data.augment import Augmentation
from mwt.errors import MwtError

__all__ = ["ImageData", "as_tensors"]


@dataclass(eq=False)
class ImageData(torch.utils.data.Dataset):
    """An in-memory image classification split.

    ``images`` float32 ``[N, C, H, W]`` (normalised per channel with ``mean``/``std`` of the
    dataset's train split), ``labels`` int64 ``[N]``, ``classes`` the class names (index = label
    id).  ``hflip`` says whether horizontal-flip augmentation suits the data (False for digits).
    ``augmentation`` is the training augmentation the dataset calls for (the built-in datasets
    set it: random crop with 4 pixels of padding, plus a flip except for SVHN); ``None`` means
    none was chosen, and such data is not augmented unless asked.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    hflip: bool = True
    name: str = "custom"
    mean: tuple[float, ...] | None = field(default=None)
    std: tuple[float, ...] | None = field(default=None)
    augmentation: Augmentation | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dim() != 4:
            raise MwtError("ImageData.images must be a tensor [N, C, H, W]")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dim() != 1:
            raise MwtError("ImageData.labels must be a 1-D tensor [N]")
        if len(self.images) != len(self.labels):
            raise MwtError(f"ImageData has {len(self.images)} images but {len(self.labels)} "
                           "labels")
        self.classes = [str(c) for c in self.classes]
        if self.mean is not None:
            self.mean = tuple(float(m) for m in self.mean)
        if self.std is not None:
            self.std = tuple(float(s) for s in self.std)
        if self.augmentation is not None and not isinstance(self.augmentation, Augmentation):
            raise MwtError("ImageData.augmentation must be an mwt.data.Augmentation or None, got "
                           f"{type(self.augmentation).__name__}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, indices) -> ImageData:
        """The samples at ``indices`` (sequence, numpy array, tensor of ints or bool mask)."""
        idx = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor)
                              else indices)
        if idx.dtype != torch.bool:
            idx = idx.long()
        idx = idx.to(self.labels.device)
        if idx.dtype == torch.bool and idx.shape != self.labels.shape:
            raise MwtError(f"ImageData.subset got a mask of shape {tuple(idx.shape)} for "
                           f"{len(self)} samples")
        if idx.dtype != torch.bool and idx.numel() and (
                int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise MwtError(f"ImageData.subset got indices from {int(idx.min())} to "
                           f"{int(idx.max())}, outside 0..{len(self) - 1}")
        return replace(self, images=self.images[idx], labels=self.labels[idx],
                       classes=list(self.classes))

    def to(self, device) -> ImageData:
        """A copy with images and labels on ``device`` (no copy when they are already there)."""
        return replace(self, images=self.images.to(device), labels=self.labels.to(device),
                       classes=list(self.classes))

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (f"ImageData(name={self.name!r}, n={len(self)}, shape=({c}, {h}, {w}), "
                f"classes={self.num_classes}, device={self.images.device})")


# ------------------------------------------------------------------------------- as_tensors

_INT_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64}


def _as_tensor(a, what: str) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.ndarray | np.generic | int | float | list | tuple):
        try:
            return torch.as_tensor(np.asarray(a))
        except (TypeError, ValueError) as exc:
            raise MwtError(f"as_tensors could not turn the {what} into a tensor ({exc})") \
                from exc
    raise MwtError(f"as_tensors got {type(a).__name__} as {what}; expected a tensor or numpy "
                   "array")


def _finish(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise MwtError(f"as_tensors needs labels of shape [N], got {tuple(y.shape)}")
    if y.dtype not in _INT_DTYPES:
        raise MwtError(f"as_tensors needs integer class labels, got dtype {y.dtype}")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise MwtError(f"as_tensors needs images [N, C, H, W] or [N, H, W], got shape "
                       f"{tuple(x.shape)}")
    if len(x) != len(y):
        raise MwtError(f"as_tensors got {len(x)} images but {len(y)} labels")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.is_floating_point():
        x = x.float()
    else:
        raise MwtError(f"as_tensors needs float images or uint8 images in 0..255, got dtype "
                       f"{x.dtype}")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise MwtError("as_tensors cannot use the data: the images contain NaN or infinite "
                       "values")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise MwtError("as_tensors got negative class labels; labels must be 0..K-1")
    return x.contiguous(), y.contiguous()


def _item_pair(item, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise MwtError(f"as_tensors needs a {what} yielding (image, label) pairs, got "
                       f"{type(item).__name__}")
    return _as_tensor(item[0], "images"), _as_tensor(item[1], "labels")


def as_tensors(data) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn ``data`` into ``(X float32 [N, C, H, W], y int64 [N])``.

    Accepts an ``(X, y)`` pair of tensors or numpy arrays, an :class:`ImageData`, a torch
    ``Dataset`` yielding ``(x, y)`` or a ``DataLoader`` yielding batches.  uint8 images become
    floats in [0, 1]; ``[N, H, W]`` images get a channel dimension.  Tensors (a pair or an
    ImageData) keep their device; everything else ends on the CPU.  Bad input raises
    :class:`~mwt.errors.MwtError`.
    """
    if isinstance(data, ImageData):
        return _finish(data.images, data.labels)
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(
        data[0], tuple | list
    ):
        x, y = _as_tensor(data[0], "images"), _as_tensor(data[1], "labels")
        if x.device != y.device:
            y = y.to(x.device)
        return _finish(x, y)
    if isinstance(data, torch.utils.data.DataLoader):
        xs, ys = [], []
        for batch in data:
            x, y = _item_pair(batch, "DataLoader")
            xs.append(x.cpu())
            ys.append(y.cpu().reshape(-1))
        if not xs:
            raise MwtError("as_tensors got an empty DataLoader")
        return _finish(torch.cat(xs), torch.cat(ys))
    if isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise MwtError("as_tensors needs a Dataset with a length; wrap an iterable one in a "
                           "DataLoader") from exc
        if n == 0:
            raise MwtError("as_tensors got an empty Dataset")
        pairs = [_item_pair(data[i], "Dataset") for i in range(n)]
        try:
            x = torch.stack([p[0].cpu() for p in pairs])
            y = torch.stack([p[1].cpu().reshape(()) for p in pairs])
        except RuntimeError as exc:
            raise MwtError(f"as_tensors could not stack the Dataset's samples ({exc})") from exc
        return _finish(x, y)
    raise MwtError(f"as_tensors cannot use a {type(data).__name__}; pass (X, y), an ImageData, a "
                   "Dataset or a DataLoader")
