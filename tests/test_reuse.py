"""On-demand reuse (section 3.4), module files and export."""

import json
import subprocess
import sys

import pytest
import torch

import mwt
from helpers import demo_subset, modularized, sparse_modular
from mwt.reuse import select_classes, subtask_accuracy


@pytest.fixture(scope="module")
def setup():
    return (*modularized("resnet18"), demo_subset("test", 10))


def test_reuse_builds_a_smaller_two_class_model(setup):
    model, mods, train, test = setup
    sub = mwt.reuse(model, mods, [0, 3], train, test_data=test, epochs=1, device="cpu",
                    batch_size=20, min_steps=0)
    r = sub.report
    assert sub(test.images[:4]).shape == (4, 2)
    assert r["kernel_share"] == pytest.approx(mods.kernels_for([0, 3]).float().mean().item())
    assert 0 < r["macs_ratio"] < 1 and 0 < r["params_ratio"] < 1
    assert r["macs"] == mwt.count_macs(sub, (1, 28, 28))
    before = subtask_accuracy(sub.module, select_classes(test, [0, 3]), [0, 3])
    assert r["acc_before_finetune"]["test"] == pytest.approx(before)
    assert 0 <= r["acc_after_finetune"]["test"] <= 1
    assert len(r["history"]) == 1


def test_select_classes_renumbers_in_given_order():
    x = torch.arange(6.0).view(6, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 3, 2, 0])
    xs, ys = select_classes((x, y), [2, 0])
    assert xs.flatten().tolist() == [0.0, 2.0, 4.0, 5.0]
    assert ys.tolist() == [1, 0, 0, 1]


def test_reuse_rejects_bad_requests(setup):
    model, mods, train, _ = setup
    with pytest.raises(mwt.MwtError, match="out of range"):
        mwt.reuse(model, mods, [0, 12], train, epochs=0)
    with pytest.raises(mwt.MwtError, match="at least two classes"):
        mwt.reuse(model, mods, [4], train, epochs=0)
    other = sparse_modular("vgg16", in_channels=1)
    with pytest.raises(mwt.MwtError, match="different model"):
        mwt.reuse(other, mods, [0, 1], train, epochs=0)


@pytest.mark.parametrize("options", [{}, {"keep_gates": True}, {"fold_gates": True}])
def test_save_load_round_trip(setup, tmp_path, options):
    model, mods, train, test = setup
    sub = mwt.reuse(model, mods, [1, 7], train, epochs=0, device="cpu", **options).eval()
    mwt.save_module(sub, tmp_path / "m")
    raw = (tmp_path / "m" / "module.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and header_len < len(raw)  # a safetensors header, no pickle
    loaded = mwt.load_module(tmp_path / "m")
    x = test.images[:6]
    torch.testing.assert_close(loaded(x), sub(x), rtol=0, atol=0)
    assert loaded.input_shape == (1, 28, 28)


def test_plain_extracted_module_round_trip(setup, tmp_path):
    model, mods, _, test = setup
    module = mwt.extract_module(model, mods.kernels_for([2]), keep_gates=True)
    mwt.save_module(module, tmp_path, input_shape=(1, 28, 28))
    loaded = mwt.load_module(tmp_path)
    x = test.images[:3]
    torch.testing.assert_close(loaded(x), module(x), rtol=0, atol=0)


def test_tampered_or_truncated_files_are_clear_errors(setup, tmp_path):
    model, mods, train, _ = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu")
    mwt.save_module(sub, tmp_path)
    weights = tmp_path / "module.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) - 100])
    with pytest.raises(mwt.CheckpointError, match="truncated"):
        mwt.load_module(tmp_path)
    weights.write_bytes(good)
    meta = json.loads((tmp_path / "module.json").read_text())
    meta["kernels"] = meta["kernels"][1:]  # structure no longer fits the weights
    (tmp_path / "module.json").write_text(json.dumps(meta))
    with pytest.raises(mwt.CheckpointError, match="consistent"):
        mwt.load_module(tmp_path)
    (tmp_path / "module.json").write_text("{not json")
    with pytest.raises(mwt.CheckpointError, match="JSON"):
        mwt.load_module(tmp_path)


def test_unknown_export_format(setup, tmp_path):
    model, mods, train, _ = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu")
    with pytest.raises(mwt.MwtError, match="unknown export format"):
        mwt.export_module(sub, tmp_path / "m.x", "tflite", input_shape=(1, 28, 28))
    assert not (tmp_path / "m.x").exists()


def test_torchscript_export_runs_without_mwt(setup, tmp_path):
    model, mods, train, test = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu").eval()
    path = mwt.export_module(sub, tmp_path / "m.pt", "torchscript", input_shape=(1, 28, 28))
    x = test.images[:2]
    torch.save(x, tmp_path / "x.pt")
    code = (f"import sys, torch; m = torch.jit.load({str(path)!r}); "
            f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True); "
            "print(m(x).tolist()); assert 'mwt' not in sys.modules")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    expected = sub(x)
    torch.testing.assert_close(torch.tensor(eval(out.stdout)), expected, rtol=1e-4, atol=1e-5)


