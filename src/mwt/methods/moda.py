"""MODA (Ngo et al., ICSE 2026, arXiv 2411.01074): no gates; the activations themselves are
shaped into modules.

A unit's signal for a sample is the mean over space of its ReLU'd BatchNorm output (the
authors' ``calculate_module_losses`` reads each ReLU with a forward hook and takes the mean
|a| of a feature map; after a ReLU |a| = a). :func:`activation_view` rewrites the traced
model so that its forward returns those means beside the logits, computed from the activations
the forward computes anyway: one extra reduction per layer, no second pass, no hook and no host
sync. Three losses shape them (the authors' ``models/modular_utils.py``):

- affinity: 1 - the mean cosine of same-class sample pairs (MwT's cohesion in its per-pair form);
- dispersion: the mean cosine of different-class pairs (MwT's coupling, per pair);
- compactness: the mean signal, L1 / numel;

each per layer, averaged over layers; the objective is CE + alpha affinity + beta dispersion +
gamma compactness (1.0, 1.0, 0.3, the authors' README). A class's module keeps the units active
(signal != 0) for at least tau (0.9) of its training samples, with at least ``min_fraction``
(0.5%) of each layer (``mwt.rules.activation_rate_masks``), and a sub-task's module is the
union of its classes' units with only the target classes' rows of the last layer: no new head,
no fine-tuning.
"""

import operator
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from mwt.checks import is_real, short_repr
from mwt.errors import MwtError
from mwt.fusion import training_view
from mwt.gates import (
    add_return_masks_argument,
    gated_sites,
    global_avg_pool,
    is_modular,
    return_signals,
    trace,
)
from mwt.losses import check_signals, modular_objective
from mwt.methods.base import Method
from mwt.models.unit_blocks import UnitBlock
from mwt.rules import activation_rate_masks, check_min_fraction

# ReLU6 too (MobileNetV2): it is zero exactly where ReLU is, so the activation rule reads the same
_RELU_FUNCTIONS = (F.relu, torch.relu, torch.relu_, F.relu6)


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules.get(node.target), (nn.ReLU, nn.ReLU6))
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def activation_view(model: nn.Module) -> fx.GraphModule:
    """A view of a standard ``model`` (sharing its parameters and buffers) whose
    ``forward(x, return_masks=True)`` returns ``(logits, signals)``: per unit layer (the convs
    ``mwt.gates`` would gate, in the same order) the [B, K] spatial means of the ReLU'd
    BatchNorm outputs. Where the BatchNorm's only user is a ReLU its output is read; elsewhere
    (a ResNet block's second BN, which is added to the shortcut first) the BN output is ReLU'd
    for the signal alone, and the model's own computation is unchanged."""
    gm = trace(model)
    graph, modules = gm.graph, dict(gm.named_modules())
    pairs = gated_sites(gm)
    if not pairs:
        raise MwtError("MODA needs at least two Conv2d layers (the first conv is "
                       "not a unit layer) or a transformer unit block")
    return_masks = add_return_masks_argument(graph)
    signals = []
    for unit, bn in pairs:
        if isinstance(modules[unit.target], UnitBlock):  # it returns its units' signal itself
            signals.append(_block_signal(graph, unit))
            continue
        users = list(bn.users)
        if len(users) == 1 and _is_relu(users[0], modules):
            source = users[0]
        else:
            with graph.inserting_after(bn):
                source = graph.call_function(torch.relu, (bn,))
        with graph.inserting_after(source):
            signals.append(graph.call_function(global_avg_pool, (source,)))
    return_signals(graph, signals, return_masks)
    view = fx.GraphModule(gm, graph, class_name=f"Activations{type(model).__name__}")
    view.train(model.training)
    return view


def _block_signal(graph: fx.Graph, node: fx.Node) -> fx.Node:
    """Call a unit block with ``return_signal=True``: its output goes on, its signal is read."""
    with graph.inserting_after(node):
        both = graph.call_module(node.target, node.args, {**node.kwargs, "return_signal": True})
    with graph.inserting_after(both):
        out = graph.call_function(operator.getitem, (both, 0))
    with graph.inserting_after(out):
        signal = graph.call_function(operator.getitem, (both, 1))
    node.replace_all_uses_with(out)
    graph.erase_node(node)
    return signal


def compactness_loss(signals) -> torch.Tensor:
    """MODA's compactness: per layer the L1 norm of the [B, K] signals over their numel (their
    mean, as signals are >= 0), averaged over layers."""
    layers = signals if isinstance(signals, (list, tuple)) else [signals]
    return torch.stack([s.float().abs().mean() for s in layers]).mean()


@dataclass(frozen=True)
class MODA(Method):
    """``gamma``: the compactness weight (0.3); ``min_fraction``: the least share of a layer a
    module keeps (0.005). alpha / beta weigh affinity / dispersion (1.0 / 1.0)."""

    gamma: float = 0.3
    min_fraction: float = 0.005

    name: ClassVar[str] = "moda"
    gated: ClassVar[bool] = False
    composition: ClassVar[str] = "rows"
    weights: ClassVar[tuple] = ("affinity", "dispersion")
    loss_names: ClassVar[tuple] = (("affinity_loss", "L_aff"), ("dispersion_loss", "L_dis"),
                                   ("compactness_loss", "L_cmp"))

    def validate(self) -> None:
        if not is_real(self.gamma) or self.gamma < 0:
            raise MwtError(f"gamma must be a finite number >= 0, got {short_repr(self.gamma)}")
        check_min_fraction(self.min_fraction)

    def default_weights(self, model, dataset):
        return 1.0, 1.0

    def trains(self, model: nn.Module) -> bool:
        if is_modular(model):
            raise MwtError("MODA trains a model without gates; pass the standard model, not "
                           "the output of mwt.make_modular")
        return True

    def signal_view(self, model: nn.Module, *, fuse: bool = True,
                    sync_bn: bool = False) -> nn.Module:
        view = activation_view(model)
        return training_view(view, fuse=False, sync_bn=True) if sync_bn else view

    def objective(self, ce, signals, labels, alpha, beta, reduction, num_classes):
        check_signals(signals, labels)
        loss, aff, dis = modular_objective(ce, signals, labels, alpha, beta, "pairs",
                                           num_classes)
        comp = compactness_loss(signals)
        return loss + self.gamma * comp, {"affinity_loss": aff, "dispersion_loss": dis,
                                          "compactness_loss": comp}

    def unit_masks(self, frequencies, layer_sizes, tau):
        return activation_rate_masks(frequencies, layer_sizes, tau, self.min_fraction)


__all__ = ["MODA", "activation_view", "compactness_loss"]
