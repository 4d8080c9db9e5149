"""How a :class:`~mwt.data.spec.DatasetSpec` becomes an :class:`~mwt.data.tensors.ImageData`.

One generic loader per file format (:data:`LOADERS`: IDX, CIFAR pickle batches, SVHN ``.mat``),
driven by the spec; importing this module registers every built-in dataset.

Where the files are looked for (all but the embedded ``demo``):

1. ``data_dir`` when given -- *only* there (and in the spec's ``subdirs`` of it);
2. otherwise ``$MWT_DATA``, then the system places (:data:`mwt.data.builtin.SYSTEM_DIRS`:
   ``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST, from Debian's
   ``dataset-fashion-mnist``), then ``~/.cache/mwt/<name>``, each with the spec's ``subdirs``.

With ``download=True`` missing files are fetched into ``data_dir`` or ``~/.cache/mwt/<name>``.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from mwt.data import builtin, readers
from mwt.data.download import cache_dir
from mwt.data.download import download as _download
from mwt.data.registry import register_dataset
from mwt.data.spec import DatasetSpec
from mwt.data.tensors import ImageData
from mwt.errors import DatasetNotFoundError, MwtError

__all__ = ["LOADERS", "load_builtin", "load_idx", "load_cifar", "load_svhn"]


# --------------------------------------------------------------------------- shared steps


def _places(spec: DatasetSpec, data_dir) -> list[Path]:
    if data_dir is not None:
        bases = [Path(data_dir).expanduser()]
    else:
        bases = []
        env = os.environ.get("MWT_DATA")
        if env:
            bases.append(Path(env).expanduser())
        bases += list(builtin.SYSTEM_DIRS.get(spec.name, spec.system_dirs))
        bases.append(cache_dir(spec.name))
    out: list[Path] = []
    for base in bases:
        for cand in (base, *(base / sub for sub in spec.subdirs if sub != base.name)):
            if cand not in out:
                out.append(cand)
    return out


def _not_found(spec: DatasetSpec, split: str, what: str, places: list[Path], data_dir):
    looked = ", ".join(str(p) for p in places)
    how = (f"put the files in {data_dir} or pass --download (download=True)"
           if data_dir is not None else spec.how)
    return DatasetNotFoundError(
        f"{spec.pretty} {split} files ({what}) not found in {looked}; to get them, {how}"
    )


def _find(spec: DatasetSpec, split: str, data_dir, download: bool,
          locate: Callable[[Path], object], what: str):
    """The first ``locate(directory)`` that is not None over the places; downloads if allowed."""
    places = _places(spec, data_dir)
    for place in places:
        if place.is_dir():
            found = locate(place)
            if found is not None:
                return found
    if download:
        target = _download(spec.name, data_dir, splits=[split])
        for place in (target, *(target / sub for sub in spec.subdirs)):
            if place.is_dir():
                found = locate(place)
                if found is not None:
                    return found
        places = [target]
    raise _not_found(spec, split, what, places, data_dir)


def _make(spec: DatasetSpec, images_u8: np.ndarray, labels: np.ndarray,
          classes: list[str] | None = None) -> ImageData:
    """Normalise uint8 images with the spec's statistics and wrap them with its metadata."""
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return ImageData(images=x.div_(255.0).sub_(mean).div_(std),
                     labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
                     classes=list(spec.classes if classes is None else classes),
                     hflip=spec.augmentation.hflip, name=spec.name, mean=spec.mean,
                     std=spec.std, augmentation=spec.augmentation)


# ----------------------------------------------------------------------------------- IDX


def _idx_names(official: str) -> list[str]:
    """Accepted spellings of an IDX file: the official one (``train-images-idx3-ubyte.gz``), the
    uncompressed one, and the ``train-images.idx3-ubyte`` of some mirrors."""
    stem = official.removesuffix(".gz")
    return [name + ext for name in (stem, stem.replace("-idx", ".idx", 1)) for ext in (".gz", "")]


