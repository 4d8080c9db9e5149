"""Modular vs standard training step time, same model and batch, measured side by side.

Target (benchmarks/README.md): modular / standard <= 1.03 on CPU (<= 1.10 on GPU). Three
variants: the standard model, the modular model as its graph is written (``unfused``: BatchNorm,
then the mask as its own pass), and the modular model as ``mwt.train`` runs it (each mask fused
into its BatchNorm, ``mwt.fusion``). Steps of the variants alternate so that machine noise hits
all alike. Both the median and the fastest step of each
are reported: on a shared host noise only ever adds time, so the ratio of minima is the steadier
figure.

    python benchmarks/step_time.py [--models vgg16 resnet18 simcnn rescnn] [--steps 5]
"""

import argparse
import copy
import json
import statistics
import time

import torch
import torch.nn.functional as F

import mwt
from mwt.fusion import fuse_gates
from mwt.losses import modular_objective


def make_step(model, modular: bool, alpha=0.5, beta=1.5, compile: bool = False):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def objective(x, y):
        if modular:
            logits, masks = model(x, return_masks=True)
            return modular_objective(F.cross_entropy(logits, y), masks, y, alpha, beta,
                                     num_classes=10)[0]
        return F.cross_entropy(model(x), y)

    objective = torch.compile(objective) if compile else objective

    def step(x, y):
        loss = objective(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def bench(name: str, batch: int, steps: int, warmup: int, device: str, width: float,
          compile: bool = False) -> dict:
    torch.manual_seed(0)
    standard = mwt.create_model(name, 10, 3, width).to(device).train()
    modular = mwt.make_modular(standard).to(device).train()
    fused = fuse_gates(copy.deepcopy(modular)).train()
    runs = {"standard": make_step(standard, False), "unfused": make_step(modular, True),
            "modular": make_step(fused, True)}
    if compile:  # torch.compile'd steps of their own copies (compiled once, in the warm-up)
        runs["standard_compiled"] = make_step(copy.deepcopy(standard), False, compile=True)
        runs["modular_compiled"] = make_step(fuse_gates(copy.deepcopy(modular)).train(), True,
                                             compile=True)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    times = {k: [] for k in runs}
    for i in range(warmup + steps):
        for kind, step in runs.items():
            t0 = time.perf_counter()
            step(x, y)
            if i >= warmup:
                times[kind].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    out = {"model": name, "standard_s": med["standard"], "modular_s": med["modular"],
           "unfused_s": med["unfused"],
           "ratio": med["modular"] / med["standard"],
           "ratio_of_min": low["modular"] / low["standard"],
           "unfused_ratio": med["unfused"] / med["standard"],
           "unfused_ratio_of_min": low["unfused"] / low["standard"]}
    if compile:
        out.update(standard_compiled_s=med["standard_compiled"],
                   modular_compiled_s=med["modular_compiled"],
                   compiled_ratio=med["modular_compiled"] / med["standard_compiled"],
                   compiled_ratio_of_min=low["modular_compiled"] / low["standard_compiled"],
                   compiled_over_eager_modular=med["modular_compiled"] / med["modular"])
    return out


def profile(name: str, batch: int, device: str, width: float, top: int) -> dict:
    """The ops that take the most self time in one modular step, unfused and fused."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as run_profiler

    torch.manual_seed(0)
    modular = mwt.make_modular(mwt.create_model(name, 10, 3, width)).to(device).train()
    variants = {"unfused": make_step(modular, True),
                "modular": make_step(fuse_gates(copy.deepcopy(modular)).train(), True)}
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    out = {}
    for kind, step in variants.items():
        step(x, y)  # warm-up
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
        with run_profiler(activities=activities) as prof:
            step(x, y)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        out[kind] = [{"op": e.key, "self_ms": e.self_cpu_time_total / 1e3,
                      "share": e.self_cpu_time_total / total} for e in events[:top]]
    return {"model": name, **out}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=mwt.list_models())
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd standard and modular steps")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="instead of timing, print the N ops with the most self time")
    args = p.parse_args()
    if args.profile:
        print(json.dumps([profile(m, args.batch, args.device, args.width, args.profile)
                          for m in args.models], indent=2))
        return
    results = [bench(m, args.batch, args.steps, args.warmup, args.device, args.width,
                     args.compile) for m in args.models]
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                      "batch": args.batch, "width": args.width, "results": results}, indent=2))


if __name__ == "__main__":
    main()
