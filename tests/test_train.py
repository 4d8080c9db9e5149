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
    from mwt.train import resolve_device

    with pytest.raises(mwt.MwtError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device(None).type == "cpu"
