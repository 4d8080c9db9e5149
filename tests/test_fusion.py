"""The fused gate + BatchNorm op and the training view computes exactly what the modular graph
computes, forward and backward, and trains the model's own parameters."""

import copy

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

import mwt
from helpers import UserCNN, tiny_modular
from mwt.fusion import GatedBatchNorm, _batch_stats, _GatedBatchNormFn, fuse_gates, training_view
from mwt.gates import apply_mask


def _loss(logits, masks):
    return logits.square().sum() + sum((m * torch.arange(m.shape[1])).sum() for m in masks)


@pytest.mark.parametrize("name", mwt.list_models())
def test_the_training_view_matches_the_modular_graph_in_float64(name):
    model = tiny_modular(name, width=0.0625, in_channels=3).double().train()
    twin = copy.deepcopy(model)
    view = fuse_gates(twin)
    fused = [m for m in view.modules() if isinstance(m, GatedBatchNorm)]
    after_bn = [layer for layer in mwt.gates.gated_layers(model)  # (a ViT's units: none)
                if isinstance(model.get_submodule(layer.output), nn.BatchNorm2d)]
    assert len(fused) == len(after_bn)
    x = torch.randn(6, 3, 32, 32, dtype=torch.float64)
    for _ in range(2):  # the second step sees the running statistics the first one updated
        torch.manual_seed(1)
        ref_logits, ref_masks = model(x, return_masks=True)
        torch.manual_seed(1)
        logits, masks = view(x, return_masks=True)
        torch.testing.assert_close(logits, ref_logits)
        _loss(ref_logits, ref_masks).backward()
        _loss(logits, masks).backward()
    for (k, a), b in zip(model.named_parameters(), twin.parameters()):
        torch.testing.assert_close(b.grad, a.grad, msg=k)
    for (k, a), b in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(b, a, msg=k)
    model.eval()
    view.eval()
    torch.testing.assert_close(view(x), model(x))


def test_the_view_shares_the_models_parameters_and_keeps_its_files_unchanged():
    model = mwt.make_modular(UserCNN())
    keys = list(model.state_dict())
    view = fuse_gates(model)
    params = {id(p) for p in model.parameters()}
    assert {id(p) for p in view.parameters()} == params
    opt = torch.optim.SGD(view.parameters(), lr=0.1)
    before = copy.deepcopy(model.state_dict())
    view.train()(torch.randn(4, 1, 8, 8)).sum().backward()
    opt.step()
    assert list(model.state_dict()) == keys
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert before["b.1.num_batches_tracked"] + 1 == model.state_dict()["b.1.num_batches_tracked"]


def test_a_standard_model_is_its_own_view():
    model = UserCNN()
    assert fuse_gates(model) is model
    assert training_view(model) is model


def test_cumulative_average_momentum_matches_batchnorm():
    bn = nn.BatchNorm2d(5, momentum=None).train()
    ref = copy.deepcopy(bn)
    gated = GatedBatchNorm(bn)
    ones = torch.ones(8, 5)
    for seed in range(3):
        x = torch.randn(8, 5, 4, 4, generator=torch.Generator().manual_seed(seed)) * 3 + 1
        torch.testing.assert_close(gated(x, ones), apply_mask(ref(x), ones))
    torch.testing.assert_close(bn.running_mean, ref.running_mean)
    torch.testing.assert_close(bn.running_var, ref.running_var)
    assert int(bn.num_batches_tracked) == int(ref.num_batches_tracked) == 3


def test_half_precision_and_other_batchnorms_take_the_unfused_path():
    bn = nn.BatchNorm2d(3).train()
    x, m = torch.randn(4, 3, 5, 5).bfloat16(), torch.rand(4, 3).bfloat16()
    bn = bn.bfloat16()
    torch.testing.assert_close(GatedBatchNorm(bn)(x, m), apply_mask(bn(x), m))


