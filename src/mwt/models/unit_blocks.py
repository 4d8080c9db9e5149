"""Blocks that expose their units to a mask: the transformer's MLP neurons and attention heads.

A conv's units (its kernels) are visible in a traced graph as the channels of its output, so a
gate can scale them from outside. A transformer's units are not: an MLP's hidden neurons live
between its two Linears and an attention head's output only exists before the heads are merged
and projected. A :class:`UnitBlock` therefore takes its units' mask itself,
``block(x, unit_mask=None)``, multiplies its inner activations by it (broadcast over tokens), and
knows how to cut itself to some of its units (:meth:`UnitBlock.sliced`): a unit dropped is
absent from the smaller block and costs nothing, a unit kept computes exactly what it did.
With ``return_signal=True`` it also returns each unit's activity per sample, the signal that
MODA reads: an MLP neuron's mean positive activation over tokens (zero exactly where it is
inactive, as a ReLU unit's mean |a| is), a head's mean |output| (a head's output has no sign,
so it is active wherever it attends at all). ``torch.fx`` traces these blocks as leaves
(``mwt.gates.trace``), so the rest of torch-mwt sees one node per block.

These are model layers: they know nothing of gates or methods. The residual stream (their input
and output width) is never cut.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class UnitBlock(nn.Module):
    """The protocol: ``units`` (how many), ``in_features`` (the width of the input a gate
    pools), ``forward(x, unit_mask=None, return_signal=False)`` on [B, N, D] tokens and
    ``sliced(kept)``."""

    units: int
    in_features: int

    def sliced(self, kept: torch.Tensor) -> "UnitBlock":
        """This block with only the ``kept`` units (sorted indices), a physically smaller
        copy."""
        raise NotImplementedError

    def scale_units(self, values: torch.Tensor) -> None:
        """Fold constant unit mask values into the weights, in place: the block then computes
        what it computed with ``unit_mask`` = ``values`` for every sample."""
        raise NotImplementedError


def _copy_linear(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    """A Linear cut to some output ``rows`` and input ``cols`` (None: all), values copied."""
    w, b = linear.weight, linear.bias
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    new = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], b is not None,
                             device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    return new.train(linear.training)


def _signal(h: torch.Tensor, dims) -> torch.Tensor:
    return h.abs().mean(dims)


def _positive_signal(h: torch.Tensor, dims) -> torch.Tensor:
    """The mean positive part: > 0 exactly where a unit is active (its activation positive
    somewhere), as mean |a| is for a ReLU unit; GELU's small negative lobe does not count."""
    return F.relu(h).mean(dims)


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu}


class TokenMLP(UnitBlock):
    """fc1 -> GELU (or ReLU) -> (unit mask) -> dropout -> fc2; the units are the hidden neurons
    (fc1's rows, fc2's columns). GELU(0) = ReLU(0) = 0, so a masked neuron feeds nothing to fc2
    and is cut exactly."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.units, self.in_features = hidden, dim
        self.activation, self.dropout = activation, nn.Dropout(dropout)

    def forward(self, x, unit_mask=None, return_signal: bool = False):
        h = ACTIVATIONS[self.activation](self.fc1(x))
        if unit_mask is not None:
            h = h * unit_mask[:, None, :]
        y = self.fc2(self.dropout(h))
        return (y, _positive_signal(h, 1)) if return_signal else y

    @torch.no_grad()
    def scale_units(self, values: torch.Tensor) -> None:
        self.fc2.weight.mul_(values.to(self.fc2.weight)[None, :])

    def sliced(self, kept: torch.Tensor) -> "TokenMLP":
        kept = kept.to(self.fc1.weight.device)
        with torch.device("meta"):
            new = TokenMLP(self.in_features, len(kept), self.activation, self.dropout.p)
        new.fc1 = _copy_linear(self.fc1, rows=kept)
        new.fc2 = _copy_linear(self.fc2, cols=kept)
        return new.train(self.training)


class HeadAttention(UnitBlock):
    """Multi-head self-attention with separate Q, K, V projections; the units are the heads (a
    head's Q, K and V rows and its columns of the output projection), gated as wholes: a head's
    output is multiplied by its mask value before the heads are merged, so a head at 0 adds
    nothing to the projection and is cut exactly, and a head kept is computed in full."""

    def __init__(self, dim: int, heads: int, head_dim: int, dropout: float = 0.0):
        super().__init__()
        inner = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner) for _ in range(3))
        self.proj = nn.Linear(inner, dim)
        self.units, self.in_features, self.head_dim = heads, dim, head_dim
        self.attention_dropout = dropout  # on the attention weights, while training

    def forward(self, x, unit_mask=None, return_signal: bool = False):
        b, n, _ = x.shape
        h, d = self.units, self.head_dim

        def heads(t):
            return t.view(b, n, h, d).transpose(1, 2)  # [B, H, N, d]

        out = F.scaled_dot_product_attention(
            heads(self.q(x)), heads(self.k(x)), heads(self.v(x)),
            dropout_p=self.attention_dropout if self.training else 0.0)
        if unit_mask is not None:
            out = out * unit_mask[:, :, None, None]
        y = self.proj(out.transpose(1, 2).reshape(b, n, h * d))
        return (y, _signal(out, (2, 3))) if return_signal else y

    @torch.no_grad()
    def scale_units(self, values: torch.Tensor) -> None:
        per_column = values.to(self.proj.weight).repeat_interleave(self.head_dim)
        self.proj.weight.mul_(per_column[None, :])

    def sliced(self, kept: torch.Tensor) -> "HeadAttention":
        kept = kept.to(self.q.weight.device)
        d = self.head_dim
        rows = (kept[:, None] * d + torch.arange(d, device=kept.device)[None, :]).flatten()
        with torch.device("meta"):
            new = HeadAttention(self.in_features, len(kept), d, self.attention_dropout)
        new.q, new.k, new.v = (_copy_linear(lin, rows=rows) for lin in (self.q, self.k, self.v))
        new.proj = _copy_linear(self.proj, cols=rows)
        return new.train(self.training)


def attention_macs(block: HeadAttention, tokens: int) -> int:
    """The MACs of one sample's attention products, QK^T and AV: 2 x heads x N^2 x head_dim
    (the projections are Linears, counted as such; softmax and scaling are free, as in fvcore)."""
    return 2 * block.units * tokens * tokens * block.head_dim


__all__ = ["UnitBlock", "TokenMLP", "HeadAttention", "attention_macs"]
