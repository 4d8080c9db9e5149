"""Modularizing (paper section 3.3): per-class unit sets from one pass over the training data.

A kernel is relevant to a sample iff its gate value is > 0 (for a standard model without gates:
iff its BatchNorm output, and so its ReLU'd output, has any positive element, paper section 4.2).
Module c keeps a kernel iff at least a share tau of class c's training samples find it relevant;
a layer that would keep nothing for a class has tau lowered for it in steps of 0.05 (the exact
rule is in :func:`module_masks`). The result is a :class:`~mwt.module_set.ModuleSet`, the file
format of ``mwt.module_set``.
"""

import numbers
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

from mwt import distributed as dist
from mwt.checks import short_repr as _short
from mwt.data import as_tensors
from mwt.errors import MwtError, MwtWarning
from mwt.gates import gateable_layers, is_modular, unit_noun
from mwt.inference import batches, evaluating
from mwt.methods import get_method
from mwt.methods.moda import activation_view
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate
from mwt.model_info import model_config
from mwt.module_set import (
    FORMAT,
    ModuleSet,
    class_ids,
    list_module_sets,
    method_set_stem,
    module_set_stem,
)
from mwt.rules import check_tau, module_masks

# A module set whose KRR, or one of whose modules, reaches this share of the kernels is degenerate.
NEARLY_ALL = 0.95


def check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
            or batch_size < 1:
        raise MwtError(f"batch_size must be a positive integer, got {_short(batch_size)}")
    return int(batch_size)


