"""Modularizing (section 3.3): thresholds, frequencies, metrics, module sets on disk."""

import json

import pytest
import torch

import mwt
from helpers import demo_subset, sparse_modular
from mwt.gates import gated_layers
from mwt.modularize import collect_kernel_sets, module_masks


def test_module_masks_threshold_and_per_layer_lowering():
    freq = torch.tensor([[1.0, 0.95, 0.2, 0.5, 0.3],
                         [0.9, 0.1, 0.0, 0.0, 0.0]])
    masks, used = module_masks(freq, [3, 2], 0.9)
    assert masks.tolist() == [[True, True, False, True, False],
                              [True, False, False, True, False]]
    # class 0, layer 2: best frequency 0.5 -> tau 0.9 lowered 8 steps to 0.5
    assert used[0].tolist() == pytest.approx([0.9, 0.5])
    # class 1, layer 2: no sample uses any kernel -> one kernel is kept to carry a signal
    assert used[1, 0].item() == pytest.approx(0.9)


@pytest.mark.parametrize("tau", [0, -0.1, 1.5, float("nan"), float("inf"), True, "0.9", None])
def test_tau_out_of_range(tau):
    with pytest.raises(mwt.MwtError, match="tau"):
        mwt.modularize(sparse_modular("vgg16", in_channels=1), demo_subset("train", 2), tau)


@pytest.fixture(scope="module")
def modularized():
    torch.manual_seed(0)
    model = sparse_modular("vgg16", in_channels=1)
    data = demo_subset("train", 12)
    return model, data, mwt.modularize(model, data, 0.8, batch_size=37,
                                       classes=mwt.load_dataset("demo").classes)


def test_frequencies_match_a_direct_count(modularized):
    model, data, mods = modularized
    _, masks = model(data.images, return_masks=True)
    sets = torch.cat(masks, 1) > 0
    for c in range(10):
        expected = sets[data.labels == c].float().mean(0)
        torch.testing.assert_close(mods.frequencies[c], expected)
        expected_gate = torch.cat(masks, 1)[data.labels == c].mean(0)
        torch.testing.assert_close(mods.gate_means[c], expected_gate, rtol=1e-5, atol=1e-6)
    assert mods.counts.tolist() == [12] * 10
    # every module keeps at least one kernel in every layer
    for block in torch.split(mods.masks, [layer.kernels for layer in gated_layers(model)], 1):
        assert block.any(1).all()


def test_metrics_agree_with_the_metric_functions(modularized):
    model, data, mods = modularized
    sets, labels, _ = collect_kernel_sets(model, data)
    assert mods.krr == pytest.approx(mods.masks.float().mean().item())
    assert mods.cohesion == pytest.approx(mwt.jaccard_cohesion(sets, labels, mods.masks))
    assert mods.coupling == pytest.approx(mwt.jaccard_coupling(mods.masks))
    assert 0 < mods.krr < 1 and 0 <= mods.coupling <= 1 and 0 <= mods.cohesion <= 1


def test_kernels_for_is_the_union_and_checks_classes(modularized):
    _, _, mods = modularized
    union = mods.kernels_for([0, 3])
    assert torch.equal(union, mods.masks[0] | mods.masks[3])
    assert torch.equal(mods.kernels_for(["T-shirt/top", "dress"]), union)
    for bad, match in ((10, "out of range"), (-1, "out of range"), ("Hat", "unknown class"),
                       ([1, 1], "repeated"), ([], "no classes")):
        with pytest.raises(mwt.MwtError, match=match):
            mods.kernels_for(bad)


def test_module_set_round_trip_and_corruption(modularized, tmp_path):
    _, _, mods = modularized
    path = mods.save(tmp_path)
    assert path == tmp_path / "modules-tau0.80.json" and mods.stem == "modules-tau0.80"
    assert (tmp_path / "modules-tau0.80.safetensors").is_file()
    loaded = mwt.ModuleSet.load(tmp_path)
    assert torch.equal(loaded.masks, mods.masks)
    assert loaded.classes == mods.classes and loaded.krr == mods.krr
    assert torch.equal(loaded.layer_tau, mods.layer_tau) and loaded.warnings == mods.warnings
    meta = json.loads(path.read_text())
    meta["layers"] = meta["layers"][:-1]
    path.write_text(json.dumps(meta))
    with pytest.raises(mwt.CheckpointError, match="inconsistent"):
        mwt.ModuleSet.load(tmp_path)
    raw = (tmp_path / "modules-tau0.80.safetensors").read_bytes()
    (tmp_path / "modules-tau0.80.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(mwt.CheckpointError):
        mwt.ModuleSet.load(tmp_path)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True, "8", None])
def test_batch_size_must_be_a_positive_int(batch_size):
    model, data = sparse_modular("vgg16", in_channels=1), demo_subset("train", 2)
    with pytest.raises(mwt.MwtError, match="batch_size must be a positive integer"):
        collect_kernel_sets(model, data, batch_size)
    with pytest.raises(mwt.MwtError, match="batch_size must be a positive integer"):
        mwt.modularize(model, data, 0.9, batch_size=batch_size)


def test_labels_beyond_the_models_classes_and_bad_class_names():
    model, data = sparse_modular("vgg16", in_channels=1), demo_subset("train", 2)
    labels = data.labels.clone()
    labels[0] = 10
    with pytest.raises(mwt.MwtError, match="labels must lie in 0..9"):
        mwt.modularize(model, (data.images, labels), 0.9)
    with pytest.raises(mwt.MwtError, match="3 class names given for a model of 10 classes"):
        mwt.modularize(model, data, 0.9, classes=["a", "b", "c"])
    with pytest.raises(mwt.MwtError, match="classes must be a list of class names"):
        mwt.modularize(model, data, 0.9, classes=list(range(10)))


def test_standard_model_is_modularized_by_bn_relevance():
    torch.manual_seed(0)
    model = mwt.create_model("resnet18", 10, 1, 0.125).eval()
    data = demo_subset("train", 3)
    mods = mwt.modularize(model, data, 0.9)
    assert mods.total_kernels == mwt.count_gated_kernels(model)
    # relevance: any positive element of the kernel's BN output
    x = data.images
    outs = []
    hook = model.layer1[0].bn1.register_forward_hook(lambda m, i, o: outs.append(o))
    model(x)
    hook.remove()
    first = (outs[0].flatten(2).amax(2) > 0).float()
    for c in range(10):
        torch.testing.assert_close(mods.frequencies[c, :first.shape[1]],
                                   first[data.labels == c].mean(0))
