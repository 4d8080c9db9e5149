"""Standard and modular training (paper section 3.2.3, Table 1 hyper-parameters).

The whole split lives on the training device as one tensor; a batch is a slice of a seeded
permutation, augmented on the device. A modular model (one with gates) is trained on
O = CE + alpha * L_ch + beta * L_cp; a standard model on CE alone. Each epoch appends one line to
``metrics.jsonl`` and rewrites the checkpoint atomically, so an interrupted run resumes from its
last finished epoch and ends with exactly the weights of an uninterrupted one.
"""

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from mwt.checkpoint import WEIGHTS, load_checkpoint_into, save_checkpoint
from mwt.data import as_tensors
from mwt.data.augment import augment
from mwt.errors import MwtError
from mwt.gates import is_modular, kernel_rate, model_config
from mwt.io import read_json, write_json
from mwt.losses import REDUCTIONS, modular_objective

# Table 1 of the paper: (alpha, beta) per model and dataset; others use DEFAULT_ALPHA_BETA.
PAPER_ALPHA_BETA = {
    ("vgg16", "cifar10"): (0.5, 1.5), ("vgg16", "svhn"): (1.0, 2.0),
    ("resnet18", "cifar10"): (0.5, 1.5), ("resnet18", "svhn"): (1.3, 1.5),
    ("simcnn", "cifar10"): (0.5, 3.5), ("simcnn", "svhn"): (0.5, 2.0),
    ("rescnn", "cifar10"): (1.0, 2.2), ("rescnn", "svhn"): (1.0, 1.8),
}
DEFAULT_ALPHA_BETA = (0.5, 1.5)


def default_alpha_beta(model: str | None, dataset: str | None) -> tuple[float, float]:
    return PAPER_ALPHA_BETA.get((str(model).lower(), str(dataset).lower()), DEFAULT_ALPHA_BETA)


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (defaults: the paper's Table 1 and section 4.1)."""

    epochs: int = 200
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    batch_size: int = 128
    alpha: float = 0.5
    beta: float = 1.5
    reduction: str = "classes"
    crop_padding: int = 4
    hflip: bool = True
    seed: int = 0
    eval_batch_size: int = 1024

    def validate(self) -> None:
        if self.epochs < 1:
            raise MwtError(f"epochs must be at least 1, got {self.epochs}")
        if not self.lr > 0:
            raise MwtError(f"lr must be positive, got {self.lr}")
        if self.batch_size < 2:
            raise MwtError(f"batch size must be at least 2, got {self.batch_size}")
        if self.alpha < 0 or self.beta < 0 or not (math.isfinite(self.alpha)
                                                   and math.isfinite(self.beta)):
            raise MwtError(f"alpha and beta must be finite and >= 0, got {self.alpha} and "
                           f"{self.beta}")
        if self.reduction not in REDUCTIONS:
            raise MwtError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        if self.crop_padding < 0:
            raise MwtError(f"crop padding must be >= 0, got {self.crop_padding}")


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict] = field(default_factory=list)
    out: Path | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device=None) -> torch.device:
    """The device to run on: as asked, else CUDA when present, else the CPU."""
    if device is None:
        return default_device()
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise MwtError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MwtError("device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return device


def lr_at(config: TrainConfig, epoch: int) -> float:
    """Cosine annealing over the run, stepped per epoch (CosineAnnealingLR, T_max = epochs)."""
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / config.epochs))


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
        return {k: float(v) / max(self.n, 1) for k, v in self.sums.items()}


def _batch_stats(model, x, y, config: TrainConfig, modular: bool):
    logits, masks = _forward(model, x, modular)
    ce = F.cross_entropy(logits, y)
    stats = {"ce": ce, "acc": (logits.argmax(1) == y).float().mean()}
    loss = ce
    if modular:
        loss, ch, cp = modular_objective(ce, masks, y, config.alpha, config.beta, config.reduction)
        stats.update(cohesion_loss=ch, coupling_loss=cp, kernel_rate=kernel_rate(masks))
    return loss, {k: v.detach() for k, v in stats.items()}


@torch.no_grad()
def evaluate(model: nn.Module, data, config: TrainConfig | None = None,
             device: torch.device | str | None = None) -> dict[str, float]:
    """Accuracy, CE and (for a modular model) the MwT losses and kernel rate on a data set."""
    config = config or TrainConfig()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    x_all, y_all = as_tensors(data)
    was_training = model.training
    model.eval()
    meter, modular = _Meter(), is_modular(model)
    for start in range(0, len(y_all), config.eval_batch_size):
        x = x_all[start:start + config.eval_batch_size].to(device, non_blocking=True)
        y = y_all[start:start + config.eval_batch_size].to(device, non_blocking=True)
        _, stats = _batch_stats(model, x, y, config, modular)
        meter.add(len(y), **stats)
    model.train(was_training)
    return meter.means()


def _check_data(x: torch.Tensor, y: torch.Tensor, model: nn.Module, what: str) -> None:
    if len(y) == 0:
        raise MwtError(f"{what} data is empty")
    num_classes = model_config(model).get("num_classes")
    if num_classes is not None and int(y.max()) >= num_classes:
        raise MwtError(f"{what} data has label {int(y.max())} but the model has only "
                       f"{num_classes} classes")
    if int(y.min()) < 0:
        raise MwtError(f"{what} data has a negative label {int(y.min())}")


