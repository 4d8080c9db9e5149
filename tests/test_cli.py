"""The `mwt` command: a real run on demo data, listings, and one-line errors."""

import json

import pytest

from mwt.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_train_and_resume_on_demo(tmp_path, capsys, monkeypatch):
    # Keep the run tiny: the demo split is cut by a small loader wrapper.
    import mwt.runs
    from helpers import demo_subset

    real = mwt.runs.load_dataset

    def small(name, split="train", data_dir=None, download=False):
        data = real(name, split, data_dir, download)
        return demo_subset(split, 8) if name == "demo" else data

    monkeypatch.setattr(mwt.runs, "load_dataset", small)
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--model", "vgg16", "--width", "0.125",
                            "--dataset", "demo", "--epochs", "1", "--batch-size", "40",
                            "--out", str(out), "--no-progress", "--device", "cpu")
    assert code == 0, err
    assert "modular vgg16 on demo" in stdout
    assert (out / "checkpoint.safetensors").exists()
    code, stdout, err = run(capsys, "train", "--resume", "--epochs", "2", "--out", str(out),
                            "--no-progress")
    assert code == 0, err
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_models_lists_gated_kernels(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert "vgg16" in out and "4160" in out and "resnet18" in out


@pytest.mark.parametrize("argv, match", [
    (["train", "--model", "alexnet", "--out", "x"], "unknown model 'alexnet'"),
    (["train", "--dataset", "mnist-fancy", "--out", "x"], "unknown dataset"),
    (["train", "--alpha", "-1", "--epochs", "1", "--out", "x"], "alpha and beta"),
    (["train", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent/dir", "--out", "x"],
     "/nonexistent/dir"),
    (["train", "--resume", "--out", "/nonexistent/run"], "does not exist"),
    (["train", "--device", "gpu7", "--epochs", "1", "--out", "x"], "unknown device"),
])
def test_errors_are_one_line_and_nonzero(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mwt: error:")
    assert match.lower() in lines[0].lower()
