"""The fused BatchNorm's batch statistics: one pass only (before issue 15) against one pass plus
a shifted second pass where a channel's mean is large against its spread (``mwt.fusion``), in
the training step of a trained modular run, steps alternated in one process.

A freshly initialised model never takes the second pass; a trained one does in some layers
(27% of the gated BatchNorm calls of the quick demo's vgg16), so the cost is measured there.

    python benchmarks/batch_stats.py --run runs/mwt-demo-quick/modular [--steps 12] [--threads 1]
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import mwt
from mwt import fusion
from mwt.checkpoint import load_run
from mwt.losses import modular_objective


def one_pass_stats(x):
    """The former ``_batch_stats``: E[x^2] - E[x]^2 from per-(sample, channel) float32 sums."""
    b, c = x.shape[:2]
    flat = x.reshape(b * c, 1, -1)
    sums = x.sum(dim=(2, 3)).sum(0, dtype=torch.float64)
    squares = torch.bmm(flat, flat.transpose(1, 2)).view(b, c).sum(0, dtype=torch.float64)
    n = x.numel() // c
    mean = sums / n
    var = (squares / n - mean * mean).clamp_min_(0)
    return mean.to(x.dtype), var.to(x.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained modular run directory")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    net, config = load_run(args.run)
    data = mwt.load_dataset(config["dataset"], "train")
    x, y = data.images[:args.batch_size], data.labels[:args.batch_size]
    view = fusion.training_view(net).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.0)  # the step's cost, weights unchanged
    second_passes = [0, 0]
    stable = fusion._batch_stats
    sums = fusion._sums

    def counted_sums(t):
        second_passes[0] += 1
        return sums(t)

    def step():
        opt.zero_grad()
        logits, masks = view(x, return_masks=True)
        loss = modular_objective(F.cross_entropy(logits, y), masks, y, 0.5, 1.5,
                                 num_classes=len(data.classes))[0]
        loss.backward()
        opt.step()

    times = {"one_pass": [], "stable": []}
    fusion._sums = counted_sums
    for _ in range(args.steps):
        for name, stats in (("one_pass", one_pass_stats), ("stable", stable)):
            fusion._batch_stats = stats
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    fusion._batch_stats, fusion._sums = stable, sums
    calls = args.steps * sum(isinstance(m, fusion.GatedBatchNorm) for m in view.modules())
    warm = {k: v[2:] for k, v in times.items()}
    print(json.dumps({
        "run": args.run, "threads": args.threads, "batch_size": args.batch_size,
        "torch": torch.__version__,
        "median_s": {k: round(statistics.median(v), 4) for k, v in warm.items()},
        "min_s": {k: round(min(v), 4) for k, v in warm.items()},
        "stable_over_one_pass": round(statistics.median(warm["stable"])
                                      / statistics.median(warm["one_pass"]), 3),
        "second_pass_share": round((second_passes[0] - calls) / calls, 3),
    }, indent=2))


if __name__ == "__main__":
    main()
