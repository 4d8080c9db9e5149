"""The standard model as CNNSplitter looks at it: which gated layers are tied together at residual
adds, and a probe that runs the model with some kernels switched off.

*Tied layers* (the union handling of CNNSplitter's Figure 3-c): convolutions whose outputs meet at
an addition index the same channels, so a module must keep the same kernels in all of them.
:func:`tied_groups` finds them on the traced graph, for any registered model: from every add it
walks back through BatchNorm, parameter-free layers and one-input functions to the convolutions
that produced each side, and joins those convolutions (ResCNN's conv1 and conv3, ResNet's
block convolutions and their shortcut convolutions).

*The probe* (:func:`build_probe`) is the standard model whose gated BatchNorm outputs are scaled by
per-sample 0/1 masks given as an input, ``probe(x, masks) -> (logits, taps)``. Zeroing a kernel's
BN output is what removing the kernel does (its ReLU'd output is zero, and so is everything it fed
into the next convolution), so one batched pass evaluates many candidate modules, each on its own
copy of the samples. ``taps`` are the tensors CNNSplitter reads kernel importance from: for each
group of tied layers the output after its last addition, for a layer of its own its BN output,
each after the ReLU that follows it, if one does.
"""

import copy
import operator
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from mwt.gates import apply_mask, conv_bn_pairs, gateable_layers, trace
from mwt.inference import batches, evaluating
from mwt.model_info import GatedLayer

_ADDS = (operator.add, operator.iadd, torch.add)
_RELU_FUNCTIONS = (F.relu, torch.relu)


@dataclass(frozen=True)
class Structure:
    """The gated layers of a standard model (mask order) and how they are tied.

    ``groups``: indices into ``layers``, one tuple per group of tied layers, in the order of each
    group's first layer; a layer of its own is a group of one. ``taps``: the graph node each
    group's kernel importance is read from.
    """

    layers: tuple[GatedLayer, ...]
    groups: tuple[tuple[int, ...], ...]
    taps: tuple[str, ...]

    @property
    def layer_sizes(self) -> list[int]:
        return [layer.kernels for layer in self.layers]

    @property
    def total_kernels(self) -> int:
        return sum(self.layer_sizes)

    @property
    def tied(self) -> bool:
        return any(len(g) > 1 for g in self.groups)

    def group_names(self) -> list[str]:
        return ["+".join(self.layers[i].conv for i in g) for g in self.groups]


def _is_add(node: fx.Node) -> bool:
    return ((node.op == "call_function" and node.target in _ADDS)
            or (node.op == "call_method" and node.target in ("add", "add_")))


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[node.target], nn.ReLU)
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS
    return node.op == "call_method" and node.target in ("relu", "relu_")


def _sources(node, modules: dict[str, nn.Module], memo: dict) -> frozenset[str]:
    """The convolutions whose output channels are the channels of ``node`` (empty if none or
    unknown): through BN, parameter-free layers and one-input ops, and both sides of adds."""
    if not isinstance(node, fx.Node):
        return frozenset()
    if node in memo:
        return memo[node]
    found: frozenset[str] = frozenset()
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, nn.Conv2d):
            found = frozenset([node.target])
        elif isinstance(module, nn.BatchNorm2d) or next(module.parameters(), None) is None:
            found = _sources(node.args[0] if node.args else None, modules, memo)
    elif node.op in ("call_function", "call_method"):
        if _is_add(node):
            found = frozenset().union(*(_sources(a, modules, memo) for a in node.args[:2]))
        elif len(node.all_input_nodes) == 1:
            found = _sources(node.all_input_nodes[0], modules, memo)
    memo[node] = found
    return found


def tied_groups(model: nn.Module) -> Structure:
    """Group a standard model's gated layers by the additions their outputs meet at (see the
    module docstring), with the node each group's importance is read from."""
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    modules = dict(gm.named_modules())
    layers = tuple(gateable_layers(gm))
    index = {layer.conv: i for i, layer in enumerate(layers)}
    parent: dict[str, str] = {}

    def root(name: str) -> str:
        parent.setdefault(name, name)
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    memo: dict = {}
    adds: list[tuple[fx.Node, frozenset[str]]] = []
    for node in gm.graph.nodes:
        if not _is_add(node):
            continue
        sides = [_sources(a, modules, memo) for a in node.args[:2]]
        if len(sides) == 2 and all(sides):  # a tensor plus a constant ties nothing
            convs = sides[0] | sides[1]
            adds.append((node, convs))
            first, *rest = sorted(convs)
            for name in rest:
                parent[root(name)] = root(first)
    members: dict[str, list[int]] = {}
    for layer in layers:
        members.setdefault(root(layer.conv), []).append(index[layer.conv])
    groups = sorted((tuple(sorted(g)) for g in members.values()), key=lambda g: g[0])

    bn_node = {c.target: b for c, b in conv_bn_pairs(gm.graph, modules)}
    taps = []
    for group in groups:
        names = {layers[i].conv for i in group}
        meeting = [node for node, convs in adds if convs & names]
        node = meeting[-1] if meeting else bn_node[layers[group[0]].conv]
        users = list(node.users)
        if len(users) == 1 and _is_relu(users[0], modules):
            node = users[0]
        taps.append(node.name)
    return Structure(layers, tuple(groups), tuple(taps))


