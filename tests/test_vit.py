"""Vision Transformers: heads and MLP neurons as units, gated, cut exactly, counted, trained by
every method, reused and exported."""

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import demo_subset, randomise, sample_kernels, small_run, with_constant_gates
from mwt.cli import main
from mwt.errors import MwtWarning
from mwt.extract import extract_module
from mwt.gates import gated_layers
from mwt.macs import unit_block_macs
from mwt.methods import get_method
from mwt.models.unit_blocks import HeadAttention, TokenMLP

SHAPE = (1, 28, 28)


def vit(seed=0):
    torch.manual_seed(seed)
    return randomise(mwt.make_modular(mwt.create_model("vit_tiny", 10, 1, 0.25)), seed)


def test_units_are_each_blocks_heads_and_mlp_neurons():
    model = vit()
    layers = gated_layers(model)
    assert [layer.conv for layer in layers[:2]] == ["blocks.0.attn", "blocks.0.mlp"]
    assert [layer.kernels for layer in layers[:2]] == [4, 96]  # 4 heads; MLP 384 x 0.25
    assert len(layers) == 12 and mwt.count_gated_kernels(model) == 6 * (4 + 96)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extraction_is_exact_on_samples_inside_the_module(seed):
    model = vit(seed)
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(seed))
    kernels, logits, masks = sample_kernels(model, x)
    assert not bool(kernels.all())
    kept = extract_module(model, kernels, keep_gates=True)
    with torch.no_grad():
        out, kept_masks = kept(x, return_masks=True)
    torch.testing.assert_close(out, logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(kept_masks, 1), torch.cat(masks, 1)[:, kernels])
    plain = extract_module(model, kernels)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), with_constant_gates(model, kernels.float())(x),
                                   rtol=1e-4, atol=1e-5)


def test_a_kept_head_is_computed_exactly_and_a_dropped_one_is_absent():
    torch.manual_seed(0)
    block = HeadAttention(16, 4, 8).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1.0, 0.0, 0.3, 0.0], [0.5, 0.0, 1.0, 0.0]])
    cut = block.sliced(torch.tensor([0, 2]))
    assert (cut.units, cut.q.out_features, cut.proj.in_features) == (2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(cut(x, unit_mask=mask[:, [0, 2]]), block(x, unit_mask=mask))
    mlp = TokenMLP(16, 10).eval()
    keep = torch.tensor([1, 4, 9])
    neurons = torch.zeros(2, 10)
    neurons[:, keep] = torch.rand(2, 3) + 0.1
    small = mlp.sliced(keep)
    assert (small.fc1.out_features, small.fc2.in_features) == (3, 3)
    with torch.no_grad():
        torch.testing.assert_close(small(x, unit_mask=neurons[:, keep]),
                                   mlp(x, unit_mask=neurons))


def _hand_macs(module, shape, blocks_only: bool = False) -> int:
    """Patch conv, LayerNorms (5 per element), Linears per token, attention products; with
    ``blocks_only``, the Linears and products inside the attention and MLP blocks alone."""
    blocks = [n for n, m in module.named_modules() if isinstance(m, (HeadAttention, TokenMLP))]
    sizes = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, i[0].shape))
             for n, m in module.named_modules()
             if isinstance(m, (nn.Conv2d, nn.LayerNorm, nn.Linear, HeadAttention))]
    with torch.no_grad():
        module(torch.zeros(1, *shape))
    for h in hooks:
        h.remove()
    total = 0
    for name, m in module.named_modules():
        if blocks_only and not any(name == b or name.startswith(b + ".") for b in blocks):
            continue
        if isinstance(m, nn.Conv2d):
            _, _, h, w = sizes[name]
            total += m.out_channels * m.in_channels * (h // 4) * (w // 4) * 16
        elif isinstance(m, nn.LayerNorm):
            total += 5 * sizes[name].numel()
        elif isinstance(m, nn.Linear):
            total += sizes[name].numel() // m.in_features * m.in_features * m.out_features
        elif isinstance(m, HeadAttention):
            n = sizes[name][1]
            total += 2 * m.units * n * n * m.head_dim
    return total


def test_macs_of_a_module_are_the_hand_count_and_fall_with_units():
    model = vit()
    kernels, _, _ = sample_kernels(model, torch.randn(2, *SHAPE))
    plain = extract_module(model, kernels)
    whole = extract_module(model, torch.ones_like(kernels))
    assert mwt.count_macs(plain, SHAPE) == _hand_macs(plain, SHAPE)
    assert mwt.count_macs(whole, SHAPE) == _hand_macs(whole, SHAPE)
    assert mwt.count_macs(plain, SHAPE) < mwt.count_macs(whole, SHAPE)
    for module in (plain, whole):
        assert unit_block_macs(module, SHAPE) == _hand_macs(module, SHAPE, blocks_only=True)
        _, per_layer = mwt.count_macs(module, SHAPE, per_layer=True)  # reuse's one-pass form
        assert (unit_block_macs(module, SHAPE, per_layer=per_layer)
                == _hand_macs(module, SHAPE, blocks_only=True))
    assert unit_block_macs(mwt.create_model("vgg16", 10, 1, 0.125), SHAPE) == 0


def test_folded_gates_scale_the_units():
    model = vit()
    kernels, _, _ = sample_kernels(model, torch.randn(2, *SHAPE))
    values = torch.rand(kernels.numel()) * 0.5 + 0.25
    module = extract_module(model, kernels, fold_gates=True, gate_values=values)
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(module(x), with_constant_gates(model, values * kernels)(x),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["mwt", "nemo", "moda"])
def test_a_micro_vit_trains_modularizes_reuses_and_exports(name, tmp_path):
    torch.manual_seed(0)
    train, test = demo_subset("train", 6), demo_subset("test", 2)
    net = mwt.create_model("vit_tiny", 10, 1, 0.125)
    if get_method(name).gated:
        net = mwt.make_modular(net)
    result = mwt.train(net, train, test, epochs=1, batch_size=20, method=name, progress=False,
                       verbose=False, device="cpu")
    mods = mwt.modularize(result.model, train, 0.9, method=name)
    sub = mwt.reuse(result.model, mods, [0, 3], train, epochs=None if name == "moda" else 1,
                    device="cpu")
    x = test.images[:3]
    with torch.no_grad():
        out = sub.eval()(x)
    assert out.shape == (3, 2)
    mwt.save_module(sub, tmp_path / "m")
    back = mwt.load_module(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(x), out)
    path = mwt.export_module(back, tmp_path / "m.pt2", "pt2")
    program = torch.export.load(str(path)).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), out, rtol=1e-4, atol=1e-4)