@settings(max_examples=20, deadline=None)
@given(b=st.integers(2, 4), c=st.integers(1, 4), hw=st.integers(1, 3),
       batch_stats=st.booleans(), seed=st.integers(0, 2**16))
def test_the_fused_backward_is_the_exact_gradient(b, c, hw, batch_stats, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, hw + 1, hw, generator=g, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(b, c, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(c, generator=g, dtype=torch.float64, requires_grad=True)
    running = (torch.randn(c, generator=g, dtype=torch.float64),
               torch.rand(c, generator=g, dtype=torch.float64) + 0.5)

    def f(x, mask, weight, bias):
        if batch_stats:  # the statistics' dependence on x is part of the op's backward
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            invstd = torch.rsqrt(var + 1e-5)
            return _GatedBatchNormFn.apply(x, mask, weight, bias, mean.detach(),
                                           invstd.detach(), True)
        return _GatedBatchNormFn.apply(x, mask, weight, bias, running[0],
                                       torch.rsqrt(running[1] + 1e-5), False)

    def reference(x, mask, weight, bias):
        if batch_stats:
            y = nn.functional.batch_norm(x, None, None, weight, bias, True, 0.0, 1e-5)
        else:
            y = nn.functional.batch_norm(x, *running, weight, bias, False, 0.0, 1e-5)
        return y * mask[:, :, None, None]

    out, ref = f(x, mask, weight, bias), reference(x, mask, weight, bias)
    torch.testing.assert_close(out, ref)
    grad = torch.randn(out.shape, generator=g, dtype=torch.float64)
    got = torch.autograd.grad(out, (x, mask, weight, bias), grad)
    want = torch.autograd.grad(ref, (x, mask, weight, bias), grad)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e)


def test_batch_statistics_from_sums_match_var_mean():
    x = torch.randn(64, 7, 9, 9) * 2.5 + 4.0
    mean, var = _batch_stats(x)
    ref_var, ref_mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(var, ref_var, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("offset", [100.0, 1000.0])
def test_shifted_inputs_match_batchnorm(offset):
    # mean = offset x spread: E[x^2] - E[x]^2 in float32 drifted 1e-3 (offset 100) and 9e-2
    # (offset 1000) from nn.BatchNorm2d; per channel, some channels centred, some shifted.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, 8, 8, generator=g)
    x[:, ::2] += offset
    bn = nn.BatchNorm2d(6).train()
    ref = copy.deepcopy(bn)
    mask = torch.rand(32, 6, generator=g)
    out = GatedBatchNorm(bn)(x, mask)
    want = apply_mask(ref(x), mask)
    # x itself is only known to float32's ulp at the offset (6e-5 at 1000), in both
    torch.testing.assert_close(out, want, rtol=1e-5, atol=2e-7 * offset)
    torch.testing.assert_close(bn.running_var, ref.running_var, rtol=1e-5, atol=1e-6)
    mean, var = _batch_stats(x)
    ref_var, ref_mean = torch.var_mean(x.double(), dim=(0, 2, 3), correction=0)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-5, atol=0)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-7, atol=1e-6)


def test_compiled_and_eager_training_give_the_same_losses():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 1, 12, 12, generator=g), torch.arange(96) % 3
    histories = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = mwt.make_modular(UserCNN())
        result = mwt.train(model, (x, y), epochs=2, batch_size=32, device="cpu", progress=False,
                           verbose=False, augment=False, compile=compiled)
        histories.append(result.history)
    keys = ("train_ce", "train_cohesion_loss", "train_coupling_loss", "train_kernel_rate")
    for eager, compiled in zip(*histories):
        for k in keys:
            assert compiled[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-5), k


def test_compile_must_be_a_bool():
    with pytest.raises(mwt.MwtError, match="compile must be true or false"):
        mwt.train(mwt.make_modular(UserCNN()), (torch.randn(4, 1, 8, 8), torch.arange(4) % 3),
                  epochs=1, compile="yes", progress=False, verbose=False)
