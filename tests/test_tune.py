"""The cpu preset's settings search (`python -m mwt.experiments.tune`) on the embedded demo data."""

import csv

import pytest
import torch

from mwt.data import load_dataset
from mwt.experiments import tune


def test_validation_split_is_stratified_disjoint_and_fixed():
    data = load_dataset("demo", "train")
    train, val = tune.validation_split(data, per_class=7)
    assert len(train) + len(val) == len(data)
    assert torch.bincount(val.labels, minlength=data.num_classes).tolist() == [7] * 10
    again_train, again_val = tune.validation_split(data, per_class=7)
    assert torch.equal(val.images, again_val.images)
    # no validation image is in the training part
    whole = {x.numpy().tobytes() for x in data.images}
    assert len(whole) == len(data)  # the demo data has no duplicate images, so:
    train_rows = {x.numpy().tobytes() for x in train.images}
    assert not any(x.numpy().tobytes() in train_rows for x in val.images)
    assert train.name == data.name  # keeps the dataset's augmentation


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_search_writes_tables_and_reuses_finished_candidates(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), "--model",
            "simcnn", "--dataset", "demo", "--width", "0.0625", "--epochs", "1",
            "--val-per-class", "20", "--candidates", "crop-b1.5", "flip-b2"]
    assert tune.main(argv) == 0
    with open(tmp_path / "out" / "tuning.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == ["crop-b1.5", "flip-b2"]
    # each result is kept under its run's whole name (a dot in "b1.5" is not a suffix)
    assert (tmp_path / "runs" / "simcnn-crop-b1.5-e1.json").is_file()
    assert set(tune.COLUMNS) == set(rows[0])
    for r in rows:
        assert 0 <= float(r["krr"]) <= 100 and 0 <= float(r["coupling"]) <= 1
        loss = 100 * (float(r["standard_val_acc"]) - float(r["modular_val_acc"]))
        assert abs(float(r["acc_loss"]) - loss) < 1e-9
    assert rows[1]["crop_padding"] == "0" and rows[1]["beta"] == "2.0"
    md = (tmp_path / "out" / "tuning.md").read_text()
    assert "| flip-b2 | simcnn | 1 | 0 | True | 0.5 | 2.0 |" in md
    capsys.readouterr()
    # a second call trains nothing and keeps the rows
    assert tune.main(argv[:-2] + ["flip-b2"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1" not in out
    with open(tmp_path / "out" / "tuning.csv", newline="") as f:
        assert sorted(r["candidate"] for r in csv.DictReader(f)) == ["crop-b1.5", "flip-b2"]


@pytest.mark.parametrize("bad", [["--dataset", "cifar10"], ["--epochs", "0"],
                                 ["--model", "nope"], ["--val-per-class", "0"],
                                 ["--width", "7"]])
def test_bad_input_is_one_line_before_any_work(tmp_path, capsys, bad):
    code = tune.main(["--out", str(tmp_path / "o"), "--runs", str(tmp_path / "r"), *bad])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())
