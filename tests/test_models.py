"""Every registered model, standard and modular: shapes, gradients, kernel counts."""

import copy

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import UserCNN, convs_in_call_order
from mwt.gates import gated_layers
from mwt.models.unit_blocks import UnitBlock

MODELS = mwt.list_models()  # every registered model is tested, a new one too

# Gated kernels at width 1.0 of the paper's models: every conv's output channels except the
# first conv's.
GATED_KERNELS = {
    "vgg16": 64 + 2 * 128 + 3 * 256 + 6 * 512,          # 4224 kernels, minus conv 0
    "simcnn": 64 + 2 * 128 + 3 * 256 + 6 * 512,
    "rescnn": 3 * 128 + 256 + 7 * 512,                    # 4288 kernels, minus conv 0
    "resnet18": 4 * 64 + 5 * 128 + 5 * 256 + 5 * 512,     # incl. the three 1x1 shortcut convs
    "densenet": 3 * 4 * 32 + 96 + 112,                    # 12 dense layers, 2 transitions
    # per block expand + depthwise + project (the first block has no expansion), then the
    # 1x1 head conv: 17 blocks, 51 gated convs
    "mobilenetv2": (32 + 16) + (96 + 96 + 24) + (144 + 144 + 24) + (144 + 144 + 32)
    + 2 * (192 + 192 + 32) + (192 + 192 + 64) + 3 * (384 + 384 + 64) + (384 + 384 + 96)
    + 2 * (576 + 576 + 96) + (576 + 576 + 160) + 2 * (960 + 960 + 160) + (960 + 960 + 320)
    + 1280,
    "vit_tiny": 6 * (4 + 384),                            # per block: 4 heads, 384 neurons
}


def test_registry_lists_the_models():
    assert mwt.list_models() == ["densenet", "mobilenetv2", "rescnn", "resnet18", "simcnn",
                                 "vgg16", "vit_tiny"]


@pytest.mark.parametrize("name", MODELS)
def test_gated_kernel_count(name):
    model = mwt.create_model(name, num_classes=10, in_channels=3, width=1.0)
    called = convs_in_call_order(model, (3, 32, 32))
    expected = sum(conv.out_channels for conv in called[1:]) + sum(
        m.units for m in model.modules() if isinstance(m, UnitBlock))  # a transformer's units
    if name in GATED_KERNELS:
        assert expected == GATED_KERNELS[name]
    assert mwt.count_gated_kernels(model) == expected
    modular = mwt.make_modular(model)
    assert mwt.count_gated_kernels(modular) == expected


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
@pytest.mark.parametrize("modular", [False, True])
def test_forward_backward(name, shape, modular):
    model = mwt.create_model(name, num_classes=7, in_channels=shape[0], width=0.125)
    if modular:
        model = mwt.make_modular(model)
    x = torch.randn(4, *shape)
    y = torch.tensor([0, 1, 2, 6])
    if modular:
        logits, masks = model(x, return_masks=True)
        assert len(masks) == len(gated_layers(model))
        for mask, layer in zip(masks, gated_layers(model)):
            assert mask.shape == (4, layer.kernels)
            assert (mask >= 0).all() and (mask < 1).all()
        loss = (nn.functional.cross_entropy(logits, y) + mwt.cohesion_loss(masks, y)
                + mwt.coupling_loss(masks, y))
    else:
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
    assert logits.shape == (4, 7)
    assert torch.isfinite(logits).all()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", MODELS)
def test_modular_keeps_state_dict_keys_and_plain_forward(name):
    model = mwt.create_model(name, 10, 3, 0.125)
    modular = mwt.make_modular(model)
    std_keys = set(model.state_dict())
    mod_keys = set(modular.state_dict())
    assert std_keys <= mod_keys
    assert all("gate" in k for k in mod_keys - std_keys)
    modular.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(modular(x), modular(x, return_masks=True)[0])


@pytest.mark.parametrize("name", MODELS)
def test_gates_start_open_and_copy_survives(name):
    model = mwt.make_modular(mwt.create_model(name, 10, 3, 0.125)).eval()
    _, masks = model(torch.randn(8, 3, 32, 32), return_masks=True)
    # The gate's output bias starts at 1.0, so most kernels start relevant.
    assert torch.cat(masks, 1).gt(0).float().mean() > 0.5
    clone = copy.deepcopy(model)
    assert mwt.is_modular(clone) and len(gated_layers(clone)) == len(masks)


@pytest.mark.parametrize("name", MODELS)
def test_make_modular_does_not_touch_the_original(name):
    model = mwt.create_model(name, 10, 3, 0.125)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modular = mwt.make_modular(model)
    with torch.no_grad():
        for p in modular.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_user_cnn_becomes_modular():
    modular = mwt.make_modular(UserCNN())
    logits, masks = modular(torch.randn(3, 1, 12, 12), return_masks=True)
    assert logits.shape == (3, 3)
    assert [m.shape[1] for m in masks] == [8, 16]



def test_unknown_model_is_a_clear_error():
    with pytest.raises(mwt.MwtError, match="unknown model 'vgg19'"):
        mwt.create_model("vgg19")


@pytest.mark.parametrize("name", MODELS)
def test_make_modular_twice_is_an_error(name):
    modular = mwt.make_modular(mwt.create_model(name, 10, 3, 0.125))
    with pytest.raises(mwt.MwtError, match="already modular"):
        mwt.make_modular(modular)


def test_gate_ops_have_exact_gradients():
    from mwt.gates import apply_mask, global_avg_pool

    y = torch.randn(3, 4, 5, 5, dtype=torch.double, requires_grad=True)
    mask = torch.rand(3, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(apply_mask, (y, mask))
    assert torch.autograd.gradcheck(global_avg_pool, (y,))
    torch.testing.assert_close(global_avg_pool(y), y.mean((2, 3)))
