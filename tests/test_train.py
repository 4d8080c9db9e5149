"""Standard and modular training: learning, metrics files, exact resume, bad input."""

import json

import pytest
import torch

import mwt
from helpers import demo_subset, tiny_modular
from mwt.checkpoint import read_checkpoint


def test_one_epoch_modular_run_beats_chance(tmp_path):
    train, test = mwt.load_dataset("demo", "train"), demo_subset("test", 30)
    model = tiny_modular(width=0.25)
    result = mwt.train(model, train, test, epochs=1, batch_size=32, lr=0.01,
                       out=tmp_path / "run", progress=False, device="cpu")
    final = result.final
    assert final["test_acc"] > 0.3  # chance is 0.10; seeds 0, 1, 2 give 0.52, 0.57, 0.43
    for key in ("train_acc", "train_ce", "train_cohesion_loss", "train_coupling_loss",
                "train_kernel_rate", "test_acc", "test_ce", "test_kernel_rate"):
        assert key in final
    assert 0.0 <= final["train_kernel_rate"] <= 1.0
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["modular"] is True and config["train"]["alpha"] == 0.5


def test_standard_training_has_no_mwt_losses():
    train = demo_subset("train", 20)
    model = mwt.create_model("vgg16", 10, 1, 0.125)
    result = mwt.train(model, train, epochs=1, batch_size=50, progress=False, device="cpu")
    assert "train_cohesion_loss" not in result.final
    assert result.final["train_ce"] > 0


def test_accepts_tensor_pairs_and_dataloaders():
    data = demo_subset("train", 10)
    loader = torch.utils.data.DataLoader(data, batch_size=32)
    for source in ((data.images, data.labels), loader):
        result = mwt.train(tiny_modular(), source, epochs=1, batch_size=50, progress=False,
                           device="cpu", seed=3)
        assert result.final["train_ce"] > 0


def test_resume_gives_the_same_weights(tmp_path):
    train, test = demo_subset("train", 12), demo_subset("test", 3)
    kw = dict(batch_size=40, progress=False, device="cpu", seed=7)
    straight = mwt.train(tiny_modular(seed=1), train, test, epochs=2, out=tmp_path / "a", **kw)
    # "Interrupted" run: same settings, stopped after epoch 1, then resumed to epoch 2.
    mwt.train(tiny_modular(seed=1), train, test, epochs=1, out=tmp_path / "b", **kw)
    resumed = mwt.train(tiny_modular(seed=5), train, test, epochs=2, out=tmp_path / "b",
                        resume=True, **kw)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["epoch"] for r in resumed.history] == [1, 2]
    _, info = read_checkpoint(tmp_path / "b")
    assert info["epoch"] == 2


def test_existing_run_is_never_overwritten(tmp_path):
    train = demo_subset("train", 5)
    kw = dict(batch_size=25, progress=False, device="cpu")
    mwt.train(tiny_modular(), train, epochs=1, out=tmp_path, **kw)
    before = (tmp_path / "checkpoint.safetensors").read_bytes()
    with pytest.raises(mwt.MwtError, match="already holds a run"):
        mwt.train(tiny_modular(), train, epochs=1, out=tmp_path, **kw)
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == before


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-0.5), "alpha and beta"),
    (dict(beta=float("nan")), "alpha and beta"),
    (dict(epochs=0), "epochs"),
    (dict(reduction="mean"), "reduction"),
    (dict(learning_rate=0.1), "unknown training option"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(mwt.MwtError, match=match):
        mwt.train(tiny_modular(), demo_subset("train", 2), progress=False, **kwargs)


def test_label_out_of_range():
    x = torch.randn(8, 1, 28, 28)
    y = torch.full((8,), 12)
    with pytest.raises(mwt.MwtError, match="label 12"):
        mwt.train(tiny_modular(), (x, y), epochs=1, progress=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    from mwt.devices import resolve_device

    with pytest.raises(mwt.MwtError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu"


# --- Hardening: run directories, resumability, option checks, augmentation defaults --------


def _kw(**extra):
    return dict(batch_size=25, progress=False, verbose=False, device="cpu", **extra)


@pytest.mark.parametrize("name", ["metrics.jsonl", "checkpoint.json", "notes.txt"])
def test_a_non_empty_out_that_is_not_a_run_is_refused(tmp_path, name):
    (tmp_path / name).write_text("mine")
    with pytest.raises(mwt.MwtError, match="not empty"):
        mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, out=tmp_path, **_kw())
    assert (tmp_path / name).read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("out", ["", "  "])
def test_an_empty_out_is_refused(out):
    with pytest.raises(mwt.MwtError, match="must not be empty"):
        mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, out=out, **_kw())


def test_an_out_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(mwt.MwtError, match="is a file"):
        mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, out=tmp_path / "f", **_kw())


