"""Cohesion + coupling losses: the linear form (mwt.losses) against the former [L, B, B] form.

For global batches B in 128..4096 and 1,000 or 5,000 gated kernels split over 13 layers in
VGG16's proportions (64, 64, 128, 128, 256 x3, 512 x6), 10 classes, masks ReLU(tanh(randn)):

* ``*_s``: one forward + backward (both losses through ``modular_objective``, gradients w.r.t.
  the masks), median (and minimum) over the timed repetitions; the two forms alternate, same data.
* ``*_peak_rss_mib``: growth of the process's peak resident set (Linux VmHWM, reset through
  /proc/self/clear_refs after malloc_trim) over one forward + backward, above the resident set
  just before it. It counts every page the pass touches, the mask gradients included;
  noisy at small sizes (allocator and page granularity).
* ``*_largest_tensor_mib``: the largest tensor any op creates in that pass (seen through a
  TorchDispatchMode), mask gradients included. Old form: the [L, B, B] cosines and their gradient.

The old form is the reference oracle ``_reference_losses`` kept in tests/test_losses.py, run in
float32 as the old form ran (the tests run it in float64).
``step_share`` times one full modular training step of vgg16 (width 1.0, CIFAR-sized input,
SGD; batch 1024 = 8 x 128, or 128 with --quick) and the two losses on that step's masks: the
loss's share of the step. On a shared machine only ratios taken side by side mean much.

    PYTHONPATH=src python benchmarks/loss_scaling.py [--quick] [--threads 1] [--step-batch 128]

A default run took 140 s with --threads 1 on a busy 2-core machine (the old form at batch 4096
~ 6-13 s a pass, the two batch-1024 vgg16 steps ~ 1 minute, ~4 GiB); --quick 23 s.
"""

import argparse
import ctypes
import importlib.util
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import mwt
from mwt.losses import modular_objective

VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
CLASSES = 10
ALPHA, BETA = 0.5, 1.5


