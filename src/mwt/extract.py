"""Module extraction (paper section 3.3, Figure 3-d): a physically smaller ``nn.Module``.

The extraction walks the traced graph of a modular model and tracks, for every tensor, which of
its producer's channels (kernel outputs) are still computed. Convolutions lose the removed kernels
(output channels) and the input channels their producer no longer computes; BatchNorm and gates
follow their conv; the first Linear after the convolutions loses the input features of removed
channels. At a residual add whose two sides keep different channels, each side is scattered into
the union of both channel sets (zero padding), so no irrelevant kernel is ever computed.

Anything that would mix removed and kept channels in a way we cannot follow (a concat, a
channel-wise product, an unknown layer) is an error naming the node, never a silent wrong result.
"""

import copy
import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from mwt.errors import MwtError
from mwt.gates import Gate, apply_mask, gated_layers, global_avg_pool, is_modular, select_output


@dataclass(frozen=True)
class Channels:
    """The channels of a tensor that survive extraction: ``kept`` indices out of ``universe``."""

    universe: int
    kept: torch.Tensor  # sorted int64 indices

    @property
    def full(self) -> bool:
        return len(self.kept) == self.universe

    def same(self, other: "Channels") -> bool:
        return self.universe == other.universe and torch.equal(self.kept, other.kept)


