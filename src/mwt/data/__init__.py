"""Datasets for torch-mwt: in-memory image splits, a tiny registry, readers and augmentation.

>>> from mwt.data import load_dataset
>>> train = load_dataset("demo", "train")     # embedded Fashion-MNIST subset, no download
>>> train.images.shape, train.num_classes
(torch.Size([6000, 1, 28, 28]), 10)

Where things live: ``tensors`` (:class:`ImageData`, :func:`as_tensors`), ``registry``
(register/list/load by name), ``spec`` (:class:`~mwt.data.spec.DatasetSpec`), ``builtin`` (one
spec per built-in dataset), ``loaders`` (finding and reading a spec's files, one loader per file
format), ``readers`` (the file formats), ``download`` (fetching official files) and ``augment``
(batch augmentation).
"""

from mwt.data import loaders  # noqa: F401  (registers the built-in datasets)
from mwt.data.augment import Augmentation, default_crop_padding
from mwt.data.registry import DATASETS, list_datasets, load_dataset, register_dataset
from mwt.data.tensors import ImageData, as_tensors

__all__ = [
    "Augmentation",
    "DATASETS",
    "ImageData",
    "as_tensors",
    "default_crop_padding",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
