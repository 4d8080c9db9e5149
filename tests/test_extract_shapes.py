"""The five CNN shapes of issue 19 (and a channel split), as a user writes them: made modular,
checked before training, extracted exactly (gates kept: the modular model's logits on samples
whose kernel sets lie inside the module; gates removed: the model with constant gates), smaller
with MACs as counted by hand (fvcore's grouped-conv rule), and exported."""

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import hand_macs, randomise, sample_kernels, with_constant_gates
from mwt.extract import extract_module
from mwt.extract_check import check_extractable
from mwt.gates import gated_layers


def cbr(c_in, c_out, k=3, groups=1, act=nn.ReLU6, bn=True):
    layers = [nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=not bn)]
    layers += [nn.BatchNorm2d(c_out)] if bn else []
    return nn.Sequential(*layers, act())


class DepthwiseSeparable(nn.Module):
    """MobileNet-style: depthwise 3x3, then pointwise 1x1, twice."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 8)
        self.body = nn.Sequential(cbr(8, 8, groups=8), cbr(8, 16, k=1),
                                  cbr(16, 16, groups=16), cbr(16, 12, k=1))
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean((2, 3)))


class InvertedResidual(nn.Module):
    """A MobileNetV2 block: expand 1x1, depthwise 3x3, linear projection, residual add."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 8)
        self.expand, self.dw = cbr(8, 24, k=1), cbr(24, 24, groups=24)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.dw(self.expand(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class DenseBlock(nn.Module):
    """DenseNet-style: each layer's output concatenated to its input."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 6, act=nn.ReLU)
        self.l1, self.l2 = cbr(6, 4, act=nn.ReLU), cbr(10, 4, act=nn.ReLU)
        self.transition = cbr(14, 8, k=1, act=nn.ReLU)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([x, self.l1(x)], 1)
        x = torch.cat([x, self.l2(x)], dim=1)
        return self.fc(self.transition(x).mean((2, 3)))


class GroupedSiLU(nn.Module):
    """A stack of grouped convs (groups=4) with SiLU."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 16, act=nn.SiLU)
        self.g1, self.g2 = cbr(16, 16, groups=4, act=nn.SiLU), cbr(16, 8, groups=4, act=nn.SiLU)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.g2(self.g1(self.stem(x))).mean((2, 3)))


class PlainConvRelu(nn.Module):
    """One conv without its own BatchNorm (with a bias), and a functional torch.relu."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 8, act=nn.ReLU)
        self.plain = nn.Conv2d(8, 8, 3, padding=1)
        self.last = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8))
        self.fc = nn.Linear(8 * 4 * 4, 4)

    def forward(self, x):
        x = torch.relu(self.plain(self.stem(x)))
        x = torch.relu(self.last(x))
        return self.fc(nn.functional.max_pool2d(x, 2).view(x.size(0), -1))


class SplitBranches(nn.Module):
    """A channel split (chunk and split), each part through its own conv, concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(1, 8, act=nn.ReLU)
        self.mid = cbr(8, 12, act=nn.ReLU)
        self.left, self.right = cbr(6, 4, act=nn.ReLU), cbr(6, 4, act=nn.ReLU)
        self.fc = nn.Linear(8 + 2, 4)

    def forward(self, x):
        x = self.mid(self.stem(x))
        a, b = x.chunk(2, dim=1)
        y = torch.cat([self.left(a), self.right(b)], 1)
        head, tail = torch.split(x, [10, 2], dim=1)
        return self.fc(torch.cat([y.mean((2, 3)), tail.mean((2, 3))], 1))


SHAPES = [DepthwiseSeparable, InvertedResidual, DenseBlock, GroupedSiLU, PlainConvRelu,
          SplitBranches]
SHAPE = (1, 8, 8)


def randomised(cls, seed=0):
    torch.manual_seed(seed)
    return randomise(mwt.make_modular(cls()), seed)


@pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("seed", [0, 1])
def test_each_shape_extracts_exactly_and_smaller(cls, seed):
    model = randomised(cls, seed)
    x = torch.randn(6, *SHAPE, generator=torch.Generator().manual_seed(seed))
    check_extractable(model, x)
    kernels, logits, masks = sample_kernels(model, x)
    assert not bool(kernels.all())  # a real cut
    kept = extract_module(model, kernels, keep_gates=True)
    with torch.no_grad():
        out, kept_masks = kept(x, return_masks=True)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.cat(kept_masks, 1), torch.cat(masks, 1)[:, kernels])

    plain = extract_module(model, kernels)
    ref = with_constant_gates(model, kernels.float())
    with torch.no_grad():
        torch.testing.assert_close(plain(x), ref(x), rtol=1e-4, atol=1e-4)
    whole = extract_module(model, torch.ones_like(kernels))
    params = sum(p.numel() for p in plain.parameters())
    assert params < sum(p.numel() for p in whole.parameters())
    assert mwt.count_macs(plain, SHAPE) == hand_macs(plain, SHAPE)
    assert mwt.count_macs(plain, SHAPE) < mwt.count_macs(whole, SHAPE)