def test_a_run_killed_in_its_first_epoch_can_be_resumed(tmp_path, monkeypatch):
    import sys

    train_module = sys.modules["mwt.train"]  # mwt.train is also the name of the function
    calls = {"n": 0}
    real = train_module.save_checkpoint

    def dies(*args, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt  # killed before the first checkpoint was written

    monkeypatch.setattr(train_module, "save_checkpoint", dies)
    data = demo_subset("train", 5)
    with pytest.raises(KeyboardInterrupt):
        mwt.train(tiny_modular(), data, epochs=2, out=tmp_path, **_kw())
    (tmp_path / f"{mwt.io.TEMP_PREFIX}checkpoint.safetensors.x1").write_bytes(b"half")
    with pytest.raises(mwt.MwtError, match="already holds a run"):
        mwt.train(tiny_modular(), data, epochs=2, out=tmp_path, **_kw())
    monkeypatch.setattr(train_module, "save_checkpoint", real)
    result = mwt.train(tiny_modular(), data, epochs=2, out=tmp_path, resume=True, **_kw())
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert not list(tmp_path.glob(f"{mwt.io.TEMP_PREFIX}*"))
    _, info = read_checkpoint(tmp_path)
    assert info["epoch"] == 2


def test_resume_of_a_directory_without_a_run_is_refused(tmp_path):
    with pytest.raises(mwt.MwtError, match="nothing to resume"):
        mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, out=tmp_path, resume=True,
                  **_kw())


@pytest.mark.parametrize("kwargs, match", [
    (dict(weight_decay=-1.0), "weight decay"),
    (dict(weight_decay=float("nan")), "weight decay"),
    (dict(lr=float("inf")), "lr"),
    (dict(seed=2**64), "seed"),
    (dict(seed=-1), "seed"),
    (dict(batch_size=1), "batch size"),
    (dict(epochs=2.5), "epochs"),
    (dict(crop_padding=-2), "crop padding"),
])
def test_bad_options_are_refused_before_work(tmp_path, kwargs, match):
    with pytest.raises(mwt.MwtError, match=match):
        mwt.train(tiny_modular(), demo_subset("train", 2), progress=False, out=tmp_path / "r",
                  **kwargs)
    assert not (tmp_path / "r").exists()


def test_one_training_sample_is_a_clear_error():
    data = demo_subset("train", 1)
    with pytest.raises(mwt.MwtError, match="at least 2 samples"):
        mwt.train(tiny_modular("rescnn"), data.subset([0]), epochs=1, progress=False)


def test_nan_pixels_are_refused_before_an_epoch_runs():
    x = torch.randn(8, 1, 28, 28)
    x[3, 0, 5, 5] = float("nan")
    with pytest.raises(mwt.MwtError, match="NaN"):
        mwt.train(tiny_modular(), (x, torch.arange(8) % 2), epochs=1, progress=False)


def test_wrong_image_channels_are_a_clear_error():
    x = torch.randn(8, 3, 28, 28)
    with pytest.raises(mwt.MwtError, match="3 channels"):
        mwt.train(tiny_modular(), (x, torch.arange(8) % 2), epochs=1, progress=False)


def test_steps_per_epoch_keeps_a_small_data_sets_only_batch():
    from mwt.train import steps_per_epoch

    assert steps_per_epoch(60, 128) == 1
    assert steps_per_epoch(250, 128) == 2     # a remainder of half a batch or more is kept
    assert steps_per_epoch(60_000, 128) == 469
    assert steps_per_epoch(300, 128) == 2     # a remainder of 44 is seen in other epochs
    assert steps_per_epoch(5, 2) == 2         # never a batch of one sample


def test_tensors_are_not_augmented_unless_asked():
    from mwt.data import Augmentation
    from mwt.train import resolve_augmentation

    x = torch.zeros(4, 1, 8, 8)
    assert resolve_augmentation(None, (x, torch.zeros(4)), x.shape) == Augmentation(0, False)
    assert resolve_augmentation(True, (x, None), x.shape) == Augmentation(1, True)
    assert resolve_augmentation(True, None, (4, 3, 32, 32)) == Augmentation(4, True)
    assert resolve_augmentation({"hflip": True}, None, (4, 3, 16, 16)) == Augmentation(2, True)
    demo = mwt.load_dataset("demo", "test")
    assert resolve_augmentation(None, demo, demo.images.shape) == Augmentation(4, True)
    with pytest.raises(mwt.MwtError, match="unknown augmentation"):
        resolve_augmentation({"flip": True}, None, x.shape)


def test_a_run_records_the_augmentation_it_used(tmp_path):
    data = demo_subset("train", 5)
    mwt.train(tiny_modular(), (data.images, data.labels), epochs=1, out=tmp_path / "t", **_kw())
    mwt.train(tiny_modular(), data, epochs=1, out=tmp_path / "d", **_kw())
    saved = [json.loads((tmp_path / d / "config.json").read_text())["train"] for d in "td"]
    assert (saved[0]["crop_padding"], saved[0]["hflip"]) == (0, False)
    assert (saved[1]["crop_padding"], saved[1]["hflip"]) == (4, True)


def test_a_run_that_did_not_become_modular_says_so():
    with pytest.warns(UserWarning, match="has not become modular"):
        result = mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, **_kw())
    assert result.warnings and "raise beta" in result.warnings[0]


def test_weights_of_a_run_load_into_a_model_built_by_hand(tmp_path):
    from mwt.checkpoint import load_weights

    result = mwt.train(tiny_modular(), demo_subset("train", 5), epochs=1, out=tmp_path,
                       **_kw())
    fresh = load_weights(tiny_modular(seed=3), tmp_path)
    a, b = result.model.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k].cpu(), b[k]) for k in a)


def test_a_nan_loss_stops_training_before_a_checkpoint(tmp_path):
    # A huge learning rate makes the loss overflow in the first epoch.
    with pytest.raises(mwt.MwtError, match="NaN or infinite"):
        mwt.train(tiny_modular(), demo_subset("train", 10), epochs=2, lr=1e30, out=tmp_path,
                  **_kw())
    assert not (tmp_path / "checkpoint.safetensors").exists()
