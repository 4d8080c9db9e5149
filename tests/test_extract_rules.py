"""Extraction's two tables: propagation rules (what survives) and slicers (cutting it)."""

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import UserCNN, with_constant_gates
from mwt import channel_flow, extract, slicing
from mwt.extract import extract_module
from mwt.gates import strip_gates


def test_propagation_maps_every_node_to_its_kept_channels_and_changes_nothing():
    model = mwt.make_modular(UserCNN())
    kernels = torch.tensor([True, False] * 4 + [False, True] * 8)  # b: even kernels, c: odd
    gm = strip_gates(model)
    code = gm.code
    flow = channel_flow.propagate(gm, extract._kept_per_layer(model, kernels), {})
    assert gm.code == code
    ch = {node.name: c for node, c in flow.channels.items()}
    assert ch["a_0"].full and ch["a_2"].full                     # the first conv is never cut
    assert ch["b_0"].kept.tolist() == [0, 2, 4, 6] and ch["b_2"].same(ch["b_0"])
    assert ch["add"].full                                        # union with the full side
    assert [n.name for n in flow.scatters] == ["add"]
    assert ch["c_0"].kept.tolist() == list(range(1, 16, 2))
    assert ch["mean"].same(ch["c_0"])                            # pooling keeps channels apart
    assert ch["head"] is None                                    # logits are not channels


class PReLUCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.act = nn.PReLU(8)  # one learnt slope per channel, and PReLU(0) == 0
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(self.act(self.b(self.a(x))).mean((2, 3)))


def _slice_prelu(prelu: nn.PReLU, inputs, outputs) -> nn.PReLU:
    new = nn.PReLU(len(inputs.kept))
    with torch.no_grad():
        new.weight.copy_(prelu.weight[inputs.kept])
    return new


def test_a_new_layer_type_is_one_rule_and_one_slicer(monkeypatch):
    torch.manual_seed(0)
    model = mwt.make_modular(PReLUCNN(), check=False).eval()
    with torch.no_grad():
        model.act.weight.uniform_(0.1, 0.9)
    kernels = torch.tensor([True, False, False, True, True, False, True, False])
    with pytest.raises(mwt.MwtError, match="unsupported layer PReLU at graph node 'act'"):
        extract_module(model, kernels)
    monkeypatch.setattr(channel_flow, "MODULE_RULES",
                        [(nn.PReLU, channel_flow.passthrough)] + channel_flow.MODULE_RULES)
    monkeypatch.setattr(slicing, "SLICERS", [(nn.PReLU, _slice_prelu)] + slicing.SLICERS)
    module = extract_module(model, kernels)
    assert module.get_submodule("act").weight.shape == (4,)
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(module(x), with_constant_gates(model, kernels.float())(x),
                               rtol=1e-4, atol=1e-5)


def test_layers_that_keep_all_their_channels_are_left_alone():
    model = mwt.make_modular(UserCNN()).eval()
    kernels = torch.tensor([True] * 8 + [False, True] * 8)  # b keeps all, c keeps half
    module = extract_module(model, kernels)
    for name in ("a.0", "a.1", "b.0", "b.1"):
        torch.testing.assert_close(module.get_submodule(name).state_dict(),
                                   model.get_submodule(name).state_dict())
    assert module.get_submodule("c.0").out_channels == 8
    assert module.head.in_features == 8


def test_sigmoid_on_cut_channels_is_an_error_not_a_wrong_module():
    # sigmoid(0) = 0.5: a removed kernel still feeds the next layer in the gated model, so
    # dropping it would silently change the result.
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
            self.b = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
            self.c = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4))
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            x = torch.relu(self.a(x))
            x = torch.sigmoid(self.b(x))
            return self.head(self.c(x).mean((2, 3)))

    model = mwt.make_modular(Sig(), check=False)
    kernels = torch.tensor([True, False, True, True, True, True, True, True])
    with pytest.raises(mwt.MwtError, match="sigmoid"):
        mwt.extract_module(model, kernels)


# the models with BatchNorms to fold (a ViT has LayerNorms)
BN_MODELS = [name for name in mwt.list_models() if any(
    isinstance(m, nn.BatchNorm2d) for m in mwt.create_model(name, 10, 1, 0.125).modules())]


@pytest.mark.parametrize("name", BN_MODELS)
@pytest.mark.parametrize("options", [{}, {"keep_gates": True}, {"fold_gates": True}])
def test_folding_batchnorm_keeps_the_outputs(name, options):
    from helpers import sparse_modular
    from mwt.inference import fold_batchnorm

    model = sparse_modular(name, in_channels=1)
    g = torch.Generator().manual_seed(1)
    kernels = torch.rand(mwt.count_gated_kernels(model), generator=g) < 0.5
    if options.get("fold_gates"):
        options = {**options, "gate_values": torch.rand(len(kernels))}
    module = extract_module(model, kernels, **options).eval()
    folded = fold_batchnorm(module)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in module.modules())  # the input is untouched
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), module(x), rtol=1e-4, atol=1e-5)