def test_the_cli_cuts_a_vit_run_and_names_its_units(tmp_path, capsys):
    small_run(tmp_path / "run", per_class=4, batch_size=20, model="vit_tiny")
    assert main(["modularize", str(tmp_path / "run"), "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "units" in table.splitlines()[1] and "kernels" not in table
    assert main(["reuse", str(tmp_path / "run"), "--classes", "0", "3", "--epochs", "0",
                 "--out", str(tmp_path / "m"), "--device", "cpu", "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "units kept" in report and "gated units" in report
    assert "of the attention and MLP MACs" in report
    assert main(["export", "module", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "module.pt2").is_file()


class TorchViT(nn.Module):
    """A user's ViT from torch's own layers."""

    def __init__(self, norm_first=False, activation="relu", encoder=True):
        super().__init__()
        self.patch = nn.Conv2d(1, 16, 4, 4)
        layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, activation=activation,
                                           batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False) if encoder \
            else layer
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.encoder(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


def test_a_torch_transformer_layer_is_refused_in_one_sentence():
    with pytest.raises(mwt.MwtError, match="'encoder.layers.0' is a torch TransformerEncoderLayer.*"
                                           "from_torch_transformer"):
        mwt.make_modular(TorchViT())


@pytest.mark.parametrize("norm_first, activation, encoder", [
    (False, "relu", True), (True, "gelu", True), (True, "relu", False)])
def test_a_torch_transformer_rebuilt_from_unit_blocks_computes_the_same_and_is_cut(
        norm_first, activation, encoder):
    torch.manual_seed(0)
    model = TorchViT(norm_first, activation, encoder).eval()
    rebuilt = mwt.models.from_torch_transformer(model).eval()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x), rtol=1e-4, atol=1e-5)
    modular = randomise(mwt.make_modular(rebuilt))
    assert len(gated_layers(modular)) == (4 if encoder else 2)  # heads and MLP per layer
    kernels, logits, _ = sample_kernels(modular, x)
    kept = extract_module(modular, kernels, keep_gates=True)
    with torch.no_grad():
        torch.testing.assert_close(kept(x, return_masks=True)[0], logits, rtol=1e-4,
                                   atol=1e-5)


def test_a_torch_layer_that_cannot_be_rebuilt_is_named():
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=False)
    holder = nn.Sequential(nn.Linear(16, 16), layer)
    with pytest.raises(mwt.MwtError, match="'1' is not batch_first"):
        mwt.models.from_torch_transformer(holder)


def test_a_vit_run_reports_its_unit_rate_not_a_kernel_rate(capsys):
    torch.manual_seed(0)
    train, test = demo_subset("train", 2), demo_subset("test", 1)
    net = mwt.make_modular(mwt.create_model("vit_tiny", 10, 1, 0.125))
    with pytest.warns(MwtWarning, match="the unit rate is still"):  # one epoch: gates still open
        mwt.train(net, train, test, epochs=1, batch_size=20, progress=False, verbose=True,
                  device="cpu")
    out = capsys.readouterr().out
    assert "unit rate" in out and "kernel rate" not in out
