"""Degenerate gates (all closed, or modules that keep nearly everything) are warned about."""

import warnings

import pytest
import torch

import mwt
from helpers import demo_subset, tiny_modular
from mwt.gates import gated_layers


def healthy():
    """A tiny modular model whose gates open about half the kernels, differently per class."""
    model = tiny_modular("vgg16").eval()
    with torch.no_grad():
        for layer in gated_layers(model):
            model.get_submodule(layer.gate).fc2.bias.uniform_(-1.0, 1.0)
    return model


def forced(bias: float, layers=None):
    """The healthy model with the gates of ``layers`` (default all) outputting tanh(bias)."""
    model = healthy()
    with torch.no_grad():
        for i, layer in enumerate(gated_layers(model)):
            if layers is None or i in layers:
                gate = model.get_submodule(layer.gate)
                gate.fc2.weight.zero_()
                gate.fc2.bias.fill_(bias)
    return model


@pytest.fixture(scope="module")
def data():
    return demo_subset("train", 3)


def test_all_gates_closed(data, tmp_path):
    with pytest.warns(UserWarning, match="all gates are closed") as caught:
        mods = mwt.modularize(forced(-10.0), data, 0.9)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and "train longer" in message and "modular" in message
    assert mods.warnings == [message]
    # one arbitrary kernel per layer and module
    assert mods.masks.sum(1).tolist() == [len(mods.layers)] * 10
    mods.save(tmp_path)
    assert mwt.ModuleSet.load(tmp_path).warnings == [message]


def test_some_layer_closed_for_every_sample(data):
    model = forced(-10.0, layers={2})
    name = gated_layers(model)[2].conv
    with pytest.warns(UserWarning, match=f"the gates of layer\\(s\\) {name} are closed") as caught:
        mods = mwt.modularize(model, data, 0.9)
    assert len(caught) == 1 and mods.warnings == [str(caught[0].message)]
    # every module keeps exactly one kernel of the closed layer
    start = sum(layer.kernels for layer in gated_layers(model)[:2])
    assert mods.masks[:, start:start + gated_layers(model)[2].kernels].sum(1).eq(1).all()


def test_all_gates_open(data, tmp_path):
    with pytest.warns(UserWarning, match="keep nearly every kernel") as caught:
        mods = mwt.modularize(forced(10.0), data, 0.9)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "KRR 100.0%" in message and "larger beta" in message and "\n" not in message
    assert mods.krr == 1.0 and mods.warnings == [message]
    path = mods.save(tmp_path)
    assert mwt.ModuleSet.load(tmp_path, 0.9).warnings == [message]
    assert "keep nearly every kernel" in path.read_text()


def test_a_healthy_model_gives_no_warning(data):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mods = mwt.modularize(healthy(), data, 0.9)
    assert mods.warnings == [] and mods.krr < 0.95
