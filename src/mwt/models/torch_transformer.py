"""A user's transformer built from torch's layers, rebuilt from unit blocks so it can be gated.

``nn.MultiheadAttention`` computes its heads inside one fused call and
``nn.TransformerEncoderLayer`` its MLP inside its own forward, so no gate can reach a head or a
hidden neuron there.
:func:`from_torch_transformer` returns a copy of a model in which every
``nn.TransformerEncoder`` / ``nn.TransformerEncoderLayer`` is replaced by :class:`EncoderLayer`,
the same computation from ``mwt.models.unit_blocks`` (Q, K and V split out of ``in_proj``, the
same weights, LayerNorms, dropouts, pre- or post-norm and activation), so that
``mwt.make_modular`` gates its heads and neurons. Supported: ``batch_first=True``, ReLU or GELU,
self-attention without masks (a ViT's encoder); anything else is refused in one sentence.
"""

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from mwt.errors import MwtError
from mwt.models.unit_blocks import HeadAttention, TokenMLP


class EncoderLayer(nn.Module):
    """``nn.TransformerEncoderLayer``'s forward (``batch_first``, no masks) on unit blocks."""

    def __init__(self, attn: HeadAttention, mlp: TokenMLP, norm1: nn.LayerNorm,
                 norm2: nn.LayerNorm, dropout: float, norm_first: bool):
        super().__init__()
        self.attn, self.mlp, self.norm1, self.norm2 = attn, mlp, norm1, norm2
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x):
        if self.norm_first:
            x = x + self.dropout1(self.attn(self.norm1(x)))
            return x + self.dropout2(self.mlp(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.attn(x)))
        return self.norm2(x + self.dropout2(self.mlp(x)))


def _activation(layer: nn.TransformerEncoderLayer, name: str) -> str:
    act = layer.activation
    if act in (F.relu, torch.relu) or type(act) is nn.ReLU:
        return "relu"
    if act is F.gelu or (type(act) is nn.GELU and act.approximate == "none"):
        return "gelu"
    raise MwtError(f"{name!r} uses the activation {act!r}; only ReLU and GELU are supported")


def _linear(weight, bias) -> nn.Linear:
    new = nn.Linear(weight.shape[1], weight.shape[0], bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias)
    return new


def convert_layer(layer: nn.TransformerEncoderLayer, name: str = "layer") -> EncoderLayer:
    """One ``nn.TransformerEncoderLayer`` as an :class:`EncoderLayer` with the same weights."""
    mha = layer.self_attn
    if not mha.batch_first:
        raise MwtError(f"{name!r} is not batch_first; build it with batch_first=True "
                       "(tokens as [batch, tokens, features])")
    if not mha._qkv_same_embed_dim or mha.in_proj_weight is None:
        raise MwtError(f"{name!r} has separate key / value sizes; only self-attention is "
                       "supported")
    if mha.bias_k is not None or mha.add_zero_attn:
        raise MwtError(f"{name!r} adds key / value biases or zero attention; not supported")
    dim, heads = mha.embed_dim, mha.num_heads
    attn = HeadAttention(dim, heads, dim // heads, mha.dropout)
    w, b = mha.in_proj_weight, mha.in_proj_bias
    for i, target in enumerate(("q", "k", "v")):
        rows = slice(i * dim, (i + 1) * dim)
        setattr(attn, target, _linear(w[rows], b[rows] if b is not None else None))
    attn.proj = _linear(mha.out_proj.weight, mha.out_proj.bias)
    mlp = TokenMLP(dim, layer.linear1.out_features, _activation(layer, name),
                   layer.dropout.p)
    mlp.fc1 = _linear(layer.linear1.weight, layer.linear1.bias)
    mlp.fc2 = _linear(layer.linear2.weight, layer.linear2.bias)
    new = EncoderLayer(attn, mlp, copy.deepcopy(layer.norm1), copy.deepcopy(layer.norm2),
                       layer.dropout1.p, layer.norm_first)
    return new.train(layer.training)


def from_torch_transformer(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with each ``nn.TransformerEncoder`` (its layers, then its final norm)
    and each ``nn.TransformerEncoderLayer`` rebuilt from unit blocks; it computes the same
    function (to float rounding) and ``mwt.make_modular`` can gate it. A bare
    ``nn.MultiheadAttention`` elsewhere is refused."""
    model = copy.deepcopy(model)
    for name, child in list(model.named_modules()):
        if isinstance(child, nn.TransformerEncoder):
            layers = [convert_layer(layer, f"{name}.layers.{i}")
                      for i, layer in enumerate(child.layers)]
            if child.norm is not None:
                layers.append(child.norm)
            _replace(model, name, nn.Sequential(*layers))
    for name, child in list(model.named_modules()):
        if isinstance(child, nn.TransformerEncoderLayer):
            _replace(model, name, convert_layer(child, name))
    left = next((name for name, m in model.named_modules()
                 if isinstance(m, nn.MultiheadAttention)), None)
    if left is not None:
        raise MwtError(f"{left!r} is an nn.MultiheadAttention outside a "
                       "TransformerEncoderLayer; build it as mwt.models.unit_blocks.HeadAttention")
    return model


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    if not name:
        raise MwtError("pass the model that holds the transformer, not the encoder itself")
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


__all__ = ["EncoderLayer", "convert_layer", "from_torch_transformer"]
