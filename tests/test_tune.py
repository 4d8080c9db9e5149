"""The cpu preset's settings search (`python -m mwt.experiments.tune`) on the embedded demo data."""

import csv

import pytest
import torch

from mwt.data import load_dataset
from mwt.experiments import tune
from mwt.io import read_json


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
def _one_thread(one_thread):
    """Every test here on one torch thread (conftest's ``one_thread``)."""


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


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One candidate of the settings search on the demo data: its standard and modular runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("search")
    argv = ["--out", str(base / "out"), "--runs", str(base / "runs"), "--model", "simcnn",
            "--dataset", "demo", "--width", "0.0625", "--epochs", "1", "--val-per-class", "20",
            "--candidates", "flip-b2"]
    assert tune.main(argv) == 0
    torch.set_num_threads(threads)
    return base / "runs"


def test_fine_tuning_search_scores_every_protocol_on_validation_images(searched, tmp_path,
                                                                      capsys, monkeypatch):
    from mwt.experiments import tune_reuse

    standard = next(searched.glob("simcnn-standard-*-e1"))
    argv = ["--run", str(searched / "simcnn-flip-b2-e1"), "--standard", str(standard),
            "--dataset", "demo",
            "--out", str(tmp_path / "reuse"), "--sizes", "2", "3", "--subtasks", "1",
            "--starts", "removed", "folded", "--recalibrate", "both", "--epochs", "1",
            "--lrs", "0.01", "--min-steps", "2", "--val-per-class", "20"]
    assert tune_reuse.main(argv) == 0
    with open(tmp_path / "reuse" / "tuning-reuse.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    names = ["removed-e1-lr0.01-span1", "removed-bn-e1-lr0.01-span1", "folded-e1-lr0.01-span1",
             "folded-bn-e1-lr0.01-span1"]
    assert [(r["protocol"], r["m"]) for r in rows] == [(n, m) for m in ("2", "3") for n in names]
    for r in rows:
        assert 0 <= float(r["val_acc"]) <= 100 and 0 <= float(r["std_val_acc"]) <= 100
        assert abs(float(r["loss"]) - (float(r["std_val_acc"]) - float(r["val_acc"]))) < 1e-9
    # the standard model is scored on the 20 validation images of each class of the sub-task
    state = read_json(tmp_path / "reuse" / tune_reuse.STATE)
    for r in state["rows"]:
        assert round(r["std_val_acc"] * 20 * r["m"] / 100, 6) % 1 == 0
    assert "The test split is never read" in (tmp_path / "reuse" / "tuning-reuse.md").read_text()
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("fine-tuned a finished sub-task again")

    monkeypatch.setattr(tune_reuse, "score", refuse)
    assert tune_reuse.main(argv) == 0  # a finished search is read back
    argv[argv.index("--run") + 1] = str(standard)
    assert tune_reuse.main(argv) == 2
    assert "holds the search of" in capsys.readouterr().err
