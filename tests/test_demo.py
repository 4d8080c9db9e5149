"""`mwt demo` end to end on a tiny slice of the embedded data."""

import pytest

import mwt.runs
from helpers import demo_subset
from mwt.cli import main


@pytest.fixture
def small_demo(monkeypatch):
    """The demo's data cut to 20 training and 10 test images a class."""
    real = mwt.runs.load_dataset

    def small(name, split="train", data_dir=None, download=False):
        data = real(name, split, data_dir, download)
        return demo_subset(split, 20 if split == "train" else 10) if name == "demo" else data

    monkeypatch.setattr(mwt.runs, "load_dataset", small)


def test_demo_prints_the_pipeline_table(tmp_path, capsys, small_demo):
    argv = ["demo", "--out", str(tmp_path), "--width", "0.125", "--epochs", "1",
            "--finetune-epochs", "1", "--classes", "Trouser", "Bag", "--no-progress",
            "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for text in ("| standard |", "| modular  |", "classes [1, 8] (Trouser, Bag)",
                 "kernels kept", "MACs", "(gates removed)", "(gates kept)", "(gates folded)",
                 "ACC after fine-tune", "on the same sub-task"):
        assert text in out
    assert (tmp_path / "modular" / "modules-tau0.90.json").exists()
    # A second run reuses the finished training runs instead of overwriting them.
    before = (tmp_path / "modular" / "checkpoint.safetensors").read_bytes()
    assert main(argv) == 0
    assert (tmp_path / "modular" / "checkpoint.safetensors").read_bytes() == before


def test_quick_demo_trains_the_modular_model_only(tmp_path, capsys, small_demo):
    argv = ["demo", "--quick", "--out", str(tmp_path), "--width", "0.125", "--epochs", "1",
            "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for text in ("| modular  |", "classes [0, 3] (T-shirt/top, Dress)", "kernels kept", "MACs",
                 "(gates removed)", "ACC after fine-tune"):
        assert text in out
    assert "| standard |" not in out and "on the same sub-task" not in out
    assert "warning: the kernel rate is still" in out  # one epoch on 20 images: not modular
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["modular"]

