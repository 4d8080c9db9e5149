"""MAC counter (fvcore conventions): paper figures, hand case, per-layer, modes, kwargs."""

import pytest
import torch
import torch.nn as nn

from mwt.errors import MwtError
from mwt.gates import make_modular
from mwt.macs import count_macs
from mwt.models import create_model


def mmacs(macs: int) -> float:
    return round(macs / 1e4) / 100


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)          # 1x5x5 -> 2x3x3
        self.relu = nn.ReLU()
        self.fc = nn.Linear(18, 4)

    def forward(self, x):
        return self.fc(self.relu(self.conv(x)).flatten(1))


class NeedsKwarg(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 3)
        self.extra = nn.Linear(6, 5)

    def forward(self, x, *, use_extra):
        return self.extra(x) if use_extra else self.fc(x)


def test_tiny_model_by_hand():
    # conv: 2*3*3 outputs x 1 channel x 3x3 kernel = 162; linear: 18 x 4 = 72
    total, per = count_macs(Tiny(), (1, 5, 5), per_layer=True)
    assert per == {"conv": 162, "fc": 72}
    assert total == 234 == count_macs(Tiny(), (1, 5, 5))


def test_vgg16_matches_paper():
    model = create_model("vgg16", 10, 3, 1.0)
    total, per = count_macs(model, (3, 32, 32), per_layer=True)
    assert mmacs(total) == 315.11
    modules = dict(model.named_modules())

    def part(cls):
        return sum(v for k, v in per.items() if isinstance(modules[k], cls))

    assert part(nn.Conv2d) == 313_196_544
    assert part(nn.BatchNorm2d) == 1_382_400
    assert part(nn.Linear) == 529_408


def test_resnet18_matches_paper():
    total = count_macs(create_model("resnet18", 10, 3, 1.0), (3, 32, 32))
    assert mmacs(total) == 558.50
    assert total == 558_502_912


def test_per_layer_sums_to_total_and_mode_is_restored():
    model = create_model("resnet18", 10, 3, 0.25)
    for training in (True, False):
        model.train(training)
        total, per = count_macs(model, (3, 32, 32), per_layer=True)
        assert sum(per.values()) == total
        assert all(m.training == training for m in model.modules())
    assert not any(m._forward_hooks for m in model.modules())


def test_batchnorm_affine_rule():
    bn = nn.Sequential(nn.BatchNorm2d(3), nn.BatchNorm2d(3, affine=False), nn.AdaptiveAvgPool2d(1),
                       nn.Flatten(), nn.BatchNorm1d(3))
    _, per = count_macs(bn, (3, 4, 4), per_layer=True)
    assert per == {"0": 5 * 48, "1": 4 * 48, "2": 48, "4": 5 * 3}


def test_modular_model_counts_gates():
    model = create_model("vgg16", 10, 3, 0.25)
    base = count_macs(model, (3, 32, 32))
    modular = make_modular(model)
    total, per = count_macs(modular, (3, 32, 32), per_layer=True)
    gates = {k: v for k, v in per.items() if "_gate" in k}
    assert gates and total == base + sum(gates.values())
    # every gate Linear is counted: fc1 has no bias, in x hidden MACs
    gate_params = sum(m.weight.numel() for n, m in modular.named_modules()
                      if "_gate" in n and isinstance(m, nn.Linear))
    assert sum(gates.values()) == gate_params


def test_forward_kwargs_are_passed_through():
    assert count_macs(NeedsKwarg(), (6,), use_extra=False) == 18
    assert count_macs(NeedsKwarg(), (6,), use_extra=True) == 30
    modular = make_modular(create_model("vgg16", 10, 3, 0.25))
    assert count_macs(modular, (3, 32, 32), return_masks=True) == count_macs(modular, (3, 32, 32))


def test_uncounted_leaves_are_listed():
    model = nn.Sequential(nn.Linear(4, 4), nn.PReLU(4))
    total, per = count_macs(model, (4,), per_layer=True)
    assert total == 16 and per["uncounted"] == ["1"]
    assert count_macs(model, (4,)) == 16


def test_layernorm_is_fvcores_norm_rule():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4),
                          nn.LayerNorm(4, elementwise_affine=False))
    assert count_macs(model, (3, 4)) == 3 * 16 + 5 * 12 + 4 * 12


def test_follows_parameter_dtype():
    model = Tiny().double()
    assert count_macs(model, (1, 5, 5)) == 234


def test_bad_input_shape():
    with pytest.raises(MwtError, match="input_shape"):
        count_macs(Tiny(), (1, 0, 5))


def test_hooks_removed_after_failure():
    model = Tiny()
    with pytest.raises(MwtError, match="one sample of shape"):
        count_macs(model, (2, 5, 5))   # wrong channel count
    assert not any(m._forward_hooks for m in model.modules())
    assert model.training
    assert torch.is_grad_enabled()
