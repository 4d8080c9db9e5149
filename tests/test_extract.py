"""Extraction computes exactly what the modular model computes on the module's kernels."""

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import UserCNN, sparse_modular, with_constant_gates
from mwt.extract import extract_module, kernel_share, pad_gather
from mwt.gates import gated_layers

MODELS = mwt.list_models()


@pytest.mark.parametrize("name", MODELS)
def test_keep_gates_is_exact_on_samples_inside_the_module(name):
    model = sparse_modular(name)
    x = torch.randn(6, 3, 32, 32)
    logits, masks = model(x, return_masks=True)
    sets = torch.cat(masks, 1) > 0
    kernels = sets.any(0)                     # the union of these samples' kernel sets
    assert 0.2 < kernels.float().mean() < 0.95
    module = extract_module(model, kernels, keep_gates=True)
    assert kernel_share(module) == pytest.approx(kernels.float().mean().item())
    out, kept_masks = module(x, return_masks=True)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(kept_masks, 1), torch.cat(masks, 1)[:, kernels])


@pytest.mark.parametrize("name", MODELS)
def test_removed_gates_equal_binary_gates(name):
    model = sparse_modular(name, seed=1)
    torch.manual_seed(2)
    kernels = torch.rand(mwt.count_gated_kernels(model)) < 0.4
    module = extract_module(model, kernels)
    ref = with_constant_gates(model, kernels.float())
    x = torch.randn(5, 3, 32, 32)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)
    n_module = sum(p.numel() for p in module.parameters())
    n_model = sum(p.numel() for n, p in model.named_parameters() if "gate" not in n)
    assert n_module < 0.6 * n_model
    assert not any("gate" in n for n, _ in module.named_parameters())


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_folded_gates_equal_constant_gates(name):
    model = sparse_modular(name, seed=3)
    total = mwt.count_gated_kernels(model)
    kernels = torch.rand(total) < 0.5
    kernels[:gated_layers(model)[0].kernels] = True  # a layer keeping all kernels folds too
    values = torch.rand(total) * 0.9
    module = extract_module(model, kernels, fold_gates=True, gate_values=values)
    ref = with_constant_gates(model, values * kernels)
    x = torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)


def test_residual_branches_with_different_channel_sets_are_scattered():
    model = sparse_modular("rescnn", seed=4)
    layers = gated_layers(model)
    names = [layer.conv for layer in layers]
    kernels = []
    for layer in layers:  # conv1 keeps even channels, conv3 odd ones: the add needs a union
        k = torch.zeros(layer.kernels, dtype=torch.bool)
        k[(0 if layer.conv == "convs.1.0" else 1)::2] = True
        kernels.append(k)
    kernels = torch.cat(kernels)
    assert names[0] == "convs.1.0" and names[2] == "convs.3.0"
    module = extract_module(model, kernels)
    scatters = [n for n in module.graph.nodes if n.target is pad_gather]
    assert len(scatters) == 2  # both sides of the first add are padded to the union
    assert module.get_submodule("convs.1.0").out_channels == layers[0].kernels // 2
    ref = with_constant_gates(model, kernels.float())
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)


def test_user_cnn_extracts_exactly():
    torch.manual_seed(0)
    model = mwt.make_modular(UserCNN()).eval()
    kernels = torch.tensor([True, False] * 4 + [False, True] * 8)
    module = extract_module(model, kernels)
    ref = with_constant_gates(model, kernels.float())
    x = torch.randn(4, 1, 12, 12)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)


def test_28px_single_channel_input():
    model = sparse_modular("vgg16", in_channels=1)
    kernels = torch.rand(mwt.count_gated_kernels(model)) < 0.5
    module = extract_module(model, kernels)
    ref = with_constant_gates(model, kernels.float())
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)


class ConcatCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.c = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        a = self.a(x)
        y = torch.cat([self.b(a), self.c(a)], dim=1)
        return self.fc(y.mean((2, 3)))


def test_a_concatenation_keeps_each_parts_channels_at_their_offsets():
    model = mwt.make_modular(ConcatCNN()).eval()
    with torch.no_grad():
        for layer in gated_layers(model):  # varied masks
            model.get_submodule(layer.gate).fc2.bias.uniform_(-0.5, 1.0)
    kernels = torch.tensor([True, False, True, True] * 2)
    module = extract_module(model, kernels)
    ref = with_constant_gates(model, kernels.float())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(module(x), ref(x), rtol=1e-4, atol=1e-5)
    assert module.fc.in_features == int(kernels.sum()) == 6  # b's 3 kept, then c's 3


class FlipCNN(ConcatCNN):
    def forward(self, x):
        a = self.a(x)
        y = torch.cat([self.b(a), self.c(a)], dim=1).flip(1)  # reverses the channel order
        return self.fc(y.mean((2, 3)))


def test_unsupported_construct_is_a_clear_error():
    model = mwt.make_modular(FlipCNN(), check=False)  # refused by extraction itself
    kernels = torch.tensor([True, False, True, True] * 2)
    with pytest.raises(mwt.MwtError, match="graph node 'flip'"):
        extract_module(model, kernels)


def test_bad_kernel_masks():
    model = sparse_modular("vgg16")
    total = mwt.count_gated_kernels(model)
    with pytest.raises(mwt.MwtError, match=f"{total} gated kernels"):
        extract_module(model, torch.ones(total - 1, dtype=torch.bool))
    with pytest.raises(mwt.MwtError, match="bool"):
        extract_module(model, torch.ones(total))
    empty_first = torch.ones(total, dtype=torch.bool)
    empty_first[:gated_layers(model)[0].kernels] = False
    with pytest.raises(mwt.MwtError, match="keeps no kernels"):
        extract_module(model, empty_first)
    with pytest.raises(mwt.MwtError, match="keeps no kernels"):  # a standard model too
        extract_module(mwt.create_model("vgg16", 10, 3, 0.25), empty_first)
