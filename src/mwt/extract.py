"""Module extraction (paper section 3.3, Figure 3-d): a physically smaller ``nn.Module``.

Extraction finds what to cut, then cuts it, in the way of Torch-Pruning:

1. **Strip the gates** the module does not keep (``mwt.gates.strip_gates``).
2. **Propagate** (:func:`_propagate`): walk the traced graph once and map every node to the
   channels of its producer that are still computed (:class:`Channels`), with one rule per op
   kind (``_MODULE_RULES`` by layer type, ``_FUNCTION_RULES`` and ``_METHOD_RULES`` by target).
   A gated conv keeps its module's kernels; BN, activations, pooling and flattening pass channel
   sets through; a residual add whose sides keep different channels keeps their union. The graph
   is not changed.
3. **Slice** (:func:`_slice_layers`): every layer whose input or output channels were cut is
   replaced by its slice, made by the slicer for its type in ``_SLICERS`` (conv: kernels and
   input channels; BN: channels; Linear: the input features of removed channels; a kept gate:
   :meth:`mwt.gates.Gate.sliced`). Folded gate values then scale their BN (:func:`_fold_gates`).
4. **Scatter** (:func:`_insert_scatters`): at a residual add whose sides keep different channels,
   each side is scattered into the union of both channel sets (zero padding), so no irrelevant
   kernel is ever computed.

A concatenation along channels keeps each part's channels at their offsets. Anything that would
mix removed and kept channels in a way we cannot follow (a split of cut channels, a channel-wise
product, an unknown layer) is an error naming the node, never a silent wrong result.

**A layer type not handled yet** (a torch.nn layer: fx traces through a user's own modules)
needs one entry in ``_MODULE_RULES``, saying how its output channels follow from its input
channels (``_passthrough`` for a layer that acts on each channel separately and keeps a zero
channel at zero), and, if it holds per-channel weights, one in ``_SLICERS``:
``slicer(layer, inputs, outputs) -> the smaller layer``.
"""

import copy
import itertools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import skip_init

from mwt.errors import MwtError
from mwt.gates import (
    Gate,
    gate_application,
    gated_layers,
    global_avg_pool,
    is_mask_output,
    is_modular,
    make_modular,
    strip_gates,
)
from mwt.model_info import ModuleInfo, MwtInfo, mwt_info, set_mwt_info


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


def _cut(ch: Channels | None) -> bool:
    """Whether some channels of a tensor are gone (None: not a channel tensor we track)."""
    return ch is not None and not ch.full


