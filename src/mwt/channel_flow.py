"""Which channels of every tensor survive a module cut: extraction's propagation pass.

:func:`propagate` walks a traced graph once, in order, and maps every node to the channels of its
producer that the module still computes (:class:`Channels`), with one rule per op kind
(``MODULE_RULES`` by layer type, ``FUNCTION_RULES`` and ``METHOD_RULES`` by target). A rule is
``(node, flow) -> Channels | None`` (None: not a channel tensor we follow, such as logits or a
shape); it raises :func:`node_error` where an op would mix removed and kept channels in a way we
cannot follow. The graph is not changed; ``mwt.slicing`` then cuts what this pass found.

The one invariant every rule keeps: a channel left out of a node's set is zero in the gated
model (a removed kernel's output, or what only removed kernels feed), so dropping it from the
cut tensor changes nothing downstream. Hence the rules:

- a gated conv keeps its module's kernels, an ungated one all of them. A grouped conv computes
  whole groups (the groups of its kept kernels, which read their groups' inputs; a depthwise
  conv's channel k reads input channel k) and hands on its kept kernels only;
- a transformer unit block keeps its module's heads or neurons inside it; the residual stream
  it reads and writes is never cut;
- BatchNorm, activations that map 0 to 0, pooling and flattening pass channel sets through;
- a residual add whose sides keep different channels keeps their union (``Flow.scatters``);
- a concatenation along channels keeps each part's channels at its offset; a split or chunk
  along channels hands each part the kept channels that fall in it (``Flow.splits``).
"""

import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from mwt.errors import MwtError
from mwt.gates import Gate, gate_application, global_avg_pool, is_mask_output, units_of
from mwt.models.unit_blocks import UnitBlock


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

    @staticmethod
    def all(universe: int) -> "Channels":
        return Channels(universe, torch.arange(universe))


# A node's channels: one set, None (not followed), or a tuple of sets (a split's parts).
Flowing = Channels | tuple | None


def is_cut(ch: Flowing) -> bool:
    """Whether some channels of a tensor (or of a split's part) are gone."""
    if isinstance(ch, tuple):
        return any(is_cut(part) for part in ch)
    return ch is not None and not ch.full


def node_error(node: fx.Node, what: str) -> MwtError:
    return MwtError(f"cannot extract a module: {what} at graph node {node.name!r} "
                    f"({node.op} {getattr(node.target, '__name__', node.target)}) acts on "
                    "channels that extraction removes")