class _Relevance(nn.Module):
    """A standard model's unit relevance (section 4.2): a unit is relevant to a sample where its
    activation is positive somewhere, read off MODA's activation view (a conv kernel: its
    ReLU'd BatchNorm output has a positive element; a transformer unit: its block's signal).
    The view shares the model's parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.view = activation_view(model)

    def forward(self, x):
        logits, signals = self.view(x, return_masks=True)
        return logits, [(s > 0).float() for s in signals]


def _layer_sizes(model) -> list[tuple[str, int]]:
    return [(layer.conv, layer.kernels) for layer in gateable_layers(model)]


def collect_kernel_sets(model: nn.Module, data, batch_size: int = 1024, device=None):
    """One eval-mode pass: bool kernel sets [S, K], labels [S] and gate values summed per class."""
    batch_size = check_batch_size(batch_size)
    x_all, y_all = as_tensors(data)
    if len(y_all) == 0:
        raise MwtError("the training data is empty")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    runner = model if is_modular(model) else _Relevance(model)
    num_classes = model_config(model).get("num_classes") or int(y_all.max()) + 1
    if int(y_all.max()) >= num_classes or int(y_all.min()) < 0:
        raise MwtError(f"labels must lie in 0..{num_classes - 1}")
    sets, gate_sums = [], None
    labels = y_all.cpu()
    # Under several processes each rank runs its contiguous share; the sets are gathered back in
    # order and the per-class gate sums added with all_reduce, so the result is one process's.
    x_all, y_all = dist.shard(x_all), dist.shard(y_all)
    with evaluating(model):
        for x, y in batches(x_all, y_all, batch_size, device):
            if is_modular(model):
                _, masks = model(x, return_masks=True)
            else:
                _, masks = runner(x)
            flat = torch.cat(masks, dim=1)
            onehot = F.one_hot(y, num_classes).float()
            part = onehot.T @ flat
            gate_sums = part if gate_sums is None else gate_sums + part
            sets.append((flat > 0).cpu())
    sets = torch.cat(sets) if sets else torch.zeros(0, _total_kernels(model), dtype=torch.bool)
    if gate_sums is None:
        gate_sums = torch.zeros(num_classes, sets.shape[1], device=device)
    sets = dist.gather_rows(sets.to(torch.uint8)).cpu().bool()
    return sets, labels, dist.all_reduce_sum(gate_sums).cpu()


def _total_kernels(model: nn.Module) -> int:
    return sum(k for _, k in _layer_sizes(model))


def _degenerate(sets: torch.Tensor, masks: torch.Tensor, layers: list[tuple[str, int]],
                names: list[str]) -> list[str]:
    """One-sentence warnings about gates that make the modules meaningless (none if fine)."""
    found = []
    used = [bool(block.any()) for block in torch.split(sets, [k for _, k in layers], dim=1)]
    if not any(used):
        found.append("all gates are closed: no training sample uses any kernel, so every module "
                     "is one arbitrary kernel per layer and its cohesion and coupling mean "
                     "nothing; check that the model is a trained modular model, or train longer")
    elif not all(used):
        closed = [name for (name, _), u in zip(layers, used) if not u]
        shown = ", ".join(closed[:3]) + (f" and {len(closed) - 3} more" if len(closed) > 3 else "")
        found.append(f"the gates of layer(s) {shown} are closed for every training sample, so "
                     "every module keeps one arbitrary kernel there; check that the model is a "
                     "trained modular model, or train longer")
    share = masks.double().mean(dim=1)
    krr = float(share.mean())
    top = int(share.argmax())
    if krr >= NEARLY_ALL or float(share[top]) >= NEARLY_ALL:
        found.append(f"the modules keep nearly every kernel (KRR {krr:.1%}; module {names[top]!r} "
                     f"keeps {float(share[top]):.1%}), so the model is not modular; train longer "
                     "or with a larger beta, or check that the model is a trained modular model")
    return found


def modularize(model: nn.Module, train_data, tau: float = 0.9, *, batch_size: int = 1024,
               device=None, classes: list[str] | None = None, method=None) -> ModuleSet:
    """Compute every class's module (paper 3.3) and the KRR / cohesion / coupling of Table 2.

    ``method``: the training method whose rule keeps units (``mwt.methods``; a name, an object
    or None for MwT's tau rule). tau is its threshold: MwT's and NeMo's tau, MODA's activation
    rate threshold.

    ``train_data``: the *training* split, as ``(X, y)`` tensors, a Dataset or a DataLoader; it is
    used as given (eval mode, no augmentation). A standard model is modularized the same way with
    kernel relevance read off its BatchNorm outputs. Degenerate gates (all closed, or modules that
    keep nearly every kernel) give a ``UserWarning`` each, also kept in ``ModuleSet.warnings``.
    """
    tau = check_tau(tau)
    batch_size = check_batch_size(batch_size)
    method = get_method(method)
    if not method.gated and is_modular(model):
        raise MwtError(f"{method.name} modularizes a model without gates, and this one has gates")
    if classes is not None:
        try:
            names = [] if isinstance(classes, str) else list(classes)
        except TypeError:
            names = []
        if not names or not all(isinstance(c, str) for c in names):
            raise MwtError(f"classes must be a list of class names, got {_short(classes)}")
        classes = names
    t0 = time.perf_counter()
    sets, labels, gate_sums = collect_kernel_sets(model, train_data, batch_size, device)
    t_pass = time.perf_counter() - t0
    num_classes = gate_sums.shape[0]
    if classes is not None and len(classes) != num_classes:
        raise MwtError(f"{len(classes)} class names given for a model of {num_classes} classes")
    counts = torch.bincount(labels, minlength=num_classes)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise MwtError(f"the training data has no samples of class(es) {missing}")
    onehot = F.one_hot(labels, num_classes).float()
    frequencies = (onehot.T @ sets.float()) / counts[:, None]
    layers = _layer_sizes(model)
    masks, layer_tau = method.unit_masks(frequencies, [k for _, k in layers], tau)
    t1 = time.perf_counter()
    cohesion = jaccard_cohesion(sets, labels, module_masks=masks)
    coupling = jaccard_coupling(masks)
    seconds = {"pass": t_pass, "metrics": time.perf_counter() - t1,
               "total": time.perf_counter() - t0}
    names = classes if classes is not None else [str(i) for i in range(num_classes)]
    notes = _degenerate(sets, masks, layers, names)
    for note in notes:
        warnings.warn(note, MwtWarning, stacklevel=2)
    return ModuleSet(masks=masks, layers=layers, tau=tau, frequencies=frequencies,
                     gate_means=gate_sums / counts[:, None], counts=counts, layer_tau=layer_tau,
                     classes=names, cohesion=float(cohesion), coupling=float(coupling),
                     krr=kernel_retention_rate(masks), seconds=seconds,
                     model={**model_config(model), "modular": is_modular(model),
                            "units": unit_noun(model)},
                     warnings=notes, method=method.name)


# ModuleSet and its file helpers are re-exported: ``from mwt.modularize import ModuleSet`` is
# public API.
__all__ = ["ModuleSet", "modularize", "module_masks", "collect_kernel_sets", "module_set_stem",
           "method_set_stem", "list_module_sets", "class_ids", "check_tau", "FORMAT"]