def pad_gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Scatter x's channels into a wider channel set: ``index`` picks, for each output channel,
    a channel of x or the appended zero channel (index == x.shape[1])."""
    zeros = x.new_zeros((x.shape[0], 1) + tuple(x.shape[2:]))
    return torch.cat([x, zeros], dim=1).index_select(1, index)


def _node_error(node: fx.Node, what: str) -> MwtError:
    return MwtError(f"cannot extract a module: {what} at graph node {node.name!r} "
                    f"({node.op} {getattr(node.target, '__name__', node.target)}) acts on "
                    "channels that extraction removes")


# ---- 2. Propagation: which channels of every tensor survive ---------------------------------

@dataclass
class _Flow:
    """What propagation knows: the surviving channels of every node visited so far."""

    modules: dict[str, nn.Module]
    kept: dict[str, torch.Tensor]           # conv name -> its kept kernels
    gates: dict[str, str]                   # gate name -> its conv's name
    channels: dict[fx.Node, Channels | None] = field(default_factory=dict)
    scatters: list[fx.Node] = field(default_factory=list)  # adds that need a scatter

    def of(self, arg) -> Channels | None:
        """Channels of an argument; inputs, constants and non-tensors are never cut (None)."""
        return self.channels.get(arg) if isinstance(arg, fx.Node) else None

    def input(self, node: fx.Node) -> Channels | None:
        return self.of(node.args[0]) if node.args else None

    def any_cut(self, node: fx.Node) -> bool:
        return any(_cut(self.channels.get(arg)) for arg in node.all_input_nodes)


Rule = Callable[[fx.Node, _Flow], Channels | None]


def _passthrough(node: fx.Node, flow: _Flow) -> Channels | None:
    """Each output channel is a function of the same input channel (ReLU, pooling, BN, ...):
    the channel set passes through, and a removed channel (zero in the gated model) stays zero."""
    return flow.input(node)


def _no_channels(node: fx.Node, flow: _Flow) -> None:
    return None  # a shape, or the masks handed to the caller: nothing to follow


def _unsupported(node: fx.Node, flow: _Flow) -> None:
    # Any op may read tensors nothing was cut from; only a cut input needs a rule we trust.
    if flow.any_cut(node):
        raise _node_error(node, "an unsupported operation")
    return None


def _unsupported_layer(node: fx.Node, flow: _Flow) -> None:
    if flow.any_cut(node):
        raise _node_error(node, f"unsupported layer {type(flow.modules[node.target]).__name__}")
    return None


def _conv(node: fx.Node, flow: _Flow) -> Channels:
    """A conv computes its kept kernels only (all of an ungated conv's) from the input channels
    its producer still computes."""
    conv = flow.modules[node.target]
    src = flow.input(node)
    if src is not None and src.universe != conv.in_channels:
        raise _node_error(node, "a convolution with unexpected input channels")
    if conv.groups != 1:  # a group ties input channels to kernels: cutting one side breaks it
        raise MwtError(f"cannot extract a module: grouped convolution {node.target!r} "
                       f"(groups={conv.groups}) at graph node {node.name!r}; only groups=1 is "
                       "supported")
    return Channels(conv.out_channels,
                    flow.kept.get(node.target, torch.arange(conv.out_channels)))


def _linear(node: fx.Node, flow: _Flow) -> None:
    """A Linear after the convs loses the input features of removed channels; its outputs are
    features, not channels, so nothing is followed past it."""
    src = flow.input(node)
    linear = flow.modules[node.target]
    if _cut(src) and linear.in_features % src.universe:
        raise MwtError(f"a Linear with {linear.in_features} inputs follows a tensor of "
                       f"{src.universe} channels; cannot map its inputs to channels")
    return None


def _flatten_module(node: fx.Node, flow: _Flow) -> Channels | None:
    src = flow.input(node)
    if _cut(src) and flow.modules[node.target].start_dim != 1:
        raise _node_error(node, "a Flatten that does not start at dim 1")
    return src


def _gate(node: fx.Node, flow: _Flow) -> Channels:
    """A kept gate computes mask values for its layer's kept kernels only."""
    conv = flow.gates[node.target]
    return Channels(flow.modules[conv].out_channels, flow.kept[conv])


def _gated_bn(node: fx.Node, flow: _Flow) -> Channels | None:
    """BN output times its gate's mask: both cover the same kept kernels."""
    bn_node, _ = gate_application(node)
    return flow.of(bn_node)


def _channelwise(node: fx.Node, flow: _Flow) -> Channels | None:
    """A function of one channel tensor; extra arguments must not be channel tensors."""
    others = [a for a in node.all_input_nodes[1:] if flow.channels.get(a) is not None]
    if others and flow.any_cut(node):
        raise _node_error(node, "an operation combining channel tensors")
    return flow.input(node)


def _flatten(node: fx.Node, flow: _Flow) -> Channels | None:
    """x.view(B, -1) / x.reshape(x.size(0), -1) / torch.flatten(x, 1) are channel-major, so a
    following Linear can map its inputs to channels. Any other reshape is unsupported."""
    if node.target in (torch.flatten, "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        channel_major = start == 1
    else:  # view, reshape
        shape = node.args[1:]
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        channel_major = len(shape) == 2 and shape[1] == -1
    return _channelwise(node, flow) if channel_major else _unsupported(node, flow)


def _spatial_reduction(node: fx.Node, flow: _Flow) -> Channels | None:
    """x.mean((2, 3)) and friends keep channels apart; a reduction over channels does not."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if dims and set(dims) <= {2, 3, -1, -2}:
        return _channelwise(node, flow)
    return _unsupported(node, flow)


def _scale(node: fx.Node, flow: _Flow) -> Channels | None:
    """Scaling by a constant keeps removed channels at zero."""
    if len(node.args) == 2 and not isinstance(node.args[1], fx.Node):
        return flow.input(node)
    return _unsupported(node, flow)


def _add(node: fx.Node, flow: _Flow) -> Channels | None:
    args = node.args
    a, b = flow.of(args[0]), flow.of(args[1]) if len(args) > 1 else None
    if a is None and b is None:
        return None
    if a is None or b is None or a.universe != b.universe:
        # A channel tensor plus a constant or an unrelated tensor: fine only if nothing was cut.
        if flow.any_cut(node):
            raise _node_error(node, "an addition of a pruned tensor and another value")
        return a or b
    if a.same(b):
        return a
    # A residual add whose sides keep different kernels (Figure 3-d): the sum has the union,
    # and _insert_scatters pads each side to it.
    flow.scatters.append(node)
    return Channels(a.universe, torch.unique(torch.cat([a.kept, b.kept])))  # sorted


def _concat(node: fx.Node, flow: _Flow) -> Channels | None:
    """``torch.cat`` along channels (dim 1): the kept channels of each part, at its offset in
    the concatenated channels (a DenseNet block). A removed channel is zero in the gated model
    and is missing from the cut tensor, so the conv that reads the concatenation loses exactly
    those input channels. Parts whose channels are not followed (the raw input, a constant)
    are fine while nothing is cut."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    parts = [flow.of(t) for t in tensors] if isinstance(tensors, (list, tuple)) else [None]
    cut = any(_cut(p) for p in parts)
    if dim not in (1, -3) or any(p is None for p in parts):
        if cut:
            raise _node_error(node, "a concatenation along another dimension than the channels"
                              if dim not in (1, -3) else "a concatenation of a pruned tensor "
                              "with one whose channels are not followed")
        return None
    kept, offset = [], 0
    for p in parts:
        kept.append(p.kept + offset)
        offset += p.universe
    return Channels(offset, torch.cat(kept))


# Layers and functions that act on each channel separately: channel sets pass through them.
# Dropping a channel is exact only if the op maps zero (a removed kernel's output in the gated
# model) to zero, so sigmoid (sigmoid(0) = 0.5) is not here: on cut channels it is an error.
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Hardswish,
    nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.Identity,
)
_CHANNELWISE_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.hardswish, F.elu, torch.tanh,
    F.hardtanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
    F.dropout, F.dropout2d, global_avg_pool,
)
_CHANNELWISE_METHODS = ("relu", "relu_", "tanh", "contiguous", "clone", "detach")
_CONCATS = (torch.cat, torch.concat, torch.concatenate)

