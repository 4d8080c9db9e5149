"""`mwt export module --out NAME`: any legal file name works, anything that is not a regular file
is refused before the export starts, and every refusal is one line with exit status 2."""

import os
import stat

import pytest
import torch

import mwt
from helpers import demo_subset, sparse_modular
from mwt.cli import main


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = sparse_modular("vgg16", in_channels=1)
    train = demo_subset("train", 20)
    mods = mwt.modularize(model, train, 0.9, classes=train.classes)
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu")
    path = tmp_path_factory.mktemp("export") / "m"
    mwt.save_module(sub, path)
    return path


def _export(capsys, *args):
    code = main(["export", "module", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, args, fragment):
    code, out, err = _export(capsys, *args)
    assert code == 2 and out == ""
    assert err.startswith("mwt: error:") and err.count("\n") == 1, err
    assert fragment in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("fmt", ["pt2", "torchscript"])
def test_a_name_without_extension_is_exported(capsys, module_dir, tmp_path, fmt):
    out = tmp_path / "plain-name"
    code, _, err = _export(capsys, module_dir, "--format", fmt, "--out", out)
    assert code == 0, err
    x = torch.zeros(3, 1, 28, 28)
    loaded = torch.export.load(out).module() if fmt == "pt2" else torch.jit.load(out)
    assert loaded(x).shape == (3, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["plain-name"]  # no temporary left


def test_a_long_legal_name_is_exported(capsys, module_dir, tmp_path):
    out = tmp_path / ("m" * 240 + ".pt2")  # 244 bytes: legal, but not with a prefix added
    code, _, err = _export(capsys, module_dir, "--out", out)
    assert code == 0, err
    assert torch.export.load(out).module()(torch.zeros(1, 1, 28, 28)).shape == (1, 2)


def test_a_name_too_long_for_the_file_system_is_named(capsys, module_dir, tmp_path):
    out = tmp_path / ("m" * 300 + ".pt2")
    _refused(capsys, [module_dir, "--out", out], "304 bytes long")


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
def test_a_name_ending_in_a_slash_is_refused(capsys, module_dir, tmp_path, fmt):
    _refused(capsys, [module_dir, "--format", fmt, "--out", f"{tmp_path}/new/"], "slash")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("force", [False, True])
@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
def test_a_fifo_is_never_replaced(capsys, module_dir, tmp_path, fmt, force):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    _refused(capsys, [module_dir, "--format", fmt, "--out", fifo] + (["--force"] * force),
             "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_a_device_node_is_never_replaced(capsys, module_dir, fmt):
    _refused(capsys, [module_dir, "--format", fmt, "--out", os.devnull, "--force"],
             "not a regular file")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_the_api_refuses_what_is_not_a_regular_file(module_dir, tmp_path):
    module = mwt.load_module(module_dir)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(mwt.MwtError, match="not a regular file"):
        mwt.export_module(module, fifo)
    with pytest.raises(mwt.MwtError, match="directory"):
        mwt.export_module(module, tmp_path)
