"""Run directories made by ``mwt train``: their data, their modules and their reuse.

These helpers are what the CLI's ``train``, ``modularize``, ``reuse`` and ``demo`` commands do; they
keep the commands thin and let Python users drive the same steps on a run directory. Each one
checks everything it will need (options, directories, classes) before any expensive work, and
holds the lock of the directory it writes into for as long as it works there.
"""

import contextlib
from pathlib import Path

import torch

from mwt import distributed as dist
from mwt.checkpoint import WEIGHTS, load_run, run_method
from mwt.config import RunSpec, make_config
from mwt.data import ImageData, load_dataset
from mwt.data.augment import Augmentation
from mwt.devices import resolve_device
from mwt.errors import CheckpointError, MwtError
from mwt.gates import make_modular
from mwt.io import lock_directory, remove_stale_temps
from mwt.models import create_model
from mwt.modularize import ModuleSet, check_batch_size, check_tau, modularize
from mwt.module_io import check_module_out, save_module
from mwt.reuse import (
    ReusedModule,
    check_finetune_options,
    reuse,
    select_classes,
    subtask_accuracy,
)
from mwt.run_dir import check_run_dir, is_run_dir
from mwt.train import train


def train_run(out, spec: RunSpec | None = None, *, resume: bool = False, device=None,
              progress: bool = True, verbose: bool = True, compile: bool = False, **settings):
    """Train the run described by ``spec`` (or by flat ``settings``, see
    ``RunSpec.from_settings``) into run directory ``out``; with ``resume=True`` and no spec,
    the run's own saved spec is continued (``epochs=`` may extend it). Under several processes
    (torchrun) only rank 0 reads and writes ``out``; see ``mwt.train``."""
    dist.on_main(lambda: check_run_dir(out, resume) and None)
    if spec is None and resume and not set(settings) - {"epochs"}:
        spec = RunSpec.from_dict(dist.on_main(lambda: RunSpec.load(out).to_dict()),
                                 Path(out) / "config.json")
        if settings.get("epochs") is not None:
            spec.train = make_config(spec.train, epochs=settings["epochs"])
    elif spec is None:
        spec = RunSpec.from_settings(**settings)
    elif settings:
        raise MwtError("give train_run either a RunSpec or settings, not both")
    spec.validate()
    device = resolve_device(device)
    train_data = load_dataset(spec.dataset, "train", spec.data_dir, download=spec.download)
    test_data = load_dataset(spec.dataset, "test", spec.data_dir, download=spec.download)
    torch.manual_seed(spec.train.seed)
    net = create_model(spec.model, train_data.num_classes, train_data.in_channels, spec.width)
    if not spec.standard and spec.train.training_method().gated:
        net = make_modular(net)
    info = {"dataset": train_data.name, "classes": list(train_data.classes),
            "mean": list(train_data.mean), "std": list(train_data.std), "run": spec.to_dict()}
    return train(net, train_data, test_data, out=out, resume=resume, device=device,
                 progress=progress, verbose=verbose, run_info=info, config=spec.train,
                 compile=compile)


def run_dataset(config: dict, split: str, data_dir=None) -> ImageData:
    """The split of the dataset a run was trained on (``data_dir`` overrides the saved one)."""
    name = config.get("dataset")
    if not name or not isinstance(name, str):
        raise MwtError("the run does not name its dataset; it was not made by `mwt train`")
    saved = config.get("run") or config.get("cli") or {}
    saved_dir = saved.get("data_dir") if isinstance(saved, dict) else None
    if data_dir is None and not isinstance(saved_dir, (str, type(None))):
        raise CheckpointError("the run's saved data_dir is not a path")
    return load_dataset(name, split, data_dir if data_dir is not None else saved_dir)


def _check_run(run_dir) -> Path:
    if run_dir is None or str(run_dir).strip() == "":
        raise MwtError("the run directory must not be empty")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MwtError(f"{run_dir} is not a directory; give a run directory made by `mwt train`")
    if not (run_dir / WEIGHTS).is_file():
        raise MwtError(f"{run_dir} holds no checkpoint ({WEIGHTS}); is it a run directory made "
                       "by `mwt train`, and has it finished an epoch?")
    return run_dir


