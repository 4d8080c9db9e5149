"""Why folded gates score chance before fine-tuning, measured on a modularized run.

For a few M-class sub-tasks (the first M classes of a seeded permutation) this cuts the mixed
module with its gates removed, kept and folded (``mwt.reuse``, no fine-tuning), with and without
its BatchNorm statistics recalibrated on the sub-task's training images, and prints two figures
per module on the test images of the M classes:

- accuracy of its N-way logits restricted to the M classes (what ``mwt reuse`` reports as
  "before fine-tuning");
- spread: the standard deviation over test images of each logit, averaged over the N logits.
  A module whose spread is near zero computes the same output for every image: its accuracy is
  exactly 1/M, whatever the classes.

    mwt demo --quick     # writes runs/mwt-demo-quick/modular, modularized at tau 0.9
    python scripts/folded_gates.py runs/mwt-demo-quick/modular --sizes 2 4 10
"""

from __future__ import annotations

import argparse
import sys

import torch

from mwt.data import as_tensors
from mwt.inference import batches, evaluating
from mwt.reuse import reuse
from mwt.runs import load_modules, load_run, run_dataset

STARTS = {"removed": {}, "kept": {"keep_gates": True}, "folded": {"fold_gates": True}}


@torch.no_grad()
def logit_spread(module, data) -> float:
    """Mean over the module's outputs of their standard deviation over ``data``'s images."""
    x, y = as_tensors(data)
    with evaluating(module):
        out = torch.cat([module(xb) for xb, _ in batches(x, y, 512, "cpu")])
    return float(out.std(0).mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a modularized modular run (mwt modularize)")
    p.add_argument("--tau", type=float, default=None)
    p.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 10])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    mods = load_modules(args.run, args.tau)
    model, config = load_run(args.run, "cpu")
    train_data = run_dataset(config, "train", args.data_dir)
    test_data = run_dataset(config, "test", args.data_dir)
    order = torch.randperm(len(mods.classes), generator=torch.Generator().manual_seed(args.seed))
    print(f"run {args.run}, module set at tau {mods.tau:.2f}; test images of the M classes")
    print("| M | classes | gates | BN recalibrated | accuracy % | logit spread |")
    print("|---|---|---|---|---|---|")
    for m in args.sizes:
        classes = sorted(order[:m].tolist())
        for start, options in STARTS.items():
            for recal in (False, True):
                sub = reuse(model, mods, classes, train_data, test_data=test_data, epochs=0,
                            recalibrate_bn=recal, device="cpu", **options)
                test = test_data.subset(torch.isin(test_data.labels, torch.tensor(classes)))
                acc = 100 * sub.report["acc_before_finetune"]["test"]
                print(f"| {m} | {' '.join(map(str, classes))} | {start} | "
                      f"{'yes' if recal else 'no'} | {acc:.1f} | "
                      f"{logit_spread(sub.module, test):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
