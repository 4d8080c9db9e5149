"""Cutting a graph to what propagation found (``mwt.channel_flow``): extraction's rewriting.

- :func:`slice_layers`: every layer whose input or output channels were cut is replaced by its
  slice, made by the slicer for its type in ``SLICERS`` (conv: kernels and input channels, whole
  groups for a grouped conv; BN: channels; Linear: the input features of removed channels; a
  kept gate: :meth:`mwt.gates.Gate.sliced`).
- :func:`fold_gates`: folded gate values scale their BN (or, for a conv without BN, the conv).
- :func:`insert_gathers`: the index gathers the cut graph needs where a tensor's channels are not
  the ones its consumer reads: at a residual add whose sides keep different channels, each side
  scattered into the union (zero padding, Figure 3-d); before a grouped conv, its producer's
  channels arranged as its kept groups read them (zeros where the producer dropped one); after
  it, its kept kernels picked out of its whole groups.
- :func:`resize_splits`: a split or chunk along channels is given its parts' new sizes.

Every gather index is a buffer named ``mwt_scatter_<n>``, numbered in graph order, so module
files have stable keys.
"""

from collections.abc import Callable

import torch
import torch.fx as fx
import torch.nn as nn
from torch.nn.utils import skip_init

from mwt.channel_flow import Channels, Flow, grouped_conv_plan, is_cut
from mwt.gates import Gate
from mwt.models.unit_blocks import UnitBlock


def pad_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Arrange x's channels as another channel set: ``index`` picks, for each output channel,
    a channel of x or the appended zero channel (index == x.shape[1])."""
    zeros = x.new_zeros((x.shape[0], 1) + tuple(x.shape[2:]))
    return torch.cat([x, zeros], dim=1).index_select(1, index)


Slicer = Callable[[nn.Module, Channels | None, Channels | None], nn.Module]


def _factory(t: torch.Tensor) -> dict:
    # skip_init: every value of a slice is copied, so nothing is initialised (or drawn at random)
    return {"device": t.device, "dtype": t.dtype}


def _slice_conv(conv: nn.Conv2d, inputs: Channels | None, outputs: Channels) -> nn.Conv2d:
    """Kernels (output channels) and input channels. A grouped conv keeps whole groups
    (``grouped_conv_plan``), reading its groups' inputs (``insert_gathers`` arranges them)."""
    if conv.groups == 1:
        in_idx = inputs.kept if inputs is not None else torch.arange(conv.in_channels)
        out_idx, groups, weight = outputs.kept, 1, conv.weight[outputs.kept][:, in_idx]
    else:
        in_idx, out_idx = grouped_conv_plan(conv, outputs.kept)
        groups = conv.groups * len(out_idx) // conv.out_channels
        weight = conv.weight[out_idx]  # [out, in / groups, kh, kw]: the groups' own weights
    new = skip_init(nn.Conv2d, len(in_idx), len(out_idx), conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, groups, conv.bias is not None,
                    conv.padding_mode, **_factory(conv.weight))
    with torch.no_grad():
        new.weight.copy_(weight)
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_idx])
    return new.train(conv.training)


def _slice_bn(bn: nn.BatchNorm2d, inputs: Channels, outputs: Channels) -> nn.BatchNorm2d:
    """The kernels its conv still computes. A BN whose conv keeps every kernel has nothing to
    lose and is not sliced; a folded gate value needs no slice either (``fold_gates``)."""
    idx = inputs.kept
    like = bn.weight if bn.affine else bn.running_mean
    new = skip_init(nn.BatchNorm2d, len(idx), bn.eps, bn.momentum, bn.affine,
                    bn.track_running_stats, **_factory(like))
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats:
            new.running_mean.copy_(bn.running_mean[idx])
            new.running_var.copy_(bn.running_var[idx])
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def _slice_linear(linear: nn.Linear, inputs: Channels, outputs: None) -> nn.Linear:
    """The input features that removed channels fed; outputs (classes) are all kept."""
    hw = linear.in_features // inputs.universe  # flatten is channel-major: c * H * W + pixel
    cols = (inputs.kept[:, None] * hw + torch.arange(hw)[None, :]).flatten()
    new = skip_init(nn.Linear, len(cols), linear.out_features, linear.bias is not None,
                    **_factory(linear.weight))
    with torch.no_grad():
        new.weight.copy_(linear.weight[:, cols.to(linear.weight.device)])
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new.train(linear.training)


def _slice_gate(gate: Gate, inputs: Channels | None, outputs: Channels) -> Gate:
    """A kept gate reads the pooled channels its conv still reads and masks its kept kernels."""
    return gate.sliced(inputs.kept if inputs is not None else None, outputs.kept)


# By layer type, first match wins. Every layer that ``MODULE_RULES`` lets channels through and
# that holds per-channel weights needs one; parameter-free layers (ReLU, pooling) need none.
SLICERS: list[tuple[type, Slicer]] = [
    (nn.Conv2d, _slice_conv),
    (nn.BatchNorm2d, _slice_bn),
    (nn.Linear, _slice_linear),
    (Gate, _slice_gate),
]


