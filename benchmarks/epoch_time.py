"""A whole training epoch through ``mwt.train`` against the bare steps on pre-made batches.

Target (benchmarks/README.md): the epoch within 1.05x of the bare forward + backward + update on
the same number of batches, so that data handling, augmentation, logging, metrics and the
checkpoint never limit training. Both sides use the step ``mwt.train`` runs (gates fused into
BatchNorm); the bare side skips the permutation, indexing, augmentation, progress bar, metrics
and files. The two alternate, each on a fresh copy of the same model.

    python benchmarks/epoch_time.py [--dataset fashion-mnist] [--model simcnn --width 0.25]
"""

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch

import mwt
from mwt.config import TrainConfig
from mwt.train import _step_function, _training_method, steps_per_epoch


def full_epoch(model, data, config: TrainConfig, out: Path) -> float:
    t0 = time.perf_counter()
    mwt.train(model, data, epochs=1, out=out, device="cpu", progress=True, verbose=True,
              config=config)
    return time.perf_counter() - t0


def bare_epoch(model, batches, config: TrainConfig, num_classes: int) -> float:
    method = _training_method(model, config)
    step = _step_function(model, config, method, torch.device("cpu"), False, num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          nesterov=config.nesterov)
    model.train()
    t0 = time.perf_counter()
    for x, y in batches:
        loss, _ = step(x, y, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="simcnn")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--standard", action="store_true")
    p.add_argument("--samples", type=int, default=None, help="first N training samples only")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    data = mwt.load_dataset(args.dataset, "train")
    if args.samples:
        data = data.subset(torch.arange(min(args.samples, len(data.labels))))
    torch.manual_seed(0)
    model = mwt.create_model(args.model, data.num_classes, data.in_channels, args.width)
    if not args.standard:
        model = mwt.make_modular(model)
    config = TrainConfig(epochs=1).resolved(args.model, data.name, data.augmentation)
    x, y = data.images, data.labels
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    steps = steps_per_epoch(len(y), config.batch_size)
    batches = [(x[i].contiguous(), y[i].contiguous())
               for i in perm[:steps * config.batch_size].split(config.batch_size)][:steps]
    full, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            full.append(full_epoch(copy.deepcopy(model), data, config, Path(tmp) / f"run{r}"))
            bare.append(bare_epoch(copy.deepcopy(model), batches, config, data.num_classes))
    print(json.dumps({
        "dataset": args.dataset, "samples": len(y), "steps": steps, "model": args.model,
        "width": args.width, "modular": not args.standard, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "epoch_s": full, "bare_s": bare,
        "ratio_of_min": min(full) / min(bare)}, indent=2))


if __name__ == "__main__":
    main()
