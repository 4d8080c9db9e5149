"""Datasets for torch-mwt: in-memory image splits, a tiny registry, readers and augmentation.

>>> from mwt.data import load_dataset
>>> train = load_dataset("demo", "train")     # embedded Fashion-MNIST subset, no download
>>> train.images.shape, train.num_classes
(torch.Size([6000, 1, 28, 28]), 10)
"""

from mwt.data.augment import Augmentation, default_crop_padding
from mwt.data.registry import (
    DATASETS,
    ImageData,
    as_tensors,
    list_datasets,
    load_dataset,
    register_dataset,
)

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
