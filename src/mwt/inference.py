"""Running a model over data without training it: eval mode, no gradients, batches on a device.

Evaluation, modularizing, sub-task accuracy and MAC counting all do this; they share these two
helpers so that a model always gets its train/eval mode back, whatever happens in between.
"""

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.fx as fx
import torch.nn as nn

from mwt.errors import MwtError


@contextmanager
def evaluating(model: nn.Module):
    """``model`` in eval mode under ``torch.no_grad()``; its previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int,
            device=None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive ``(x, y)`` slices of ``batch_size`` samples, moved to ``device``."""
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if device is not None:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        yield xb, yb


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, images: torch.Tensor, batch_size: int = 256,
                          max_images: int = 10_000) -> nn.Module:
    """Recompute every BatchNorm's running statistics of ``module`` in place from ``images``
    (at most ``max_images``, in order; no labels, no gradients), as a cumulative average.

    An extracted module keeps the BatchNorm statistics of the modular model, measured with every
    kernel's gate at its per-sample value. With the gates removed, or folded into constants
    (their class means), each layer's output changes scale, the next BatchNorm normalises with
    statistics that no longer fit, and through a deep stack the mismatch compounds until the
    output no longer depends on the input (folded vgg16 modules scored exactly 1/M before
    fine-tuning). Statistics measured on the module itself remove that mismatch. Only the
    BatchNorms run in training mode (dropout and the rest stay in eval mode).
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    if not norms:
        return module
    device = next(module.parameters()).device
    was_training = module.training
    module.eval()
    saved = [(m, m.momentum) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    try:
        for start in range(0, min(len(images), max_images), batch_size):
            module(images[start:min(start + batch_size, max_images)].to(device))
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        module.train(was_training)
    return module


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An inference copy of an extracted (or reused) module with every BatchNorm folded into the
    convolution before it, so a module's speed follows its MACs (BN is memory-bound and shrinks
    only linearly with the kernels kept). Gate values folded by ``fold_gates`` live in the BN's
    scale and shift, so they are folded too. Outputs match the module in eval mode."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    from mwt.reuse import ReusedModule

    folded = copy.deepcopy(module).eval()
    graph_module = folded.module if isinstance(folded, ReusedModule) else folded
    if not isinstance(graph_module, fx.GraphModule):
        raise MwtError("fold_batchnorm takes a module from mwt.extract_module or mwt.reuse")
    modules = dict(graph_module.named_modules())
    graph = graph_module.graph
    for node in list(graph.nodes):
        conv = modules.get(node.target) if node.op == "call_module" else None
        users = list(node.users)
        if not isinstance(conv, nn.Conv2d) or len(users) != 1:
            continue
        bn_node = users[0]
        bn = modules.get(bn_node.target) if bn_node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or not bn.track_running_stats:
            continue
        graph_module.add_submodule(node.target, fuse_conv_bn_eval(conv, bn))
        bn_node.replace_all_uses_with(node)
        graph.erase_node(bn_node)
    graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return folded
