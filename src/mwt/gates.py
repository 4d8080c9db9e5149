"""Gates ("mask generators", paper section 3.2.1) and their insertion into any Conv+BN CNN.

The gate protocol lives here, in one place:

- *which* layers are gated: :func:`gated_sites`, every Conv2d (with its BatchNorm2d when it
  has one) and every unit block (``mwt.models.unit_blocks``: attention heads, MLP neurons) in
  the order the forward calls them, the first conv excluded. ``make_modular``,
  ``count_gated_kernels`` and modularizing a standard model all read this one rule;
- inserting gates (:func:`make_modular`) and removing them (:func:`strip_gates`), its inverse;
- what a gated graph looks like to a pass that walks it (:func:`gate_application`,
  :func:`is_mask_output`), so that extraction needs no knowledge of how the graph is wired;
- a gate cut down to some kernels (:meth:`Gate.sliced`).

``make_modular`` traces a model with torch.fx and rewrites the graph: after every gated conv's
BatchNorm (or the conv itself, bias included, when no BatchNorm follows it), the output is
multiplied channel-wise by a mask that a small gate computes from the conv's *input*. Grouped
and depthwise convs are gated like any other, one gate value per kernel. The rewritten graph
returns the masks explicitly (``model(x, return_masks=True) -> (logits, masks)``): nothing is
stored on modules during ``forward``, so the modular model works with torch.compile, fx and DDP.
Parameter names of the original model are unchanged; each gate is a new submodule named
``<conv name>_gate``.
"""

import copy
from collections.abc import Iterable

import torch
import torch.fx as fx
import torch.nn as nn

from mwt.errors import MwtError
from mwt.model_info import (
    GatedLayer,
    MwtInfo,
    mwt_info,
    set_mwt_info,
    update_mwt_info,
)
from mwt.models.unit_blocks import UnitBlock


class Gate(nn.Module):
    """Pooled conv input [B, C_in] -> mask [B, C_out] in [0, 1).

    Linear -> ReLU -> Linear -> tanh -> ReLU.

    As in the reference code: hidden size C_out (C_out // 2 from 128 kernels on), Kaiming-normal
    weights, and the output bias starts at 1.0 so that every kernel starts open. ``hidden``
    overrides the hidden size (a sliced gate keeps its original one).
    """

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None):
        super().__init__()
        if hidden is None:
            hidden = out_channels if out_channels < 128 else out_channels // 2
        self.fc1 = nn.Linear(in_channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_channels)
        nn.init.kaiming_normal_(self.fc1.weight)
        nn.init.kaiming_normal_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 1.0)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.tanh(self.fc2(torch.relu(self.fc1(pooled)))))

    def sliced(self, in_idx: torch.Tensor | None, out_idx: torch.Tensor | None) -> "Gate":
        """This gate on some of its conv's input channels (``in_idx``) and kernels (``out_idx``);
        ``None`` keeps all of them.

        The hidden layer stays whole, so the kept kernels' mask values are exactly this gate's
        whenever the dropped input channels are zero. Same device, dtype and mode; no random
        numbers are drawn.
        """
        w1, w2, b2 = self.fc1.weight, self.fc2.weight, self.fc2.bias
        if in_idx is not None:
            w1 = w1[:, in_idx.to(w1.device)]
        if out_idx is not None:
            w2, b2 = w2[out_idx.to(w2.device)], b2[out_idx.to(b2.device)]
        with torch.device("meta"):  # every value is copied below: no initialisation needed
            new = Gate(w1.shape[1], w2.shape[0], hidden=w1.shape[0])
        new = new.to_empty(device=w1.device).to(w1.dtype)
        with torch.no_grad():
            new.fc1.weight.copy_(w1)
            new.fc2.weight.copy_(w2)
            new.fc2.bias.copy_(b2)
        return new.train(self.training)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, C]: the gate's view of a conv input."""
    # sum-then-scale: the backward is a broadcast of [B, C] values, where mean's backward
    # divides a whole activation-sized tensor.
    return x.sum(dim=(2, 3)) * (1.0 / (x.shape[2] * x.shape[3]))


