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


# --- Hardening: bad input is one line and exit 2, before any work; nothing on disk is lost --


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A tiny finished, modularized run of the demo data (8 images a class, one epoch)."""
    from helpers import small_run as make_run

    out = tmp_path_factory.mktemp("cli") / "run"
    make_run(out, per_class=8, batch_size=40)
    return out


def _one_line_error(capsys, argv, match):
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("mwt: error:"), err
    assert match.lower() in lines[0].lower(), lines[0]


@pytest.mark.parametrize("argv, match", [
    (["train", "--width", "inf", "--out", "r"], "width"),
    (["train", "--width", "nan", "--out", "r"], "width"),
    (["models", "--width", "inf"], "width"),
    (["train", "--weight-decay", "-1", "--out", "r"], "weight decay"),
    (["train", "--weight-decay", "nan", "--out", "r"], "weight decay"),
    (["train", "--seed", str(2**64), "--out", "r"], "seed"),
    (["train", "--lr", "x", "--out", "r"], "invalid float"),
    (["train", "--out", ""], "must not be empty"),
    (["train", "--epochs", "0", "--out", "r"], "epochs"),
    (["train", "--crop-padding", "-1", "--out", "r"], "crop padding"),
    (["modularize", "nowhere"], "not a directory"),
    (["reuse", "nowhere", "--classes", "0", "1"], "not a directory"),
    (["export", "module", "nowhere"], "does not exist"),
    (["demo", "--classes", "0", "0", "--out", "d"], "repeated"),
    (["demo", "--classes", "0", "Jacket", "--out", "d"], "unknown class"),
    (["demo", "--finetune-epochs", "-1", "--out", "d"], "fine-tuning epochs"),
    (["demo", "--width", "0", "--out", "d"], "width"),
])
def test_bad_input_is_one_line_before_any_work(capsys, tmp_path, monkeypatch, argv, match):
    monkeypatch.chdir(tmp_path)
    _one_line_error(capsys, argv, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing was created


@pytest.mark.parametrize("extra, match", [
    (["--batch-size", "0"], "batch_size"),
    (["--batch-size", "-1"], "batch_size"),
    (["--tau", "0"], "tau"),
    (["--tau", "1.5"], "tau"),
    (["--tau", "nan"], "tau"),
])
def test_modularize_bad_options(capsys, small_run, extra, match):
    _one_line_error(capsys, ["modularize", str(small_run), *extra], match)


def test_modularize_keeps_sets_of_each_tau_and_reuse_picks_one(capsys, small_run, tmp_path):
    for tau in ("0.9", "0.6"):
        code, out, err = run(capsys, "modularize", str(small_run), "--tau", tau,
                             "--device", "cpu")
        assert code == 0, err
    assert (small_run / "modules-tau0.90.json").exists()
    assert (small_run / "modules-tau0.60.json").exists()
    _one_line_error(capsys, ["reuse", str(small_run), "--classes", "0", "1", "--epochs", "0"],
                    "choose one with --tau")
    _one_line_error(capsys, ["reuse", str(small_run), "--classes", "0", "1", "--epochs", "0",
                             "--tau", "0.5"], "0.60")
    code, out, err = run(capsys, "reuse", str(small_run), "--classes", "0", "1", "--epochs", "0",
                         "--tau", "0.6", "--device", "cpu", "--quiet",
                         "--out", str(tmp_path / "m"))
    assert code == 0, err
    assert "tau 0.60" in out
    # The module's own files are never an export target; an existing file needs --force.
    _one_line_error(capsys, ["export", "module", str(tmp_path / "m"), "--out",
                             str(tmp_path / "m" / "module.json"), "--force"], "own files")
    (tmp_path / "x.pt").write_text("mine")
    _one_line_error(capsys, ["export", "module", str(tmp_path / "m"), "--out",
                             str(tmp_path / "x.pt")], "--force")
    assert (tmp_path / "x.pt").read_text() == "mine"
    _one_line_error(capsys, ["reuse", str(small_run), "--classes", "0", "1", "--tau", "0.6",
                             "--out", str(tmp_path / "m")], "already holds a module")
    _one_line_error(capsys, ["reuse", str(small_run), "--classes", "0", "1", "--tau", "0.6",
                             "--compare", str(tmp_path / "nothing")], "not a directory")


def test_reuse_takes_the_fine_tuning_protocol_from_the_command_line(capsys, small_run,
                                                                     tmp_path):
    code, out, err = run(capsys, "modularize", str(small_run), "--tau", "0.9", "--device", "cpu")
    assert code == 0, err
    code, out, err = run(capsys, "reuse", str(small_run), "--classes", "0", "1", "--tau", "0.9",
                         "--epochs", "1", "--fold-gates", "--recalibrate-bn",
                         "--cosine-span", "2", "--device", "cpu", "--quiet",
                         "--out", str(tmp_path / "m"))
    assert code == 0, err
    saved = json.loads((tmp_path / "m" / "module.json").read_text())
    report = saved.get("report", saved)
    assert report["recalibrate_bn"] is True and report["fold_gates"] is True
    assert report["cosine_span"] == 2.0
    _one_line_error(capsys, ["reuse", str(small_run), "--classes", "0", "1", "--tau", "0.9",
                             "--cosine-span", "0.5"], "cosine")


def test_a_locked_run_refuses_a_second_command(capsys, small_run):
    from mwt.io import lock_directory

    with lock_directory(small_run):
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "mwt.cli", "modularize", str(small_run),
                               "--device", "cpu"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "in use by another mwt command" in done.stderr


def test_resume_with_a_damaged_config_is_a_clear_error(capsys, small_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["run"]["train"]["epochs"] = "many"
    (copy / "config.json").write_text(json.dumps(config))
    _one_line_error(capsys, ["train", "--resume", "--out", str(copy)], "epochs")
    config["run"]["train"]["epochs"] = 1
    config["run"]["shell"] = "rm -rf /"
    (copy / "config.json").write_text(json.dumps(config))
    _one_line_error(capsys, ["train", "--resume", "--out", str(copy)], "unknown setting")


def test_resume_reads_the_flat_settings_of_older_runs(capsys, small_run, tmp_path, monkeypatch):
    import shutil

    import mwt.runs
    from helpers import demo_subset

    monkeypatch.setattr(mwt.runs, "load_dataset",
                        lambda name, split="train", *a, **k: demo_subset(split, 8 if split ==
                                                                         "train" else 2))
    copy = tmp_path / "copy"
    shutil.copytree(small_run, copy)
    config = json.loads((copy / "config.json").read_text())
    config["cli"] = {"model": "vgg16", "dataset": "demo", "width": 0.125, "epochs": 1,
                     "standard": False, "alpha": None, "beta": None, "seed": 0,
                     "data_dir": None, "download": False, "hflip": True, "lr": 0.05,
                     "weight_decay": 0.0, "batch_size": 40, "reduction": "classes"}
    del config["run"]
    (copy / "config.json").write_text(json.dumps(config))
    code, out, err = run(capsys, "train", "--resume", "--epochs", "2", "--out", str(copy),
                         "--no-progress", "--quiet", "--device", "cpu")
    assert code == 0, err
    assert "modular vgg16 on demo" in out
    records = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]


def test_resume_refuses_changed_settings(capsys, small_run):
    _one_line_error(capsys, ["train", "--resume", "--out", str(small_run), "--lr", "0.1"],
                    "only --epochs")


def test_train_passes_compile_and_the_distributed_switches(tmp_path, monkeypatch):
    import mwt.runs

    seen = {}

    def fake_train_run(out, spec, **kwargs):
        seen.update(spec=spec, **kwargs)
        raise mwt.MwtError("stop here")

    monkeypatch.setattr(mwt.runs, "train_run", fake_train_run)
    code = main(["train", "--out", str(tmp_path / "r"), "--compile", "--local-losses"])
    assert code == 2
    assert seen["compile"] is True
    assert seen["spec"].train.local_losses is True and seen["spec"].train.sync_bn is False


@pytest.mark.parametrize("device", ["meta", "mps", "xla", "hpu"])
@pytest.mark.parametrize("command", ["train", "modularize", "reuse", "demo", "baseline",
                                     "experiment"])
def test_a_device_this_torch_cannot_run_is_one_line_before_any_work(capsys, small_run,
                                                                     tmp_path, device, command):
    new = tmp_path / "new"
    argv = {"train": ["train", "--epochs", "1", "--out", str(new)],
            "modularize": ["modularize", str(small_run)],
            "reuse": ["reuse", str(small_run), "--classes", "0", "1", "--out", str(new)],
            "demo": ["demo", "--out", str(new)],
            "baseline": ["baseline", "cnnsplitter", str(small_run), "--out", str(new)],
            "experiment": ["experiment", "rq1", "--preset", "micro", "--out", str(new)]}[command]
    before = sorted(p.name for p in small_run.iterdir())
    from mwt.data import registry

    datasets = dict(registry.DATASETS)  # the micro preset registers its dataset when used
    try:
        _one_line_error(capsys, argv + ["--device", device], "cannot run mwt here")
    finally:
        registry.DATASETS.clear()
        registry.DATASETS.update(datasets)
    assert not new.exists()
    assert sorted(p.name for p in small_run.iterdir()) == before


def test_crop_padding_is_a_run_setting():
    from mwt.cli import RUN_OPTIONS, build_parser
    from mwt.config import RunSpec

    args = build_parser().parse_args(["train", "--crop-padding", "0", "--out", "r"])
    given = {k: getattr(args, k) for k in RUN_OPTIONS if getattr(args, k) is not None}
    assert RunSpec.from_settings(**given).train.crop_padding == 0  # flips only