def build_probe(model: nn.Module, structure: Structure) -> fx.GraphModule:
    """``probe(x, masks) -> (logits, taps)``: the standard model with each gated layer's BN
    output multiplied by ``masks[l]`` ([B, K_l], one row per sample), returning the importance
    taps of ``structure`` as well. A copy in eval mode: ``model`` is not changed."""
    gm = trace(copy.deepcopy(model).eval())
    graph = gm.graph
    pairs = conv_bn_pairs(graph, dict(gm.named_modules()))[1:]  # the gated ones, mask order
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    with graph.inserting_after(inputs[-1]):
        masks = graph.placeholder("masks")
    for i, (_, bn) in enumerate(pairs):
        with graph.inserting_after(bn):
            mask = graph.call_function(operator.getitem, (masks, i))
        with graph.inserting_after(mask):
            scaled = graph.call_function(apply_mask, (bn, mask))
        bn.replace_all_uses_with(scaled, delete_user_cb=lambda user, s=scaled: user is not s)
    by_name = {n.name: n for n in graph.nodes}
    output = next(n for n in graph.nodes if n.op == "output")
    (logits,) = output.args
    output.args = ((logits, [by_name[name] for name in structure.taps]),)
    graph.lint()
    gm.recompile()
    return gm.eval()


def target_logits(probe: fx.GraphModule, structure: Structure, x_all: torch.Tensor,
                  masks: torch.Tensor, targets: torch.Tensor, batch_size: int, device,
                  step: Callable[[int], None] | None = None) -> torch.Tensor:
    """Each candidate module's logit of its own class on every sample: float [M, N] on
    ``device``.

    ``masks`` bool [M, K]: the gated kernels candidate m keeps; ``targets`` [M]: its class.
    Candidates share a forward pass, each on its own copy of a slice of the samples, so that a
    pass holds about ``batch_size`` (candidate, sample) pairs. ``step(n)`` is told each time n
    more candidates are done (a progress bar).
    """
    n = len(x_all)
    m = masks.shape[0]
    per_pass = max(1, min(n, batch_size))
    group = max(1, batch_size // per_pass)  # candidates per pass
    sizes = structure.layer_sizes
    out = torch.empty((m, n), dtype=torch.float32, device=device)
    with evaluating(probe):
        for start in range(0, m, group):
            chunk = masks[start:start + group].to(device=device, dtype=torch.float32)
            target = targets[start:start + group].to(device)
            c = chunk.shape[0]
            parts = torch.split(chunk, sizes, dim=1)
            for offset in range(0, n, per_pass):
                x = x_all[offset:offset + per_pass].to(device, non_blocking=True)
                b = x.shape[0]
                xs = x.repeat(c, *([1] * (x.dim() - 1)))
                layer_masks = [p.repeat_interleave(b, dim=0) for p in parts]
                logits, _ = probe(xs, layer_masks)
                picked = logits.view(c, b, -1).gather(2, target.view(c, 1, 1).expand(c, b, 1))
                out[start:start + c, offset:offset + b] = picked.squeeze(2).float()
            if step is not None:
                step(c)
    return out


def composed_predictions(logits: torch.Tensor) -> torch.Tensor:
    """The composed model's prediction: the class whose module gives the highest logit of its
    own class; ``logits`` [classes, N] holds module c's class-c logit in row c."""
    return logits.argmax(dim=0)


def importance(probe: fx.GraphModule, structure: Structure, x_all: torch.Tensor,
               y_all: torch.Tensor, num_classes: int, confidence: float, batch_size: int,
               device) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """CNNSplitter's kernel importance (its ``feature_map_L1``): for each class, the mean over
    the class's samples that the model predicts with softmax >= ``confidence`` of each channel's
    summed (post-ReLU) map at every group's tap. Returns (one float [classes, channels] tensor
    per group, the number of confident samples per class, the model's predictions)."""
    sums = [torch.zeros(num_classes, structure.layers[g[0]].kernels, dtype=torch.float64)
            for g in structure.groups]
    confident = torch.zeros(num_classes, dtype=torch.float64)
    every = torch.zeros(num_classes, dtype=torch.float64)
    every_sums = [s.clone() for s in sums]
    predictions = []
    with evaluating(probe):
        for x, y in batches(x_all, y_all, batch_size, device):
            ones = [torch.ones(x.shape[0], k, device=x.device) for k in structure.layer_sizes]
            logits, taps = probe(x, ones)
            prob = logits.float().softmax(dim=1)
            predictions.append(logits.argmax(1).cpu())
            onehot = F.one_hot(y, num_classes).double()
            sure = onehot * (prob.gather(1, y[:, None]) >= confidence).double()
            confident += sure.sum(0).cpu()
            every += onehot.sum(0).cpu()
            for i, tap in enumerate(taps):
                per_sample = tap.flatten(2).sum(2, dtype=torch.float64)  # [B, channels]
                sums[i] += (sure.T @ per_sample).cpu()
                every_sums[i] += (onehot.T @ per_sample).cpu()
    # A class without a single confident sample (a tiny or weak model) falls back to all of its
    # samples; the caller reports it.
    fallback = confident == 0
    result = []
    for s, e in zip(sums, every_sums):
        s = torch.where(fallback[:, None], e, s)
        count = torch.where(fallback, every, confident).clamp(min=1)
        result.append((s / count[:, None]).float())
    return result, confident.long(), torch.cat(predictions)


__all__ = ["Structure", "tied_groups", "build_probe", "target_logits", "importance",
           "composed_predictions"]