def test_depthwise_convs_stay_depthwise_and_compute_only_kept_channels():
    model = randomised(DepthwiseSeparable)
    layers = gated_layers(model)
    kernels = torch.cat([torch.arange(layer.kernels) % 3 == 0 for layer in layers])
    module = extract_module(model, kernels)
    for layer in layers:
        conv = module.get_submodule(layer.conv)
        kept = int((torch.arange(layer.kernels) % 3 == 0).sum())
        assert conv.out_channels == kept
        original = model.get_submodule(layer.conv)
        if original.groups == original.in_channels:
            assert conv.groups == conv.in_channels == kept  # one input per kept kernel


def test_a_grouped_conv_keeps_whole_groups_and_picks_its_kernels():
    model = randomised(GroupedSiLU)
    g1, g2 = gated_layers(model)
    keep_g1 = torch.zeros(16, dtype=torch.bool)
    keep_g1[[0, 5, 6]] = True   # groups 0 and 1 of 4 (4 kernels each)
    keep_g2 = torch.zeros(8, dtype=torch.bool)
    keep_g2[[1, 2, 7]] = True   # groups 0, 1 and 3 of 4; g1 does not compute group 3's inputs
    module = extract_module(model, torch.cat([keep_g1, keep_g2]))
    conv1, conv2 = module.get_submodule(g1.conv), module.get_submodule(g2.conv)
    assert (conv1.groups, conv1.in_channels, conv1.out_channels) == (2, 8, 8)
    assert (conv2.groups, conv2.in_channels, conv2.out_channels) == (3, 12, 6)
    x = torch.randn(3, *SHAPE)
    ref = with_constant_gates(model, torch.cat([keep_g1, keep_g2]).float())
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-4)


def test_kernels_no_kept_group_reads_are_not_computed():
    """g2's one kept group reads none of g1's kept kernels: g1 computes a single group (every
    layer keeps a kernel), and the module is still exact. With gates kept, every kept kernel is
    computed, since the gates' masks cover them."""
    model = randomised(GroupedSiLU)
    g1, g2 = gated_layers(model)
    kernels = torch.zeros(24, dtype=torch.bool)
    kernels[[0, 5, 6, 16 + 7]] = True  # g1: groups 0 and 1; g2: group 3, reading g1's group 3
    module = extract_module(model, kernels)
    conv1 = module.get_submodule(g1.conv)
    assert (conv1.groups, conv1.in_channels, conv1.out_channels) == (1, 4, 4)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(module(x), with_constant_gates(model, kernels.float())(x),
                                   rtol=1e-4, atol=1e-4)
    kept = extract_module(model, kernels, keep_gates=True)
    assert kept.get_submodule(g1.conv).out_channels == 8


