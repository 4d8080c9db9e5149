"""Standard and modular training (paper section 3.2.3, Table 1 hyper-parameters).

The whole split lives on the training device as one tensor; a batch is a slice of a seeded
permutation, augmented on the device. Modular training is the objective of a method
(``mwt.methods``: MwT's O = CE + alpha * L_ch + beta * L_cp on a gated model by default, NeMo's
on a gated model, MODA's on a standard one); a model without gates under a gated method trains
on CE alone (standard training). Each epoch appends one line to
``metrics.jsonl`` and rewrites the checkpoint atomically, so an interrupted run resumes from its
last finished epoch and ends with exactly the weights of an uninterrupted one.
"""

import contextlib
import math
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from mwt import distributed as dist
from mwt.checkpoint import save_checkpoint
from mwt.config import TrainConfig, make_config
from mwt.data import as_tensors
from mwt.data.augment import Augmentation, augment, default_crop_padding
from mwt.devices import resolve_device
from mwt.errors import MwtError, MwtWarning
from mwt.extract_check import check_extractable
from mwt.fusion import training_view
from mwt.gates import kernel_rate, unit_noun
from mwt.inference import batches, evaluating
from mwt.io import (
    lock_directory,
)
from mwt.methods import Method, get_method
from mwt.metrics import batch_jaccard
from mwt.model_info import model_config
from mwt.run_dir import RUN_FORMAT, check_run_dir, prepare_run_dir

FINITE_CHECK_EVERY = 50  # steps between host-side checks that the loss stayed finite


def resolve_augmentation(augment, data, image_shape) -> Augmentation:
    """The training augmentation for ``data``.

    ``augment=None``: the data's own (a registered dataset's ``ImageData.augmentation``; none
    for tensors, Datasets and DataLoaders, whose size and meaning we cannot know).
    ``True``: random crop with padding scaled to the image side (4 px at 32x32) and flips.
    ``False``: none. An ``Augmentation`` (or a dict of its fields) is used as given, a crop
    padding of None in it meaning the scaled default.
    """
    h, w = int(image_shape[-2]), int(image_shape[-1])
    if augment is None:
        return getattr(data, "augmentation", None) or Augmentation()
    if augment is True:
        return Augmentation(crop_padding=default_crop_padding(h, w), hflip=True)
    if augment is False:
        return Augmentation()
    if isinstance(augment, dict):
        unknown = set(augment) - {"crop_padding", "hflip"}
        if unknown:
            raise MwtError(f"unknown augmentation option(s): {', '.join(sorted(unknown))}; "
                           "use crop_padding and hflip")
        pad = augment.get("crop_padding")
        augment = Augmentation(crop_padding=default_crop_padding(h, w) if pad is None else pad,
                               hflip=augment.get("hflip", False))
    if not isinstance(augment, Augmentation):
        raise MwtError(f"augment must be None, True, False, an Augmentation or a dict, got "
                       f"{type(augment).__name__}")
    return augment


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Cosine annealing stepped per epoch (CosineAnnealingLR, T_max = cosine_span x epochs: with
    the default span 1 the rate reaches zero after the last epoch)."""
    t_max = config.cosine_span * config.epochs
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / t_max))


def epoch_seed(seed: int, epoch: int) -> int:
    # Every epoch's randomness (shuffle, augmentation, dropout) derives from (seed, epoch), so a
    # resumed run needs no saved RNG state to continue exactly as an uninterrupted one.
    return (seed * 1_000_003 + epoch) % (2**63)


def _forward(model, x, modular: bool):
    if modular:
        return model(x, return_masks=True)
    return model(x), None


class _Meter:
    """Sums of per-batch statistics, kept as device tensors to avoid a sync per batch."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, count: int, **values):
        for k, v in values.items():
            if v is not None:
                self.sums[k] = self.sums.get(k, 0.0) + v.detach().float() * count
        self.n += count

    def means(self) -> dict[str, float]:
        """Means over everything added, on every rank together when there are several."""
        keys = sorted(self.sums)
        if not dist.is_distributed():
            return {k: float(self.sums[k]) / max(self.n, 1) for k in keys}
        device = self.sums[keys[0]].device if keys else dist.comm_device()
        totals = torch.stack([torch.as_tensor(self.sums[k], device=device, dtype=torch.float32)
                              for k in keys] + [torch.tensor(float(self.n), device=device)])
        totals = dist.all_reduce_sum(totals).tolist()
        return {k: v / max(totals[-1], 1) for k, v in zip(keys, totals[:-1])}