def train(model: nn.Module, train_data, test_data=None, *, epochs: int = 200,
          alpha: float | None = None, beta: float | None = None, out=None, resume: bool = False,
          device: torch.device | str | None = None, progress: bool = True, verbose: bool = True,
          run_info: dict | None = None, restore_best: bool = False, **options) -> TrainResult:
    """Train ``model`` in place: modular training if it has gates, standard training otherwise.

    ``train_data`` / ``test_data``: an ``(X, y)`` pair of tensors, a torch Dataset or a DataLoader.
    ``out``: run directory for ``config.json``, ``metrics.jsonl`` and the checkpoint; with
    ``resume=True`` an interrupted run there continues from its last finished epoch.
    ``progress`` shows a progress bar per epoch, ``verbose`` prints one summary line per epoch.
    ``restore_best``: end with the weights of the epoch with the best ``test_data`` accuracy;
    pass a validation split (never the test set) as ``test_data`` for this.
    ``options``: any other ``TrainConfig`` field (lr, batch_size, seed, reduction, ...).
    """
    unknown = set(options) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise MwtError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    a_def, b_def = DEFAULT_ALPHA_BETA
    config = TrainConfig(epochs=epochs, alpha=a_def if alpha is None else alpha,
                         beta=b_def if beta is None else beta, **options)
    config.validate()
    device = resolve_device(device)
    modular = is_modular(model)

    x_train, y_train = as_tensors(train_data)
    _check_data(x_train, y_train, model, "training")
    test = None
    if test_data is not None:
        test = as_tensors(test_data)
        _check_data(*test, model, "test")
    x_train, y_train = x_train.to(device), y_train.to(device)
    model.to(device)

    params = list(model.parameters())
    optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                nesterov=config.nesterov, weight_decay=config.weight_decay)
    run_config = {"train": asdict(config), "model": model_config(model), "modular": modular,
                  **(run_info or {})}
    history: list[dict] = []
    start_epoch = 0
    out = Path(out) if out is not None else None
    if out is not None:
        start_epoch, history = _prepare_run_dir(out, run_config, resume, model, optimizer, device)

    n = len(y_train)
    steps = max(1, n // config.batch_size)  # drop the last partial batch, as a DataLoader would
    if restore_best and test is None:
        raise MwtError("restore_best needs validation data passed as test_data")
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
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for step in bar:
            idx = perm[step * config.batch_size:(step + 1) * config.batch_size]
            x = augment(x_train[idx], padding=config.crop_padding, hflip=config.hflip,
                        generator=generator)
            y = y_train[idx]
            loss, stats = _batch_stats(model, x, y, config, modular)
            if not torch.isfinite(loss):
                raise MwtError(f"the loss became {float(loss)} at epoch {epoch + 1}; "
                               "try a lower learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.add(len(y), **stats)
            if progress and step % 10 == 0:
                bar.set_postfix(_postfix(stats))
        bar.close()
        record = {"epoch": epoch + 1, "lr": lr}
        record.update({f"train_{k}": v for k, v in meter.means().items()})
        if test is not None:
            scores = evaluate(model, test, config, device)
            record.update({f"test_{k}": v for k, v in scores.items()})
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if restore_best and record["test_acc"] > best_acc:
            best_acc = record["test_acc"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if verbose:
            tqdm.write(_summary(record))
        if out is not None:
            save_checkpoint(out, model, optimizer, epoch + 1, run_config, history)
    if best_state is not None:
        model.load_state_dict(best_state)
    return TrainResult(model=model, history=history, out=out)


def _postfix(stats: dict) -> dict:
    keys = ("ce", "acc", "cohesion_loss", "coupling_loss", "kernel_rate")
    short = {"cohesion_loss": "Lch", "coupling_loss": "Lcp", "kernel_rate": "kr"}
    return {short.get(k, k): f"{float(stats[k]):.3f}" for k in keys if k in stats}


def _summary(record: dict) -> str:
    parts = [f"epoch {record['epoch']}"]
    for key, label in (("train_acc", "train acc"), ("test_acc", "test acc"),
                       ("train_ce", "ce"), ("train_cohesion_loss", "L_ch"),
                       ("train_coupling_loss", "L_cp"), ("train_kernel_rate", "kernel rate")):
        if key in record:
            parts.append(f"{label} {record[key]:.4f}")
    parts.append(f"{record['seconds']:.1f}s")
    return " | ".join(parts)


def _prepare_run_dir(out: Path, run_config: dict, resume: bool, model, optimizer, device):
    """Create or reopen a run directory; never overwrite a finished or interrupted run silently."""
    config_path = out / "config.json"
    ckpt_exists = (out / WEIGHTS).exists()  # the safetensors file is the source of truth
    if resume:
        if not ckpt_exists:
            raise MwtError(f"nothing to resume: {out} has no checkpoint")
        _check_same_run(read_json(config_path), run_config, out)
        write_json(config_path, run_config)  # the number of epochs may have been extended
        return load_checkpoint_into(out, model, optimizer, device)
    if ckpt_exists or config_path.exists():
        raise MwtError(f"{out} already holds a run; pass --resume to continue it or choose "
                       "another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_json(config_path, run_config)
    (out / "metrics.jsonl").touch()
    return 0, []


def _check_same_run(saved: dict, current: dict, out: Path) -> None:
    fixed = ("model", "modular")
    for key in fixed:
        if saved.get(key) != current.get(key):
            raise MwtError(f"cannot resume {out}: its {key} was {saved.get(key)} but is now "
                           f"{current.get(key)}")
    for key, value in saved.get("train", {}).items():
        if key != "epochs" and current["train"].get(key) != value:
            raise MwtError(f"cannot resume {out}: training option {key} was {value} but is now "
                           f"{current['train'].get(key)}")
