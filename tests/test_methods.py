"""The training methods (mwt.methods): each loss against a brute-force form, MODA's signals and
rule, the method objects' checks, and each method end to end (train, modularize, reuse, files,
export)."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import mwt
from helpers import demo_subset
from mwt.config import METHOD_NAMES
from mwt.methods import METHODS, MODA, NeMo, get_method
from mwt.methods.moda import activation_view, compactness_loss
from mwt.methods.nemo import contrastive_loss
from mwt.output_rows import keep_output_rows
from mwt.rules import activation_rate_masks


def _cos(a, b):
    return (a @ b) / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12))


def _nemo_brute(layers, labels, t, excluded):
    """NeMo's loss with explicit loops over anchors and partners."""
    per_layer = []
    for m in layers:
        b = len(labels)
        terms, count = [], 0
        for i in range(b):
            pos = neg = 0.0
            for j in range(b):
                s = _cos(m[i], m[j])
                same = bool(labels[i] == labels[j])
                if excluded == "exp0":  # every pair counts, excluded ones as exp(0)
                    pos = pos + (torch.exp(s / t) if same else 1.0)
                    neg = neg + (1.0 if same else torch.exp(s / t))
                elif i != j:
                    if same:
                        pos = pos + torch.exp(s / t)
                    else:
                        neg = neg + torch.exp(s / t)
            if excluded == "drop" and not any(bool(labels[i] == labels[j])
                                              for j in range(b) if j != i):
                continue
            terms.append(-torch.log((pos + 1e-8) / (pos + neg + 1e-8)))
            count += 1
        per_layer.append(sum(terms) / count)
    return sum(per_layer) / len(per_layer)


@pytest.mark.parametrize("excluded", ["exp0", "drop"])
def test_nemo_loss_matches_loops_in_value_and_gradient(excluded):
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 0, 2, 1, 2, 2])
    raw = [torch.rand(7, 5, generator=g), torch.rand(7, 3, generator=g)]
    raw[0][3] = 0.0  # an all-zero mask: F.normalize leaves it zero
    a = [r.clone().requires_grad_() for r in raw]
    b = [r.clone().requires_grad_() for r in raw]
    ours = contrastive_loss(a, labels, 0.2, excluded)
    ref = _nemo_brute(b, labels, 0.2, excluded)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ours.backward()
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-6)


def test_nemo_loss_by_hand():
    # Two samples of one class with orthogonal masks, one of another equal to the first:
    # s = [[1, 0, 1], [0, 1, 0], [1, 0, 1]], T = 1, published form.
    m = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    e = math.e
    # anchor 0: pos = e^1 + e^0 + 1 (excluded), neg = 1 + 1 + e^1; anchor 1: pos = 1 + e + 1,
    # neg = 1 + 1 + e^0; anchor 2: pos = 1 + 1 + e, neg = e + 1 + 1 (s_20 = 1, s_21 = 0).
    l0 = -math.log((e + 2) / (e + 2 + e + 2))
    l1 = -math.log((e + 2) / (e + 2 + 3))
    l2 = -math.log((e + 2) / (e + 2 + e + 2))
    got = contrastive_loss(m, y, temperature=1.0)
    assert float(got) == pytest.approx((l0 + l1 + l2) / 3, rel=1e-6)


def _moda_brute(layers, labels, alpha, beta, gamma):
    aff, dis, comp = [], [], []
    for m in layers:
        same, diff = [], []
        for i in range(len(labels)):
            for j in range(i + 1, len(labels)):
                (same if labels[i] == labels[j] else diff).append(_cos(m[i], m[j]))
        aff.append(1 - sum(same) / len(same))
        dis.append(sum(diff) / len(diff))
        comp.append(m.abs().sum() / m.numel())
    n = len(layers)
    return alpha * sum(aff) / n + beta * sum(dis) / n + gamma * sum(comp) / n