def modularize_run(run_dir, tau: float = 0.9, *, data_dir=None, device=None,
                   batch_size: int = 1024) -> ModuleSet:
    """Modularize a trained run on its training split, by the rule of the method it trained
    with (a standard run: MwT's), and save the modules next to it.

    Module sets of different tau live side by side (``modules-tau0.90.*``); the run is locked
    while this works, so a training resume cannot change the weights under it.
    """
    run_dir = _check_run(run_dir)
    tau = check_tau(tau)
    batch_size = check_batch_size(batch_size)
    device = resolve_device(device)
    # Under several processes each rank scores its share of the data; rank 0 locks and saves.
    with lock_directory(run_dir, "mwt modularize") if dist.is_main() else \
            contextlib.nullcontext():
        if dist.is_main():
            remove_stale_temps(run_dir)
        model, config = load_run(run_dir, device)
        data = run_dataset(config, "train", data_dir)
        mods = modularize(model, data, tau, batch_size=batch_size, device=device,
                          classes=config.get("classes"),
                          method=run_method(config) if config.get("modular") else None)
        if dist.is_main():
            mods.save(run_dir)
    return mods


def load_modules(run_dir, tau: float | None = None) -> ModuleSet:
    """The module set of ``run_dir`` at ``tau`` (or its only one)."""
    run_dir = _check_run(run_dir)
    return ModuleSet.load(run_dir, None if tau is None else check_tau(tau))


def reuse_run(run_dir, classes, out=None, *, tau: float | None = None,
              epochs: int | None = None,
              data_dir=None, device=None, keep_gates: bool = False, fold_gates: bool = False,
              lr: float = 0.01, seed: int = 0, verbose: bool = True,
              compare=None, round_kernels: int | None = None, cosine_span: float = 1.0,
              recalibrate_bn: bool = False) -> ReusedModule:
    """Fine-tune the mixed module of ``classes`` from a modularized run; save it to ``out``.
    ``epochs``: see ``mwt.reuse`` (None: 5, or none for a MODA run's module, which keeps the
    target classes' rows instead of a new head).

    Fine-tuning augments as the run trained (:func:`run_augmentation`). ``compare``: another
    run (e.g. the standard model) whose accuracy on the same sub-task is added to the report as
    ``compare_acc``. Everything is checked before fine-tuning starts.
    """
    check_finetune_options(0 if epochs is None else epochs, lr, round_kernels=round_kernels,
                           cosine_span=cosine_span)
    if out is not None:
        check_module_out(out)
    if compare is not None:
        _check_run(compare)
    device = resolve_device(device)
    with lock_directory(out, "mwt reuse") if out is not None else contextlib.nullcontext():
        sub = _reuse_run(run_dir, classes, out, tau, device, compare, data_dir,
                         epochs=epochs, keep_gates=keep_gates, fold_gates=fold_gates, lr=lr,
                         seed=seed, verbose=verbose, round_kernels=round_kernels,
                         cosine_span=cosine_span, recalibrate_bn=recalibrate_bn)
    return sub


def run_augmentation(config: dict, data) -> Augmentation:
    """The augmentation a run trained with: its dataset's own, with the run's ``crop_padding`` /
    ``hflip`` where it set them (a cpu-preset run trains with flips only). Fine-tuning a module
    of the run uses the same, so a module never meets images its model was not trained on."""
    base = getattr(data, "augmentation", None) or Augmentation()
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    train = run.get("train") if isinstance(run.get("train"), dict) else {}
    pad, flip = train.get("crop_padding"), train.get("hflip")
    return Augmentation(crop_padding=base.crop_padding if pad is None else pad,
                        hflip=base.hflip if flip is None else flip)


def _reuse_run(run_dir, classes, out, tau, device, compare, data_dir, **reuse_options):
    mods = load_modules(run_dir, tau)
    ids = mods.class_ids(classes)
    model, config = load_run(run_dir, device)
    train_data = run_dataset(config, "train", data_dir)
    test_data = run_dataset(config, "test", data_dir)
    reuse_options.setdefault("augment", run_augmentation(config, train_data))
    if compare is not None:
        compare_model, compare_config = load_run(compare, device)
        if compare_config.get("dataset") != config.get("dataset"):
            raise MwtError(f"{compare} was trained on {compare_config.get('dataset')}, not on "
                           f"{config.get('dataset')}; compare runs of the same dataset")
    sub = reuse(model, mods, ids, train_data, test_data=test_data, device=device,
                **reuse_options)
    sub.report["tau"] = mods.tau
    if compare is not None:
        test = select_classes(test_data, ids)
        sub.report["compare_acc"] = subtask_accuracy(compare_model, test, ids)
    if out is not None:
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        save_module(sub, out, extra={"dataset": config.get("dataset"), "mean": config.get("mean"),
                                     "std": config.get("std"),
                                     "method": {"name": mods.method,
                                                "options": train.get("method_options", {}),
                                                "alpha": train.get("alpha"),
                                                "beta": train.get("beta")}})
    return sub


__all__ = ["RunSpec", "train_run", "modularize_run", "load_modules", "reuse_run",
           "run_augmentation", "run_dataset", "is_run_dir"]