def _load_reference():
    path = Path(__file__).resolve().parents[1] / "tests" / "test_losses.py"
    spec = importlib.util.spec_from_file_location("_mwt_test_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module._reference_losses


_reference_losses = _load_reference()


def old_form(masks, labels):
    ch, cp = _reference_losses(masks, labels, "classes", dtype=torch.float32)
    return ALPHA * ch + BETA * cp


def new_form(masks, labels):
    loss, _, _ = modular_objective(torch.zeros(()), masks, labels, ALPHA, BETA, "classes")
    return loss


def split(total: int) -> list[int]:
    widths = [max(1, round(w * total / sum(VGG16_WIDTHS))) for w in VGG16_WIDTHS]
    widths[-1] += total - sum(widths)
    return widths


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


_LIBC = ctypes.CDLL("libc.so.6")


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


def fwd_bwd(form, masks, labels):
    loss = form(masks, labels)
    grads = torch.autograd.grad(loss, masks)
    return loss.detach(), grads


def memory_pass(form, masks, labels) -> dict:
    """One forward + backward: peak RSS growth (MiB) and the largest tensor created (MiB)."""
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                      # resets VmHWM to the current RSS
    base = _status_kib("VmRSS")
    with LargestTensor() as probe:
        loss, grads = fwd_bwd(form, masks, labels)
    peak = _status_kib("VmHWM")
    del grads
    return {"peak_rss_mib": round((peak - base) / 1024, 1),
            "largest_tensor_mib": round(probe.numel * 4 / 2**20, 2), "loss": loss.item()}


def scaling(batch: int, total: int, reps: int, budget_s: float) -> dict:
    gen = torch.Generator().manual_seed(batch + total)
    labels = torch.randint(0, CLASSES, (batch,), generator=gen)
    masks = [torch.relu(torch.tanh(torch.randn(batch, w, generator=gen))).requires_grad_()
             for w in split(total)]
    forms = {"old": old_form, "new": new_form}
    row = {"batch": batch, "kernels": total, "layers": len(masks), "classes": CLASSES}
    first = {}
    for name, form in forms.items():                      # also the warm-up pass
        t = time.perf_counter()
        mem = memory_pass(form, masks, labels)
        first[name] = time.perf_counter() - t
        row.update({f"{name}_{k}": v for k, v in mem.items() if k != "loss"})
        row[f"{name}_loss"] = mem["loss"]
    # fewer repetitions where the old form alone would blow the time budget
    reps = max(1, min(reps, int(budget_s / max(first["old"], 1e-9))))
    times = {name: [] for name in forms}
    for _ in range(reps):
        for name, form in forms.items():
            t = time.perf_counter()
            fwd_bwd(form, masks, labels)
            times[name].append(time.perf_counter() - t)
    for name in forms:
        row[f"{name}_s"] = round(statistics.median(times[name]), 5)
        row[f"{name}_min_s"] = round(min(times[name]), 5)
    row["reps"] = reps
    row["time_ratio_new_old"] = round(row["new_s"] / row["old_s"], 4)
    row["time_ratio_of_min_new_old"] = round(row["new_min_s"] / row["old_min_s"], 4)
    row["peak_rss_ratio_new_old"] = round(row["new_peak_rss_mib"]
                                          / max(row["old_peak_rss_mib"], 0.1), 4)
    row["largest_tensor_ratio_new_old"] = round(row["new_largest_tensor_mib"]
                                                / row["old_largest_tensor_mib"], 4)
    row["abs_diff_loss"] = abs(row.pop("new_loss") - row.pop("old_loss"))
    return row


def step_share(batch: int, steps: int, reps: int) -> dict:
    torch.manual_seed(0)
    model = mwt.make_modular(mwt.create_model("vgg16", CLASSES, 3, 1.0)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32)
    y = torch.randint(0, CLASSES, (batch,))
    step_times, masks = [], None
    for i in range(steps + 1):                            # the first step is a warm-up
        t = time.perf_counter()
        logits, masks = model(x, return_masks=True)
        loss, _, _ = modular_objective(F.cross_entropy(logits, y), masks, y, ALPHA, BETA)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i:
            step_times.append(time.perf_counter() - t)
    masks = [m.detach().requires_grad_() for m in masks]
    times = {"old": [], "new": []}
    for i in range(reps + 1):
        for name, form in (("old", old_form), ("new", new_form)):
            t = time.perf_counter()
            fwd_bwd(form, masks, y)
            if i:
                times[name].append(time.perf_counter() - t)
    step = statistics.median(step_times)
    out = {"model": "vgg16", "width": 1.0, "batch": batch, "gated_layers": len(masks),
           "gated_kernels": sum(m.shape[1] for m in masks), "steps": steps,
           "step_s": round(step, 4)}
    for name, ts in times.items():
        out[f"{name}_loss_s"] = round(statistics.median(ts), 5)
        out[f"{name}_loss_share_of_step"] = round(statistics.median(ts) / step, 5)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="batches 128, 1024, 2048; one timed repetition; step at batch 128")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096])
    p.add_argument("--kernels", type=int, nargs="+", default=[1000, 5000])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--old-budget-s", type=float, default=10.0,
                   help="cap on the old form's timed seconds per size (fewer repetitions)")
    p.add_argument("--step-batch", type=int, default=1024,
                   help="vgg16 step batch (1024: ~25 s a step on one core, ~4 GiB)")
    p.add_argument("--steps", type=int, default=1, help="timed steps after one warm-up step")
    p.add_argument("--no-step", action="store_true")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help="torch threads (1 is steadier on a busy machine)")
    args = p.parse_args()
    if args.quick:
        args.batches, args.reps, args.step_batch = [128, 1024, 2048], 1, 128
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    scaling(64, 200, 1, 1.0)                              # one-time allocations and lazy init
    result = {"device": "cpu", "threads": torch.get_num_threads(), "reduction": "classes",
              "scaling": [scaling(b, k, args.reps, args.old_budget_s)
                          for k in args.kernels for b in args.batches]}
    if not args.no_step:
        result["step_share"] = step_share(args.step_batch, args.steps, max(args.reps, 1))
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