class _ChannelScale(torch.autograd.Function):
    """y * mask[:, :, None, None] whose mask gradient is a batched dot product, without the
    activation-sized temporary that autograd's generic mul backward builds."""

    @staticmethod
    def forward(ctx, y, mask):
        ctx.save_for_backward(y, mask)
        return y * mask[:, :, None, None]

    @staticmethod
    def backward(ctx, grad):
        y, mask = ctx.saved_tensors
        grad_y = grad * mask[:, :, None, None] if ctx.needs_input_grad[0] else None
        grad_mask = None
        if ctx.needs_input_grad[1]:
            b, c = mask.shape
            g, v = grad.reshape(b * c, 1, -1), y.reshape(b * c, -1, 1)
            grad_mask = torch.bmm(g, v).view(b, c).to(mask.dtype)
        return grad_y, grad_mask


def apply_mask(y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Scale each channel (kernel output) of a BN (or conv) output by its mask value."""
    if torch.is_grad_enabled() and (y.requires_grad or mask.requires_grad):
        return _ChannelScale.apply(y, mask)
    return y * mask[:, :, None, None]


def select_output(logits, masks, return_masks: bool):
    return (logits, list(masks)) if return_masks else logits


def _module_map(gm: nn.Module) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def conv_bn_pairs(graph: fx.Graph,
                  modules: dict[str, nn.Module]) -> list[tuple[fx.Node, fx.Node]]:
    """Every Conv2d node with the node a gate scales, in graph order: the BatchNorm2d that is
    the conv's only user, or the conv itself (a conv without its own BatchNorm)."""
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        users = list(node.users)
        bn = users[0] if len(users) == 1 else None
        is_bn = (bn is not None and bn.op == "call_module"
                 and isinstance(modules[bn.target], nn.BatchNorm2d))
        pairs.append((node, bn if is_bn else node))
    return pairs


def token_mean(x: torch.Tensor) -> torch.Tensor:
    """[B, N, D] tokens -> [B, D]: the gate's view of a transformer block's input."""
    return x.mean(1)


class _Tracer(fx.Tracer):
    """torch.fx's tracer, with transformer unit blocks (``mwt.models.unit_blocks``) as leaves:
    one node per block, which takes its units' mask as an argument."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, UnitBlock) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a model (unit blocks as leaves), with a clear error when it cannot
    be traced."""
    try:
        tracer = _Tracer()
        graph = tracer.trace(model)
        name = model.__class__.__name__
        return fx.GraphModule(tracer.root, graph, name)
    except Exception as exc:  # fx raises many types; the user needs the reason in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MwtError(f"could not trace {type(model).__name__} with torch.fx ({reason}); "
                       "MwT needs a forward without data-dependent control flow") from exc


def gated_sites(model: nn.Module) -> list[tuple[fx.Node, fx.Node]]:
    """The (unit node, gated node) pairs MwT gates, in graph order: every conv but the first
    with the node its gate scales (``conv_bn_pairs``), and every unit block (a transformer's
    attention or MLP), which is both.

    Graph order is the order the forward calls the layers, not the order their modules were
    registered, so a model whose ``__init__`` lists its layers out of order is gated the same
    way whether it is counted, modularized as a standard model or made modular. A GraphModule
    (a modular model included) is read as it is; any other model is traced first.
    """
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    modules = _module_map(gm)
    convs = conv_bn_pairs(gm.graph, modules)[1:]  # the first conv reads the raw input
    blocks = [(n, n) for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(modules[n.target], UnitBlock)]
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    return sorted(convs + blocks, key=lambda pair: order[pair[0]])


def units_of(layer: nn.Module) -> int:
    """How many units a gated layer has: a conv's kernels, a unit block's heads or neurons."""
    return layer.units if isinstance(layer, UnitBlock) else layer.out_channels


def _gated_layer(gm: nn.Module, unit: fx.Node, output: fx.Node) -> GatedLayer:
    kernels = units_of(gm.get_submodule(unit.target))
    return GatedLayer(unit.target, output.target, f"{unit.target}_gate", kernels)


def gateable_layers(model: nn.Module) -> list[GatedLayer]:
    """The gated layers of a modular model, or those ``make_modular`` would gate in a standard
    one, in the order of the masks."""
    if is_modular(model):
        return gated_layers(model)
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    return [_gated_layer(gm, unit, out) for unit, out in gated_sites(gm)]


def add_return_masks_argument(graph: fx.Graph) -> fx.Node:
    """Give a traced forward the ``return_masks=False`` argument; returns its node."""
    first_body = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first_body):
        return graph.placeholder("return_masks", default_value=False)