def test_onnx_export_is_a_valid_model(setup, tmp_path):
    import onnx  # a dev dependency: CI runs this test
    model, mods, train, _ = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu")
    path = mwt.export_module(sub, tmp_path / "m.onnx", "onnx", input_shape=(1, 28, 28))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    assert [o.name for o in proto.graph.output] == ["logits"]


# --- Hardening: module files never trusted, exports never overwrite, fine-tuning never idle --


@pytest.fixture
def saved_module(setup, tmp_path):
    model, mods, train, _ = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu")
    mwt.save_module(sub, tmp_path / "m")
    return tmp_path / "m"


def _edit(path, change):
    meta = json.loads((path / "module.json").read_text())
    change(meta)
    (path / "module.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("change", [
    lambda m: m.update(input_shape=[3, 28, 28]),
    lambda m: m.update(input_shape=[1, 28]),
    lambda m: m.update(input_shape="1x28x28"),
    lambda m: m.update(input_shape=[1, -28, 28]),
    lambda m: m["base"].update(name="vgg16"),
    lambda m: m["base"].update(name=7),
    lambda m: m["base"].update(width=2.0),
    lambda m: m["base"].update(width="0.25"),
    lambda m: m["base"].update(width=True),
    lambda m: m["base"].update(width=1e9),
    lambda m: m["base"].update(num_classes="10"),
    lambda m: m.update(base=[]),
    lambda m: m.update(kernels=[-1] + m["kernels"][1:]),
    lambda m: m.update(kernels=[m["kernels"][0]] + m["kernels"]),
    lambda m: m.update(kernels="all"),
    lambda m: m.update(kernels=[]),
    lambda m: m.update(total_kernels=10**12),
    lambda m: m.update(total_kernels=None),
    lambda m: m.update(head_classes=[0, 99]),
    lambda m: m.update(head_classes=[0]),
    lambda m: m.update(keep_gates="no"),
    lambda m: m.update(keep_gates=True, fold_gates=True),
])
def test_a_lying_module_description_is_a_clear_error(saved_module, change):
    _edit(saved_module, change)
    with pytest.raises(mwt.CheckpointError, match="consistent module"):
        mwt.load_module(saved_module)


def test_a_bit_flipped_module_is_a_clear_error(saved_module):
    weights = saved_module / "module.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-20] ^= 0x01
    weights.write_bytes(bytes(raw))
    with pytest.raises(mwt.CheckpointError, match="corrupted"):
        mwt.load_module(saved_module)


def test_saving_into_a_module_directory_is_refused(setup, saved_module):
    model, mods, train, _ = setup
    before = (saved_module / "module.safetensors").read_bytes()
    sub = mwt.reuse(model, mods, [1, 2], train, epochs=0, device="cpu")
    with pytest.raises(mwt.MwtError, match="already holds a module"):
        mwt.save_module(sub, saved_module)
    assert (saved_module / "module.safetensors").read_bytes() == before


def test_export_never_overwrites(saved_module):
    from mwt.module_io import export_path

    for own in ("module.json", "module.safetensors"):
        with pytest.raises(mwt.MwtError, match="module's own files"):
            export_path(saved_module, "torchscript", saved_module / own, force=True)
    existing = saved_module.parent / "taken.pt"
    existing.write_text("mine")
    with pytest.raises(mwt.MwtError, match="--force"):
        export_path(saved_module, "torchscript", existing)
    assert export_path(saved_module, "torchscript", existing, force=True) == existing
    with pytest.raises(mwt.MwtError, match="is a directory"):
        export_path(saved_module, "onnx", saved_module)
    with pytest.raises(mwt.MwtError, match="must not be empty"):
        export_path(saved_module, "onnx", "")
    assert existing.read_text() == "mine"


