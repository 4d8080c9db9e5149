"""Time jaccard_cohesion on a synthetic Fashion-MNIST-sized kernel-set matrix; print JSON.

60,000 samples x 1,040 kernels, 10 classes of 6,000: each class has a prototype set of ~20% of
the kernels and each sample flips ~2% of its bits at random (so nearly every row is distinct, the
worst case for the deduplication). Run: PYTHONPATH=src python benchmarks/jaccard_speed.py
"""

import json
import time

import torch

from mwt.metrics import jaccard_cohesion, jaccard_coupling

N_SAMPLES, N_KERNELS, N_CLASSES = 60_000, 1_040, 10


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    prototypes = torch.rand(N_CLASSES, N_KERNELS, generator=gen) < 0.2
    labels = torch.arange(N_SAMPLES) % N_CLASSES
    flips = torch.rand(N_SAMPLES, N_KERNELS, generator=gen) < 0.02
    sets = prototypes[labels] ^ flips
    # Modules keep their prototype plus a few extra kernels, as trained modules do.
    masks = prototypes | (torch.rand(N_CLASSES, N_KERNELS, generator=gen) < 0.05)

    result = {"samples": N_SAMPLES, "kernels": N_KERNELS, "classes": N_CLASSES,
              "threads": torch.get_num_threads(),
              "distinct_rows": int(torch.unique(sets, dim=0).shape[0])}
    t = time.perf_counter()
    result["cohesion"] = jaccard_cohesion(sets, labels)
    result["seconds_cohesion"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    result["cohesion_masked"] = jaccard_cohesion(sets, labels, masks)
    result["seconds_cohesion_masked"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    result["coupling"] = jaccard_coupling(masks)
    result["seconds_coupling"] = round(time.perf_counter() - t, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
