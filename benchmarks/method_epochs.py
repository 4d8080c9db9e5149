"""Training steps of each method (MwT, NeMo, MODA) against standard training, side by side.

Target (issue 18, benchmarks/README.md): a MODA step within 1.05x of the standard step, since
its signals are the activations the forward already computes. MwT and NeMo are measured beside
it for the methods table. Each round runs ``--steps`` optimisation steps of every method on the
same pre-made batches (the step ``mwt.train`` runs: ``_step_function``, gates fused into
BatchNorm, MODA's activation view), each on a fresh copy of the same initial weights, in an
order that rotates between rounds; the figure is the ratio of medians over rounds.

    python benchmarks/method_epochs.py [--model vgg16 --width 0.25] [--steps 30 --rounds 5]
"""

import argparse
import copy
import json
import statistics

import torch
from epoch_time import bare_epoch  # this folder's: the steps mwt.train runs, bare

import mwt
from mwt.config import TrainConfig
from mwt.methods import METHODS


def timed_steps(model, config: TrainConfig, batches, num_classes: int) -> float:
    """Seconds per step, after one untimed warm-up step."""
    bare_epoch(model, batches[:1], config, num_classes)
    return bare_epoch(model, batches, config, num_classes) / len(batches)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = mwt.load_dataset(args.dataset, "train")
    torch.manual_seed(0)
    base = mwt.create_model(args.model, data.num_classes, data.in_channels, args.width)
    perm = torch.randperm(len(data.labels), generator=torch.Generator().manual_seed(0))
    idx = perm[:args.steps * args.batch_size].split(args.batch_size)
    batches = [(data.images[i].contiguous(), data.labels[i].contiguous()) for i in idx]
    kinds = ["standard", *METHODS]
    times = {k: [] for k in kinds}
    for r in range(args.rounds):
        for k in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:
            method = "mwt" if k == "standard" else k
            config = TrainConfig(epochs=1, batch_size=args.batch_size, method=method).resolved(
                args.model, data.name, data.augmentation)
            model = copy.deepcopy(base)
            if k != "standard" and METHODS[k].gated:
                torch.manual_seed(0)
                model = mwt.make_modular(model)
            times[k].append(timed_steps(model, config, batches, data.num_classes))
    median = {k: statistics.median(v) for k, v in times.items()}
    print(json.dumps({
        "dataset": args.dataset, "model": args.model, "width": args.width,
        "batch_size": args.batch_size, "steps": args.steps, "rounds": args.rounds,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "step_s": times, "median_step_s": median,
        "ratio_to_standard": {k: median[k] / median["standard"] for k in METHODS}}, indent=2))


if __name__ == "__main__":
    main()