def _idx_pair(directory: Path, images: str, labels: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files in ``directory``, or None if either is absent."""
    found = []
    for official in (images, labels):
        hit = next((directory / n for n in _idx_names(official) if (directory / n).is_file()),
                   None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def _embedded(spec: DatasetSpec, name: str) -> bytes:
    folder = importlib.resources.files("mwt.data").joinpath(spec.package_dir)
    try:
        return folder.joinpath(name).read_bytes()
    except OSError as exc:
        raise DatasetNotFoundError(
            f"the embedded {spec.name} data {name} is missing from {folder}; reinstall "
            "torch-mwt or rebuild it with scripts/build_demo_data.py"
        ) from exc


def load_idx(spec: DatasetSpec, split: str, data_dir, download: bool) -> ImageData:
    """An IDX images file and labels file (the MNIST format), plain or gzip-compressed."""
    images, labels = (f.name for f in spec.files[split])
    if spec.package_dir is not None:
        img, lab = _embedded(spec, images), _embedded(spec, labels)
        where = f"{spec.name} data"
    else:
        what = ", ".join(name.removesuffix(".gz") + "[.gz]" for name in (images, labels))
        img, lab = _find(spec, split, data_dir, download,
                         lambda d: _idx_pair(d, images, labels), what)
        where = str(img.parent)
    x, y = readers.read_idx(img), readers.read_idx(lab)
    h, w = spec.image_size
    k = len(spec.classes)
    if x.ndim != 3 or x.shape[1:] != (h, w) or x.dtype != np.uint8:
        raise MwtError(f"{where}: the images file holds {x.dtype} {x.shape}, not uint8 "
                       f"[N, {h}, {w}]; download it again")
    if y.ndim != 1 or len(y) != len(x):
        raise MwtError(f"{where}: {len(x)} images but labels of shape {y.shape}; download the "
                       "files again")
    if len(y) and (y.min() < 0 or y.max() > k - 1):
        raise MwtError(f"{where}: labels outside 0..{k - 1}; download the files again")
    return _make(spec, x[:, None], y.astype(np.int64))


# --------------------------------------------------------------------------------- CIFAR


def load_cifar(spec: DatasetSpec, split: str, data_dir, download: bool) -> ImageData:
    """CIFAR-10/100 python batches: the extracted folder or the official archive."""
    folder, archive = spec.extract_to, spec.files[split][0].name

    def locate(d: Path) -> Path | None:
        if readers.cifar_dir_complete(d, spec.name, split):
            return d
        return d / archive if (d / archive).is_file() else None

    src = _find(spec, split, data_dir, download, locate, f"{folder}/ or {archive}")
    x, y, classes = readers.read_cifar(src, spec.name, split)
    return _make(spec, x, y, classes)


# ---------------------------------------------------------------------------------- SVHN


def load_svhn(spec: DatasetSpec, split: str, data_dir, download: bool) -> ImageData:
    """SVHN cropped digits: one ``.mat`` file per split."""
    fname = spec.files[split][0].name

    def locate(d: Path) -> Path | None:
        return d / fname if (d / fname).is_file() else None

    x, y = readers.read_svhn(_find(spec, split, data_dir, download, locate, fname))
    return _make(spec, x, y)


# ---------------------------------------------------------------------------- registration

# spec.format -> loader(spec, split, data_dir, download)
LOADERS: dict[str, Callable[..., ImageData]] = {
    "idx": load_idx,
    "cifar": load_cifar,
    "svhn": load_svhn,
}


def load_builtin(spec: DatasetSpec, split: str, data_dir=None, download: bool = False
                 ) -> ImageData:
    """Load split ``split`` of the dataset ``spec`` describes with its format's loader."""
    if split not in spec.files:
        raise MwtError(f"unknown split {split!r} for {spec.name}; use "
                       f"{' or '.join(repr(s) for s in spec.splits)}")
    return LOADERS[spec.format](spec, split, data_dir, download)


for _spec in builtin.BUILTIN_DATASETS:
    register_dataset(_spec.name, partial(load_builtin, _spec), aliases=_spec.aliases)
