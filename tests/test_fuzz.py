"""A hostile user: mutated CLI arguments and mutated run, module-set and module files.

Every failure must be one line on stderr with exit 2, and no file outside the command's own
output may change, whatever the input.
"""

import contextlib
import hashlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mwt
from helpers import demo_subset, small_run
from mwt.cli import main

HOSTILE = ["", " ", "-1", "0", "1", "2", "0.5", "nan", "inf", "-inf", "1e400", "x", "None",
           str(2**70), "../..", "/nonexistent/dir", "/dev/null", "/proc/version", "T-shirt/top",
           "--help", "0.9", "3.5", "'; rm -rf /'"]
SETTINGS = dict(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run with a module set, and a saved module, made through the API."""
    root = tmp_path_factory.mktemp("world")
    train = demo_subset("train", 6)
    result = small_run(root / "run")
    mods = mwt.modularize(result.model, train, 0.9, classes=train.classes)
    mods.save(root / "run")
    sub = mwt.reuse(result.model, mods, [0, 1], train, epochs=0, device="cpu")
    mwt.save_module(sub, root / "module")
    return root


@pytest.fixture
def tiny_data(monkeypatch):
    """Registered datasets shrink to a few images, so a command that succeeds stays quick."""
    import mwt.demo
    import mwt.runs

    real = mwt.runs.load_dataset

    def small(name, split="train", data_dir=None, download=False):
        data = real(name, split, data_dir, download)
        return demo_subset(split, 3) if str(name).lower() == "demo" else data

    monkeypatch.setattr(mwt.runs, "load_dataset", small)
    monkeypatch.setattr(mwt.demo, "load_dataset", small)


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _run(argv) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _check(root: Path, argv: list[str], own: list[str]) -> int:
    """Run ``argv`` in ``root``; only paths under ``own`` may change."""
    before = _snapshot(root)
    code, err = _run(argv)
    assert code in (0, 2), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mwt: error:"), (argv, err)
    after = _snapshot(root)
    for name, digest in before.items():
        if any(name == o or name.startswith(o + "/") for o in own):
            continue
        assert after.get(name) == digest, (argv, name, "changed or vanished")
    return code


@contextlib.contextmanager
def _copy_of(world: Path):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copytree(world, root, dirs_exist_ok=True)
        yield root


COMMANDS = {
    "train": ["train", "--model", "vgg16", "--width", "0.125", "--epochs", "1", "--batch-size",
              "30", "--dataset", "demo", "--out", "new", "--no-progress", "--quiet",
              "--device", "cpu"],
    "resume": ["train", "--resume", "--epochs", "1", "--out", "run", "--no-progress", "--quiet"],
    "modularize": ["modularize", "run", "--tau", "0.9", "--batch-size", "64", "--device",
                   "cpu"],
    "reuse": ["reuse", "run", "--classes", "0", "1", "--epochs", "0", "--out", "newmod",
              "--device", "cpu", "--quiet"],
    "export": ["export", "module", "module", "--format", "torchscript", "--out", "m.pt"],
}
OWN = {"train": ["new"], "resume": ["run"], "modularize": ["run"], "reuse": ["newmod"],
       "export": ["m.pt"]}


@settings(**SETTINGS)
@given(command=st.sampled_from(sorted(COMMANDS)), data=st.data())
def test_mutated_arguments(world, tiny_data, monkeypatch, command, data):
    argv = list(COMMANDS[command])
    # Replace the values of one to three options (and sometimes a positional) by hostile ones.
    slots = [i for i, a in enumerate(argv) if i > 0 and not a.startswith("--")
             and not (command == "export" and i == 1)]
    for i in data.draw(st.lists(st.sampled_from(slots), min_size=1, max_size=3, unique=True)):
        argv[i] = data.draw(st.sampled_from(HOSTILE))
    with _copy_of(world) as root:
        monkeypatch.chdir(root)
        own = OWN[command] + [a for a in argv if a not in ("run", "module")]
        _check(root, argv, own)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=8)


def _mutate(obj, data, depth=0):
    """Replace, delete or add one field somewhere in a JSON object."""
    if isinstance(obj, dict) and obj:
        key = data.draw(st.sampled_from(sorted(obj)))
        action = data.draw(st.sampled_from(["replace", "delete", "descend"]))
        if action == "replace":
            obj[key] = data.draw(JSON_VALUES)
        elif action == "delete":
            del obj[key]
        elif isinstance(obj[key], (dict, list)) and obj[key] and depth < 3:
            _mutate(obj[key], data, depth + 1)
        else:
            obj[key] = data.draw(JSON_VALUES)
    elif isinstance(obj, list) and obj:
        i = data.draw(st.integers(0, len(obj) - 1))
        obj[i] = data.draw(JSON_VALUES)


FILES = {
    "config": ("run/config.json", ["train", "--resume", "--epochs", "1", "--out", "run",
                                   "--no-progress", "--quiet"], ["run"]),
    "modules": ("run/modules-tau0.90.json", ["reuse", "run", "--classes", "0", "1", "--epochs",
                                             "0", "--device", "cpu", "--quiet", "--out", "nm"],
                ["nm"]),
    "module": ("module/module.json", ["export", "module", "module", "--out", "m.pt"], ["m.pt"]),
}


@settings(**SETTINGS)
@given(which=st.sampled_from(sorted(FILES)), data=st.data())
def test_mutated_files(world, tiny_data, monkeypatch, which, data):
    name, argv, own = FILES[which]
    with _copy_of(world) as root:
        monkeypatch.chdir(root)
        path = root / name
        obj = json.loads(path.read_text())
        _mutate(obj, data)
        path.write_text(json.dumps(obj))
        _check(root, argv, own)


@settings(**SETTINGS)
@given(data=st.data())
def test_mutated_checkpoint_header(world, tiny_data, monkeypatch, data):
    from mwt.io import load_tensors_and_metadata, save_tensors

    with _copy_of(world) as root:
        monkeypatch.chdir(root)
        path = root / "run" / "checkpoint.safetensors"
        tensors, meta = load_tensors_and_metadata(path)
        config = json.loads(meta["config"])
        _mutate(config, data)
        meta["config"] = json.dumps(config)
        meta.pop("sha256_data")
        save_tensors(path, tensors, metadata=meta)
        _check(root, ["modularize", "run", "--device", "cpu"], ["run"])
