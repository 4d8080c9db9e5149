"""Extraction on random compositions of the supported ops (hypothesis; depthwise convs and convs
without BatchNorm included): a module that keeps its
gates reproduces the modular model's logits on samples whose kernel sets lie inside it, and its
MACs are those of a count by hand over the channels it keeps."""

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import mwt
from helpers import hand_macs, randomise
from mwt.extract import extract_module
from mwt.gates import gated_layers

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
               "gelu": nn.GELU}


class Block(nn.Module):
    """One of: a plain conv, a residual pair of convs, a dense (concatenating) conv, a
    depthwise conv, a conv without BatchNorm (biased)."""

    def __init__(self, kind: str, c_in: int, width: int, act: str):
        super().__init__()
        self.kind = kind
        c_out = c_in if kind in ("residual", "depthwise") else width
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=kind == "nobn",
                              groups=c_in if kind == "depthwise" else 1)
        self.bn = nn.Identity() if kind == "nobn" else nn.BatchNorm2d(c_out)
        self.act = ACTIVATIONS[act]()
        if kind == "residual":
            self.conv2 = nn.Conv2d(c_in, c_in, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_in)
        self.out_channels = c_out + (c_in if kind == "dense" else 0)

    def forward(self, x):
        y = self.act(self.bn(self.conv(x)))
        if self.kind == "residual":
            return self.act(self.bn2(self.conv2(y)) + x)
        if self.kind == "dense":
            return torch.cat([x, y], 1)
        return y


class RandomCNN(nn.Module):
    def __init__(self, kinds, widths, acts, pool_after):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        blocks, c = [], 6
        for kind, width, act in zip(kinds, widths, acts):
            blocks.append(Block(kind, c, width, act))
            c = blocks[-1].out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pool_after = pool_after
        self.fc = nn.Linear(c, 5)

    def forward(self, x):
        x = self.stem(x)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.pool_after:
                x = nn.functional.max_pool2d(x, 2)
        return self.fc(x.mean((2, 3)))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(kinds=st.lists(st.sampled_from(["plain", "residual", "dense", "depthwise", "nobn"]),
                     min_size=1, max_size=4),
       widths=st.lists(st.integers(2, 6), min_size=4, max_size=4),
       acts=st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=4, max_size=4),
       pool_after=st.integers(-1, 3), seed=st.integers(0, 10_000))
def test_random_compositions_extract_exactly_and_smaller(kinds, widths, acts, pool_after, seed):
    torch.manual_seed(seed)
    model = randomise(mwt.make_modular(RandomCNN(kinds, widths, acts, pool_after)), seed)
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits, masks = model(x, return_masks=True)
        kernels = (torch.cat(masks, 1) > 0).any(0)
        for i, layer in enumerate(gated_layers(model)):  # every layer keeps a kernel
            offset = sum(lay.kernels for lay in gated_layers(model)[:i])
            if not bool(kernels[offset:offset + layer.kernels].any()):
                kernels[offset] = True
        module = extract_module(model, kernels, keep_gates=True)
        out, kept = module(x, return_masks=True)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(kept, 1), torch.cat(masks, 1)[:, kernels])
    plain = extract_module(model, kernels)
    assert mwt.count_macs(plain, (1, 8, 8)) == hand_macs(plain, (1, 8, 8))
    if not bool(kernels.all()):
        full = extract_module(model, torch.ones_like(kernels))
        assert mwt.count_macs(plain, (1, 8, 8)) < mwt.count_macs(full, (1, 8, 8))
