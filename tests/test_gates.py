"""The gate protocol (mwt.gates): one rule for which convs are gated, inserting and stripping
gates, and slicing a gate."""

import warnings

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import UserCNN, sparse_modular, with_constant_gates
from mwt.extract import extract_module
from mwt.gates import (
    Gate,
    gate_application,
    gated_layers,
    gated_sites,
    is_mask_output,
    strip_gates,
    trace,
)

MODELS = mwt.list_models()


class ShuffledCNN(nn.Module):
    """Registers conv_b before conv_a but calls conv_a first: only the call order tells which
    conv reads the raw input and is therefore not gated."""

    def __init__(self):
        super().__init__()
        self.conv_b, self.bn_b = nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv_a, self.bn_a = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv_c, self.bn_c = nn.Conv2d(16, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        x = torch.relu(self.bn_a(self.conv_a(x)))
        x = torch.relu(self.bn_b(self.conv_b(x)))
        x = torch.relu(self.bn_c(self.conv_c(x)))
        return self.head(x.mean((2, 3)))


def test_registration_order_does_not_decide_which_convs_are_gated():
    torch.manual_seed(0)
    standard = ShuffledCNN().eval()
    modular = mwt.make_modular(standard)
    expected = [("conv_b", 16), ("conv_c", 4)]  # call order, conv_a (the first called) excluded
    assert [(layer.conv, layer.kernels) for layer in gated_layers(modular)] == expected
    assert [(c.target, b.target) for c, b in gated_sites(standard)] == \
        [("conv_b", "bn_b"), ("conv_c", "bn_c")]
    assert mwt.count_gated_kernels(standard) == mwt.count_gated_kernels(modular) == 20

    x, y = torch.randn(30, 1, 8, 8), torch.arange(30) % 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mwt.MwtWarning)  # untrained gates are degenerate
        from_standard = mwt.modularize(standard, (x, y), 0.9)
        from_modular = mwt.modularize(modular, (x, y), 0.9)
    assert from_standard.layers == from_modular.layers == expected
    assert from_standard.total_kernels == from_modular.total_kernels == 20
    assert from_standard.masks.shape == from_modular.masks.shape == (3, 20)

    kernels = torch.tensor([True, False] * 8 + [False, True] * 2)
    module = extract_module(modular, kernels)
    assert module.get_submodule("conv_b").out_channels == 8
    assert module.get_submodule("conv_a").out_channels == 8  # never gated, never cut
    torch.testing.assert_close(module(x), with_constant_gates(modular, kernels.float())(x),
                               rtol=1e-4, atol=1e-5)


def test_gated_sites_of_a_modular_model_are_its_gated_layers():
    modular = sparse_modular("resnet18")
    pairs = [(conv.target, bn.target) for conv, bn in gated_sites(modular)]
    assert pairs == [(layer.conv, layer.output) for layer in gated_layers(modular)]


def test_gate_nodes_are_told_by_the_protocol():
    modular = mwt.make_modular(UserCNN())
    found = [gate_application(node) for node in modular.graph.nodes]
    pairs = [(bn.target, mask.target) for bn, mask in filter(None, found)]
    assert pairs == [(layer.output, layer.gate) for layer in gated_layers(modular)]
    assert sum(is_mask_output(node) for node in modular.graph.nodes) == 1


@pytest.mark.parametrize("name", MODELS)
def test_strip_gates_undoes_make_modular(name):
    torch.manual_seed(0)
    model = mwt.create_model(name, 10, 3, 0.125).eval()
    modular = mwt.make_modular(model)
    stripped = strip_gates(modular)
    assert stripped.code == trace(model).code  # the very graph make_modular started from
    assert mwt.is_modular(modular) and not mwt.is_modular(stripped)
    assert not any(isinstance(m, Gate) for m in stripped.modules())
    assert set(stripped.state_dict()) == set(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(stripped(x), model(x))
    assert len(modular(x, return_masks=True)[1]) == len(gated_layers(modular))  # a copy


def test_strip_gates_can_keep_some_gates():
    model = sparse_modular("resnet18")
    layers = gated_layers(model)
    keep = [layers[1].gate, layers[4].gate]
    part = strip_gates(model, keep)
    assert [layer.gate for layer in gated_layers(part)] == keep
    assert sorted(n for n, m in part.named_modules() if isinstance(m, Gate)) == sorted(keep)
    total = sum(layer.kernels for layer in layers)
    ref = with_constant_gates(model, torch.ones(total),
                              only={layer.gate for layer in layers} - set(keep))
    x = torch.randn(2, 3, 32, 32)
    logits, masks = part(x, return_masks=True)
    ref_logits, ref_masks = ref(x, return_masks=True)
    torch.testing.assert_close(logits, ref_logits)
    assert len(masks) == 2
    torch.testing.assert_close(masks[0], ref_masks[1])
    torch.testing.assert_close(masks[1], ref_masks[4])


def test_strip_gates_errors():
    model = sparse_modular("vgg16")
    with pytest.raises(mwt.MwtError, match="no gate named 'features.0_gate'"):
        strip_gates(model, ["features.0_gate"])
    with pytest.raises(mwt.MwtError, match="make_modular"):
        strip_gates(mwt.create_model("vgg16", 10, 3, 0.125))
    stripped = strip_gates(model, inplace=True)
    assert stripped is model and not mwt.is_modular(model)


def test_sliced_gate_is_exact_on_kept_kernels_and_draws_no_random_numbers():
    torch.manual_seed(0)
    gate = Gate(6, 10).eval()
    in_idx, out_idx = torch.tensor([0, 2, 5]), torch.tensor([1, 3, 9])
    rng = torch.get_rng_state()
    small = gate.sliced(in_idx, out_idx)
    assert torch.equal(rng, torch.get_rng_state())
    assert (small.fc1.in_features, small.fc2.out_features) == (3, 3)
    assert small.fc1.out_features == gate.fc1.out_features and not small.training
    pooled = torch.randn(4, 6)
    pooled[:, [1, 3, 4]] = 0  # the dropped input channels are zero in the gated model
    torch.testing.assert_close(small(pooled[:, in_idx]), gate(pooled)[:, out_idx])
    whole = gate.sliced(None, None)
    torch.testing.assert_close(whole(pooled), gate(pooled))
