"""What describes a built-in dataset: :class:`DatasetSpec`, and :class:`OfficialFile` for its files.

A spec is plain data.  :mod:`mwt.data.builtin` holds one per built-in dataset,
:mod:`mwt.data.loaders` finds and reads the files a spec names, and :mod:`mwt.data.download`
fetches its official files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from mwt.data.augment import Augmentation

__all__ = ["DatasetSpec", "OfficialFile"]


class OfficialFile(NamedTuple):
    """One official file of a dataset: its name and what a good copy must look like."""

    name: str
    sha256: str | None
    size: int | None = None
    md5: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    """Everything torch-mwt knows about one built-in dataset, in one place.

    ``format`` names the generic loader that reads its files (``"idx"``, ``"cifar"`` or
    ``"svhn"``, see :data:`mwt.data.loaders.LOADERS`).  ``files`` maps each split to the files
    it is made of, with their official size and checksums where those are pinned; for an
    archive format (CIFAR) that is the archive, and ``extract_to`` the folder it holds.
    ``classes`` are the class names (``None``: the files name them, as CIFAR's meta file does);
    ``mean``/``std`` the per-channel statistics of the train split, used to normalise every
    split.  Files are looked for in the given data directory, else ``$MWT_DATA``, then
    ``system_dirs``, then ``~/.cache/mwt/<name>``, each with its ``subdirs``; ``how`` tells a
    user how to get them.  ``urls`` are the official servers, the first one tried first (none:
    not downloadable); ``package_dir`` is the folder of :mod:`mwt.data` the files ship in, for a
    dataset embedded in the package.
    """

    name: str
    pretty: str
    format: str
    files: Mapping[str, tuple[OfficialFile, ...]] = field(hash=False)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augmentation: Augmentation
    image_size: tuple[int, int]
    classes: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    subdirs: tuple[str, ...] = ()
    system_dirs: tuple[Path, ...] = ()
    urls: tuple[str, ...] = ()
    extract_to: str | None = None
    how: str = ""
    package_dir: str | None = None

    def __post_init__(self) -> None:
        files = {split: tuple(entries) for split, entries in self.files.items()}
        object.__setattr__(self, "files", MappingProxyType(files))
        for name in ("mean", "std", "aliases", "subdirs", "system_dirs", "urls"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)