def slice_layers(gm: fx.GraphModule, flow: Flow) -> None:
    """Replace every layer that lost input or output channels by its slice, and every unit
    block that lost units by ``UnitBlock.sliced``."""
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = flow.modules[node.target]  # the original layer, even if replaced already
        if isinstance(module, UnitBlock):
            kept = flow.kept.get(node.target)
            if kept is not None and len(kept) < module.units:
                gm.add_submodule(node.target, module.sliced(kept))
            continue
        slicer = next((s for cls, s in SLICERS if isinstance(module, cls)), None)
        inputs, outputs = flow.input(node), flow.channels.get(node)
        # A layer that keeps all its channels (e.g. the first conv) stays as it is.
        if slicer is not None and (is_cut(inputs) or is_cut(outputs)):
            gm.add_submodule(node.target, slicer(module, inputs, outputs))


def fold_gates(gm: fx.GraphModule, folds: dict[str, torch.Tensor]) -> None:
    """Fold constant gate values into the layer they scale: its BN,
    (gamma x_hat + beta) g = (gamma g) x_hat + beta g, a conv without BN, (W x + b) g, or a
    unit block (``UnitBlock.scale_units``).

    Runs after slicing, so each layer already holds just its kept kernels, whose values
    ``folds`` holds in the same order; a layer that was not sliced is extraction's own copy.
    """
    for name, scale in folds.items():
        layer = gm.get_submodule(name)
        if isinstance(layer, UnitBlock):
            layer.scale_units(scale)
        elif isinstance(layer, nn.Conv2d):
            weight, bias = layer.weight, layer.bias
            with torch.no_grad():
                scale = scale.to(weight)
                weight.mul_(scale[:, None, None, None])
                if bias is not None:
                    bias.mul_(scale)
        elif layer.affine:  # a BN without affine parameters has nowhere to hold the values
            with torch.no_grad():
                scale = scale.to(layer.weight)
                layer.weight.mul_(scale)
                layer.bias.mul_(scale)


def _index(have: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """For each channel of ``want``, its position in ``have`` (sorted), or ``len(have)`` (the
    zero channel of ``pad_gather``) where ``have`` lacks it."""
    pos = torch.searchsorted(have, want).clamp_max(max(len(have) - 1, 0))
    found = (have[pos] == want) if len(have) else torch.zeros_like(want, dtype=torch.bool)
    return torch.where(found, pos, torch.full_like(want, len(have)))


class _Gathers:
    """Adds ``pad_gather`` calls with numbered index buffers to a graph."""

    def __init__(self, gm: fx.GraphModule, device: torch.device):
        self.gm, self.device, self.count = gm, device, 0

    def insert(self, source: fx.Node, index: torch.Tensor, *, before: fx.Node) -> fx.Node:
        name = f"mwt_scatter_{self.count}"
        self.count += 1
        self.gm.register_buffer(name, index.to(self.device))
        graph = self.gm.graph
        with graph.inserting_before(before):
            return graph.call_function(pad_gather, (source, graph.get_attr(name)))


def insert_gathers(gm: fx.GraphModule, flow: Flow, device: torch.device) -> None:
    """The gathers of the module docstring, in graph order."""
    gathers = _Gathers(gm, device)
    scatters = set(flow.scatters)
    for node in list(gm.graph.nodes):
        if node in scatters:
            union = flow.channels[node].kept
            args = list(node.args)
            for i in (0, 1):
                ch = flow.of(node.args[i])
                if len(ch.kept) != len(union):
                    args[i] = gathers.insert(node.args[i], _index(ch.kept, union), before=node)
            node.args = tuple(args)
        elif node.op == "call_module" and isinstance(flow.modules[node.target], nn.Conv2d):
            _gather_grouped(node, flow, gathers)


def _gather_grouped(node: fx.Node, flow: Flow, gathers: _Gathers) -> None:
    conv = flow.modules[node.target]
    kept = flow.channels[node].kept
    if conv.groups == 1:
        return
    inputs, outputs = grouped_conv_plan(conv, kept)
    src = flow.input(node)
    have = src.kept if src is not None else torch.arange(conv.in_channels)
    if not torch.equal(have, inputs):
        node.args = (gathers.insert(node.args[0], _index(have, inputs), before=node),
                     *node.args[1:])
    if not torch.equal(outputs, kept):
        after = node.next
        users = list(node.users)
        picked = gathers.insert(node, _index(outputs, kept), before=after)
        for user in users:
            user.replace_input_with(node, picked)


def resize_splits(flow: Flow) -> None:
    """Each split or chunk of cut channels becomes ``torch.split`` with its parts' kept
    sizes."""
    for node in flow.splits:
        sizes = [len(part.kept) for part in flow.channels[node]]
        node.op, node.target = "call_function", torch.split
        node.args, node.kwargs = (node.args[0], sizes), {"dim": 1}


__all__ = ["pad_gather", "SLICERS", "slice_layers", "fold_gates", "insert_gathers",
           "resize_splits"]