def test_moda_objective_matches_the_published_form():
    g = torch.Generator().manual_seed(2)
    labels = torch.tensor([0, 0, 1, 1, 2, 0])
    raw = [torch.rand(6, 4, generator=g), torch.rand(6, 6, generator=g) * 3]
    a = [r.clone().requires_grad_() for r in raw]
    b = [r.clone().requires_grad_() for r in raw]
    ce = torch.tensor(0.5)
    loss, parts = MODA(gamma=0.3).objective(ce, a, labels, 1.0, 0.7, "classes", 3)
    ref = ce + _moda_brute(b, labels, 1.0, 0.7, 0.3)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert set(parts) == {"affinity_loss", "dispersion_loss", "compactness_loss"}
    torch.testing.assert_close(parts["compactness_loss"], compactness_loss(raw))
    loss.backward()
    ref.backward()
    for x, y in zip(a, b):
        torch.testing.assert_close(x.grad, y.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["vgg16", "resnet18"])
def test_moda_signals_are_the_relu_bn_means_and_change_nothing(name):
    torch.manual_seed(0)
    model = mwt.create_model(name, 10, 3, 0.125).eval()
    layers = mwt.gates.gateable_layers(model)
    seen = []
    hooks = [model.get_submodule(layer.output).register_forward_hook(
        lambda m, i, o: seen.append(torch.relu(o).mean(dim=(2, 3)))) for layer in layers]
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        for h in hooks:
            h.remove()
        logits, signals = activation_view(model)(x, return_masks=True)
    torch.testing.assert_close(logits, expected)
    assert len(signals) == len(layers) == len(seen)
    for got, want, layer in zip(signals, seen, layers):
        assert got.shape == (4, layer.kernels)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    view = activation_view(model)
    assert all(p is q for p, q in zip(view.parameters(), model.parameters()))


def test_activation_rate_rule_by_hand():
    freq = torch.tensor([[0.95, 0.90, 0.20, 0.10, 0.99, 0.50],
                         [0.10, 0.20, 0.30, 0.40, 0.80, 0.85]])
    masks, used = activation_rate_masks(freq, [4, 2], 0.9, min_fraction=0.25)
    # layer 1 (4 units, at least 1): class 0 keeps 0, 1; class 1 keeps nothing by the
    # threshold, so its top-2 (the most any class keeps): units 3 and 2.
    # layer 2 (2 units): class 0 keeps unit 4; class 1 nothing, so its top-1: unit 5.
    assert masks.tolist() == [[True, True, False, False, True, False],
                              [False, False, True, True, False, True]]
    assert used[0].tolist() == pytest.approx([0.9, 0.9])
    assert used[1].tolist() == pytest.approx([0.3, 0.85])


def test_method_objects_and_their_errors():
    assert tuple(METHODS) == METHOD_NAMES
    assert get_method() == mwt.methods.MwT()
    assert get_method("NeMo", {"temperature": 0.3}) == NeMo(temperature=0.3)
    with pytest.raises(mwt.MwtError, match="unknown method"):
        get_method("dropout")
    with pytest.raises(mwt.MwtError, match="has no option 'tau'"):
        get_method("moda", {"tau": 0.9})
    with pytest.raises(mwt.MwtError, match="temperature"):
        get_method("nemo", {"temperature": 0.0})
    with pytest.raises(mwt.MwtError, match="excluded_pairs"):
        get_method("nemo", {"excluded_pairs": "keep"})
    with pytest.raises(mwt.MwtError, match="nemo has no beta"):
        mwt.TrainConfig(method="nemo", beta=1.0).validate()
    with pytest.raises(mwt.MwtError, match="reduction is an MwT option"):
        mwt.TrainConfig(method="moda", reduction="pairs").validate()


def test_a_method_refuses_a_model_it_cannot_train():
    data = demo_subset("train", 2)
    gated = mwt.make_modular(mwt.create_model("vgg16", 10, 1, 0.125))
    with pytest.raises(mwt.MwtError, match="MODA trains a model without gates"):
        mwt.train(gated, data, epochs=1, method="moda", progress=False, verbose=False)


