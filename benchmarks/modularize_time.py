"""Modularizing time against one plain no-grad pass over the training set (the floor).

Target (benchmarks/README.md): modularize / pass <= 1.3. Both run in this process on the same
data and device.

    python benchmarks/modularize_time.py runs/vgg [--tau 0.9]
"""

import argparse
import json
import time

import torch

import mwt
from mwt.checkpoint import load_run
from mwt.runs import run_dataset


@torch.no_grad()
def plain_pass(model, x, batch_size: int) -> float:
    model.eval()
    t0 = time.perf_counter()
    for start in range(0, len(x), batch_size):
        model(x[start:start + batch_size])
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--tau", type=float, default=0.9)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    model, config = load_run(args.run, args.device)
    data = run_dataset(config, "train").to(args.device)
    plain_pass(model, data.images[:args.batch_size], args.batch_size)  # warm-up
    t_pass = plain_pass(model, data.images, args.batch_size)
    t0 = time.perf_counter()
    mods = mwt.modularize(model, data, args.tau, batch_size=args.batch_size, device=args.device)
    t_mod = time.perf_counter() - t0
    print(json.dumps({"run": args.run, "samples": len(data), "device": args.device,
                      "pass_s": t_pass, "modularize_s": t_mod, "ratio": t_mod / t_pass,
                      "breakdown_s": mods.seconds, "krr": mods.krr, "cohesion": mods.cohesion,
                      "coupling": mods.coupling}, indent=2))


if __name__ == "__main__":
    main()
