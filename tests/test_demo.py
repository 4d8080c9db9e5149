"""`mwt demo` end to end on a tiny slice of the embedded data."""

import mwt.runs
from helpers import demo_subset
from mwt.cli import main


def test_demo_prints_the_pipeline_table(tmp_path, capsys, monkeypatch):
    real = mwt.runs.load_dataset

    def small(name, split="train", data_dir=None, download=False):
        data = real(name, split, data_dir, download)
        return demo_subset(split, 20 if split == "train" else 10) if name == "demo" else data

    monkeypatch.setattr(mwt.runs, "load_dataset", small)
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