@pytest.fixture(scope="module")
def method_runs(tmp_path_factory):
    """A 2-epoch run of each method on a slice of the demo data, modularized."""
    torch.set_num_threads(1)
    train, test = demo_subset("train", 12), demo_subset("test", 4)
    out = {}
    for name in METHOD_NAMES:
        torch.manual_seed(0)
        net = mwt.create_model("vgg16", 10, 1, 0.125)
        if get_method(name).gated:
            net = mwt.make_modular(net)
        result = mwt.train(net, train, test, epochs=2, batch_size=40, method=name,
                           progress=False, verbose=False, device="cpu")
        mods = mwt.modularize(result.model, train, 0.9, method=name)
        out[name] = result, mods
    return train, test, out


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_each_method_trains_modularizes_reuses_saves_and_exports(method_runs, name, tmp_path):
    train, test, runs = method_runs
    result, mods = runs[name]
    loss_keys = {f"train_{k}" for k, _ in get_method(name).loss_names}
    assert loss_keys <= set(result.final)
    assert all(math.isfinite(result.final[k]) for k in loss_keys)
    assert mods.method == name and mods.tau == 0.9
    sub = mwt.reuse(result.model, mods, [0, 3], train, test_data=test, epochs=None,
                    device="cpu")
    r = sub.report
    assert r["method"] == name
    if name == "moda":
        assert r["composition"] == "rows" and r["epochs"] == 0
        assert r["acc_after_finetune"]["test"] is None
        last = [m for m in sub.modules() if isinstance(m, nn.Linear)][-1]
        assert last.out_features == 2  # the target rows, physically
        with pytest.raises(mwt.MwtError, match="without fine-tuning"):
            mwt.reuse(result.model, mods, [0, 3], train, epochs=1, device="cpu")
    else:
        assert r["composition"] == "head" and r["epochs"] >= 5
    x = test.images[:6]
    with torch.no_grad():
        out = sub.eval()(x)
    assert out.shape == (6, 2)
    mwt.save_module(sub, tmp_path / "m")
    back = mwt.load_module(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(back(x), out)
    path = mwt.export_module(back, tmp_path / "m.pt2", "pt2")
    program = torch.export.load(str(path))
    torch.testing.assert_close(program.module()(x), out, rtol=1e-4, atol=1e-4)
    import onnxruntime  # a dev dependency: CI runs this

    path = mwt.export_module(back, tmp_path / "m.onnx", "onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), out, rtol=1e-4, atol=1e-4)


def test_moda_module_without_fine_tuning_is_the_models_target_rows(method_runs):
    """On samples whose active units all lie in the module, MODA's composed module (the units
    kept, the last layer cut to the target rows) returns exactly the model's logits of the
    target classes: in VGG an inactive unit (conv -> BN -> ReLU) is zero everywhere, so
    removing it changes nothing. The kept units here are those active on some chosen samples,
    so those samples lie inside the module by construction."""
    train, _, runs = method_runs
    model = runs["moda"][0].model.eval()
    mods = runs["moda"][1]
    x = train.images[(train.labels == 1) | (train.labels == 4)][:6]
    with torch.no_grad():
        logits, signals = activation_view(model)(x, return_masks=True)
    kept = (torch.cat(signals, dim=1) > 0).any(dim=0)
    assert 0 < int(kept.sum()) < mods.total_kernels
    module = keep_output_rows(mwt.extract_module(model, kept), [4, 1])
    with torch.no_grad():
        torch.testing.assert_close(module(x), logits[:, [4, 1]], rtol=1e-4, atol=1e-5)
    assert mwt.count_macs(module, (1, 28, 28)) < mwt.count_macs(model, (1, 28, 28))


def test_cli_trains_moda_and_reuses_it_without_fine_tuning(tmp_path, capsys, monkeypatch):
    import mwt.runs
    from mwt.cli import main

    def small(name, split, *args, **kwargs):
        return demo_subset(split, 8 if split == "train" else 2)

    monkeypatch.setattr(mwt.runs, "load_dataset", small)
    run = tmp_path / "moda"
    assert main(["train", "--method", "moda", "--method-option", "gamma=0.5", "--model",
                 "vgg16", "--width", "0.125", "--dataset", "demo", "--epochs", "1",
                 "--batch-size", "40", "--out", str(run), "--no-progress", "--quiet",
                 "--device", "cpu"]) == 0
    assert "modular vgg16 on demo (moda)" in capsys.readouterr().out
    saved = mwt.RunSpec.load(run)
    assert saved.train.method == "moda" and saved.train.method_options == {"gamma": 0.5}
    assert main(["modularize", str(run), "--device", "cpu"]) == 0
    assert "moda modules" in capsys.readouterr().out
    assert main(["reuse", str(run), "--classes", "0", "3", "--out", str(tmp_path / "m"),
                 "--device", "cpu", "--quiet"]) == 0
    assert "no fine-tuning" in capsys.readouterr().out
    assert main(["reuse", str(run), "--classes", "0", "3", "--epochs", "2",
                 "--device", "cpu", "--quiet"]) == 2
    assert "without fine-tuning" in capsys.readouterr().err
    assert main(["train", "--method", "nemo", "--beta", "1", "--out", str(tmp_path / "n"),
                 "--device", "cpu"]) == 2
    assert "nemo has no beta" in capsys.readouterr().err
    assert main(["train", "--method", "moda", "--method-option", "tau=1", "--out",
                 str(tmp_path / "n"), "--device", "cpu"]) == 2
    assert "moda has no option 'tau'" in capsys.readouterr().err


def test_softmax_free_losses_do_not_depend_on_label_values():
    """Relabelling classes (a permutation) changes no method's loss."""
    g = torch.Generator().manual_seed(3)
    masks = [F.relu(torch.randn(8, 6, generator=g))]
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    perm = torch.tensor([2, 0, 1])[y]
    for method in (NeMo(), MODA()):
        a, _ = method.objective(torch.tensor(0.0), masks, y, 1.0, 1.0, "classes", 3)
        b, _ = method.objective(torch.tensor(0.0), masks, perm, 1.0, 1.0, "classes", 3)
        torch.testing.assert_close(a, b)


class _SqueezeExcite(nn.Module):
    """A squeeze-and-excitation block: channels scaled by a sigmoid of their own means, a
    channel-wise product extraction cannot follow (sigmoid(0) != 0)."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.se = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        x = x * torch.sigmoid(self.se(x.mean((2, 3))))[:, :, None, None]
        return self.fc(x.mean((2, 3)))


class _Flip(nn.Module):
    """Channels reversed (``flip(1)``): an op extraction has no rule for."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))
        return self.fc(x.flip(1).mean((2, 3)))


@pytest.mark.parametrize("net, node", [(_SqueezeExcite, "'mul'"), (_Flip, "'flip'")])
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_model_that_cannot_be_cut_is_refused_before_training(net, node, name, tmp_path):
    torch.manual_seed(0)
    model = mwt.make_modular(net(), check=False) if get_method(name).gated else net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = (torch.randn(8, 1, 12, 12), torch.arange(8) % 2)
    with pytest.raises(mwt.MwtError, match=f"cannot be cut into modules.*{node}"):
        mwt.train(model, data, epochs=1, method=name, out=tmp_path / "run", progress=False,
                  verbose=False, device="cpu")
    assert not (tmp_path / "run").exists()  # refused before the run directory was made
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("net, node", [(_SqueezeExcite, "'mul'"), (_Flip, "'flip'")])
def test_make_modular_refuses_a_model_that_cannot_be_cut(net, node):
    with pytest.raises(mwt.MwtError, match=f"cannot be cut into modules.*{node}"):
        mwt.make_modular(net())
    assert mwt.gates.is_modular(mwt.make_modular(net(), check=False))  # the gates alone


def test_every_registered_model_passes_the_check():
    from mwt.extract_check import check_extractable

    for name in mwt.list_models():
        model = mwt.create_model(name, 10, 1, 0.125)
        check_extractable(mwt.make_modular(model), torch.randn(2, 1, 28, 28))
        check_extractable(model, torch.randn(2, 1, 28, 28))


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_each_method_trains_and_cuts_mobilenetv2(name):
    """Depthwise convs, inverted residuals and linear bottlenecks with every method: trained,
    modularized by the method's rule, and composed into a module with fewer MACs."""
    torch.manual_seed(0)
    train, test = demo_subset("train", 4), demo_subset("test", 2)
    net = mwt.create_model("mobilenetv2", 10, 1, 0.125)
    if get_method(name).gated:
        net = mwt.make_modular(net)
    result = mwt.train(net, train, test, epochs=1, batch_size=20, method=name, progress=False,
                       verbose=False, device="cpu")
    mods = mwt.modularize(result.model, train, 0.9, method=name)
    sub = mwt.reuse(result.model, mods, [0, 3], train, epochs=None if name == "moda" else 1,
                    device="cpu")
    full = mwt.create_model("mobilenetv2", 10, 1, 0.125)
    assert mwt.count_macs(sub, (1, 28, 28)) < mwt.count_macs(full, (1, 28, 28))
    with torch.no_grad():
        assert sub.eval()(test.images[:3]).shape == (3, 2)