def test_an_expansion_conv_computes_only_what_its_depthwise_conv_reads():
    model = randomised(InvertedResidual)
    expand, depthwise = gated_layers(model)[:2]
    kernels = torch.ones(sum(layer.kernels for layer in gated_layers(model)), dtype=torch.bool)
    e = torch.arange(expand.kernels) % 2 == 0             # the expansion keeps the even kernels
    d = torch.arange(depthwise.kernels) % 3 == 0          # its depthwise conv every third
    kernels[:expand.kernels], kernels[expand.kernels:expand.kernels + depthwise.kernels] = e, d
    module = extract_module(model, kernels)
    assert module.get_submodule(expand.conv).out_channels == int((e & d).sum())
    assert module.get_submodule(depthwise.conv).out_channels == int(d.sum())
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(module(x), with_constant_gates(model, kernels.float())(x),
                                   rtol=1e-4, atol=1e-4)


def test_a_conv_without_batchnorm_is_gated_bias_included():
    model = randomised(PlainConvRelu)
    assert [layer.output for layer in gated_layers(model)] == ["plain", "last.1"]
    standard = PlainConvRelu().eval()  # the same weights, the plain conv's output zeroed
    standard.load_state_dict({k: v for k, v in model.state_dict().items() if "_gate" not in k})
    with torch.no_grad():
        standard.plain.weight.zero_()
        standard.plain.bias.zero_()
    closed = torch.cat([torch.zeros(8), torch.ones(8)])  # the plain conv's gate closed
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(with_constant_gates(model, closed)(x), standard(x))


def test_folded_gates_scale_a_conv_without_batchnorm():
    model = randomised(PlainConvRelu)
    kernels = torch.tensor([True, False] * 8)
    values = torch.rand(16) * 0.5 + 0.25
    module = extract_module(model, kernels, fold_gates=True, gate_values=values)
    ref = with_constant_gates(model, values * kernels.float())
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)


def test_a_conv_reading_a_split_part_left_without_channels_is_refused():
    model = randomised(SplitBranches)
    layers = gated_layers(model)
    parts = [torch.ones(layer.kernels, dtype=torch.bool) for layer in layers]
    parts[0][6:] = False  # mid keeps only its first half: chunk's second part is empty
    with pytest.raises(mwt.MwtError, match="keeps no channel .* at graph node 'right_0'"):
        extract_module(model, torch.cat(parts))


@pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
def test_each_shape_exports_to_pt2_and_onnx(cls, tmp_path):
    model = randomised(cls)
    x = torch.randn(4, *SHAPE)
    kernels, _, _ = sample_kernels(model, x)
    module = extract_module(model, kernels)
    with torch.no_grad():
        expected = module(x)
    path = mwt.export_module(module, tmp_path / "m.pt2", "pt2", input_shape=SHAPE)
    program = torch.export.load(str(path)).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), expected, rtol=1e-4, atol=1e-4)
    onnx = pytest.importorskip("onnxruntime")
    path = mwt.export_module(module, tmp_path / "m.onnx", "onnx", input_shape=SHAPE)
    session = onnx.InferenceSession(str(path))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", SHAPES, ids=lambda c: c.__name__)
def test_each_shape_trained_with_mwt_extracts_exactly(cls):
    """On gates that MwT trained (not drawn at random): the same exactness."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(48) % 4
    images = torch.randn(48, *SHAPE, generator=g) + labels[:, None, None, None] * 0.5
    result = mwt.train(mwt.make_modular(cls()), (images, labels), epochs=4, batch_size=8,
                       lr=0.1, beta=4.0, progress=False, verbose=False, device="cpu")
    model = result.model.eval()
    x = images[0:8:4]  # two samples of class 0
    kernels, logits, masks = sample_kernels(model, x)
    assert not bool(kernels.all())  # the trained gates closed some kernels: a real cut
    kept = extract_module(model, kernels, keep_gates=True)
    with torch.no_grad():
        out, _ = kept(x, return_masks=True)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-4)
    whole = extract_module(model, torch.ones_like(kernels))
    assert mwt.count_macs(extract_module(model, kernels), SHAPE) < mwt.count_macs(whole, SHAPE)