def pad_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Scatter x's channels into a wider channel set: ``index`` picks, for each output channel,
    a channel of x or the appended zero channel (index == x.shape[1])."""
    zeros = x.new_zeros((x.shape[0], 1) + tuple(x.shape[2:]))
    return torch.cat([x, zeros], dim=1).index_select(1, index)


# Layers and functions that act on each channel separately: channel sets pass through them.
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout,
    nn.Dropout2d, nn.Identity,
)
_CHANNELWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, torch.tanh,
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.dropout,
    global_avg_pool,
}
_CHANNELWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "contiguous", "clone", "detach"}
_ADDS = {operator.add, operator.iadd, torch.add}
_SPATIAL_DIMS = {2, 3, -1, -2}


def _node_error(node: fx.Node, what: str) -> MwtError:
    return MwtError(f"cannot extract a module: {what} at graph node {node.name!r} "
                    f"({node.op} {getattr(node.target, '__name__', node.target)}) acts on "
                    "channels that extraction removes")


def _kept_per_layer(model, kernels: torch.Tensor) -> dict[str, torch.Tensor]:
    layers = gated_layers(model)
    total = sum(layer.kernels for layer in layers)
    kernels = torch.as_tensor(kernels)
    if kernels.dim() != 1 or kernels.numel() != total:
        raise MwtError(f"the kernel mask must be a 1-D bool tensor of {total} gated kernels, got "
                       f"shape {tuple(kernels.shape)}")
    if kernels.dtype != torch.bool:
        raise MwtError(f"the kernel mask must be a bool tensor, got {kernels.dtype}")
    kept, offset = {}, 0
    for layer in layers:
        idx = torch.nonzero(kernels[offset:offset + layer.kernels].cpu()).flatten()
        if idx.numel() == 0:
            raise MwtError(f"layer {layer.conv!r} keeps no kernels; every gated layer needs at "
                           "least one (mwt.modularize guarantees this)")
        kept[layer.conv] = idx
        offset += layer.kernels
    return kept


def _gate_values(model, gate_values, kept: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    total = sum(layer.kernels for layer in gated_layers(model))
    values = torch.as_tensor(gate_values, dtype=torch.float32).cpu()
    if values.shape != (total,):
        raise MwtError(f"gate_values must be a float tensor of {total} gated kernels")
    out, offset = {}, 0
    for layer in gated_layers(model):
        out[layer.conv] = values[offset:offset + layer.kernels][kept[layer.conv]]
        offset += layer.kernels
    return out


def _slice_conv(conv: nn.Conv2d, out_idx, in_idx) -> nn.Conv2d:
    if conv.groups != 1:
        raise MwtError(f"cannot extract from grouped convolution (groups={conv.groups}); only "
                       "groups=1 is supported")
    new = nn.Conv2d(len(in_idx), len(out_idx), conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, 1, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        new.weight.copy_(conv.weight[out_idx][:, in_idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_idx])
    return new.to(conv.weight.device).train(conv.training)


def _slice_bn(bn: nn.BatchNorm2d, idx, scale: torch.Tensor | None = None) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    with torch.no_grad():
        if bn.affine:
            weight, bias = bn.weight[idx], bn.bias[idx]
            if scale is not None:  # fold a constant gate: (gamma * g) * x_hat + beta * g
                scale = scale.to(weight)
                weight, bias = weight * scale, bias * scale
            new.weight.copy_(weight)
            new.bias.copy_(bias)
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    device = bn.running_mean.device if bn.running_mean is not None else bn.weight.device
    return new.to(device).train(bn.training)


def _slice_gate(gate: Gate, in_idx, out_idx) -> Gate:
    new = Gate(len(in_idx), len(out_idx))
    hidden = gate.fc1.out_features
    new.fc1 = nn.Linear(len(in_idx), hidden, bias=False)
    new.fc2 = nn.Linear(hidden, len(out_idx))
    with torch.no_grad():
        new.fc1.weight.copy_(gate.fc1.weight[:, in_idx])
        new.fc2.weight.copy_(gate.fc2.weight[out_idx])
        new.fc2.bias.copy_(gate.fc2.bias[out_idx])
    return new.to(gate.fc1.weight.device).train(gate.training)


def _slice_linear_inputs(linear: nn.Linear, ch: Channels) -> nn.Linear:
    if linear.in_features % ch.universe:
        raise MwtError(f"a Linear with {linear.in_features} inputs follows a tensor of "
                       f"{ch.universe} channels; cannot map its inputs to channels")
    hw = linear.in_features // ch.universe  # flatten order is channel-major: c * H * W + pixel
    cols = (ch.kept[:, None] * hw + torch.arange(hw)[None, :]).flatten()
    new = nn.Linear(len(cols), linear.out_features, linear.bias is not None)
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, cols.to(linear.weight.device)])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.to(linear.weight.device).train(linear.training)


def _is_flatten_view(node: fx.Node) -> bool:
    """x.view(B, -1) / x.reshape(x.size(0), -1) / torch.flatten(x, 1): channel-major flatten."""
    if node.op == "call_function" and node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    if node.op == "call_method" and node.target == "flatten":
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        return start == 1
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return len(shape) == 2 and shape[1] == -1
    return False


def _reduces_spatial_only(node: fx.Node) -> bool:
    if node.op != "call_method" or node.target not in ("mean", "amax", "sum"):
        return False
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    return bool(dims) and set(dims) <= _SPATIAL_DIMS


def extract_module(model: nn.Module, kernels, *, keep_gates: bool = False,
                   fold_gates: bool = False, gate_values=None) -> fx.GraphModule:
    """Cut the kernels marked True in ``kernels`` out of a modular model into a smaller module.

    ``kernels``: 1-D bool tensor over all gated kernels, in the order of the concatenated masks
    of ``model(x, return_masks=True)`` (e.g. ``ModuleSet.kernels_for(classes)``).
    By default the gates are removed (paper section 3.3): the module computes what the modular
    model computes with every gate value set to 1 on kept kernels and 0 elsewhere.
    ``keep_gates=True`` keeps each gate, restricted to the kept kernels: the module then computes
    exactly what the modular model computes for samples whose relevant kernels it all keeps.
    ``fold_gates=True`` removes the gates but folds ``gate_values`` (one value per gated kernel,
    e.g. the mean gate value over the target classes' samples) into BatchNorm scale and shift.
    The module returns the original N-way logits.
    """
    if not is_modular(model):
        raise MwtError("extract_module needs a modular model (from mwt.make_modular)")
    if keep_gates and fold_gates:
        raise MwtError("keep_gates and fold_gates exclude each other")
    if fold_gates and gate_values is None:
        raise MwtError("fold_gates needs gate_values (e.g. ModuleSet.gate_means_for(classes))")
    kept = _kept_per_layer(model, kernels)
    folds = _gate_values(model, gate_values, kept) if fold_gates else {}
    gate_of = {layer.gate: layer.conv for layer in gated_layers(model)}

    gm = copy.deepcopy(model)
    graph = gm.graph
    modules = dict(gm.named_modules())
    state: dict[fx.Node, Channels | None] = {}
    scatter_count = 0

    def channels(arg) -> Channels | None:
        return state.get(arg) if isinstance(arg, fx.Node) else None

    def pruned_inputs(node: fx.Node) -> list[Channels]:
        found = []
        for arg in node.all_input_nodes:
            ch = state.get(arg)
            if ch is not None and not ch.full:
                found.append(ch)
        return found

    def scatter(arg: fx.Node, ch: Channels, union: torch.Tensor, before: fx.Node) -> fx.Node:
        nonlocal scatter_count
        index = torch.full((len(union),), len(ch.kept), dtype=torch.long)
        index[torch.searchsorted(union, ch.kept)] = torch.arange(len(ch.kept))
        name = f"mwt_scatter_{scatter_count}"
        scatter_count += 1
        gm.register_buffer(name, index.to(next(model.parameters()).device))
        with graph.inserting_before(before):
            attr = graph.get_attr(name)
            return graph.call_function(pad_gather, (arg, attr))

    removed_masks: list[fx.Node] = []
    for node in list(graph.nodes):
        if node.op == "placeholder":
            state[node] = None  # inputs are never pruned
            continue
        if node.op in ("get_attr", "output"):
            continue
        args = node.args
        if node.op == "call_module":
            mod = modules[node.target]
            src = channels(args[0]) if args else None
            if isinstance(mod, nn.Conv2d):
                out_idx = kept.get(node.target, torch.arange(mod.out_channels))
                in_idx = src.kept if src is not None else torch.arange(mod.in_channels)
                if src is not None and src.universe != mod.in_channels:
                    raise _node_error(node, "a convolution with unexpected input channels")
                gm.add_submodule(node.target, _slice_conv(mod, out_idx, in_idx))
                state[node] = Channels(mod.out_channels, out_idx)
            elif isinstance(mod, nn.BatchNorm2d):
                conv = args[0].target if args[0].op == "call_module" else None
                if src is not None and (not src.full or conv in folds):
                    gm.add_submodule(node.target, _slice_bn(mod, src.kept, folds.get(conv)))
                state[node] = src
            elif node.target in gate_of:
                if keep_gates:
                    in_idx = src.kept if src is not None else torch.arange(mod.fc1.in_features)
                    gm.add_submodule(node.target,
                                     _slice_gate(mod, in_idx, kept[gate_of[node.target]]))
                state[node] = None
            elif isinstance(mod, nn.Linear):
                if src is not None and not src.full:
                    gm.add_submodule(node.target, _slice_linear_inputs(mod, src))
                state[node] = None
            elif isinstance(mod, nn.Flatten):
                if src is not None and not src.full and mod.start_dim != 1:
                    raise _node_error(node, "a Flatten that does not start at dim 1")
                state[node] = src
            elif isinstance(mod, _CHANNELWISE_MODULES):
                state[node] = src
            else:
                if pruned_inputs(node):
                    raise _node_error(node, f"unsupported layer {type(mod).__name__}")
                state[node] = None
            continue

        target = node.target
        src = channels(args[0]) if args else None
        if target is apply_mask:
            bn_node, mask_node = args
            if keep_gates:
                state[node] = state.get(bn_node)
            else:
                node.replace_all_uses_with(bn_node)
                removed_masks.append(mask_node)
                graph.erase_node(node)
            continue
        if target is select_output:
            continue
        if target in _ADDS or (node.op == "call_method" and target in ("add", "add_")):
            a, b = channels(args[0]), channels(args[1]) if len(args) > 1 else None
            if a is None and b is None:
                state[node] = None
                continue
            if a is None or b is None or a.universe != b.universe:
                if pruned_inputs(node):
                    raise _node_error(node, "an addition of a pruned tensor and another value")
                state[node] = a or b
                continue
            if a.same(b):
                state[node] = a
                continue
            union = torch.unique(torch.cat([a.kept, b.kept]))  # sorted
            new_args = list(args)
            for i, ch in ((0, a), (1, b)):
                if len(ch.kept) != len(union):
                    new_args[i] = scatter(args[i], ch, union, node)
            node.args = tuple(new_args)
            state[node] = Channels(a.universe, union)
            continue
        if (target in _CHANNELWISE_FUNCTIONS
                or (node.op == "call_method" and target in _CHANNELWISE_METHODS)
                or _is_flatten_view(node) or _reduces_spatial_only(node)):
            others = [a for a in node.all_input_nodes[1:] if state.get(a) is not None]
            if others and pruned_inputs(node):
                raise _node_error(node, "an operation combining channel tensors")
            state[node] = src
            continue
        if node.op == "call_method" and target == "size":
            state[node] = None
            continue
        if target in (operator.mul, operator.truediv, torch.mul) and len(args) == 2 \
                and not isinstance(args[1], fx.Node):
            state[node] = src  # scaling by a constant keeps removed channels at zero
            continue
        if pruned_inputs(node):
            raise _node_error(node, "an unsupported operation")
        state[node] = None

    for mask in removed_masks:
        if not mask.users or all(u.target is select_output for u in mask.users):
            _drop_mask(graph, mask)
    output = next(n for n in graph.nodes if n.op == "output")
    (selected,) = output.args
    if not keep_gates and isinstance(selected, fx.Node) and selected.target is select_output:
        output.args = (selected.args[0],)
        graph.erase_node(selected)
        for node in list(graph.nodes):
            if node.op == "placeholder" and node.target == "return_masks" and not node.users:
                graph.erase_node(node)
    graph.eliminate_dead_code()
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    total = sum(layer.kernels for layer in gated_layers(model))
    gm.meta = {
        "mwt_module": {
            "kernels": [int(i) for i in torch.nonzero(torch.as_tensor(kernels)).flatten()],
            "total_kernels": total,
            "keep_gates": keep_gates,
            "fold_gates": fold_gates,
        },
        "mwt_config": dict(model.meta.get("mwt_config", {})),
    }
    if keep_gates:
        gm.meta["mwt_layers"] = gated_layers(model)
    return gm


def _drop_mask(graph: fx.Graph, mask: fx.Node) -> None:
    """Remove a gate call from the graph (the select_output list keeps no reference)."""
    for user in list(mask.users):
        if user.target is select_output:
            logits, masks, flag = user.args
            user.args = (logits, [m for m in masks if m is not mask], flag)
    graph.erase_node(mask)


def kernel_share(module: nn.Module) -> float:
    """Share of the modular model's gated kernels that an extracted module keeps."""
    info = getattr(module, "meta", {}).get("mwt_module")
    if not info:
        raise MwtError("not an extracted module")
    return len(info["kernels"]) / info["total_kernels"]
