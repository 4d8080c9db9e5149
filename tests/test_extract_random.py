"""Extraction on random compositions of the supported ops (hypothesis): a module that keeps its
gates reproduces the modular model's logits on samples whose kernel sets lie inside it, and its
MACs are those of a count by hand over the channels it keeps."""

import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import mwt
from mwt.extract import extract_module
from mwt.gates import gated_layers

ACTIVATIONS = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU, "hardswish": nn.Hardswish,
               "gelu": nn.GELU}


class Block(nn.Module):
    """One of: a plain conv, a residual pair of convs, a dense (concatenating) conv."""

    def __init__(self, kind: str, c_in: int, width: int, act: str):
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(c_in, width if kind != "residual" else c_in, 3, padding=1,
                              bias=False)
        self.bn = nn.BatchNorm2d(self.conv.out_channels)
        self.act = ACTIVATIONS[act]()
        if kind == "residual":
            self.conv2 = nn.Conv2d(c_in, c_in, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(c_in)
        self.out_channels = {"plain": width, "residual": c_in, "dense": c_in + width}[kind]

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


def _randomise(model, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in gated_layers(model):
            gate = model.get_submodule(layer.gate)
            gate.fc2.weight.mul_(0.05)
            gate.fc2.bias.copy_(torch.rand(gate.fc2.bias.shape, generator=g) * 1.5 - 0.75)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


def _hand_macs(model, x_shape) -> int:
    """Conv, BatchNorm (fvcore: 5 per element) and Linear MACs over the channels a module
    keeps, counted on the module's own layers' shapes and the feature map sizes of a forward
    pass."""
    sizes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, o.shape))
             for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    with torch.no_grad():
        model(torch.zeros(1, *x_shape))
    for h in hooks:
        h.remove()
    total = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            h, w = sizes[name][2:]
            total += m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1] * h * w
        elif isinstance(m, nn.BatchNorm2d):  # fvcore's rule: 5 per element (affine)
            total += 5 * sizes[name].numel()
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    return total


@settings(max_examples=25, deadline=None, derandomize=True)
@given(kinds=st.lists(st.sampled_from(["plain", "residual", "dense"]), min_size=1, max_size=4),
       widths=st.lists(st.integers(2, 6), min_size=4, max_size=4),
       acts=st.lists(st.sampled_from(sorted(ACTIVATIONS)), min_size=4, max_size=4),
       pool_after=st.integers(-1, 3), seed=st.integers(0, 10_000))
def test_random_compositions_extract_exactly_and_smaller(kinds, widths, acts, pool_after, seed):
    torch.manual_seed(seed)
    model = _randomise(mwt.make_modular(RandomCNN(kinds, widths, acts, pool_after)), seed)
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
    assert mwt.count_macs(plain, (1, 8, 8)) == _hand_macs(plain, (1, 8, 8))
    if not bool(kernels.all()):
        full = extract_module(model, torch.ones_like(kernels))
        assert mwt.count_macs(plain, (1, 8, 8)) < mwt.count_macs(full, (1, 8, 8))
