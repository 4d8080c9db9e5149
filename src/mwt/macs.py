"""Multiply-accumulate (MAC) counter following fvcore's conventions (the paper's "FLOPs").

The paper reports FLOPs as fvcore counts them: one per multiply-add of a conv or linear layer,
5 per input element of an affine BatchNorm (4 without affine; fvcore's training-mode rule),
1 per input element of adaptive average pooling, and 0 for ReLU, max-pooling, dropout,
additions and reshapes. With these rules the paper's VGG16 is 315.11 M MACs on 3x32x32.
Transformers: 5 per element of an affine LayerNorm (fvcore's norm rule), Linears per token, and
for attention the two products QK^T and AV, 2 x heads x N^2 x head_dim per sample (fvcore
counts matmuls, but not a fused ``scaled_dot_product_attention``, so the rule is stated here);
softmax, GELU and the residual adds are free.

Counting is done with forward hooks on leaf modules, so functional operations in a ``forward``
(``F.relu``, ``x + y``, ``x.mean``) are free, as they are in fvcore for those op types.
"""

from collections.abc import Callable

import torch
import torch.nn as nn

from mwt.errors import MwtError
from mwt.inference import evaluating
from mwt.models.unit_blocks import HeadAttention, UnitBlock, attention_macs

_FREE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
         nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
         nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Flatten, nn.Identity, nn.Unflatten)


def _conv_macs(m: nn.Conv2d, inp: torch.Tensor, out: torch.Tensor) -> int:
    # Each output element is a dot product over (in_channels / groups) x kh x kw inputs.
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _linear_macs(m: nn.Linear, inp: torch.Tensor, out: torch.Tensor) -> int:
    rows = inp.numel() // m.in_features
    return rows * m.in_features * m.out_features


def _bn_macs(m: nn.modules.batchnorm._BatchNorm, inp: torch.Tensor, out: torch.Tensor) -> int:
    # fvcore's training-mode BN rule (normalise: 4 ops, affine scale-shift: +1); the paper's
    # figures use it even though inference could fold BN into the conv.
    return inp.numel() * (5 if m.affine else 4)


def _avgpool_macs(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    return inp.numel()


def _layernorm_macs(m: nn.LayerNorm, inp: torch.Tensor, out: torch.Tensor) -> int:
    # fvcore's norm rule, as for BatchNorm: 5 per element with affine parameters, else 4.
    return inp.numel() * (5 if m.elementwise_affine else 4)


def _attention_macs(m: HeadAttention, inp: torch.Tensor, out) -> int:
    # The attention products QK^T and AV (2 x heads x N^2 x head_dim a sample); the Q, K, V
    # and output projections are Linears inside the block, counted by their own rule.
    return inp.shape[0] * attention_macs(m, inp.shape[1])


_RULES: list[tuple[type, Callable[..., int]]] = [
    (nn.Conv2d, _conv_macs),
    (nn.Linear, _linear_macs),
    (nn.BatchNorm1d, _bn_macs),
    (nn.BatchNorm2d, _bn_macs),
    (nn.AdaptiveAvgPool2d, _avgpool_macs),
    (nn.LayerNorm, _layernorm_macs),
    (HeadAttention, _attention_macs),  # a container: its Linears count themselves
]


def _rule_for(module: nn.Module) -> Callable[..., int] | None:
    for cls, rule in _RULES:
        if isinstance(module, cls):
            return rule
    return None


def count_macs(model: nn.Module, input_shape: tuple[int, ...], *, per_layer: bool = False,
               **forward_kwargs) -> int | tuple[int, dict[str, int | list[str]]]:
    """MACs of one sample of shape ``input_shape`` (no batch dim) through ``model``.

    Runs one forward pass on zeros of shape ``(1, *input_shape)`` in eval mode under no_grad on
    the device and dtype of the model's first parameter; ``forward_kwargs`` go to the forward.
    Returns the total, or with ``per_layer`` ``(total, per_layer)``: MACs keyed by qualified
    module name (a module called several times is summed over its calls). Leaf modules with
    parameters and no counting rule count 0; their names are listed under the extra key
    ``"uncounted"`` (a list, present only if there are any), so the int entries sum to the total.
    """
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError) as exc:
        raise MwtError(f"input_shape must be a tuple of sizes, got {input_shape!r}") from exc
    if not shape or any(s < 1 for s in shape):
        raise MwtError("input_shape must be a non-empty tuple of positive sizes, "
                       f"got {input_shape!r}")
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is not None and len(shape) != 3:
        raise MwtError(f"input_shape is the shape of one sample, (C, H, W) without the batch "
                       f"dimension; got {input_shape!r}")

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32

    counts: dict[str, int | list[str]] = {}
    uncounted: list[str] = []
    handles = []

    def make_hook(name: str, rule: Callable[..., int]):
        def hook(module, args, output):
            inp = args[0] if args else None
            counts[name] = counts.get(name, 0) + int(rule(module, inp, output))
        return hook

    try:
        for name, module in model.named_modules():
            rule = _rule_for(module)
            if rule is None and next(module.children(), None) is not None:
                continue  # a container's cost is its children's (and its own rule's, if any)
            if rule is not None:
                handles.append(module.register_forward_hook(make_hook(name, rule)))
            elif not isinstance(module, _FREE) and next(module.parameters(False), None) is not None:
                uncounted.append(name)
        # eval mode: dropout off and BN uses running stats, so a batch of one zero sample is valid.
        with evaluating(model):
            try:
                model(torch.zeros((1, *shape), device=device, dtype=dtype), **forward_kwargs)
            except RuntimeError as exc:
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                raise MwtError(f"the model does not run on one sample of shape {shape} "
                               f"({reason})") from exc
    finally:
        for h in handles:
            h.remove()

    total = sum(counts.values())
    if not per_layer:
        return total
    if uncounted:
        counts["uncounted"] = uncounted
    return total, counts


def unit_block_macs(model: nn.Module, input_shape: tuple[int, ...], *,
                    per_layer: dict[str, int | list[str]] | None = None) -> int:
    """The MACs inside a model's unit blocks (a transformer's attention, QK^T and AV included,
    and its MLPs): what cutting heads and neurons can reduce, without the patch embedding,
    LayerNorms and head. 0 for a model without unit blocks (a CNN). ``per_layer`` is
    ``count_macs(model, input_shape, per_layer=True)[1]`` where the caller has it already, so
    the model is not run a second time."""
    blocks = [n for n, m in model.named_modules() if isinstance(m, UnitBlock)]
    if not blocks:
        return 0
    if per_layer is None:
        _, per_layer = count_macs(model, input_shape, per_layer=True)
    return sum(v for k, v in per_layer.items() if isinstance(v, int)
               and any(k == b or k.startswith(b + ".") for b in blocks))
