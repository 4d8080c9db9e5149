"""Run directories made by ``mwt train``: their data, their modules and their reuse.

These helpers are what the CLI's ``modularize``, ``reuse`` and ``demo`` commands do; they keep the
commands thin and let Python users drive the same steps on a run directory.
"""

from pathlib import Path

import torch

from mwt.checkpoint import load_run
from mwt.data import ImageData, load_dataset
from mwt.errors import MwtError
from mwt.gates import make_modular
from mwt.models import create_model
from mwt.modularize import ModuleSet, modularize
from mwt.module_io import save_module
from mwt.reuse import ReusedModule, reuse, select_classes, subtask_accuracy
from mwt.train import default_alpha_beta, resolve_device, train


def train_run(out, *, model: str = "vgg16", dataset: str = "demo", width: float = 1.0,
              epochs: int = 200, standard: bool = False, alpha: float | None = None,
              beta: float | None = None, seed: int = 0, data_dir=None, download: bool = False,
              resume: bool = False, device=None, progress: bool = True, verbose: bool = True,
              hflip: bool = True, **options):
    """Train a registered model on a registered dataset into run directory ``out``.

    alpha/beta default to the paper's Table 1 for the model and dataset. ``options`` go to
    ``mwt.train`` (lr, batch_size, weight_decay, reduction, ...).
    """
    train_data = load_dataset(dataset, "train", data_dir, download=download)
    test_data = load_dataset(dataset, "test", data_dir, download=download)
    a_def, b_def = default_alpha_beta(model, dataset)
    alpha = a_def if alpha is None else alpha
    beta = b_def if beta is None else beta
    torch.manual_seed(seed)
    net = create_model(model, train_data.num_classes, train_data.in_channels, width)
    if not standard:
        net = make_modular(net)
    settings = {"model": model, "dataset": dataset, "width": width, "epochs": epochs,
                "standard": standard, "alpha": alpha, "beta": beta, "seed": seed,
                "data_dir": data_dir, "download": download, "hflip": hflip, **options}
    info = {"dataset": train_data.name, "classes": list(train_data.classes),
            "mean": list(train_data.mean), "std": list(train_data.std), "cli": settings}
    return train(net, train_data, test_data, epochs=epochs, alpha=alpha, beta=beta, out=out,
                 resume=resume, device=device, progress=progress, verbose=verbose,
                 run_info=info, seed=seed, hflip=train_data.hflip and hflip, **options)


def run_dataset(config: dict, split: str, data_dir=None) -> ImageData:
    """The split of the dataset a run was trained on (``data_dir`` overrides the saved one)."""
    name = config.get("dataset")
    if not name:
        raise MwtError("the run does not name its dataset; it was not made by `mwt train`")
    saved_dir = (config.get("cli") or {}).get("data_dir")
    return load_dataset(name, split, data_dir if data_dir is not None else saved_dir)


def modularize_run(run_dir, tau: float = 0.9, *, data_dir=None, device=None,
                   batch_size: int = 1024) -> ModuleSet:
    """Modularize a trained run on its training split and save the modules next to it."""
    device = resolve_device(device)
    model, config = load_run(run_dir, device)
    data = run_dataset(config, "train", data_dir)
    mods = modularize(model, data, tau, batch_size=batch_size, device=device,
                      classes=config.get("classes"))
    mods.save(run_dir)
    return mods


def load_modules(run_dir) -> ModuleSet:
    if not (Path(run_dir) / "modules.json").exists():
        raise MwtError(f"{run_dir} has no modules yet; run `mwt modularize {run_dir}` first")
    return ModuleSet.load(run_dir)


def reuse_run(run_dir, classes, out=None, *, epochs: int = 5, data_dir=None, device=None,
              keep_gates: bool = False, fold_gates: bool = False, lr: float = 0.01,
              seed: int = 0, verbose: bool = True) -> ReusedModule:
    """Fine-tune the mixed module of ``classes`` from a modularized run; save it to ``out``."""
    device = resolve_device(device)
    if out is not None and (Path(out) / "module.json").exists():
        raise MwtError(f"{out} already holds a module; choose another --out")
    mods = load_modules(run_dir)
    model, config = load_run(run_dir, device)
    train_data = run_dataset(config, "train", data_dir)
    test_data = run_dataset(config, "test", data_dir)
    sub = reuse(model, mods, classes, train_data, test_data=test_data, epochs=epochs,
                keep_gates=keep_gates, fold_gates=fold_gates, lr=lr, seed=seed, device=device,
                verbose=verbose)
    if out is not None:
        save_module(sub, out, extra={"dataset": config.get("dataset"), "mean": config.get("mean"),
                                     "std": config.get("std")})
    return sub


def standard_subtask_accuracy(run_dir, classes: list[int], data_dir=None, device=None) -> float:
    """A (standard) model's test accuracy on a sub-task: argmax over the target classes' logits."""
    device = resolve_device(device)
    model, config = load_run(run_dir, device)
    test = select_classes(run_dataset(config, "test", data_dir), classes)
    return subtask_accuracy(model, test, classes)