# By layer type, first match wins; a layer with no rule is an error if any of its inputs is cut.
_MODULE_RULES: list[tuple[type | tuple[type, ...], Rule]] = [
    (nn.Conv2d, _conv),
    (nn.BatchNorm2d, _passthrough),  # its conv's kernels, cut with them (the gate comes after)
    (Gate, _gate),
    (nn.Linear, _linear),
    (nn.Flatten, _flatten_module),
    (_CHANNELWISE_MODULES, _passthrough),
]
# By call_function target; a function with no rule is an error if any of its inputs is cut.
_FUNCTION_RULES: dict[Callable, Rule] = {
    **{fn: _add for fn in (operator.add, operator.iadd, torch.add)},
    **{fn: _channelwise for fn in _CHANNELWISE_FUNCTIONS},
    torch.flatten: _flatten,
    **{fn: _concat for fn in _CONCATS},
    **{fn: _scale for fn in (operator.mul, operator.truediv, torch.mul)},
}
# By call_method name (x.add(y), x.view(...)); same fallback.
_METHOD_RULES: dict[str, Rule] = {
    "add": _add, "add_": _add,
    **{name: _channelwise for name in _CHANNELWISE_METHODS},
    "flatten": _flatten, "view": _flatten, "reshape": _flatten,
    "mean": _spatial_reduction, "amax": _spatial_reduction, "sum": _spatial_reduction,
    "size": _no_channels,
}


def _rule_for(node: fx.Node, flow: _Flow) -> Rule:
    if node.op == "call_module":
        module = flow.modules[node.target]
        return next((rule for cls, rule in _MODULE_RULES if isinstance(module, cls)),
                    _unsupported_layer)
    if gate_application(node) is not None:  # only in a module that keeps its gates
        return _gated_bn
    if is_mask_output(node):
        return _no_channels
    if node.op == "call_function":
        return _FUNCTION_RULES.get(node.target, _unsupported)
    return _METHOD_RULES.get(node.target, _unsupported)


