"""Dataset registry, :class:`ImageData`, :func:`load_dataset` and :func:`as_tensors`.

Built-in datasets: ``demo`` (a stratified Fashion-MNIST subset embedded in the package),
``fashion-mnist``, ``cifar10``, ``cifar100`` and ``svhn``.  Add your own with
:func:`register_dataset`; a loader is called as ``loader(split, data_dir, download)`` and returns
an :class:`ImageData`.

Where the files are looked for (fashion-mnist, cifar10, cifar100, svhn):

1. ``data_dir`` when given -- *only* there (and in its dataset-named subdirectories);
2. otherwise ``$MWT_DATA`` (and its dataset-named subdirectories), then the system place
   (``/usr/share/datasets/fashion-mnist`` for Fashion-MNIST, from Debian's
   ``dataset-fashion-mnist``), then ``~/.cache/mwt/<name>``.

With ``download=True`` missing files are fetched into ``data_dir`` or ``~/.cache/mwt/<name>``.
"""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from mwt.data import readers
from mwt.data.augment import Augmentation
from mwt.data.download import cache_dir
from mwt.data.download import download as _download
from mwt.errors import DatasetNotFoundError, MwtError

__all__ = [
    "ImageData",
    "DATASETS",
    "register_dataset",
    "list_datasets",
    "load_dataset",
    "canonical_name",
    "as_tensors",
    "NORMALIZATION",
    "AUGMENTATION",
    "SYSTEM_DIRS",
]

# ------------------------------------------------------------------------------- ImageData


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
            raise MwtError("ImageData.images must be a tensor [N, C, H, W].")
        if not isinstance(self.labels, torch.Tensor) or self.labels.dim() != 1:
            raise MwtError("ImageData.labels must be a 1-D tensor [N].")
        if len(self.images) != len(self.labels):
            raise MwtError(f"ImageData has {len(self.images)} images but {len(self.labels)} "
                           "labels.")
        self.classes = [str(c) for c in self.classes]
        if self.mean is not None:
            self.mean = tuple(float(m) for m in self.mean)
        if self.std is not None:
            self.std = tuple(float(s) for s in self.std)
        if self.augmentation is not None and not isinstance(self.augmentation, Augmentation):
            raise MwtError("ImageData.augmentation must be an mwt.data.Augmentation or None, got "
                           f"{type(self.augmentation).__name__}.")

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
                           f"{len(self)} samples.")
        if idx.dtype != torch.bool and idx.numel() and (
                int(idx.min()) < -len(self) or int(idx.max()) >= len(self)):
            raise MwtError(f"ImageData.subset got indices from {int(idx.min())} to "
                           f"{int(idx.max())}, outside 0..{len(self) - 1}.")
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
            raise MwtError(f"as_tensors could not turn the {what} into a tensor ({exc}).") \
                from exc
    raise MwtError(f"as_tensors got {type(a).__name__} as {what}; expected a tensor or numpy "
                   "array.")