def _batch_stats(model, x, y, config: TrainConfig, method: Method | None, weight: float = 1.0,
                 num_classes: int | None = None):
    """The objective of one batch and its statistics; ``method`` None: standard training.
    ``model`` returns its unit signals with ``return_masks=True`` (a method's signal view).
    Under several processes the CE is this rank's (``weight`` makes DDP's gradient average the
    global mean) and the method's losses are the global batch's unless ``config.local_losses``."""
    logits, masks = _forward(model, x, method is not None)
    ce = F.cross_entropy(logits, y)
    stats = {"ce": ce, "acc": (logits.argmax(1) == y).float().mean()}
    loss = ce * weight
    if method is not None:
        stats["kernel_rate"] = kernel_rate(masks)
        if not config.local_losses:
            masks, y = dist.gather_masks(masks, y)
        loss, parts = method.objective(loss, masks, y, config.alpha, config.beta,
                                       config.reduction, num_classes)
        stats.update(parts)
        # The paper's Figure 5 figures of this batch (Jaccard, no filtering), from its masks.
        stats["batch_cohesion"], stats["batch_coupling"] = batch_jaccard(
            masks, y, num_classes if num_classes is not None else int(y.max()) + 1)
    return loss, {k: v.detach() for k, v in stats.items()}


def evaluate(model: nn.Module, data, config: TrainConfig | None = None,
             device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy, CE and (for modular training, ``config.method``) the method's losses and
    kernel rate on a data set."""
    if config is None or config.alpha is None or config.beta is None:
        config = (config or TrainConfig()).resolved(model_config(model).get("name"),
                                                    getattr(data, "name", None), Augmentation())
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x_all, y_all = as_tensors(data)
    if dist.is_distributed():  # each rank scores its share; the means are over all of them
        x_all, y_all = x_all[dist.rank()::dist.world_size()], y_all[dist.rank()::dist.world_size()]
    meter, method = _Meter(), _training_method(model, config)
    view = method.signal_view(model, fuse=False) if method is not None else model
    local = replace(config, local_losses=True)  # ranks may score different numbers of batches
    with evaluating(model):
        for x, y in batches(x_all, y_all, config.eval_batch_size, device):
            _, stats = _batch_stats(view, x, y, local, method)
            meter.add(len(y), **stats)
    return meter.means()


def _check_data(x: torch.Tensor, y: torch.Tensor, model: nn.Module, what: str) -> None:
    if len(y) == 0:
        raise MwtError(f"{what} data is empty")
    if what == "training" and len(y) < 2:
        raise MwtError("training needs at least 2 samples (BatchNorm needs 2 per batch)")
    in_channels = model_config(model).get("in_channels")
    if in_channels is not None and x.shape[1] != in_channels:
        raise MwtError(f"{what} images have {x.shape[1]} channels but the model takes "
                       f"{in_channels}")
    num_classes = model_config(model).get("num_classes")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise MwtError(f"{what} data has label {int(y.max())} but the model has only "
                       f"{num_classes} classes")
    if int(y.min()) < 0:
        raise MwtError(f"{what} data has a negative label {int(y.min())}")


def train(model: nn.Module, train_data, test_data=None, *, epochs: int | None = None,
          alpha: float | None = None, beta: float | None = None, out=None, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True, verbose: bool = True,
          run_info: dict | None = None, restore_best: bool = False, augment=None,
          compile: bool = False, **options) -> TrainResult:
    """Train ``model`` in place with a method's objective (modular training), or standard.

    ``method`` (a ``TrainConfig`` field): ``"mwt"`` (default), ``"nemo"`` or ``"moda"``, or a
    method object (``mwt.methods.NeMo(temperature=0.3)``); ``method_options={...}`` sets a
    named method's hyper-parameters. MwT and NeMo train the gates of a modular model
    (``make_modular``; a model without gates then trains on CE alone, standard training); MODA
    trains a model without gates.

    ``train_data`` / ``test_data``: an ``(X, y)`` pair of tensors, a torch Dataset or a DataLoader.
    ``out``: run directory for ``config.json``, ``metrics.jsonl`` and the checkpoint; with
    ``resume=True`` an interrupted run there continues from its last finished epoch.
    ``progress`` shows a progress bar per epoch, ``verbose`` prints one summary line per epoch.
    ``restore_best``: end with the weights of the epoch with the best ``test_data`` accuracy;
    pass a validation split (never the test set) as ``test_data`` for this.
    ``augment``: None (default) uses the data's own augmentation, which only registered datasets
    have (``mwt.load_dataset``: crop + flip for CIFAR and Fashion-MNIST, crop only for SVHN);
    tensors, Datasets and DataLoaders are not augmented. ``True`` asks for a random crop padded
    by 1/8 of the image side plus flips, ``False`` for none, ``Augmentation(crop_padding, hflip)``
    for exactly that. ``crop_padding=`` / ``hflip=`` options override either part.
    ``options``: any other ``TrainConfig`` field (lr, batch_size, seed, reduction, ...), or
    ``config=TrainConfig(...)`` as a whole; fields not given keep ``TrainConfig``'s defaults, and
    alpha/beta default to the paper's Table 1 for a registered model and dataset.
    The run directory ``out`` is locked for the whole call: a second process gets a clear error.
    ``compile``: run the training step (model, gates and losses) through ``torch.compile``.
    ``track_modularity=N`` (a ``TrainConfig`` field): after each epoch, the Jaccard cohesion,
    coupling, KRR and kernel rate of a fixed sample of N training images go into the epoch's
    record as ``track_*`` keys (paper Figure 5; see ``mwt.tracking``).

    Under an initialised process group of several ranks (``torchrun``), the model trains with
    DistributedDataParallel: ``batch_size`` is the global batch, each rank takes its share of
    it, the MwT losses see the whole global batch (``local_losses=True``: each rank's own), and
    only rank 0 writes ``out`` and holds its lock (see ``mwt.distributed``).
    """
    if isinstance(options.get("method"), Method):
        chosen = options.pop("method")
        if options.get("method_options"):
            raise MwtError("give a method object or method_options, not both")
        options.update(method=chosen.name, method_options=chosen.options())
    config = make_config(options.pop("config", None), epochs=epochs, alpha=alpha, beta=beta,
                         **options)
    method = _training_method(model, config)  # refuses a model the method cannot train
    device = resolve_device(device)
    if restore_best and test_data is None:
        raise MwtError("restore_best needs validation data passed as test_data")
    if not isinstance(compile, bool):
        raise MwtError(f"compile must be true or false, got {compile!r}")
    _check_distributed(config, device)
    if out is not None:  # only rank 0 looks at the run directory
        out = Path(dist.on_main(lambda: str(check_run_dir(out, resume))))

    x_train, y_train = as_tensors(train_data)
    _check_data(x_train, y_train, model, "training")
    if method is not None:
        check_extractable(model, x_train[:2])  # before any epoch: modules must be cuttable
    test = None
    if test_data is not None:
        test = as_tensors(test_data)
        _check_data(*test, model, "test")
    config = config.resolved(model_config(model).get("name"), getattr(train_data, "name", None),
                             resolve_augmentation(augment, train_data, x_train.shape))
    with contextlib.ExitStack() as stack:
        if out is not None:
            dist.on_main(lambda: stack.enter_context(lock_directory(out, "mwt train")) and None)
        return _train(model, config, x_train, y_train, test, device, out, resume, progress,
                      verbose and dist.is_main(), run_info, restore_best, compile)


def _check_distributed(config: TrainConfig, device: torch.device) -> None:
    """What several processes need, checked before any work."""
    world = dist.world_size()
    if config.sync_bn and world > 1 and device.type != "cuda":
        raise MwtError("--sync-bn needs CUDA devices (SyncBatchNorm has no CPU/gloo "
                       "implementation); leave it off on the CPU")
    if config.batch_size < 2 * world:
        raise MwtError(f"the global batch size {config.batch_size} is too small for {world} "
                       f"processes: each needs at least 2 samples per batch for BatchNorm")


def steps_per_epoch(n: int, batch_size: int, ranks: int = 1) -> int:
    """Batches per epoch: every full batch, plus the last partial one when it holds at least
    half a batch and 2 samples per rank (a smaller remainder is seen in other epochs, as every
    epoch reshuffles). The only batch of a small data set is never dropped."""
    full, rest = divmod(n, batch_size)
    return max(1, full + (1 if 2 * rest >= batch_size and rest >= 2 * ranks else 0))


def _training_method(model: nn.Module, config: TrainConfig) -> Method | None:
    """The method that trains ``model`` under ``config``, or None for standard training."""
    method = get_method(config.method, config.method_options)
    return method if method.trains(model) else None


def _step_function(model, config: TrainConfig, method: Method | None, device, compile: bool,
                   num_classes: int):
    """The training forward (model, signals, losses) as it runs: the method's signal view (gates
    fused into their BatchNorm, or MODA's activations), BatchNorm synchronised over ranks
    (``sync_bn``), DDP over several processes, and ``torch.compile`` when asked."""
    sync_bn = config.sync_bn and dist.is_distributed()
    view = (method.signal_view(model, sync_bn=sync_bn) if method is not None
            else training_view(model, fuse=False, sync_bn=sync_bn))
    if dist.is_distributed():
        from torch.nn.parallel import DistributedDataParallel

        view = DistributedDataParallel(view, device_ids=[device.index]
                                       if device.type == "cuda" else None)

    def step(x, y, weight):
        return _batch_stats(view, x, y, config, method, weight, num_classes)

    return torch.compile(step) if compile else step


def _train(model, config: TrainConfig, x_train, y_train, test, device, out, resume, progress,
           verbose, run_info, restore_best, compile=False) -> TrainResult:
    method = _training_method(model, config)
    modular = method is not None
    rate = rate_label(model) if modular else "kernel rate"  # only modular runs print a rate
    x_train, y_train = x_train.to(device), y_train.to(device)
    model.to(device)

    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    run_config = {"format": RUN_FORMAT, "train": asdict(config), "model": model_config(model),
                  "modular": modular, "world_size": dist.world_size(), **(run_info or {})}
    history: list[dict] = []
    start_epoch = 0
    if out is not None:
        start_epoch, history = dist.on_main(prepare_run_dir, out, run_config, resume, model,
                                            optimizer, device)
        dist.broadcast_training_state(model, optimizer)
    num_classes = model_config(model).get("num_classes") or int(y_train.max()) + 1
    batch_loss = _step_function(model, config, method, device, compile, num_classes)
    track = None
    if config.track_modularity and dist.is_main():  # no collectives in it: rank 0 alone
        from mwt.tracking import modularity_tracker

        track = modularity_tracker(model, x_train, y_train, config.track_modularity,
                                   config.eval_batch_size)

    n = len(y_train)
    steps = steps_per_epoch(n, config.batch_size, dist.world_size())
    best_acc, best_state = -1.0, None
    generator = torch.Generator(device=device)
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        lr = lr_at(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(epoch_seed(config.seed, epoch))
        generator.manual_seed(epoch_seed(config.seed, epoch))
        perm = torch.randperm(n, device=device, generator=generator)
        model.train()
        meter = _Meter()
        finite = torch.ones((), dtype=torch.bool, device=device)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress or not dist.is_main(), dynamic_ncols=True)
        for step in bar:
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            # Every rank augments the whole global batch with the same generator and keeps its
            # share, so the data do not depend on the number of ranks.
            x = dist.shard(augment(x_train[idx], padding=config.crop_padding,
                                   hflip=config.hflip, generator=generator))
            y = dist.shard(y_train[idx])
            loss, stats = batch_loss(x, y, dist.local_weight(len(y), len(idx)))
            # Checked on the device and acted on every FINITE_CHECK_EVERY steps: reading it on
            # the host every step would make each step wait for the GPU.
            finite = finite & torch.isfinite(loss.detach())
            if (step + 1) % FINITE_CHECK_EVERY == 0 or step == steps - 1:
                _check_finite(finite, epoch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.add(len(y), **stats)
            if progress and step % 10 == 0:
                bar.set_postfix(_postfix(stats, method))
        bar.close()
        record = {"epoch": epoch + 1, "lr": lr}
        record.update({f"train_{k}": v for k, v in meter.means().items()})
        if test is not None:
            scores = evaluate(model, test, config, device)
            record.update({f"test_{k}": v for k, v in scores.items()})
        record["seconds"] = time.perf_counter() - t0
        if track is not None:  # after "seconds": tracking is not part of an epoch's time
            t1 = time.perf_counter()
            record.update(track(), track_seconds=time.perf_counter() - t1)
        history.append(record)
        if restore_best and record["test_acc"] > best_acc:
            best_acc = record["test_acc"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if verbose:
            tqdm.write(_summary(record, method, rate))
        if out is not None and dist.is_main():
            save_checkpoint(out, model, optimizer, epoch + 1, run_config, history)
    if best_state is not None:
        model.load_state_dict(best_state)
    notes = _run_warnings(history, method, rate)
    for note in notes if dist.is_main() else ():
        warnings.warn(note, MwtWarning, stacklevel=3)
    return TrainResult(model=model, history=history, warnings=notes)


def _check_finite(finite: torch.Tensor, epoch: int) -> None:
    """Stop before a non-finite loss reaches a checkpoint (the last one stays good); every rank
    stops when any one has seen it."""
    bad = dist.all_reduce_sum((~finite).to(torch.float32).reshape(1))
    if bool(bad > 0):
        raise MwtError(f"the loss became NaN or infinite in epoch {epoch + 1}; the run keeps "
                       "its last checkpoint; start again with a lower learning rate")


def _run_warnings(history: list[dict], method: Method | None,
                  rate: str = "kernel rate") -> list[str]:
    """What a user should know about a finished run."""
    note = method.unmodular_note(history, rate) if method is not None else None
    return [note] if note else []


def _loss_labels(method: Method | None) -> tuple[tuple[str, str], ...]:
    return method.loss_names if method is not None else ()


def _postfix(stats: dict, method: Method | None) -> dict:
    keys = (("ce", "ce"), ("acc", "acc"), *_loss_labels(method), ("kernel_rate", "kr"))
    return {short: f"{float(stats[k]):.3f}" for k, short in keys if k in stats}


def rate_label(model: nn.Module) -> str:
    """What the mean share of used units is called in progress lines: "kernel rate" for CNNs
    (the paper's word), "unit rate" where units are a transformer's heads and neurons."""
    try:
        return f"{unit_noun(model).removesuffix('s')} rate"
    except MwtError:  # a model fx cannot trace has no gated units to name
        return "kernel rate"


def _summary(record: dict, method: Method | None, rate: str = "kernel rate") -> str:
    parts = [f"epoch {record['epoch']}"]
    losses = tuple((f"train_{k}", short) for k, short in _loss_labels(method))
    for key, label in (("train_acc", "train acc"), ("test_acc", "test acc"),
                       ("train_ce", "ce"), *losses, ("train_kernel_rate", rate)):
        if key in record:
            parts.append(f"{label} {record[key]:.4f}")
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)
