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


def small_run(out, per_class: int = 6, batch_size: int = 30):
    """A finished one-epoch run of a tiny modular VGG16 on a slice of the demo data, with the
    config `mwt train` writes, so that the CLI's modularize/reuse/resume can work on it."""
    train, test = demo_subset("train", per_class), demo_subset("test", 2)
    settings = {"model": "vgg16", "dataset": "demo", "width": 0.125, "epochs": 1,
                "standard": False, "alpha": 0.5, "beta": 1.5, "seed": 0, "data_dir": None,
                "download": False, "hflip": True, "augment": True, "lr": 0.05,
                "weight_decay": 0.0, "batch_size": batch_size, "reduction": "classes"}
    info = {"dataset": "demo", "classes": list(train.classes), "mean": list(train.mean),
            "std": list(train.std), "cli": settings}
    return mwt.train(tiny_modular(), train, test, epochs=1, batch_size=batch_size, out=out,
                     progress=False, verbose=False, device="cpu", run_info=info)