def return_signals(graph: fx.Graph, signals: list[fx.Node], return_masks: fx.Node) -> None:
    """Make the graph return ``(logits, signals)`` when its ``return_masks`` is true (the
    protocol of modular models and of every method's signal view), then lint it."""
    output = next(n for n in graph.nodes if n.op == "output")
    (result,) = output.args
    with graph.inserting_before(output):
        selected = graph.call_function(select_output, (result, signals, return_masks))
    output.args = (selected,)
    graph.lint()


def make_modular(model: nn.Module) -> fx.GraphModule:
    """Return a modular copy of ``model``: a gate after every conv's BN except the first conv's,
    and one for every unit block (a transformer's attention heads, its MLP neurons).

    The copy's ``forward(x, return_masks=False)`` returns logits, or ``(logits, masks)`` where
    ``masks`` is a list of [B, K_l] tensors in [0, 1), one per gated layer, in graph order.
    """
    if is_modular(model):
        raise MwtError("the model is already modular (it has gates)")
    model = copy.deepcopy(model)
    gm = trace(model)
    graph, modules = gm.graph, _module_map(gm)
    sites = gated_sites(gm)
    if not sites:
        torch_attention = next((name for name, m in model.named_modules() if isinstance(
            m, (nn.MultiheadAttention, nn.TransformerEncoderLayer))), None)
        if torch_attention is not None:
            kind = type(model.get_submodule(torch_attention)).__name__
            raise MwtError(f"{torch_attention!r} is a torch {kind}, whose heads and neurons "
                           "a gate cannot reach; rebuild the model with "
                           "mwt.models.from_torch_transformer(model) first (the same "
                           "function on unit blocks), or build it from "
                           "mwt.models.unit_blocks as mwt.models.vit does")
        raise MwtError("MwT needs at least two Conv2d layers (the first is not gated) or a "
                       "transformer unit block (mwt.models.unit_blocks)")

    return_masks = add_return_masks_argument(graph)
    pooled: dict[tuple, fx.Node] = {}
    masks, layers = [], []
    for unit_node, out_node in sites:
        unit = modules[unit_node.target]
        block = isinstance(unit, UnitBlock)
        layer = _gated_layer(gm, unit_node, out_node)
        gm.add_submodule(layer.gate, Gate(unit.in_features if block else unit.in_channels,
                                          layer.kernels))
        x = unit_node.args[0]
        pool = token_mean if block else global_avg_pool
        if (x, pool) not in pooled:  # layers that read the same tensor (a block and its
            with graph.inserting_after(x):  # shortcut) share it
                pooled[x, pool] = graph.call_function(pool, (x,))
        if block:  # the block scales its own units: the mask is its argument
            with graph.inserting_before(unit_node):
                mask = graph.call_module(layer.gate, (pooled[x, pool],))
            unit_node.kwargs = {**unit_node.kwargs, "unit_mask": mask}
        else:
            with graph.inserting_after(out_node):
                mask = graph.call_module(layer.gate, (pooled[x, pool],))
            with graph.inserting_after(mask):
                gated = graph.call_function(apply_mask, (out_node, mask))
            out_node.replace_all_uses_with(gated,
                                           delete_user_cb=lambda user, g=gated: user is not g)
        masks.append(mask)
        layers.append(layer)

    return_signals(graph, masks, return_masks)
    modular = fx.GraphModule(gm, graph, class_name=f"Modular{type(model).__name__}")
    modular.train(model.training)
    return set_mwt_info(modular, MwtInfo(spec=mwt_info(model).spec, layers=tuple(layers)))


def block_mask(node: fx.Node) -> fx.Node | None:
    """The mask node a unit block's call takes (``unit_mask``) in a modular graph, else None."""
    if node.op == "call_module":
        mask = node.kwargs.get("unit_mask")
        return mask if isinstance(mask, fx.Node) else None
    return None


def gate_application(node: fx.Node) -> tuple[fx.Node, fx.Node] | None:
    """``(output_node, mask_node)`` if ``node`` is where a gate's mask scales its conv's output
    (its BN's, or its own) in a modular graph, else None."""
    if node.op == "call_function" and node.target is apply_mask:
        output_node, mask_node = node.args
        return output_node, mask_node
    return None


def is_mask_output(node: fx.Node) -> bool:
    """Whether ``node`` hands the masks to the caller (``return_masks``): it computes nothing."""
    return node.op == "call_function" and node.target is select_output


