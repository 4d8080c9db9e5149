"""Module sets on disk: one file pair per tau, legacy files, and loading that trusts nothing."""

import json
import math
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mwt
from mwt.io import save_tensors, write_artifact, write_json
from mwt.metrics import kernel_retention_rate
from mwt.modularize import FORMAT, ModuleSet, list_module_sets, module_masks, module_set_stem

LAYERS = [("features.3", 4), ("features.7", 3)]


def synthetic(tau: float = 0.9, seed: int = 0) -> ModuleSet:
    """A small, valid module set without a model: 3 classes, two layers of 4 and 3 kernels."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.tensor([5, 7, 6])
    hits = (torch.rand(3, 7, generator=g) * (counts[:, None] + 1)).floor()
    freq = hits / counts[:, None]
    masks, layer_tau = module_masks(freq, [k for _, k in LAYERS], tau)
    return ModuleSet(masks=masks, layers=list(LAYERS), tau=tau, frequencies=freq,
                     gate_means=freq * 0.5, counts=counts, layer_tau=layer_tau,
                     classes=["cat", "dog", "ship"], cohesion=0.9, coupling=0.25,
                     krr=kernel_retention_rate(masks), seconds={"pass": 0.5, "total": 0.75},
                     model={"name": "vgg16", "modular": True}, warnings=["a note"])


def assert_same(a: ModuleSet, b: ModuleSet):
    for name in ("masks", "frequencies", "gate_means", "counts", "layer_tau"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    for name in ("layers", "tau", "classes", "cohesion", "coupling", "krr", "seconds", "model",
                 "warnings"):
        assert getattr(a, name) == getattr(b, name), name


def test_stems():
    assert module_set_stem(0.9) == "modules-tau0.90"
    assert module_set_stem(1) == "modules-tau1.00"
    assert module_set_stem(0.05) == "modules-tau0.05"
    assert module_set_stem(0.925) == "modules-tau0.925"
    assert module_set_stem(1e-5) == "modules-tau0.00001"
    assert synthetic(0.6).stem == "modules-tau0.60"
    for bad in (0, 1.5, float("nan"), True, "0.9"):
        with pytest.raises(mwt.MwtError, match="tau"):
            module_set_stem(bad)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.floats(min_value=0, max_value=1, exclude_min=True), st.floats(0, 1, exclude_min=True))
def test_stems_are_unique_and_read_back(a, b):
    stem = module_set_stem(a)
    number = stem[len("modules-tau"):]
    assert stem.startswith("modules-tau") and "e" not in number and len(number.split(".")[1]) >= 2
    assert float(number) == a
    assert (module_set_stem(b) == stem) == (a == b)


def test_round_trip_with_checksum(tmp_path):
    mods = synthetic()
    path = mods.save(tmp_path)
    assert path == tmp_path / "modules-tau0.90.json"
    assert isinstance(json.loads(path.read_text())["sha256"], str)
    assert json.loads(path.read_text())["warnings"] == ["a note"]
    assert_same(ModuleSet.load(tmp_path), mods)
    assert_same(ModuleSet.load(tmp_path, 0.9), mods)
    assert list_module_sets(tmp_path) == {0.9: path}


def test_sets_of_different_tau_live_side_by_side(tmp_path):
    low, high = synthetic(0.6, seed=1), synthetic(0.9, seed=2)
    p_high = high.save(tmp_path)
    p_low = low.save(tmp_path)
    assert list_module_sets(tmp_path) == {0.6: p_low, 0.9: p_high}
    assert_same(ModuleSet.load(tmp_path, 0.6), low)
    assert_same(ModuleSet.load(tmp_path, 0.9), high)
    with pytest.raises(mwt.MwtError, match=r"holds module sets for tau 0\.60, 0\.90; choose one "
                                           "with --tau"):
        ModuleSet.load(tmp_path)
    with pytest.raises(mwt.MwtError, match=r"no module set for tau 0\.70 \(it holds tau 0\.60, "
                                           r"0\.90\)"):
        ModuleSet.load(tmp_path, 0.7)
    # the same tau again replaces that set only
    again = synthetic(0.9, seed=3)
    assert again.save(tmp_path) == p_high
    assert list_module_sets(tmp_path) == {0.6: p_low, 0.9: p_high}
    assert_same(ModuleSet.load(tmp_path, 0.9), again)
    assert_same(ModuleSet.load(tmp_path, 0.6), low)


def test_no_modules_yet(tmp_path):
    assert list_module_sets(tmp_path) == {}
    assert list_module_sets(tmp_path / "missing") == {}
    with pytest.raises(mwt.MwtError, match=r"has no modules yet; run `mwt modularize .*` first"):
        ModuleSet.load(tmp_path)
    with pytest.raises(mwt.MwtError, match=r"no module set for tau 0\.90 \(it has no modules"):
        ModuleSet.load(tmp_path, 0.9)
    with pytest.raises(mwt.CheckpointError, match="does not exist"):
        ModuleSet.load(tmp_path / "missing")
    with pytest.raises(mwt.MwtError, match="tau must"):
        ModuleSet.load(tmp_path, 1.5)


def test_files_that_only_look_like_module_sets_are_ignored(tmp_path):
    mods = synthetic(0.9)
    path = mods.save(tmp_path)
    for name in ("modules-tau0.9.json", "modules-tauabc.json", "modules-tau1.50.json",
                 "modules-tau0.90.json.bak", "other.json"):
        (tmp_path / name).write_text("{}")
    assert list_module_sets(tmp_path) == {0.9: path}
    assert_same(ModuleSet.load(tmp_path), mods)


def save_legacy(mods: ModuleSet, directory: Path):
    """A module set as versions before per-tau files wrote it (no SHA-256 in the JSON)."""
    save_tensors(directory / "modules.safetensors", {
        "masks": mods.masks.to(torch.uint8), "frequencies": mods.frequencies,
        "gate_means": mods.gate_means, "counts": mods.counts, "layer_tau": mods.layer_tau})
    write_json(directory / "modules.json", {
        "format": FORMAT, "classes": mods.classes, "layers": mods.layers, "model": mods.model,
        **mods.summary()})


def test_legacy_module_set(tmp_path):
    legacy = synthetic(0.9, seed=4)
    save_legacy(legacy, tmp_path)
    assert list_module_sets(tmp_path) == {0.9: tmp_path / "modules.json"}
    loaded = ModuleSet.load(tmp_path)
    assert torch.equal(loaded.masks, legacy.masks) and loaded.tau == 0.9
    assert loaded.warnings == []
    assert torch.equal(ModuleSet.load(tmp_path, 0.9).masks, legacy.masks)
    # a new set of another tau sits beside it; one of the same tau takes precedence
    other = synthetic(0.6, seed=5)
    other.save(tmp_path)
    with pytest.raises(mwt.MwtError, match=r"tau 0\.60, 0\.90; choose one"):
        ModuleSet.load(tmp_path)
    newer = synthetic(0.9, seed=6)
    newer.save(tmp_path)
    assert list_module_sets(tmp_path)[0.9] == tmp_path / "modules-tau0.90.json"
    assert_same(ModuleSet.load(tmp_path, 0.9), newer)


def test_legacy_module_set_with_an_unreadable_tau(tmp_path):
    save_legacy(synthetic(0.9), tmp_path)
    meta = json.loads((tmp_path / "modules.json").read_text())
    meta["tau"] = "high"
    (tmp_path / "modules.json").write_text(json.dumps(meta))
    assert list_module_sets(tmp_path) == {}
    with pytest.raises(mwt.CheckpointError, match="'tau' must be a number"):
        ModuleSet.load(tmp_path)


def test_new_style_set_must_carry_a_checksum(tmp_path):
    path = synthetic().save(tmp_path)
    meta = json.loads(path.read_text())
    del meta["sha256"]
    path.write_text(json.dumps(meta))
    with pytest.raises(mwt.CheckpointError, match="no SHA-256"):
        ModuleSet.load(tmp_path)


NAN = float("nan")
DROP = object()

JSON_MUTATIONS = [
    *[(key, DROP) for key in ("tau", "classes", "layers", "cohesion", "coupling", "krr",
                              "format")],
    ("tau", "x"), ("tau", True), ("tau", 0), ("tau", -0.1), ("tau", 1.5), ("tau", NAN),
    ("tau", None), ("tau", [0.9]), ("tau", 0.6), ("tau", 10**400),
    ("classes", [0, 1, 2]), ("classes", "cat"), ("classes", ["cat", "dog"]),
    ("classes", None), ("classes", [["cat"], "dog", "ship"]), ("classes", {"0": "cat"}),
    ("layers", "features"), ("layers", []), ("layers", [["features.3", 7]]),
    ("layers", [["features.3", 4, 1], ["features.7", 3]]),
    ("layers", [["features.3", -4], ["features.7", 11]]),
    ("layers", [["features.3", 0], ["features.7", 7]]),
    ("layers", [["features.3", 4.0], ["features.7", 3]]),
    ("layers", [["features.3", True], ["features.7", 6]]),
    ("layers", [[3, 4], ["features.7", 3]]), ("layers", [["features.3", "4"], ["f", 3]]),
    ("layers", [["features.3"], ["features.7", 3]]), ("layers", {"features.3": 4}),
    ("layers", [["features.3", 5], ["features.7", 3]]),
    ("cohesion", NAN), ("cohesion", 1.5), ("cohesion", "high"), ("cohesion", None),
    ("cohesion", True), ("coupling", -0.1), ("coupling", float("inf")), ("krr", NAN),
    ("krr", 0.0001), ("krr", [0.5]),
    ("seconds", "fast"), ("seconds", {"pass": -1}), ("seconds", {"pass": NAN}),
    ("seconds", {"pass": "1s"}), ("model", []), ("model", "vgg16"),
    ("warnings", "x"), ("warnings", [1]), ("format", "mwt-module/1"), ("sha256", "00"),
]


@pytest.mark.parametrize("key, value", JSON_MUTATIONS, ids=[
    f"{k}={'drop' if v is DROP else v!r}"[:40] for k, v in JSON_MUTATIONS])
def test_every_json_field_is_checked(tmp_path, key, value):
    path = synthetic().save(tmp_path)
    meta = json.loads(path.read_text())
    if value is DROP:
        del meta[key]
    else:
        meta[key] = value
    path.write_text(json.dumps(meta))
    with pytest.raises(mwt.CheckpointError) as info:
        ModuleSet.load(tmp_path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def _tensors(mods: ModuleSet) -> dict:
    return {"masks": mods.masks.to(torch.uint8), "frequencies": mods.frequencies,
            "gate_means": mods.gate_means, "counts": mods.counts, "layer_tau": mods.layer_tau}


def _set(name, value):
    def change(t):
        t[name] = value(t[name])
    return change


def _drop(name):
    def change(t):
        del t[name]
    return change


def _poke(name, value, index=(0, 0)):
    def change(t):
        t[name] = t[name].clone()
        t[name][index] = value
    return change


TENSOR_MUTATIONS = {
    **{f"drop-{name}": _drop(name) for name in
       ("masks", "frequencies", "gate_means", "counts", "layer_tau")},
    "masks-2": _poke("masks", 2),
    "masks-float": _set("masks", lambda x: x.float()),
    "masks-1d": _set("masks", lambda x: x.flatten()),
    "masks-extra-row": _set("masks", lambda x: torch.cat([x, x[:1]])),
    "masks-extra-kernel": _set("masks", lambda x: torch.cat([x, x[:, :1]], 1)),
    "frequencies-nan": _poke("frequencies", NAN),
    "frequencies-above-1": _poke("frequencies", 1.5),
    "frequencies-negative": _poke("frequencies", -0.1),
    "frequencies-int": _set("frequencies", lambda x: (x * 10).long()),
    "frequencies-shape": _set("frequencies", lambda x: x[:, :-1]),
    "gate_means-nan": _poke("gate_means", NAN),
    "gate_means-2": _poke("gate_means", 2.0),
    "gate_means-shape": _set("gate_means", lambda x: x.T.contiguous()),
    "counts-negative": _poke("counts", -1, (0,)),
    "counts-float": _set("counts", lambda x: x.float()),
    "counts-bool": _set("counts", lambda x: x > 0),
    "counts-shape": _set("counts", lambda x: x[:2]),
    "layer_tau-wide": _set("layer_tau", lambda x: torch.cat([x, x[:, :1]], 1)),
    "layer_tau-flat": _set("layer_tau", lambda x: x.flatten()),
    "layer_tau-nan": _poke("layer_tau", NAN),
    "layer_tau-above-1": _poke("layer_tau", 1.25),
    "layer_tau-int": _set("layer_tau", lambda x: x.long()),
}


@pytest.mark.parametrize("name", list(TENSOR_MUTATIONS))
def test_every_tensor_is_checked(tmp_path, name):
    mods = synthetic()
    meta = json.loads(mods.save(tmp_path).read_text())
    del meta["sha256"]
    tensors = _tensors(mods)
    TENSOR_MUTATIONS[name](tensors)
    # written with a fresh checksum, so only the module-set checks can catch it
    write_artifact(tmp_path, mods.stem, tensors, meta)
    with pytest.raises(mwt.CheckpointError) as info:
        ModuleSet.load(tmp_path)
    assert "\n" not in str(info.value)


def test_unmodified_tensors_rewritten_load(tmp_path):
    mods = synthetic()
    meta = json.loads(mods.save(tmp_path).read_text())
    del meta["sha256"]
    write_artifact(tmp_path, mods.stem, _tensors(mods), meta)
    assert_same(ModuleSet.load(tmp_path), mods)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=8)

PATHS = [("tau",), ("classes",), ("layers",), ("cohesion",), ("coupling",), ("krr",),
         ("seconds",), ("model",), ("warnings",), ("format",), ("sha256",), ("total_kernels",),
         ("kernels_per_module",), ("classes", 0), ("layers", 0), ("layers", 1), ("layers", 0, 0),
         ("layers", 1, 1), ("seconds", "pass"), ("new-field",)]


@pytest.fixture(scope="module")
def saved_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("saved")
    synthetic().save(directory)
    return directory


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(PATHS), json_values | st.just(DROP)), min_size=1,
                max_size=3))
def test_random_json_is_loaded_or_a_checkpoint_error(saved_set, changes):
    meta = json.loads((saved_set / "modules-tau0.90.json").read_text())
    for path, value in changes:
        parent = meta
        for step in path[:-1]:
            ok = (isinstance(parent, dict) and step in parent) or (
                isinstance(parent, list) and isinstance(step, int) and step < len(parent))
            if not ok:
                break
            parent = parent[step]
        else:
            last = path[-1]
            if value is DROP:
                if isinstance(parent, dict):
                    parent.pop(last, None)
                elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
                    del parent[last]
            elif isinstance(parent, dict) or (isinstance(parent, list) and isinstance(last, int)
                                              and last < len(parent)):
                parent[last] = value
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(saved_set / "modules-tau0.90.safetensors", tmp)
        (Path(tmp) / "modules-tau0.90.json").write_text(json.dumps(meta))
        try:
            loaded = ModuleSet.load(tmp)
        except mwt.CheckpointError as exc:
            assert "\n" not in str(exc)
            return
    # what loads is a usable set
    assert 0 < loaded.tau <= 1 and len(loaded.classes) == loaded.num_classes
    assert sum(k for _, k in loaded.layers) == loaded.total_kernels
    assert all(math.isfinite(x) for x in (loaded.krr, loaded.cohesion, loaded.coupling))
    loaded.summary()
