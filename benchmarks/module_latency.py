"""Extracted-module latency against the full model, next to their MAC ratio.

Three forms: as extracted, with BatchNorm folded into the convs (what `mwt export` writes), and
folded in channels_last memory format. Each result also says what the first, ungated conv
costs of the full model (``first_conv``), since every module keeps it whole.

Target (benchmarks/README.md): latency ratio within 1.25x of the MAC ratio (CPU, batch 128).
For a transformer, ``unit_block_mac_ratio`` is the MAC ratio of the attention and MLP blocks
alone (issue 20's target: <= 35% for a 2-class module). The "full model" is
the same architecture without gates. With ``--run DIR --classes ...`` the modules come from a
modularized run; otherwise each layer keeps a random share of its kernels.

    python benchmarks/module_latency.py --run runs/vgg --classes 0 3
    python benchmarks/module_latency.py --model vgg16 --keep 0.25 0.5
"""

import argparse
import copy
import json
import statistics
import time

import torch

import mwt
from mwt.inference import fold_batchnorm
from mwt.macs import unit_block_macs


@torch.no_grad()
def latency(model, x, repeats: int) -> float:
    model.eval()
    model(x)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_conv_cost(full, shape, x, repeats: int) -> dict:
    """What the first conv, which no module can drop (it reads the image and is not gated),
    costs of the full model: its MAC share, a floor under every module's MAC ratio, and its
    share of the latency (conv + BN + ReLU timed alone)."""
    total, per_layer = mwt.count_macs(full, shape, per_layer=True)
    name, conv = next((n, m) for n, m in full.named_modules() if isinstance(m, torch.nn.Conv2d))
    bn = next((m for m in full.modules() if isinstance(m, torch.nn.BatchNorm2d)), None)
    # A ViT's patch embedding has no BatchNorm or ReLU after it: the conv alone.
    stem = conv if bn is None else torch.nn.Sequential(conv, bn, torch.nn.ReLU())
    t_stem, t_full = [], []
    for _ in range(repeats):
        t_stem.append(latency(stem, x, 1))
        t_full.append(latency(full, x, 1))
    return {"layer": name, "mac_share": per_layer[name] / total,
            "latency_share": statistics.median(t_stem) / statistics.median(t_full)}


def compare(modular, kernels, shape, batch: int, repeats: int, label: str) -> dict:
    """Module vs full model, as extracted and with BatchNorm folded into the convs (the form
    `mwt export` writes); the MAC ratio is counted on the extracted pair (fvcore's rules)."""
    full = mwt.extract_module(modular, torch.ones_like(kernels))
    module = mwt.extract_module(modular, kernels)
    mac_ratio = mwt.count_macs(module, shape) / mwt.count_macs(full, shape)
    x = torch.randn(batch, *shape)
    out = {"module": label, "batch": batch, "kernel_share": kernels.float().mean().item(),
           "mac_ratio": mac_ratio, "first_conv": first_conv_cost(full, shape, x, repeats)}
    blocks_full = unit_block_macs(full, shape)
    if blocks_full:
        out["unit_block_mac_ratio"] = unit_block_macs(module, shape) / blocks_full
    folded = (fold_batchnorm(full), fold_batchnorm(module))
    last = tuple(copy.deepcopy(m).to(memory_format=torch.channels_last) for m in folded)
    forms = {"extracted": (full, module, x), "bn_folded": (*folded, x),
             "bn_folded_channels_last": (*last, x.to(memory_format=torch.channels_last))}
    for form, (f, m, xf) in forms.items():
        t_full, t_mod = [], []
        for _ in range(repeats):  # alternate the two to share machine noise
            t_full.append(latency(f, xf, 1))
            t_mod.append(latency(m, xf, 1))
        lat_ratio = statistics.median(t_mod) / statistics.median(t_full)
        out[form] = {"full_ms": 1e3 * statistics.median(t_full),
                     "module_ms": 1e3 * statistics.median(t_mod), "latency_ratio": lat_ratio,
                     "latency_over_mac_ratio": lat_ratio / mac_ratio}
    return out


def at_least_one_per_layer(modular, kernels):
    """``kernels`` with a layer's first kernel (or head) added where it keeps none: a layer of
    few units (a ViT's 4 heads) may draw none."""
    kernels, offset = kernels.clone(), 0
    for layer in mwt.gates.gated_layers(modular):
        if not bool(kernels[offset:offset + layer.kernels].any()):
            kernels[offset] = True
        offset += layer.kernels
    return kernels


def random_rounded(modular, kernels, multiple: int):
    """``kernels`` with random kernels added until each layer's count is a multiple."""
    kernels, offset = kernels.clone(), 0
    for layer in mwt.gates.gated_layers(modular):
        kept = kernels[offset:offset + layer.kernels]
        want = min(layer.kernels, -(-int(kept.sum()) // multiple) * multiple)
        free = torch.nonzero(~kept).flatten()
        kept[free[torch.randperm(len(free))[:want - int(kept.sum())]]] = True
        offset += layer.kernels
    return kernels


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default=None, help="a modularized run directory")
    p.add_argument("--classes", nargs="+", action="append", default=None,
                   help="class ids of one module (repeat the flag for several)")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--keep", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--batch", type=int, nargs="+", default=[128, 1])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--round", type=int, default=None, metavar="N",
                   help="also measure each module with its layers' kernel counts rounded up to "
                   "a multiple of N (the most used kernels with --run, random ones otherwise)")
    args = p.parse_args()
    results = []
    if args.run:
        from mwt.checkpoint import load_run
        from mwt.runs import load_modules

        modular, config = load_run(args.run)
        mods = load_modules(args.run)
        shape = (config["model"]["in_channels"], 28 if "mnist" in config["dataset"] else 32,
                 28 if "mnist" in config["dataset"] else 32)
        for classes in args.classes or [["0", "1"]]:
            variants = {"": mods.kernels_for(classes)}
            if args.round:
                from mwt.reuse import rounded_kernels

                variants[f", rounded to {args.round}"] = rounded_kernels(
                    mods, mods.class_ids(classes), args.round)
            for note, kernels in variants.items():
                for batch in args.batch:
                    results.append(compare(modular, kernels, shape, batch, args.repeats,
                                           f"classes {classes}{note}"))
    else:
        torch.manual_seed(0)
        modular = mwt.make_modular(mwt.create_model(args.model, 10, 3, args.width))
        for keep in args.keep:
            kernels = at_least_one_per_layer(modular,
                                             torch.rand(mwt.count_gated_kernels(modular)) < keep)
            variants = {"": kernels}
            if args.round:
                variants[f", rounded to {args.round}"] = random_rounded(modular, kernels,
                                                                        args.round)
            for note, k in variants.items():
                for batch in args.batch:
                    results.append(compare(modular, k, (3, 32, 32), batch, args.repeats,
                                           f"{args.model} random {keep:.0%} of kernels{note}"))
    print(json.dumps({"threads": torch.get_num_threads(), "torch": torch.__version__,
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
