"""A tiny dataset registry (timm-style, like :mod:`mwt.models.registry`): a loader per name.

A loader is called as ``loader(split, data_dir, download)`` and returns an
:class:`~mwt.data.tensors.ImageData`.  Names are case-insensitive and may have aliases.  The
built-in datasets (:mod:`mwt.data.builtin`) register themselves when :mod:`mwt.data` is
imported; add your own with :func:`register_dataset`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

# Old homes: these names lived in this module before it was split (kept for old imports).
from mwt.data.builtin import AUGMENTATION, NORMALIZATION, SYSTEM_DIRS  # noqa: F401
from mwt.data.tensors import ImageData, as_tensors  # noqa: F401
from mwt.errors import MwtError

__all__ = ["DATASETS", "register_dataset", "list_datasets", "canonical_name", "load_dataset"]

# loader(split, data_dir, download) -> ImageData
Loader = Callable[..., ImageData]

DATASETS: dict[str, Loader] = {}
_ALIASES: dict[str, str] = {}


def _key(name: str) -> str:
    return str(name).strip().lower()


def register_dataset(name: str, loader_fn: Loader | None = None, *,
                     aliases: Sequence[str] = ()):
    """Register ``loader_fn(split, data_dir, download) -> ImageData`` under ``name``.

    Names are case-insensitive; ``aliases`` are extra names for the same dataset.  Usable as a
    decorator: ``@register_dataset("mine")``.
    """

    def add(fn: Loader) -> Loader:
        key = _key(name)
        DATASETS[key] = fn
        for alias in aliases:
            _ALIASES[_key(alias)] = key
        return fn

    return add(loader_fn) if loader_fn is not None else add


def list_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return sorted(DATASETS)


def canonical_name(name: str) -> str:
    """The registered name for ``name`` (case-insensitive, aliases resolved)."""
    key = _key(name)
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise MwtError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return key


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> ImageData:
    """Load split ``split`` ("train" or "test") of dataset ``name`` as an :class:`ImageData`.

    For the built-in datasets, ``data_dir`` is the only place looked in when given, and
    ``download=True`` fetches missing files (see :mod:`mwt.data.loaders`).
    """
    key = canonical_name(name)
    data = DATASETS[key](_key(split), data_dir, download)
    if not isinstance(data, ImageData):
        raise MwtError(f"the loader registered for dataset {key!r} returned a "
                       f"{type(data).__name__}, not an ImageData")
    return data
