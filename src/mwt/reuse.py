"""On-demand reuse (paper section 3.4): a mixed module for M classes with a new N -> M head.

How a sub-task module is composed is the module set's method's (``mwt.methods``): MwT and NeMo
(and CNNSplitter's sets) give it a new head and fine-tune it, as below; MODA keeps the target
classes' rows of the last layer (``mwt.output_rows``) and does not fine-tune.

The mixed module keeps the union of the target classes' kernels and the original N-way output;
a randomly initialised head (ReLU, then Linear N -> M) maps it to the sub-task, and the whole
sub-model is fine-tuned for a few epochs on the original training samples of those classes. The
epoch kept is the best one on a validation split carved from those training samples.

A small sub-task gets few batches per epoch, so fine-tuning runs at least ``MIN_FINETUNE_STEPS``
optimisation steps: when ``epochs`` would give fewer, the number of epochs is raised to
``ceil(MIN_FINETUNE_STEPS / batches per epoch)`` (the report says how many ran). A module whose
validation accuracy ends within ``CHANCE_MARGIN`` of chance (1/M) is reported with a warning.
"""

import math
import warnings
from dataclasses import replace

import torch
import torch.nn as nn

from mwt.checks import is_int, is_real
from mwt.data import as_tensors
from mwt.devices import resolve_device
from mwt.errors import MwtError, MwtWarning
from mwt.extract import extract_module, kernel_share
from mwt.gates import count_gated_kernels, unit_noun
from mwt.inference import batches, evaluating, recalibrate_batchnorm
from mwt.macs import count_macs, unit_block_macs
from mwt.methods import METHODS
from mwt.model_info import mwt_info, update_mwt_info
from mwt.module_set import ModuleSet
from mwt.output_rows import keep_output_rows
from mwt.train import resolve_augmentation, steps_per_epoch, train

MIN_FINETUNE_STEPS = 100
DEFAULT_FINETUNE_EPOCHS = 5
CHANCE_MARGIN = 0.05


class ReusedModule(nn.Module):
    """A mixed module plus its sub-task head; ``forward`` returns M-way logits.

    ``report``: what ``reuse`` measured (kernel share, MACs, accuracy before and after
    fine-tuning, warnings); ``input_shape``: one sample's shape, from the module's ModuleInfo.
    """

    def __init__(self, module: nn.Module, num_outputs: int, classes: list[int],
                 report: dict | None = None, head: bool = True):
        super().__init__()
        self.module = module
        # head=False: ``module`` already returns the M classes' logits (MODA's rows).
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(num_outputs, len(classes))) if head \
            else None
        self.classes = list(classes)  # original class id of each output
        self.report: dict = dict(report or {})

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        info = mwt_info(self.module).module
        return info.input_shape if info is not None else None

    @property
    def composition(self) -> str:
        return "head" if self.head is not None else "rows"

    def forward(self, x):
        out = self.module(x)
        return self.head(out) if self.head is not None else out


def check_finetune_options(epochs, lr, batch_size: int = 128, round_kernels=None,
                           cosine_span: float = 1.0) -> None:
    """Fine-tuning settings, checked before anything is loaded or built."""
    if not is_real(cosine_span) or not 1.0 <= cosine_span <= 1000:
        raise MwtError(f"cosine span must be a number from 1 to 1000 (T_max = span x epochs), "
                       f"got {cosine_span!r}")
    if round_kernels is not None and (not is_int(round_kernels)
                                      or not 1 <= round_kernels <= 256):
        raise MwtError(f"round_kernels must be an integer from 1 to 256, got {round_kernels!r}")
    if not is_int(epochs) or not 0 <= epochs <= 100_000:
        raise MwtError(f"fine-tuning epochs must be an integer from 0 to 100000, got {epochs!r}")
    if not is_int(batch_size) or batch_size < 2:
        raise MwtError(f"batch size must be an integer of at least 2, got {batch_size!r}")
    if not is_real(lr) or lr <= 0:
        raise MwtError(f"lr must be a positive finite number, got {lr!r}")