def strip_gates(model: fx.GraphModule, keep: Iterable[str] = (), *,
                inplace: bool = False) -> fx.GraphModule:
    """Undo ``make_modular`` for every gate not named in ``keep`` (gate submodule names).

    Each stripped gate's BN (or conv) output goes to its users unscaled, as in the standard
    model; the gate submodule, its call and its pooling go, and its mask leaves the returned
    list. With no gate left the forward is the standard model's again (no ``return_masks``
    argument) and the model is no longer modular. Parameter names do not change. Works on a
    copy unless ``inplace``.
    """
    layers = gated_layers(model)
    keep = set(keep)
    unknown = keep - {layer.gate for layer in layers}
    if unknown:
        raise MwtError(f"no gate named {sorted(unknown)[0]!r} in this model")
    gm = model if inplace else copy.deepcopy(model)
    graph = gm.graph
    for node in list(graph.nodes):
        mask = block_mask(node)
        if mask is not None and mask.target not in keep:  # a unit block: unmasked again
            node.kwargs = {k: v for k, v in node.kwargs.items() if k != "unit_mask"}
            _drop_mask(graph, mask)
            continue
        parts = gate_application(node)
        if parts is None or parts[1].target in keep:
            continue
        output_node, mask = parts
        node.replace_all_uses_with(output_node)
        graph.erase_node(node)
        _drop_mask(graph, mask)
    kept = [layer for layer in layers if layer.gate in keep]
    if not kept:
        _drop_mask_output(graph)
    graph.lint()
    for layer in layers:
        if layer.gate not in keep:
            gm.delete_submodule(layer.gate)
    gm.recompile()
    return update_mwt_info(gm, layers=tuple(kept))


def _drop_mask(graph: fx.Graph, mask: fx.Node) -> None:
    """Remove a gate call from the graph: from the returned mask list, then the call itself and
    the pooled input that only it read (a block and its shortcut share one)."""
    for user in list(mask.users):
        if is_mask_output(user):
            logits, masks, flag = user.args
            user.args = (logits, [m for m in masks if m is not mask], flag)
    pooled = mask.args[0]
    graph.erase_node(mask)
    if (isinstance(pooled, fx.Node) and pooled.target in (global_avg_pool, token_mean)
            and not pooled.users):
        graph.erase_node(pooled)


def _drop_mask_output(graph: fx.Graph) -> None:
    """Return the logits alone again and drop the then unused ``return_masks`` argument."""
    output = next(n for n in graph.nodes if n.op == "output")
    (selected,) = output.args
    if not (isinstance(selected, fx.Node) and is_mask_output(selected)):
        return
    logits, _, flag = selected.args
    output.args = (logits,)
    graph.erase_node(selected)
    if isinstance(flag, fx.Node) and flag.op == "placeholder" and not flag.users:
        graph.erase_node(flag)


def is_modular(model: nn.Module) -> bool:
    return mwt_info(model).modular


def gated_layers(model: nn.Module) -> list[GatedLayer]:
    """The gated convs of a modular model, in the order of its masks."""
    if not is_modular(model):
        raise MwtError("this is a standard model without gates; call mwt.make_modular(model) first")
    return list(mwt_info(model).layers)


def count_gated_kernels(model: nn.Module) -> int:
    """Kernels that MwT can assign to modules: all conv kernels except the first conv's."""
    return sum(layer.kernels for layer in gateable_layers(model))


def unit_noun(model: nn.Module) -> str:
    """What a model's units are called in reports: ``"kernels"`` when every gated layer is a conv
    (the paper's word), ``"units"`` when some are a transformer's heads or neurons."""
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    layers = gated_layers(gm) if is_modular(gm) else gateable_layers(gm)
    blocks = any(isinstance(gm.get_submodule(layer.conv), UnitBlock) for layer in layers)
    return "units" if blocks else "kernels"


def kernel_rate(masks) -> torch.Tensor:
    """Share of mask values > 0 (relevant kernels) over a batch and all gated layers."""
    flat = torch.cat(list(masks), dim=1) if isinstance(masks, (list, tuple)) else masks
    return (flat > 0).float().mean()


__all__ = ["Gate", "GatedLayer", "make_modular", "strip_gates", "is_modular", "gated_layers",
           "gateable_layers", "gated_sites", "units_of", "gate_application", "block_mask",
           "is_mask_output", "count_gated_kernels", "unit_noun", "kernel_rate", "trace",
           "conv_bn_pairs",
           "global_avg_pool", "token_mean", "apply_mask"]