def _finish(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dim() != 1:
        raise MwtError(f"as_tensors needs labels of shape [N], got {tuple(y.shape)}.")
    if y.dtype not in _INT_DTYPES:
        raise MwtError(f"as_tensors needs integer class labels, got dtype {y.dtype}.")
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise MwtError(f"as_tensors needs images [N, C, H, W] or [N, H, W], got shape "
                       f"{tuple(x.shape)}.")
    if len(x) != len(y):
        raise MwtError(f"as_tensors got {len(x)} images but {len(y)} labels.")
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    elif x.is_floating_point():
        x = x.float()
    else:
        raise MwtError(f"as_tensors needs float images or uint8 images in 0..255, got dtype "
                       f"{x.dtype}.")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise MwtError("as_tensors cannot use the data: the images contain NaN or infinite "
                       "values.")
    y = y.long()
    if len(y) and int(y.min()) < 0:
        raise MwtError("as_tensors got negative class labels; labels must be 0..K-1.")
    return x.contiguous(), y.contiguous()


def _item_pair(item, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise MwtError(f"as_tensors needs a {what} yielding (image, label) pairs, got "
                       f"{type(item).__name__}.")
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
            raise MwtError("as_tensors got an empty DataLoader.")
        return _finish(torch.cat(xs), torch.cat(ys))
    if isinstance(data, torch.utils.data.Dataset):
        try:
            n = len(data)  # type: ignore[arg-type]
        except TypeError as exc:
            raise MwtError("as_tensors needs a Dataset with a length; wrap an iterable one in a "
                           "DataLoader.") from exc
        if n == 0:
            raise MwtError("as_tensors got an empty Dataset.")
        pairs = [_item_pair(data[i], "Dataset") for i in range(n)]
        try:
            x = torch.stack([p[0].cpu() for p in pairs])
            y = torch.stack([p[1].cpu().reshape(()) for p in pairs])
        except RuntimeError as exc:
            raise MwtError(f"as_tensors could not stack the Dataset's samples ({exc}).") from exc
        return _finish(x, y)
    raise MwtError(f"as_tensors cannot use a {type(data).__name__}; pass (X, y), an ImageData, a "
                   "Dataset or a DataLoader.")


# ----------------------------------------------------------------------------- registry

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
        raise MwtError(f"Unknown dataset {name!r}; known datasets are "
                       f"{', '.join(list_datasets())}.")
    return key


def load_dataset(
    name: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> ImageData:
    """Load split ``split`` ("train" or "test") of dataset ``name`` as an :class:`ImageData`."""
    key = canonical_name(name)
    data = DATASETS[key](_key(split), data_dir, download)
    if not isinstance(data, ImageData):
        raise MwtError(f"The loader registered for dataset {key!r} returned a "
                       f"{type(data).__name__}, not an ImageData.")
    return data


# --------------------------------------------------------------------- built-in datasets

NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
}
NORMALIZATION["demo"] = NORMALIZATION["fashion-mnist"]

# The training augmentation of each built-in dataset: the paper's random crop with 4 pixels of
# zero padding and a random horizontal flip -- except for SVHN, whose digits must not be mirrored.
AUGMENTATION: dict[str, Augmentation] = {
    "demo": Augmentation(crop_padding=4, hflip=True),
    "fashion-mnist": Augmentation(crop_padding=4, hflip=True),
    "cifar10": Augmentation(crop_padding=4, hflip=True),
    "cifar100": Augmentation(crop_padding=4, hflip=True),
    "svhn": Augmentation(crop_padding=4, hflip=False),
}

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
SVHN_CLASSES = [str(i) for i in range(10)]

# Where a distribution package installs the files (tests may patch this).
SYSTEM_DIRS: dict[str, list[Path]] = {
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "cifar10": [],
    "cifar100": [],
    "svhn": [],
}
# Dataset-named subdirectories also searched inside each place.
_SUBDIRS: dict[str, list[str]] = {
    "fashion-mnist": ["fashion-mnist", "FashionMNIST/raw"],
    "cifar10": ["cifar-10-batches-py", "cifar10"],
    "cifar100": ["cifar-100-python", "cifar100"],
    "svhn": ["svhn"],
}
_PRETTY = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100",
           "svhn": "SVHN"}
_HOW = {
    "fashion-mnist": "apt-get install dataset-fashion-mnist, or pass --data-dir (or set "
                     "MWT_DATA), or --download (download=True)",
    "cifar10": "pass --data-dir (or set MWT_DATA) to where cifar-10-batches-py or "
               "cifar-10-python.tar.gz is, or --download (download=True)",
    "cifar100": "pass --data-dir (or set MWT_DATA) to where cifar-100-python or "
                "cifar-100-python.tar.gz is, or --download (download=True)",
    "svhn": "pass --data-dir (or set MWT_DATA) to where train_32x32.mat / test_32x32.mat are, "
            "or --download (download=True)",
}


def _check_split(name: str, split: str) -> None:
    if split not in ("train", "test"):
        raise MwtError(f"Unknown split {split!r} for {name}; use 'train' or 'test'.")


def _normalise(images_u8: np.ndarray, name: str) -> torch.Tensor:
    mean, std = NORMALIZATION[name]
    x = torch.from_numpy(np.ascontiguousarray(images_u8)).to(torch.float32)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return x.div_(255.0).sub_(m).div_(s)


def _make(name: str, images_u8: np.ndarray, labels: np.ndarray, classes: list[str],
          hflip: bool = True) -> ImageData:
    mean, std = NORMALIZATION[name]
    return ImageData(images=_normalise(images_u8, name),
                     labels=torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)),
                     classes=list(classes), hflip=hflip, name=name, mean=mean, std=std,
                     augmentation=AUGMENTATION[name])


def _places(name: str, data_dir) -> list[Path]:
    if data_dir is not None:
        bases = [Path(data_dir).expanduser()]
    else:
        bases = []
        env = os.environ.get("MWT_DATA")
        if env:
            bases.append(Path(env).expanduser())
        bases += list(SYSTEM_DIRS.get(name, []))
        bases.append(cache_dir(name))
    out: list[Path] = []
    for base in bases:
        for cand in (base, *(base / sub for sub in _SUBDIRS[name] if sub != base.name)):
            if cand not in out:
                out.append(cand)
    return out


def _not_found(name: str, split: str, what: str, places: list[Path], data_dir) -> None:
    looked = ", ".join(str(p) for p in places)
    how = (f"put the files in {data_dir} or pass --download (download=True)"
           if data_dir is not None else _HOW[name])
    raise DatasetNotFoundError(
        f"{_PRETTY[name]} {split} files ({what}) not found in {looked}; to get them, {how}."
    )