def grouped_conv_plan(conv: nn.Conv2d, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inputs, outputs)`` a grouped conv computes to give its ``kept`` kernels: the whole
    groups those kernels lie in (a cut conv's groups must stay equal in size), and the input
    channels those groups read, both sorted. For ``groups=1`` that is every input and
    ``kept``."""
    if conv.groups == 1:
        return torch.arange(conv.in_channels), kept
    per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
    groups = torch.unique(kept // per_out)
    inputs = (groups[:, None] * per_in + torch.arange(per_in)[None, :]).flatten()
    outputs = (groups[:, None] * per_out + torch.arange(per_out)[None, :]).flatten()
    return inputs, outputs


@dataclass
class Flow:
    """What propagation knows: the surviving channels of every node visited so far."""

    modules: dict[str, nn.Module]
    kept: dict[str, torch.Tensor]           # conv name -> its kept kernels
    gates: dict[str, str]                   # gate name -> its conv's name
    channels: dict[fx.Node, Flowing] = field(default_factory=dict)
    scatters: list[fx.Node] = field(default_factory=list)  # adds that need a scatter
    splits: list[fx.Node] = field(default_factory=list)    # splits whose sizes change

    def of(self, arg) -> Flowing:
        """Channels of an argument; inputs, constants and non-tensors are never cut (None)."""
        return self.channels.get(arg) if isinstance(arg, fx.Node) else None

    def input(self, node: fx.Node) -> Flowing:
        return self.of(node.args[0]) if node.args else None

    def any_cut(self, node: fx.Node) -> bool:
        return any(is_cut(self.channels.get(arg)) for arg in node.all_input_nodes)


Rule = Callable[[fx.Node, Flow], Flowing]


def passthrough(node: fx.Node, flow: Flow) -> Flowing:
    """Each output channel is a function of the same input channel (ReLU, pooling, BN, ...):
    the channel set passes through, and a removed channel (zero in the gated model) stays zero."""
    return flow.input(node)


def _no_channels(node: fx.Node, flow: Flow) -> None:
    return None  # a shape, or the masks handed to the caller: nothing to follow


def _unsupported(node: fx.Node, flow: Flow) -> None:
    # Any op may read tensors nothing was cut from; only a cut input needs a rule we trust.
    if flow.any_cut(node):
        raise node_error(node, "an unsupported operation")
    return None


def _unsupported_layer(node: fx.Node, flow: Flow) -> None:
    if flow.any_cut(node):
        raise node_error(node, f"unsupported layer {type(flow.modules[node.target]).__name__}")
    return None


def _conv(node: fx.Node, flow: Flow) -> Channels:
    """A conv computes its kept kernels only (all of an ungated conv's) from the input channels
    its producer still computes; a grouped conv computes its kept kernels' whole groups from
    their inputs (``grouped_conv_plan``; ``mwt.slicing`` pads the inputs its producer dropped
    with zeros and picks the kept kernels out of the groups)."""
    conv = flow.modules[node.target]
    src = flow.input(node)
    if isinstance(src, tuple) or (src is not None and src.universe != conv.in_channels):
        raise node_error(node, "a convolution with unexpected input channels")
    if src is not None and len(src.kept) == 0:
        raise node_error(node, "a convolution whose input keeps no channel (a split part "
                         "whose channels were all removed)")
    return Channels(conv.out_channels,
                    flow.kept.get(node.target, torch.arange(conv.out_channels)))


def _unit_block(node: fx.Node, flow: Flow) -> None:
    """A transformer block (attention, MLP) keeps its kept units inside (``mwt.slicing`` cuts
    it with ``UnitBlock.sliced``); it reads and writes the residual stream, which is never
    cut, so nothing is followed past it."""
    if is_cut(flow.input(node)):
        raise node_error(node, "a transformer block reading a cut tensor")
    return None


def _linear(node: fx.Node, flow: Flow) -> None:
    """A Linear after the convs loses the input features of removed channels; its outputs are
    features, not channels, so nothing is followed past it."""
    src = flow.input(node)
    linear = flow.modules[node.target]
    if isinstance(src, tuple):
        raise node_error(node, "a Linear on a split")
    if is_cut(src) and linear.in_features % src.universe:
        raise MwtError(f"a Linear with {linear.in_features} inputs follows a tensor of "
                       f"{src.universe} channels; cannot map its inputs to channels")
    return None


def _flatten_module(node: fx.Node, flow: Flow) -> Flowing:
    src = flow.input(node)
    if is_cut(src) and flow.modules[node.target].start_dim != 1:
        raise node_error(node, "a Flatten that does not start at dim 1")
    return src


def _gate(node: fx.Node, flow: Flow) -> Channels:
    """A kept gate computes mask values for its layer's kept kernels only."""
    layer = flow.gates[node.target]
    return Channels(units_of(flow.modules[layer]), flow.kept[layer])


def _gated_output(node: fx.Node, flow: Flow) -> Flowing:
    """A gated conv's output (its BN's, or its own) times its gate's mask: both cover the same
    kept kernels."""
    output, _ = gate_application(node)
    return flow.of(output)


def _channelwise(node: fx.Node, flow: Flow) -> Flowing:
    """A function of one channel tensor; extra arguments must not be channel tensors."""
    others = [a for a in node.all_input_nodes[1:] if flow.channels.get(a) is not None]
    if (others and flow.any_cut(node)) or isinstance(flow.input(node), tuple):
        raise node_error(node, "an operation combining channel tensors")
    return flow.input(node)


def _flatten(node: fx.Node, flow: Flow) -> Flowing:
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


def _spatial_reduction(node: fx.Node, flow: Flow) -> Flowing:
    """x.mean((2, 3)) and friends keep channels apart; a reduction over channels does not."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
    if dims and set(dims) <= {2, 3, -1, -2}:
        return _channelwise(node, flow)
    return _unsupported(node, flow)


def _scale(node: fx.Node, flow: Flow) -> Flowing:
    """Scaling by a constant keeps removed channels at zero."""
    if len(node.args) == 2 and not isinstance(node.args[1], fx.Node):
        return _channelwise(node, flow)
    return _unsupported(node, flow)


def _add(node: fx.Node, flow: Flow) -> Flowing:
    args = node.args
    a, b = flow.of(args[0]), flow.of(args[1]) if len(args) > 1 else None
    if isinstance(a, tuple) or isinstance(b, tuple):
        return _unsupported(node, flow)
    if a is None and b is None:
        return None
    if a is None or b is None or a.universe != b.universe:
        # A channel tensor plus a constant or an unrelated tensor: fine only if nothing was cut.
        if flow.any_cut(node):
            raise node_error(node, "an addition of a pruned tensor and another value")
        return a or b
    if a.same(b):
        return a
    # A residual add whose sides keep different kernels (Figure 3-d): the sum has the union,
    # and mwt.slicing pads each side to it.
    flow.scatters.append(node)
    return Channels(a.universe, torch.unique(torch.cat([a.kept, b.kept])))  # sorted


def _channel_dim(node: fx.Node, position: int, default: int) -> int:
    return node.args[position] if len(node.args) > position else node.kwargs.get("dim", default)


def _concat(node: fx.Node, flow: Flow) -> Flowing:
    """``torch.cat`` along channels (dim 1): the kept channels of each part, at its offset in
    the concatenated channels (a DenseNet block). A removed channel is zero in the gated model
    and is missing from the cut tensor, so the conv that reads the concatenation loses exactly
    those input channels. Parts whose channels are not followed (the raw input, a constant)
    are fine while nothing is cut."""
    tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
    dim = _channel_dim(node, 1, 0)
    parts = [flow.of(t) for t in tensors] if isinstance(tensors, (list, tuple)) else [None]
    cut = any(is_cut(p) for p in parts)
    if dim not in (1, -3) or any(p is None or isinstance(p, tuple) for p in parts):
        if cut:
            raise node_error(node, "a concatenation along another dimension than the channels"
                             if dim not in (1, -3) else "a concatenation of a pruned tensor "
                             "with one whose channels are not followed")
        return None
    kept, offset = [], 0
    for p in parts:
        kept.append(p.kept + offset)
        offset += p.universe
    return Channels(offset, torch.cat(kept))


def split_sizes(node: fx.Node, channels: int) -> list[int]:
    """The part sizes of ``torch.split`` / ``torch.chunk`` (or the methods) on ``channels``
    channels, as torch computes them (a chunk may give fewer parts than asked)."""
    how = node.args[1] if len(node.args) > 1 else node.kwargs.get(
        "split_size_or_sections", node.kwargs.get("split_size", node.kwargs.get("chunks")))
    index = torch.arange(channels)
    parts = index.chunk(how) if node.target in ("chunk", torch.chunk) else index.split(how)
    return [len(p) for p in parts]


def _split(node: fx.Node, flow: Flow) -> Flowing:
    """A split or chunk along channels: each part keeps the kept channels that fall in it,
    renumbered from its start; ``mwt.slicing`` gives the cut tensor the parts' new sizes."""
    src = flow.input(node)
    dim = _channel_dim(node, 2, 0)
    if src is None or isinstance(src, tuple):
        return _unsupported(node, flow)
    if dim not in (1, -3):
        return _unsupported(node, flow)
    parts, start = [], 0
    for size in split_sizes(node, src.universe):
        inside = src.kept[(src.kept >= start) & (src.kept < start + size)]
        parts.append(Channels(size, inside - start))
        start += size
    if is_cut(src):  # a part may keep no channel: an empty tensor, fine until a layer reads it
        flow.splits.append(node)
    return tuple(parts)


def _getitem(node: fx.Node, flow: Flow) -> Flowing:
    """A part of a split (``parts[i]``); indexing anything else is unsupported on cut tensors."""
    src, index = flow.input(node), node.args[1]
    if isinstance(src, tuple) and isinstance(index, int):
        return src[index]
    return _unsupported(node, flow)


# Layers and functions that act on each channel separately: channel sets pass through them.
# Dropping a channel is exact only if the op maps zero (a removed kernel's output in the gated
# model) to zero, so sigmoid (sigmoid(0) = 0.5) is not here: on cut channels it is an error.
CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh, nn.Hardswish,
    nn.Hardtanh, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.Identity,
)
CHANNELWISE_FUNCTIONS = (
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, F.mish, F.hardswish, F.elu,
    torch.tanh, F.hardtanh, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d,
    F.adaptive_max_pool2d, F.dropout, F.dropout2d, global_avg_pool,
)
CHANNELWISE_METHODS = ("relu", "relu_", "tanh", "contiguous", "clone", "detach")
_CONCATS = (torch.cat, torch.concat, torch.concatenate)

# By layer type, first match wins; a layer with no rule is an error if any of its inputs is cut.
MODULE_RULES: list[tuple[type | tuple[type, ...], Rule]] = [
    (nn.Conv2d, _conv),
    (UnitBlock, _unit_block),
    (nn.BatchNorm2d, passthrough),  # its conv's kernels, cut with them (the gate comes after)
    (Gate, _gate),
    (nn.Linear, _linear),
    (nn.Flatten, _flatten_module),
    (CHANNELWISE_MODULES, passthrough),
]
# By call_function target; a function with no rule is an error if any of its inputs is cut.
FUNCTION_RULES: dict[Callable, Rule] = {
    **{fn: _add for fn in (operator.add, operator.iadd, torch.add)},
    **{fn: _channelwise for fn in CHANNELWISE_FUNCTIONS},
    torch.flatten: _flatten,
    **{fn: _concat for fn in _CONCATS},
    **{fn: _scale for fn in (operator.mul, operator.truediv, torch.mul)},
    torch.split: _split, torch.chunk: _split,
    operator.getitem: _getitem,
}
# By call_method name (x.add(y), x.view(...)); same fallback.
METHOD_RULES: dict[str, Rule] = {
    "add": _add, "add_": _add,
    **{name: _channelwise for name in CHANNELWISE_METHODS},
    "flatten": _flatten, "view": _flatten, "reshape": _flatten,
    "mean": _spatial_reduction, "amax": _spatial_reduction, "sum": _spatial_reduction,
    "split": _split, "chunk": _split,
    "size": _no_channels,
}


def _rule_for(node: fx.Node, flow: Flow) -> Rule:
    if node.op == "call_module":
        module = flow.modules[node.target]
        return next((rule for cls, rule in MODULE_RULES if isinstance(module, cls)),
                    _unsupported_layer)
    if gate_application(node) is not None:  # only in a module that keeps its gates
        return _gated_output
    if is_mask_output(node):
        return _no_channels
    if node.op == "call_function":
        return FUNCTION_RULES.get(node.target, _unsupported)
    return METHOD_RULES.get(node.target, _unsupported)


def propagate(gm: fx.GraphModule, kept: dict[str, torch.Tensor],
              gates: dict[str, str]) -> Flow:
    """Map every node of ``gm`` to its surviving channels; raises at the first node whose
    channels cannot be followed. Reads the graph, changes nothing."""
    flow = Flow(dict(gm.named_modules()), kept, gates)
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "get_attr", "output"):
            continue  # inputs and constants are never cut; the output computes nothing
        flow.channels[node] = _rule_for(node, flow)(node, flow)
    return flow


