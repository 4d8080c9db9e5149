"""Run directories whose files disagree or were cut short: one sentence naming the file at
fault, never a traceback; a killed write's remains are repaired, never trusted."""

import json
import shutil

import pytest
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from helpers import small_run as make_run
from mwt.cli import main


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("damaged") / "run"
    make_run(out, per_class=8, batch_size=40)
    assert main(["modularize", str(out), "--device", "cpu"]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished_run, copy)
    return copy


def _one_line(capsys, argv, *fragments):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.startswith("mwt: error:") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


def _set_config_width(run, width):
    path = run / "config.json"
    config = json.loads(path.read_text())
    config["model"]["width"] = width
    config["run"]["width"] = width
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("command", [["modularize"], ["reuse", "--classes", "0", "1"]])
def test_a_config_json_of_another_width_is_named(capsys, run_copy, command):
    _set_config_width(run_copy, 0.25)  # the checkpoint holds width 0.125
    _one_line(capsys, [command[0], run_copy, *command[1:], "--device", "cpu"],
              f"{run_copy / 'config.json'} describes another model", "width 0.25")


def test_resume_with_a_config_json_of_another_width_is_named(capsys, run_copy):
    _set_config_width(run_copy, 0.25)
    before = (run_copy / "config.json").read_text()
    _one_line(capsys, ["train", "--resume", "--epochs", "2", "--out", run_copy, "--device",
                       "cpu", "--no-progress"], str(run_copy / "config.json"))
    assert (run_copy / "config.json").read_text() == before  # not rewritten on the way out


def test_a_checkpoint_header_of_another_width_is_named(capsys, run_copy):
    weights = run_copy / "checkpoint.safetensors"
    with safe_open(weights, "pt") as f:
        meta = f.metadata()
    config = json.loads(meta["config"])
    config["model"]["width"] = 0.25
    meta["config"] = json.dumps(config)
    save_file(load_file(weights), weights, metadata=meta)  # the data checksum still holds
    for command in (["modularize"], ["reuse", "--classes", "0", "1"]):
        _one_line(capsys, [command[0], run_copy, *command[1:], "--device", "cpu"],
                  f"the header of {weights} does not describe the weights", "features.")


def test_resume_repairs_a_damaged_metrics_file(capsys, run_copy):
    metrics = run_copy / "metrics.jsonl"
    good = metrics.read_text()
    metrics.write_text(good[: len(good) // 2])
    code = main(["train", "--resume", "--out", str(run_copy), "--device", "cpu",
                 "--no-progress", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert metrics.read_text() == good  # rewritten from the checkpoint, its source of truth


# --- mwt experiment over damaged metrics; report and experiment never replace a user's file --


@pytest.fixture(scope="module")
def micro_rq2(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    from mwt.data import registry

    registered = dict(registry.DATASETS)
    base = tmp_path_factory.mktemp("experiment")
    try:
        assert main(["experiment", "rq2", "--preset", "micro", "--out", str(base / "rq2"),
                     "--device", "cpu", "--no-progress"]) == 0
        yield base
    finally:
        torch.set_num_threads(threads)
        registry.DATASETS.clear()
        registry.DATASETS.update(registered)


def _rq2_copy(micro_rq2, tmp_path):
    """The experiment's folder before its pairs were recorded, so that it reads its runs."""
    shutil.copytree(micro_rq2 / "rq2", tmp_path / "rq2")
    shutil.rmtree(tmp_path / "rq2" / "pairs")
    return tmp_path / "rq2"


def _experiment(out, *extra):
    return ["experiment", "rq2", "--preset", "micro", "--out", str(out), "--device", "cpu",
            "--no-progress", *extra]


def test_experiment_ignores_a_cut_last_metrics_line_and_says_so(capsys, micro_rq2, tmp_path):
    out = _rq2_copy(micro_rq2, tmp_path)
    metrics = next((out / "runs").glob("*modular*")) / "metrics.jsonl"
    text = metrics.read_text()
    metrics.write_text(text[:-10])  # the last record cut mid-line, as a killed write leaves it
    code = main(_experiment(out))
    _, err = capsys.readouterr()
    assert code == 0, err
    assert f"ignored the incomplete last line (2) of {metrics}" in err


def test_experiment_names_a_metrics_file_damaged_inside(capsys, micro_rq2, tmp_path):
    out = _rq2_copy(micro_rq2, tmp_path)
    metrics = next((out / "runs").glob("*modular*")) / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text(lines[0][:20] + "\n" + "".join(lines[1:]))
    _one_line(capsys, _experiment(out), f"{metrics} is damaged at line 1", "--resume")


def test_experiment_refuses_a_folder_of_the_users_files(capsys, micro_rq2, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "table4.csv").write_text("my own table")
    _one_line(capsys, _experiment(out), "holds files no `mwt experiment` wrote", "table4.csv",
              "--force")
    assert [p.name for p in out.iterdir()] == ["table4.csv"]
    # its own folder, killed before its record was written, is continued without --force
    ours = _rq2_copy(micro_rq2, tmp_path)
    (ours / "experiment.json").unlink()
    assert main(_experiment(ours)) == 0


def test_report_never_replaces_a_file_it_did_not_write(capsys, micro_rq2, tmp_path):
    out = _rq2_copy(micro_rq2, tmp_path)
    mine = tmp_path / "report.md"
    mine.write_text("# my notes\n")
    _one_line(capsys, ["report", tmp_path], "was not written by `mwt report`", "--force")
    assert mine.read_text() == "# my notes\n"
    assert main(["report", str(tmp_path), "--force"]) == 0
    assert "rq2" in mine.read_text() and out.is_dir()
    capsys.readouterr()
    assert main(["report", str(tmp_path)]) == 0  # its own report is replaced without --force