def rounded_kernels(mods: ModuleSet, ids: list[int], multiple: int) -> torch.Tensor:
    """The mixed module's kernels with each layer's count rounded up to a multiple of
    ``multiple`` (or to the whole layer), adding the kernels that the target classes' samples
    use most often: convolution libraries are fastest on channel counts that fill their SIMD
    blocks (8 or 16 floats)."""
    kernels = mods.kernels_for(ids).clone()
    weights = mods.counts[ids].float()
    usage = (mods.frequencies[ids] * weights[:, None]).sum(0) / weights.sum().clamp(min=1)
    offset = 0
    for _, size in mods.layers:
        kept = kernels[offset:offset + size]
        want = min(size, -(-int(kept.sum()) // multiple) * multiple)
        extra = want - int(kept.sum())
        if extra > 0:
            score = usage[offset:offset + size].masked_fill(kept, -1.0)
            kept[torch.topk(score, extra).indices] = True
        offset += size
    return kernels


def select_classes(data, classes: list[int]):
    """The samples of ``classes``, with labels renumbered 0..M-1 in the order given."""
    x, y = as_tensors(data)
    lookup = torch.full((int(max(int(y.max()), max(classes))) + 1,), -1, dtype=torch.long)
    lookup[torch.tensor(classes)] = torch.arange(len(classes))
    new = lookup.to(y.device)[y]
    keep = new >= 0
    if not bool(keep.any()):
        raise MwtError(f"the data has no samples of classes {classes}")
    return x[keep], new[keep]


def subtask_accuracy(model: nn.Module, data, classes: list[int] | None = None,
                     batch_size: int = 1024) -> float:
    """Accuracy on (x, y) with y in 0..M-1. With ``classes``, ``model`` gives N-way logits and
    predicts the best of the M target classes' logits (a module used without fine-tuning)."""
    x_all, y_all = data
    correct = 0
    with evaluating(model):
        for x, y in batches(x_all, y_all, batch_size, next(model.parameters()).device):
            logits = model(x)
            if classes is not None:
                logits = logits[:, classes]
            correct += int((logits.argmax(1) == y).sum())
    return correct / max(len(y_all), 1)


def _split(x, y, fraction: float, seed: int):
    if not 0 <= fraction < 1:
        raise MwtError(f"val_fraction must lie in [0, 1), got {fraction}")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g).to(y.device)
    n_val = int(round(len(y) * fraction))
    if fraction > 0 and n_val == 0:
        n_val = 1
    val, tr = perm[:n_val], perm[n_val:]
    return (x[tr], y[tr]), (x[val], y[val])


def composition_of(mods: ModuleSet) -> str:
    """How a sub-task module of ``mods`` is composed: its training method's way (``"head"`` or
    ``"rows"``); a search's set (CNNSplitter) gets a head."""
    method = METHODS.get(mods.method)
    return method.composition if method is not None else "head"


def reuse(model: nn.Module, mods: ModuleSet, classes, train_data, *, epochs: int | None = None,
          test_data=None, val_fraction: float = 0.1, keep_gates: bool = False,
          fold_gates: bool = False, lr: float = 0.01, batch_size: int = 128, seed: int = 0,
          device=None, progress: bool = False, verbose: bool = False,
          hflip: bool | None = None, augment=None,
          min_steps: int = MIN_FINETUNE_STEPS, round_kernels: int | None = None,
          cosine_span: float = 1.0, recalibrate_bn: bool = False) -> ReusedModule:
    """Build and fine-tune the sub-model for ``classes`` (ids or names); see module docstring.

    ``epochs``: fine-tuning epochs (default 5; a MODA set's module is never fine-tuned and
    takes none: its last layer keeps the target classes' rows instead of a new head).

    Returns a ``ReusedModule`` whose ``report`` holds the kernel share, MACs and parameters
    against the full model, and its accuracy before (the module's N-way logits restricted to the
    target classes) and after fine-tuning, on ``test_data`` when given, and ``warnings``.
    ``augment`` follows ``mwt.train`` (default: the training data's own augmentation, none for
    plain tensors); ``hflip=False`` turns flips off. ``min_steps``: the least number of
    optimisation steps fine-tuning runs (see the module docstring; 0 runs exactly ``epochs``).
    ``round_kernels``: round each layer's kernel count up to a multiple of this (e.g. 8), adding
    the kernels the target classes use most (see ``rounded_kernels``); faster on some hardware.
    ``cosine_span``: the fine-tuning schedule's T_max is this many times the epochs run (1.0:
    the rate reaches zero at the end; the reference code's 2.0 only halves it).
    ``recalibrate_bn``: recompute the module's BatchNorm statistics on its fine-tuning images
    before anything is measured (``mwt.inference.recalibrate_batchnorm``): a module with its
    gates removed or folded keeps statistics measured with per-sample gates, which no longer
    fit it.
    """
    if count_gated_kernels(model) != mods.total_kernels:
        raise MwtError(f"the module set was computed for a different model ({mods.total_kernels} "
                       f"kernels; this model has {count_gated_kernels(model)})")
    ids = mods.class_ids(classes)
    if len(ids) < 2:
        raise MwtError("reuse needs at least two classes (a sub-task with one class has nothing "
                       "to classify)")
    composition = composition_of(mods)
    if epochs is None:
        epochs = DEFAULT_FINETUNE_EPOCHS if composition == "head" else 0
    if composition == "rows" and epochs != 0:
        raise MwtError(f"{mods.method} modules are used without fine-tuning (the last layer keeps "
                       "the target classes' rows; there is no new head); leave epochs unset")
    check_finetune_options(epochs, lr, batch_size, round_kernels, cosine_span)
    device = resolve_device(device)
    model = model.to(device).eval()
    kernels = (mods.kernels_for(ids) if round_kernels is None
               else rounded_kernels(mods, ids, round_kernels))
    gate_values = mods.gate_means_for(ids) if fold_gates else None
    module = extract_module(model, kernels, keep_gates=keep_gates, fold_gates=fold_gates,
                            gate_values=gate_values)
    if composition == "rows":
        keep_output_rows(module, ids)
    x, y = select_classes(train_data, ids)
    input_shape = tuple(int(v) for v in x.shape[1:])
    update_mwt_info(module, module=replace(mwt_info(module).module, input_shape=input_shape))
    spec = mwt_info(model).spec
    num_outputs = spec.num_classes if spec is not None else mods.num_classes
    torch.manual_seed(seed)
    sub = ReusedModule(module, num_outputs, ids, head=composition == "head").to(device)
    rows = ids if composition == "head" else None  # the N-way logits to restrict, if any

    if not isinstance(recalibrate_bn, bool):
        raise MwtError(f"recalibrate_bn must be true or false, got {recalibrate_bn!r}")
    fit, val = _split(x, y, val_fraction, seed)
    if recalibrate_bn:
        recalibrate_batchnorm(module, fit[0])
    test = select_classes(test_data, ids) if test_data is not None else None
    before = {"val": subtask_accuracy(module, val, rows) if len(val[1]) else None,
              "test": subtask_accuracy(module, test, rows) if test is not None else None}
    aug = resolve_augmentation(augment, train_data, x.shape)
    options = {"crop_padding": aug.crop_padding, "hflip": aug.hflip and hflip is not False}
    history, ran = [], 0
    if epochs > 0:
        if len(fit[1]) < 2:
            raise MwtError(f"classes {ids} have only {len(fit[1])} training sample(s) left after "
                           "the validation split; fine-tuning needs at least 2")
        batch = min(batch_size, len(fit[1]))
        ran = max(epochs, math.ceil(min_steps / steps_per_epoch(len(fit[1]), batch)))
        result = train(sub, fit, val if len(val[1]) else None, epochs=ran, lr=lr,
                       batch_size=batch, seed=seed, device=device, progress=progress,
                       verbose=verbose, restore_best=len(val[1]) > 0,
                       cosine_span=cosine_span, **options)
        history = result.history
    sub.eval()
    full = extract_module(model, torch.ones(mods.total_kernels, dtype=torch.bool))
    # One forward each gives the totals and a transformer's attention and MLP share.
    macs_full, per_layer_full = count_macs(full, input_shape, per_layer=True)
    macs_sub, per_layer_sub = count_macs(sub, input_shape, per_layer=True)
    blocks_full = unit_block_macs(full, input_shape, per_layer=per_layer_full)
    params_full = sum(p.numel() for p in full.parameters())
    params_sub = sum(p.numel() for p in sub.parameters())
    sub.report = {
        "method": mods.method, "composition": composition,
        "classes": ids,
        "class_names": [mods.classes[i] for i in ids] if mods.classes else [],
        "kernel_share": kernel_share(module), "units": unit_noun(model),
        "macs": macs_sub, "macs_full": macs_full, "macs_ratio": macs_sub / macs_full,
        "unit_block_macs_ratio": (
            unit_block_macs(sub, input_shape, per_layer=per_layer_sub) / blocks_full
            if blocks_full else None),
        "params": params_sub, "params_full": params_full, "params_ratio": params_sub / params_full,
        "acc_before_finetune": before,
        "acc_after_finetune": {
            "val": max((r["test_acc"] for r in history), default=None),
            "test": subtask_accuracy(sub, test) if test is not None and epochs else None},
        "epochs": ran, "epochs_asked": epochs, "keep_gates": keep_gates,
        "round_kernels": round_kernels, "lr": lr, "cosine_span": cosine_span,
        "recalibrate_bn": recalibrate_bn,
        "fold_gates": fold_gates, "history": history,
    }
    sub.report["warnings"] = _reuse_warnings(sub.report, len(ids))
    for note in sub.report["warnings"]:
        warnings.warn(note, MwtWarning, stacklevel=2)
    return sub


def _reuse_warnings(report: dict, m: int) -> list[str]:
    """A module no better than guessing must not pass silently."""
    chance = 1.0 / m
    acc = report["acc_after_finetune"]["val"]
    if acc is None:
        acc, when = report["acc_before_finetune"]["val"], "without fine-tuning"
    else:
        when = "after fine-tuning"
    if acc is not None and acc < chance + CHANCE_MARGIN:
        return [f"the module's validation accuracy {when} is {acc:.2%}, not clearly better "
                f"than chance ({chance:.2%}); fine-tune longer (epochs), with another lr, or "
                "keep or fold the gates"]
    return []
