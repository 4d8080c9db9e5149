"""The fine-tuning protocol of a reused module: the reference code's schedule (cosine over twice
the epochs), the run's own training augmentation, and BatchNorm statistics recalibrated on the
module itself."""

import math

import pytest
import torch
import torch.nn as nn

import mwt
from helpers import demo_subset, modularized, small_run
from mwt.config import TrainConfig
from mwt.extract import extract_module
from mwt.inference import recalibrate_batchnorm
from mwt.reuse import select_classes, subtask_accuracy
from mwt.train import lr_at


@pytest.fixture(scope="module")
def setup():
    return modularized("vgg16")


@pytest.mark.parametrize("span", [1.0, 2.0])
def test_the_cosine_span_sets_t_max(span):
    config = TrainConfig(epochs=10, lr=0.05, cosine_span=span)
    for epoch in range(10):
        assert lr_at(config, epoch) == pytest.approx(
            0.05 * 0.5 * (1 + math.cos(math.pi * epoch / (10 * span))))
    # span 2 (the reference code's T_max = 2 x epochs): the last epoch still runs at ~half
    assert lr_at(config, 9) > 0.02 if span == 2.0 else lr_at(config, 9) < 0.002


@pytest.mark.parametrize("bad", [0.5, 0, float("inf"), "2", True])
def test_a_bad_cosine_span_is_refused_before_any_work(setup, bad):
    model, mods, train = setup
    with pytest.raises(mwt.MwtError, match="cosine span"):
        mwt.reuse(model, mods, [0, 3], train, epochs=1, cosine_span=bad)
    with pytest.raises(mwt.MwtError, match="cosine span"):
        TrainConfig(cosine_span=bad).validate()


def test_fine_tuning_follows_the_span(setup):
    model, mods, train = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=4, lr=0.05, cosine_span=2.0,
                    min_steps=0, batch_size=20, device="cpu")
    lrs = [r["lr"] for r in sub.report["history"]]
    assert lrs == pytest.approx([0.05 * 0.5 * (1 + math.cos(math.pi * e / 8)) for e in range(4)])
    assert sub.report["cosine_span"] == 2.0 and sub.report["lr"] == 0.05


def _bn_inputs(module, x):
    """Each BatchNorm's input on ``x`` in one pass of a copy whose BatchNorms run in training
    mode (batch statistics), as recalibration runs them."""
    import copy

    twin = copy.deepcopy(module).eval()
    seen = {}
    for name, m in twin.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
            m.register_forward_hook(
                lambda mod, args, out, name=name: seen.__setitem__(name, args[0].detach()))
    with torch.no_grad():
        twin(x)
    return seen


@pytest.mark.parametrize("fold", [False, True])
def test_recalibrated_statistics_are_the_modules_own(setup, fold):
    model, mods, train = setup
    ids = [0, 3, 5, 7]
    kernels = mods.kernels_for(ids)
    extra = {"fold_gates": True, "gate_values": mods.gate_means_for(ids)} if fold else {}
    module = extract_module(model, kernels, **extra)
    x = select_classes(train, ids)[0]
    inputs = _bn_inputs(module, x)
    dropout_modes = []
    for m in module.modules():
        if isinstance(m, nn.Dropout):
            m.register_forward_hook(lambda mod, a, o: dropout_modes.append(mod.training))
    before = {n: m.running_mean.clone() for n, m in module.named_modules()
              if isinstance(m, nn.BatchNorm2d)}
    recalibrate_batchnorm(module, x, batch_size=len(x))  # one batch: its exact statistics
    assert dropout_modes and not any(dropout_modes)  # only the BatchNorms trained
    assert not module.training
    for name, m in module.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            var, mean = torch.var_mean(inputs[name], dim=(0, 2, 3), correction=1)
            torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(m.running_var, var, rtol=1e-4, atol=1e-5)
            assert m.momentum == 0.1 and not m.training
            assert not torch.equal(m.running_mean, before[name])


def test_recalibration_over_batches_is_a_cumulative_average(setup):
    model, mods, train = setup
    ids = [1, 2]
    x = select_classes(train, ids)[0]  # 60 images: 4 batches of 15
    module = extract_module(model, mods.kernels_for(ids))
    first = next(n for n, m in module.named_modules() if isinstance(m, nn.BatchNorm2d))
    # the first BatchNorm's input (the first conv of the image) does not depend on the batch
    means = [_bn_inputs(module, x[i:i + 15])[first].mean((0, 2, 3)) for i in range(0, 60, 15)]
    recalibrate_batchnorm(module, x, batch_size=15)
    torch.testing.assert_close(module.get_submodule(first).running_mean,
                               torch.stack(means).mean(0), rtol=1e-5, atol=1e-6)


def test_reuse_measures_the_recalibrated_module(setup):
    model, mods, train = setup
    ids = [0, 3]
    sub = mwt.reuse(model, mods, ids, train, epochs=0, fold_gates=True, recalibrate_bn=True,
                    test_data=train, device="cpu", val_fraction=0.1)
    assert sub.report["recalibrate_bn"] is True
    # the same module recalibrated by hand, on the same fine-tuning images (val split aside)
    from mwt.reuse import _split

    x, y = select_classes(train, ids)
    fit, _ = _split(x, y, 0.1, 0)
    module = extract_module(model, mods.kernels_for(ids), fold_gates=True,
                            gate_values=mods.gate_means_for(ids))
    recalibrate_batchnorm(module, fit[0])
    want = subtask_accuracy(module, select_classes(train, ids), ids)
    assert sub.report["acc_before_finetune"]["test"] == pytest.approx(want)
    with pytest.raises(mwt.MwtError, match="recalibrate_bn"):
        mwt.reuse(model, mods, ids, train, epochs=0, recalibrate_bn="yes")


def test_reuse_run_fine_tunes_with_the_runs_augmentation(tmp_path, monkeypatch):
    import mwt.runs

    run = tmp_path / "run"
    small_run(run)  # trained on demo data; its spec leaves crop and flip to the dataset
    config = mwt.runs.RunSpec.load(run)
    assert config.train.crop_padding is None
    seen = {}
    real = mwt.runs.reuse

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(mwt.runs, "reuse", spy)
    monkeypatch.setattr(mwt.runs, "load_dataset",
                        lambda name, split="train", *a, **k: demo_subset(split, 6))
    assert main_ok(["modularize", str(run), "--device", "cpu"])
    mwt.runs.reuse_run(run, [0, 1], epochs=0, device="cpu", verbose=False)
    assert seen["augment"] == mwt.data.augment.Augmentation(crop_padding=4, hflip=True)
    # a run that set its own (the cpu preset trains with flips only) fine-tunes with that
    import json

    path = run / "config.json"
    saved = json.loads(path.read_text())
    saved["run"]["train"].update(crop_padding=0, hflip=True)
    assert mwt.runs.run_augmentation(saved, demo_subset("train", 1)) == \
        mwt.data.augment.Augmentation(crop_padding=0, hflip=True)


def main_ok(argv) -> bool:
    from mwt.cli import main

    return main(argv) == 0
