"""A small Vision Transformer for 28x28 / 32x32 inputs (Dosovitskiy et al. 2021).

Patch embedding (a stride-p conv, p = 4: 7x7 or 8x8 tokens), a learnt position embedding, pre-norm
encoder blocks ``x + attention(LN(x))`` then ``x + mlp(LN(x))``, a final LayerNorm, the token
mean and a linear head (mean pooling instead of a class token, as in several small-image ViTs:
one embedding less to carry into modules). Attention and MLP are ``mwt.models.unit_blocks``, so
their heads and hidden neurons are the units modular training gates; the residual stream is
never cut. ``width`` scales the embedding (head size) and the MLP; the number of heads and
blocks is fixed.
"""

import torch
import torch.nn as nn

from mwt.models.registry import register_model, scaled
from mwt.models.unit_blocks import HeadAttention, TokenMLP


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int, mlp: int):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), HeadAttention(dim, heads, head_dim)
        self.norm2, self.mlp = nn.LayerNorm(dim), TokenMLP(dim, mlp)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float, *, depth: int,
                 heads: int, head_dim: int, mlp: int, patch: int = 4,
                 max_tokens: int = 64):
        super().__init__()
        head_dim = scaled(head_dim, width)
        dim = heads * head_dim
        self.patch = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.pos = nn.Parameter(torch.zeros(1, max_tokens, dim))
        mlp = scaled(mlp, width)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, head_dim, mlp)
                                      for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)  # [B, N, D]
        x = x + self.pos[:, :x.shape[1]]
        return self.fc(self.norm(self.blocks(x)).mean(1))


@register_model
def vit_tiny(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    """6 blocks of 4 heads of 48 (embedding 192), MLP 384; patch 4 (64 tokens on 32x32)."""
    return ViT(num_classes, in_channels, width, depth=6, heads=4, head_dim=48, mlp=384)
