"""Cohesion of CNNSplitter's modules as the MwT authors measured it for their Table 3.

The reference (``qibinhang/MwT``, ``src/exp_cnnsplitter_reusing/calculate_cohesion.py``) cuts each
class's module, runs it on that class's *test* images with a hook on every convolution, and takes
a sample's kernel set to be the kernels whose ReLU'd output has a positive mean; a module's
cohesion is the mean Jaccard index over all pairs of its class's samples, and the reported figure
is the mean over classes. Ours does the same on the cut module (:func:`mwt.extract.extract_module`)
with the section 4.2 rule of a standard model: a kernel is used when its BatchNorm output has a
positive element (the ReLU that follows keeps exactly those). Only the gated kernels (every conv
but the first) count, as in our KRR and in MwT's own cohesion; the reference also hooks the first
convolution.

The other figure, ``cohesion`` in a CNNSplitter report, is the paper's Eq. 2 as we compute it for
MwT: the standard model's kernel sets of the training samples, restricted to each module.
"""

import torch

from mwt.data import as_tensors
from mwt.extract import extract_module
from mwt.metrics import jaccard_matrix
from mwt.modularize import collect_kernel_sets


def reference_cohesion(model, masks: torch.Tensor, test_data, batch_size: int = 1024,
                       device=None) -> tuple[float, list[float]]:
    """(mean over classes, per class) of the cut modules' sample-pair Jaccard cohesion on their
    classes' test images; ``masks`` bool [classes, K]: module c keeps the kernels of row c. A
    class with fewer than two test images has no pair and is left out of the mean."""
    x_all, y_all = as_tensors(test_data)
    per_class = []
    for c in range(masks.shape[0]):
        idx = torch.nonzero(y_all == c).flatten()
        if len(idx) < 2:
            per_class.append(float("nan"))
            continue
        module = extract_module(model, masks[c].cpu())
        sets, _, _ = collect_kernel_sets(module, (x_all[idx], y_all[idx]), batch_size, device)
        ji = jaccard_matrix(sets)
        upper = torch.triu(torch.ones_like(ji, dtype=torch.bool), diagonal=1)
        per_class.append(float(ji[upper].mean()))
    valid = [v for v in per_class if v == v]
    return (sum(valid) / len(valid) if valid else float("nan")), per_class


__all__ = ["reference_cohesion"]