def _sole_reader(node: fx.Node, flow: Flow) -> fx.Node | None:
    """The conv that alone reads ``node``'s output, through BatchNorm and channel-wise ops of one
    user each; None where anything else reads it (a residual add, a concatenation, two convs)."""
    at = node
    while len(at.users) == 1:
        (user,) = at.users
        if user.op == "call_module" and isinstance(flow.modules.get(user.target), nn.Conv2d):
            return user
        if user.op not in ("call_module", "call_function", "call_method") \
                or user.all_input_nodes != [at] \
                or _rule_for(user, flow) not in (passthrough, _channelwise, _scale):
            return None
        at = user
    return None


def drop_unread(gm: fx.GraphModule, flow: Flow) -> dict[str, torch.Tensor]:
    """The kept kernels of every gated conv, less those no kept unit reads: a conv whose output
    only a grouped conv reads (a MobileNet expansion feeding its depthwise conv) keeps just the
    kernels whose channels that conv's kept groups read. Exact, since nothing reads the others;
    for a module without gates only (a kept gate's mask covers all the layer's kept kernels)."""
    kept = dict(flow.kept)
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in kept \
                or not isinstance(flow.modules[node.target], nn.Conv2d):
            continue
        reader = _sole_reader(node, flow)
        if reader is None or flow.modules[reader.target].groups == 1:
            continue
        conv = flow.modules[reader.target]
        reads, _ = grouped_conv_plan(conv, kept.get(reader.target, torch.arange(conv.out_channels)))
        mine = kept[node.target]
        read = mine[torch.isin(mine, reads)]
        kept[node.target] = read if len(read) else mine[:1]  # every layer keeps a kernel
    return kept


__all__ = ["Channels", "Flow", "propagate", "drop_unread", "grouped_conv_plan", "split_sizes",
           "is_cut", "node_error", "passthrough", "MODULE_RULES", "FUNCTION_RULES", "METHOD_RULES"]