def _propagate(gm: fx.GraphModule, kept: dict[str, torch.Tensor],
               gates: dict[str, str]) -> _Flow:
    """Map every node of ``gm`` to its surviving channels; raises at the first node whose
    channels cannot be followed. Reads the graph, changes nothing."""
    flow = _Flow(dict(gm.named_modules()), kept, gates)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue  # inputs and constants are never cut; the output computes nothing
        flow.channels[node] = _rule_for(node, flow)(node, flow)
    return flow


# ---- 3. Slicing: one slicer per layer type --------------------------------------------------

Slicer = Callable[[nn.Module, Channels | None, Channels | None], nn.Module]


def _factory(t: torch.Tensor) -> dict:
    # skip_init: every value of a slice is copied, so nothing is initialised (or drawn at random)
    return {"device": t.device, "dtype": t.dtype}


def _slice_conv(conv: nn.Conv2d, inputs: Channels | None, outputs: Channels) -> nn.Conv2d:
    """Kernels (output channels) and input channels; ``_conv`` has checked groups == 1."""
    out_idx = outputs.kept
    in_idx = inputs.kept if inputs is not None else torch.arange(conv.in_channels)
    new = skip_init(nn.Conv2d, len(in_idx), len(out_idx), conv.kernel_size, conv.stride,
                    conv.padding, conv.dilation, 1, conv.bias is not None, conv.padding_mode,
                    **_factory(conv.weight))
    with torch.no_grad():
        new.weight.copy_(conv.weight[out_idx][:, in_idx])
        if conv.bias is not None:
            new.bias.copy_(conv.bias[out_idx])
    return new.train(conv.training)


def _slice_bn(bn: nn.BatchNorm2d, inputs: Channels, outputs: Channels) -> nn.BatchNorm2d:
    """The kernels its conv still computes. A BN whose conv keeps every kernel has nothing to
    lose and is not sliced; a folded gate value needs no slice either (``_fold_gates``)."""
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


# By layer type, first match wins. Every layer that ``_MODULE_RULES`` lets channels through and
# that holds per-channel weights needs one; parameter-free layers (ReLU, pooling) need none.
_SLICERS: list[tuple[type, Slicer]] = [
    (nn.Conv2d, _slice_conv),
    (nn.BatchNorm2d, _slice_bn),
    (nn.Linear, _slice_linear),
    (Gate, _slice_gate),
]


def _slice_layers(gm: fx.GraphModule, flow: _Flow) -> None:
    """Replace every layer that lost input or output channels by its slice."""
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = flow.modules[node.target]  # the original layer, even if replaced already
        slicer = next((s for cls, s in _SLICERS if isinstance(module, cls)), None)
        inputs, outputs = flow.input(node), flow.channels.get(node)
        # A layer that keeps all its channels (e.g. the first conv) stays as it is.
        if slicer is not None and (_cut(inputs) or _cut(outputs)):
            gm.add_submodule(node.target, slicer(module, inputs, outputs))


def _fold_gates(gm: fx.GraphModule, folds: dict[str, torch.Tensor]) -> None:
    """Fold constant gate values into their BN: (gamma x_hat + beta) g = (gamma g) x_hat + beta g.

    Runs after slicing, so each BN already holds just its kept kernels, whose values ``folds``
    holds in the same order; a BN that was not sliced is extraction's own copy.
    """
    for bn_name, scale in folds.items():
        bn = gm.get_submodule(bn_name)
        if bn.affine:  # a BN without affine parameters has nowhere to hold the values
            with torch.no_grad():
                scale = scale.to(bn.weight)
                bn.weight.mul_(scale)
                bn.bias.mul_(scale)


# ---- 4. Scatters at residual adds ------------------------------------------------------------

def _insert_scatters(gm: fx.GraphModule, flow: _Flow, device: torch.device) -> None:
    """Pad each side of an add that keeps fewer channels than the sum to the sum's channels."""
    graph, count = gm.graph, 0
    for node in flow.scatters:
        union = flow.channels[node].kept
        args = list(node.args)
        for i in (0, 1):
            ch = flow.of(node.args[i])
            if len(ch.kept) == len(union):
                continue
            index = torch.full((len(union),), len(ch.kept), dtype=torch.long)  # the zero channel
            index[torch.searchsorted(union, ch.kept)] = torch.arange(len(ch.kept))
            name = f"mwt_scatter_{count}"  # numbered in graph order: stable state_dict keys
            count += 1
            gm.register_buffer(name, index.to(device))
            with graph.inserting_before(node):
                args[i] = graph.call_function(pad_gather, (node.args[i], graph.get_attr(name)))
        node.args = tuple(args)


