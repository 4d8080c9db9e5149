"""Modular vs standard training step time, same model and batch, measured side by side.

Target (benchmarks/README.md): modular / standard <= 1.03 on CPU (<= 1.10 on GPU). Steps of
the two variants
alternate so that machine noise hits both alike. Both the median and the fastest step of each
are reported: on a shared host noise only ever adds time, so the ratio of minima is the steadier
figure.

    python benchmarks/step_time.py [--models vgg16 resnet18 simcnn rescnn] [--steps 5]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import mwt
from mwt.losses import modular_objective


def make_step(model, modular: bool, alpha=0.5, beta=1.5):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)

    def step(x, y):
        if modular:
            logits, masks = model(x, return_masks=True)
            loss, _, _ = modular_objective(F.cross_entropy(logits, y), masks, y, alpha, beta)
        else:
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if x.is_cuda:
            torch.cuda.synchronize()

    return step


def bench(name: str, batch: int, steps: int, warmup: int, device: str, width: float) -> dict:
    torch.manual_seed(0)
    standard = mwt.create_model(name, 10, 3, width).to(device).train()
    modular = mwt.make_modular(standard).to(device).train()
    runs = {"standard": make_step(standard, False), "modular": make_step(modular, True)}
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
    return {"model": name, "standard_s": med["standard"], "modular_s": med["modular"],
            "ratio": med["modular"] / med["standard"],
            "ratio_of_min": low["modular"] / low["standard"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=mwt.list_models())
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    results = [bench(m, args.batch, args.steps, args.warmup, args.device, args.width)
               for m in args.models]
    print(json.dumps({"device": args.device, "threads": torch.get_num_threads(),
                      "batch": args.batch, "width": args.width, "results": results}, indent=2))


if __name__ == "__main__":
    main()