def test_fine_tuning_runs_a_minimum_number_of_steps(setup):
    model, mods, train, _ = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=1, device="cpu", batch_size=20,
                    min_steps=8)
    # 54 fine-tuning samples at batch 20 make 3 steps an epoch: 8 steps need 3 epochs.
    assert sub.report["epochs_asked"] == 1 and sub.report["epochs"] == 3
    assert len(sub.report["history"]) == 3


def test_a_module_at_chance_is_reported(setup):
    model, mods, train, test = setup
    with pytest.warns(UserWarning, match="better than chance"):
        sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu", test_data=test)
    assert sub.report["acc_before_finetune"]["val"] == 0.5  # gates removed, no fine-tuning
    assert "better than chance (50.00%)" in sub.report["warnings"][0]


_RUNNERS = {
    "pt2": "m = torch.export.load(path).module(); y = m(x)",
    "torchscript": "m = torch.jit.load(path); y = m(x)",
    "onnx": ("import onnxruntime as ort; s = ort.InferenceSession(path); "
             "y = torch.from_numpy(s.run(None, {'input': x.numpy()})[0])"),
}


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
@pytest.mark.parametrize("options", [{}, {"keep_gates": True}])
def test_every_export_runs_without_mwt_at_any_batch_size(setup, tmp_path, fmt, options):
    model, mods, train, test = setup
    sub = mwt.reuse(model, mods, [0, 3], train, epochs=0, device="cpu", **options).eval()
    path = mwt.export_module(sub, tmp_path / f"m.{fmt}", fmt)  # input shape from the module
    x = test.images[:5]  # the export used a batch of 2
    torch.save(x, tmp_path / "x.pt")
    code = (f"import sys, torch; path = {str(path)!r}; "
            f"x = torch.load({str(tmp_path / 'x.pt')!r}, weights_only=True); "
            f"{_RUNNERS[fmt]}; torch.save(y, {str(tmp_path / 'y.pt')!r}); "
            "assert 'mwt' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    y = torch.load(tmp_path / "y.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(y, sub(x), rtol=1e-4, atol=1e-5)


def test_cli_export_defaults_to_pt2(capsys, saved_module):
    from mwt.cli import main

    assert main(["export", "module", str(saved_module)]) == 0
    assert (saved_module / "module.pt2").exists()
    assert "as pt2" in capsys.readouterr().out


def test_rounded_kernels_fill_each_layer_to_a_multiple_with_the_most_used(setup):
    _, mods, _, _ = setup
    from mwt.reuse import rounded_kernels

    plain, rounded = mods.kernels_for([0, 3]), rounded_kernels(mods, [0, 3], 8)
    assert bool((rounded | plain).eq(rounded).all())  # a superset
    weights = mods.counts[[0, 3]].float()
    usage = (mods.frequencies[[0, 3]] * weights[:, None]).sum(0) / weights.sum()
    offset = 0
    for _, size in mods.layers:
        kept, old = rounded[offset:offset + size], plain[offset:offset + size]
        assert int(kept.sum()) % 8 == 0 or int(kept.sum()) == size
        assert int(kept.sum()) - int(old.sum()) < 8
        added = kept & ~old
        if added.any() and (~kept).any():  # what was added is used at least as often as the rest
            u = usage[offset:offset + size]
            assert float(u[added].min()) >= float(u[~kept].max())
        offset += size


def test_reuse_with_rounded_kernels(setup):
    model, mods, train, test = setup
    sub = mwt.reuse(model, mods, [0, 3], train, test_data=test, epochs=0, device="cpu",
                    round_kernels=8)
    assert sub.report["round_kernels"] == 8
    assert sub.report["kernel_share"] >= mods.kernels_for([0, 3]).float().mean().item()
    for bad in (0, 2.5, True, "8"):
        with pytest.raises(mwt.MwtError, match="round_kernels"):
            mwt.reuse(model, mods, [0, 3], train, epochs=0, round_kernels=bad)
