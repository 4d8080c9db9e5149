"""Small shared fixtures-by-function for the tests: tiny data and narrow models."""

import torch

import mwt


def demo_subset(split: str = "train", per_class: int = 50):
    """A stratified slice of the embedded demo data, ``per_class`` images of each class."""
    data = mwt.load_dataset("demo", split)
    idx = torch.cat([torch.nonzero(data.labels == c).flatten()[:per_class]
                     for c in range(data.num_classes)])
    return data.subset(idx)


def tiny_modular(name: str = "vgg16", width: float = 0.125, in_channels: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    return mwt.make_modular(mwt.create_model(name, 10, in_channels, width))
