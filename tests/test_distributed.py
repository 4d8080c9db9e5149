"""Data-parallel training on the CPU (gloo, 2 processes started by torchrun) against one process.

Each case starts real processes, so the file takes some seconds; the worker is
``tests/ddp_worker.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import mwt
from mwt.config import TrainConfig

WORKER = Path(__file__).with_name("ddp_worker.py")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def torchrun(*args, nproc: int = 2, cwd=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=cwd, timeout=240)


def plain(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                          env=_env(), timeout=240)


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def step_results(tmp_path_factory):
    """Parameters after one step: one process (batch 128), two ranks (2 x 64), two ranks with
    per-rank losses."""
    dirs = {k: tmp_path_factory.mktemp(k) for k in ("one", "two", "local")}
    _ok(plain(WORKER, dirs["one"], "train"))
    _ok(torchrun(WORKER, dirs["two"], "train"))
    _ok(torchrun(WORKER, dirs["local"], "train", "--local-losses"))
    return {k: load_file(str(d / "params.safetensors")) for k, d in dirs.items()}


def test_two_ranks_take_the_same_step_as_one_process(step_results):
    one, two = step_results["one"], step_results["two"]
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)


@pytest.mark.parametrize("method", ["nemo", "moda"])
def test_every_method_takes_the_same_step_on_two_ranks_as_on_one(tmp_path, method):
    """NeMo's and MODA's losses see the global batch too (each rank sees two of the four
    classes, so per-rank losses would move the weights differently)."""
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _ok(plain(WORKER, one, "train", "--method", method))
    _ok(torchrun(WORKER, two, "train", "--method", method))
    a, b = (load_file(str(d / "params.safetensors")) for d in (one, two))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_local_losses_give_another_step(step_results):
    one, local = step_results["one"], step_results["local"]
    gates = [k for k in one if "_gate." in k]
    assert gates
    # Each rank sees two of the four classes: its own coupling pairs only, so the gates move
    # differently, by far more than the tolerance the equivalence test allows.
    assert max(float((one[k] - local[k]).abs().max()) for k in gates) > 5e-5


def test_two_ranks_train_the_fused_batchnorm_as_plain_batchnorm(tmp_path):
    # BatchNorm in train mode: each rank normalises with its own shard's statistics and DDP
    # broadcasts rank 0's running statistics; the fused op must do exactly what BatchNorm then
    # the mask does there (the equivalence test above freezes BatchNorm, so it runs unfused).
    fused, unfused = tmp_path / "fused", tmp_path / "unfused"
    fused.mkdir()
    unfused.mkdir()
    _ok(torchrun(WORKER, fused, "train-bn"))
    _ok(torchrun(WORKER, unfused, "train-bn", "--unfused"))
    a = load_file(str(fused / "params.safetensors"))
    b = load_file(str(unfused / "params.safetensors"))
    # 3 BatchNorms, 2 of them gated, 2 steps of one batch, plus the epochs' test passes: rank 0
    # ran the fused op in training and nothing unfused did
    assert a.pop("fused_calls").item() >= 4 and b.pop("fused_calls").item() == 0
    assert a.keys() == b.keys() and any("running_var" in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    from ddp_worker import TinyCNN

    start = mwt.make_modular(TinyCNN())
    assert not torch.allclose(a["b2.running_var"], start.b2.running_var)  # they trained


def test_modularize_over_two_ranks_gives_the_module_set_of_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    _ok(plain(WORKER, one, "modularize"))
    _ok(torchrun(WORKER, two, "modularize"))
    a, b = mwt.ModuleSet.load(one), mwt.ModuleSet.load(two)
    assert torch.equal(a.masks, b.masks)
    torch.testing.assert_close(a.frequencies, b.frequencies)
    torch.testing.assert_close(a.gate_means, b.gate_means)
    assert torch.equal(a.counts, b.counts)
    assert a.cohesion == pytest.approx(b.cohesion) and a.coupling == pytest.approx(b.coupling)


def test_cli_under_torchrun_writes_once_and_resumes_in_one_process(tmp_path):
    out = tmp_path / "run"
    train = ["-m", "mwt", "train", "--model", "simcnn", "--width", "0.0625", "--dataset", "demo",
             "--batch-size", "256", "--device", "cpu", "--no-progress", "--out", out]
    _ok(torchrun(*train, "--epochs", "1"))
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    _ok(plain("-m", "mwt", "train", "--resume", "--epochs", "2", "--out", out, "--no-progress"))
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 1
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert not list(out.glob(".mwt-tmp-*"))


def test_sync_bn_on_the_cpu_is_refused_under_several_ranks(tmp_path):
    proc = torchrun("-m", "mwt", "train", "--model", "simcnn", "--width", "0.0625",
                    "--dataset", "demo", "--epochs", "1", "--device", "cpu", "--sync-bn",
                    "--out", tmp_path / "run")
    assert proc.returncode != 0
    assert "mwt: error: --sync-bn needs CUDA" in proc.stderr
    # torchrun reports the failed child with its own traceback; ours is one line, no MwtError.
    assert "MwtError" not in proc.stderr


def test_batch_too_small_for_the_ranks_is_one_clear_error(monkeypatch):
    from mwt.train import _check_distributed

    monkeypatch.setattr(mwt.distributed, "world_size", lambda: 2)  # two ranks, no processes
    with pytest.raises(mwt.MwtError, match="too small"):
        _check_distributed(TrainConfig(batch_size=3), torch.device("cpu"))