# ---- the whole extraction ---------------------------------------------------------------------

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
    """Each gated BN's gate values on its kept kernels, keyed by the BN's name."""
    total = sum(layer.kernels for layer in gated_layers(model))
    values = torch.as_tensor(gate_values, dtype=torch.float32).cpu()
    if values.shape != (total,):
        raise MwtError(f"gate_values must be a float tensor of {total} gated kernels")
    out, offset = {}, 0
    for layer in gated_layers(model):
        out[layer.bn] = values[offset:offset + layer.kernels][kept[layer.conv]]
        offset += layer.kernels
    return out


def extract_module(model: nn.Module, kernels, *, keep_gates: bool = False,
                   fold_gates: bool = False, gate_values=None,
                   share_weights: bool = False) -> fx.GraphModule:
    """Cut the kernels marked True in ``kernels`` out of a modular model into a smaller module.

    ``kernels``: 1-D bool tensor over all gated kernels, in the order of the concatenated masks
    of ``model(x, return_masks=True)`` (e.g. ``ModuleSet.kernels_for(classes)``).
    A standard model (no gates) is cut the same way over the kernels ``make_modular`` would gate
    (``mwt.gates.gateable_layers``): the module computes the standard model with every other
    gated kernel's output set to zero (e.g. a CNNSplitter module, ``mwt.baselines``). It has no
    gates to keep or fold.
    By default the gates are removed (paper section 3.3): the module computes what the modular
    model computes with every gate value set to 1 on kept kernels and 0 elsewhere.
    ``keep_gates=True`` keeps each gate, restricted to the kept kernels: the module then computes
    exactly what the modular model computes for samples whose relevant kernels it all keeps.
    ``fold_gates=True`` removes the gates but folds ``gate_values`` (one value per gated kernel,
    e.g. the mean gate value over the target classes' samples) into BatchNorm scale and shift.
    The module returns the original N-way logits.
    ``share_weights=True`` skips copying the model's tensors: layers the cut leaves whole (the
    classifier after its first Linear, say) then share their parameters with ``model``. For a
    module that is only run, never trained or saved (CNNSplitter scores a thousand candidates a
    generation this way); the default module owns all its tensors.
    """
    if not is_modular(model):
        if keep_gates or fold_gates:
            raise MwtError(f"{'keep_gates' if keep_gates else 'fold_gates'} needs a modular model "
                           "(from mwt.make_modular); a standard model has no gates")
        # Gates inserted only to be stripped again: the graph the passes below know. Their
        # random initialisation must not move the caller's random stream.
        with torch.random.fork_rng(devices=[]):
            model = make_modular(model)
    if keep_gates and fold_gates:
        raise MwtError("keep_gates and fold_gates exclude each other")
    if fold_gates and gate_values is None:
        raise MwtError("fold_gates needs gate_values (e.g. ModuleSet.gate_means_for(classes))")
    kept = _kept_per_layer(model, kernels)
    folds = _gate_values(model, gate_values, kept) if fold_gates else {}
    layers = gated_layers(model)

    if share_weights:  # every tensor stays where it is: copy only the modules and the graph
        memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        gm = copy.deepcopy(model, memo)
    else:
        gm = copy.deepcopy(model)
    if not keep_gates:
        strip_gates(gm, inplace=True)
    flow = _propagate(gm, kept, {layer.gate: layer.conv for layer in layers})
    _slice_layers(gm, flow)
    _fold_gates(gm, folds)
    _insert_scatters(gm, flow, next(model.parameters()).device)

    graph = gm.graph
    graph.eliminate_dead_code()
    graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    cut = ModuleInfo(
        kernels=tuple(int(i) for i in torch.nonzero(torch.as_tensor(kernels)).flatten()),
        total_kernels=sum(layer.kernels for layer in layers),
        keep_gates=keep_gates, fold_gates=fold_gates)
    gm.meta = {}
    return set_mwt_info(gm, MwtInfo(spec=mwt_info(model).spec,
                                    layers=tuple(layers) if keep_gates else (), module=cut))


def kernel_share(module: nn.Module) -> float:
    """Share of the modular model's gated kernels that an extracted module keeps."""
    info = mwt_info(module).module
    if info is None:
        raise MwtError("not an extracted module")
    return len(info.kernels) / info.total_kernels
