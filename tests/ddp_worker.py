"""One process of the distributed tests: run by torchrun (2 ranks) or plainly (1 process).

    python tests/ddp_worker.py OUT_DIR train [--local-losses]
    python tests/ddp_worker.py OUT_DIR train-bn [--unfused]
    python tests/ddp_worker.py OUT_DIR modularize

``train``: one optimisation step of a tiny modular CNN on 128 seeded samples (global batch
128), BatchNorm frozen in eval mode, so that one process and two ranks of 64 must agree; rank 0
saves the parameters. ``train-bn``: two steps with BatchNorm in train mode, through the fused
gate+BatchNorm op (per-rank batch statistics, as nn.BatchNorm2d under DDP), or with
``--unfused`` through plain BatchNorm then the mask; rank 0 saves its state (buffers included)
and how many fused calls ran. ``modularize``: a module set of that model, saved by rank 0.
"""

import sys
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

import mwt
from mwt import distributed


class FrozenBN(nn.BatchNorm2d):
    """BatchNorm that stays in eval mode: per-rank batch statistics would differ by design.
    Named as a torch.nn module so that torch.fx keeps it a leaf when MODA traces the model."""

    def train(self, mode: bool = True):
        return super().train(False)


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.c3, self.b3 = nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.b2(self.c2(x)))
        x = torch.relu(self.b3(self.c3(x)))
        return self.head(x.mean((2, 3)))


def data():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(128) // 32  # rank 0 of 2 sees classes 0-1 only, rank 1 classes 2-3
    x = torch.randn(128, 1, 8, 8, generator=g) + y[:, None, None, None] * 0.5
    return x, y


FrozenBN.__module__ = "torch.nn.frozen_for_tests"


def _method() -> str:
    return sys.argv[sys.argv.index("--method") + 1] if "--method" in sys.argv else "mwt"


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    distributed.init_from_env("cpu")
    torch.manual_seed(0)
    if _method() == "moda":  # no gates: the standard model, its BatchNorms frozen
        model = TinyCNN()
        for name in ("b1", "b2", "b3"):
            setattr(model, name, FrozenBN(getattr(model, name).num_features))
        mwt.train(model, data(), epochs=1, batch_size=128, lr=0.1, method="moda",
                  augment=False, device="cpu", progress=False, verbose=False)
        if distributed.is_main():
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(out / "params.safetensors"))
        distributed.shutdown(wait=True)
        return
    model = mwt.make_modular(TinyCNN())
    with torch.no_grad():  # varied masks, so that the MwT losses have gradients to compare
        for layer in mwt.gates.gated_layers(model):
            gate = model.get_submodule(layer.gate)
            gate.fc2.bias.uniform_(-0.5, 1.0)
            gate.fc2.weight.mul_(5.0)
    if mode == "train-bn":
        train_bn(model, out, unfused="--unfused" in sys.argv)
        distributed.shutdown(wait=True)
        return
    for name in ("b1", "b2", "b3"):  # after tracing, which would look inside a subclass
        frozen = FrozenBN(getattr(model, name).num_features)
        frozen.load_state_dict(getattr(model, name).state_dict())
        setattr(model, name, frozen)
    if mode == "train":
        weights = {"alpha": 0.5, "beta": 1.5} if _method() == "mwt" else {"alpha": 1.0}
        mwt.train(model, data(), epochs=1, batch_size=128, lr=0.1, method=_method(),
                  **weights, augment=False, device="cpu", progress=False, verbose=False,
                  local_losses="--local-losses" in sys.argv)
        if distributed.is_main():
            save_file({k: v.contiguous() for k, v in model.state_dict().items()},
                      str(out / "params.safetensors"))
    elif mode == "modularize":
        mods = mwt.modularize(model.eval(), data(), tau=0.5)
        if distributed.is_main():
            mods.save(out)
    distributed.shutdown(wait=True)


def train_bn(model, out: Path, unfused: bool) -> None:
    from mwt import fusion

    calls = [0]
    forward = fusion.GatedBatchNorm.forward

    def counted(self, x, mask):
        calls[0] += 1
        return forward(self, x, mask)

    fusion.GatedBatchNorm.forward = counted
    if unfused:
        fusion.fusable = lambda bn: False  # training_view keeps BatchNorm, then the mask
    x, y = data()
    x = x * 3.0 + 2.0  # batch statistics far from the initial running ones
    mwt.train(model, (x, y), epochs=2, batch_size=128, lr=0.1, alpha=0.5, beta=1.5,
              augment=False, device="cpu", progress=False, verbose=False)
    if distributed.is_main():
        state = {k: v.contiguous().float() for k, v in model.state_dict().items()}
        state["fused_calls"] = torch.tensor([float(calls[0])])
        save_file(state, str(out / "params.safetensors"))


if __name__ == "__main__":
    main()
