"""Gates ("mask generators", paper section 3.2.1) and their insertion into any Conv+BN CNN.

``make_modular`` traces a model with torch.fx and rewrites the graph: after every
Conv2d -> BatchNorm2d pair except the first conv, the BN output is multiplied channel-wise by a
mask that a small gate computes from the conv's *input*. The rewritten graph returns the masks
explicitly (``model(x, return_masks=True) -> (logits, masks)``): nothing is stored on modules
during ``forward``, so the modular model works with torch.compile, fx and DDP. Parameter names of
the original model are unchanged; each gate is a new submodule named ``<conv name>_gate``.
"""

import copy
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn as nn

from mwt.errors import MwtError


class Gate(nn.Module):
    """Pooled conv input [B, C_in] -> mask [B, C_out] in [0, 1).

    Linear -> ReLU -> Linear -> tanh -> ReLU.

    As in the reference code: hidden size C_out (C_out // 2 from 128 kernels on), Kaiming-normal
    weights, and the output bias starts at 1.0 so that every kernel starts open.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        hidden = out_channels if out_channels < 128 else out_channels // 2
        self.fc1 = nn.Linear(in_channels, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, out_channels)
        nn.init.kaiming_normal_(self.fc1.weight)
        nn.init.kaiming_normal_(self.fc2.weight)
        nn.init.constant_(self.fc2.bias, 1.0)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.tanh(self.fc2(torch.relu(self.fc1(pooled)))))


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
    """Scale each channel (kernel output) of a BN output by its mask value."""
    if torch.is_grad_enabled() and (y.requires_grad or mask.requires_grad):
        return _ChannelScale.apply(y, mask)
    return y * mask[:, :, None, None]


def select_output(logits, masks, return_masks: bool):
    return (logits, list(masks)) if return_masks else logits


@dataclass(frozen=True)
class GatedLayer:
    """One gated conv: where it lives in the model and how many kernels its mask covers."""

    conv: str
    bn: str
    gate: str
    kernels: int


def _module_map(gm: nn.Module) -> dict[str, nn.Module]:
    return dict(gm.named_modules())


def conv_bn_pairs(graph: fx.Graph,
                  modules: dict[str, nn.Module]) -> list[tuple[fx.Node, fx.Node]]:
    """Every Conv2d node with the BatchNorm2d node that consumes it, in graph order."""
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules[node.target], nn.Conv2d):
            continue
        users = list(node.users)
        bn = users[0] if len(users) == 1 else None
        is_bn = (bn is not None and bn.op == "call_module"
                 and isinstance(modules[bn.target], nn.BatchNorm2d))
        if not is_bn:
            raise MwtError(
                f"convolution {node.target!r} is not followed by exactly one BatchNorm2d; "
                "MwT gates scale a conv's BatchNorm output, so every conv needs its own BN")
        pairs.append((node, bn))
    return pairs


def trace(model: nn.Module) -> fx.GraphModule:
    """Symbolically trace a model, with a clear error when it cannot be traced."""
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types; the user needs the reason in one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MwtError(f"could not trace {type(model).__name__} with torch.fx ({reason}); "
                       "MwT needs a forward without data-dependent control flow") from exc


def make_modular(model: nn.Module) -> fx.GraphModule:
    """Return a modular copy of ``model``: a gate after every conv's BN except the first conv.

    The copy's ``forward(x, return_masks=False)`` returns logits, or ``(logits, masks)`` where
    ``masks`` is a list of [B, K_l] tensors in [0, 1), one per gated conv, in graph order.
    """
    if is_modular(model):
        raise MwtError("the model is already modular (it has gates)")
    model = copy.deepcopy(model)
    gm = trace(model)
    graph, modules = gm.graph, _module_map(gm)
    pairs = conv_bn_pairs(graph, modules)
    if len(pairs) < 2:
        raise MwtError("MwT needs at least two Conv2d+BatchNorm2d layers (the first is not gated)")

    first_body = next(n for n in graph.nodes if n.op != "placeholder")
    with graph.inserting_before(first_body):
        return_masks = graph.placeholder("return_masks", default_value=False)

    pooled: dict[fx.Node, fx.Node] = {}
    masks, layers = [], []
    for conv_node, bn_node in pairs[1:]:
        conv = modules[conv_node.target]
        gate_name = f"{conv_node.target}_gate"
        gm.add_submodule(gate_name, Gate(conv.in_channels, conv.out_channels))
        x = conv_node.args[0]
        if x not in pooled:  # convs that read the same tensor (a block and its shortcut) share it
            with graph.inserting_after(x):
                pooled[x] = graph.call_function(global_avg_pool, (x,))
        with graph.inserting_after(bn_node):
            mask = graph.call_module(gate_name, (pooled[x],))
        with graph.inserting_after(mask):
            gated = graph.call_function(apply_mask, (bn_node, mask))
        bn_node.replace_all_uses_with(gated, delete_user_cb=lambda user, g=gated: user is not g)
        masks.append(mask)
        layers.append(GatedLayer(conv_node.target, bn_node.target, gate_name, conv.out_channels))

    output = next(n for n in graph.nodes if n.op == "output")
    (result,) = output.args
    with graph.inserting_before(output):
        selected = graph.call_function(select_output, (result, masks, return_masks))
    output.args = (selected,)
    graph.lint()
    modular = fx.GraphModule(gm, graph, class_name=f"Modular{type(model).__name__}")
    modular.train(model.training)
    # GraphModule.meta survives deepcopy and pickling, unlike ad-hoc attributes.
    modular.meta["mwt_layers"] = layers
    modular.meta["mwt_config"] = {**model_config(model), "modular": True}
    return modular


def model_config(model: nn.Module) -> dict:
    """How a registered model was built (name, num_classes, ...); empty for a user's own model."""
    meta = getattr(model, "meta", None)
    if isinstance(meta, dict) and "mwt_config" in meta:
        return dict(meta["mwt_config"])
    return dict(getattr(model, "mwt_config", {}))


def is_modular(model: nn.Module) -> bool:
    meta = getattr(model, "meta", None)
    return isinstance(meta, dict) and bool(meta.get("mwt_layers"))


def gated_layers(model: nn.Module) -> list[GatedLayer]:
    """The gated convs of a modular model, in the order of its masks."""
    if not is_modular(model):
        raise MwtError("this is a standard model without gates; call mwt.make_modular(model) first")
    return list(model.meta["mwt_layers"])


def count_gated_kernels(model: nn.Module) -> int:
    """Kernels that MwT can assign to modules: all conv kernels except the first conv's."""
    if is_modular(model):
        return sum(layer.kernels for layer in model.meta["mwt_layers"])
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return sum(m.out_channels for m in convs[1:])


def kernel_rate(masks) -> torch.Tensor:
    """Share of mask values > 0 (relevant kernels) over a batch and all gated layers."""
    flat = torch.cat(list(masks), dim=1) if isinstance(masks, (list, tuple)) else masks
    return (flat > 0).float().mean()


__all__ = ["Gate", "GatedLayer", "make_modular", "is_modular", "gated_layers",
           "count_gated_kernels", "kernel_rate", "model_config", "trace", "conv_bn_pairs"]