def _resolve(name: str, split: str, data_dir, download: bool, locate, what: str):
    """Find the data with ``locate(dir) -> source | None``; download if allowed and missing."""
    places = _places(name, data_dir)
    for place in places:
        if place.is_dir():
            found = locate(place)
            if found is not None:
                return found
    if download:
        target = _download(name, data_dir, splits=[split])
        for place in (target, *(target / sub for sub in _SUBDIRS[name])):
            if place.is_dir():
                found = locate(place)
                if found is not None:
                    return found
        places = [target]
    _not_found(name, split, what, places, data_dir)


# --- Fashion-MNIST / demo


def _idx_pair(directory: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of ``split`` in ``directory``, or None if either is absent.

    Accepts the official names (``train-images-idx3-ubyte.gz``), uncompressed ones, and the
    ``train-images.idx3-ubyte`` spelling of some mirrors.
    """
    prefix = "train" if split == "train" else "t10k"
    found = []
    for kind, dim in (("images", 3), ("labels", 1)):
        names = [f"{prefix}-{kind}{sep}idx{dim}-ubyte{ext}" for sep in ("-", ".")
                 for ext in (".gz", "")]
        hit = next((directory / n for n in names if (directory / n).is_file()), None)
        if hit is None:
            return None
        found.append(hit)
    return found[0], found[1]


def _idx_dataset(name: str, images_src, labels_src, where: str) -> ImageData:
    x = readers.read_idx(images_src)
    y = readers.read_idx(labels_src)
    if x.ndim != 3 or x.shape[1:] != (28, 28) or x.dtype != np.uint8:
        raise MwtError(f"{where}: the images file holds {x.dtype} {x.shape}, not uint8 "
                       "[N, 28, 28]; download it again.")
    if y.ndim != 1 or len(y) != len(x):
        raise MwtError(f"{where}: {len(x)} images but labels of shape {y.shape}; download the "
                       "files again.")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise MwtError(f"{where}: labels outside 0..9; download the files again.")
    return _make(name, x[:, None], y.astype(np.int64), FASHION_MNIST_CLASSES)


def _load_fashion_mnist(split: str, data_dir, download: bool) -> ImageData:
    _check_split("fashion-mnist", split)
    prefix = "train" if split == "train" else "t10k"
    what = f"{prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]"
    img, lab = _resolve("fashion-mnist", split, data_dir, download,
                        lambda d: _idx_pair(d, split), what)
    return _idx_dataset("fashion-mnist", img, lab, str(img.parent))


DEMO_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _load_demo(split: str, data_dir=None, download: bool = False) -> ImageData:
    """The embedded Fashion-MNIST subset (600/100 images per class); ignores data_dir."""
    _check_split("demo", split)
    demo = importlib.resources.files("mwt.data").joinpath("demo")
    img_name, lab_name = DEMO_FILES[split]
    try:
        img, lab = demo.joinpath(img_name).read_bytes(), demo.joinpath(lab_name).read_bytes()
    except OSError as exc:
        raise DatasetNotFoundError(
            f"The embedded demo data {img_name} is missing from {demo}; reinstall torch-mwt or "
            "rebuild it with scripts/build_demo_data.py."
        ) from exc
    return _idx_dataset("demo", img, lab, "demo data")


# --- CIFAR


def _cifar_locator(variant: str, split: str):
    layout = readers.CIFAR_LAYOUT[variant]

    def locate(d: Path):
        if readers.cifar_dir_complete(d, variant, split):
            return d
        archive = d / layout["archive"]
        return archive if archive.is_file() else None

    return locate


def _load_cifar(variant: str, split: str, data_dir, download: bool) -> ImageData:
    _check_split(variant, split)
    layout = readers.CIFAR_LAYOUT[variant]
    what = f"{layout['folder']}/ or {layout['archive']}"
    src = _resolve(variant, split, data_dir, download, _cifar_locator(variant, split), what)
    x, y, classes = readers.read_cifar(src, variant, split)
    return _make(variant, x, y, classes)


# --- SVHN


def _load_svhn(split: str, data_dir, download: bool) -> ImageData:
    _check_split("svhn", split)
    fname = f"{split}_32x32.mat"

    def locate(d: Path):
        p = d / fname
        return p if p.is_file() else None

    path = _resolve("svhn", split, data_dir, download, locate, fname)
    x, y = readers.read_svhn(path)
    return _make("svhn", x, y, SVHN_CLASSES, hflip=False)


register_dataset("demo", _load_demo)
register_dataset("fashion-mnist", _load_fashion_mnist,
                 aliases=("fashion_mnist", "fmnist", "fashionmnist"))
register_dataset("cifar10", lambda split, data_dir, download:
                 _load_cifar("cifar10", split, data_dir, download), aliases=("cifar-10",))
register_dataset("cifar100", lambda split, data_dir, download:
                 _load_cifar("cifar100", split, data_dir, download), aliases=("cifar-100",))
register_dataset("svhn", _load_svhn)
