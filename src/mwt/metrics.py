"""Jaccard-index metrics of modularity (paper Eq. 1-3) and the kernel retention rate.

A "kernel set" is a row of a 0/1 (or bool) matrix over the K convolution kernels of a model: the
kernels a sample activates, or the kernels a module keeps. All pairwise work is done with matrix
products of 0/1 matrices, in row blocks, so cohesion over a 60,000-sample training set takes
seconds and bounded memory rather than a Python loop over 1.8e8 pairs per class.
"""

import torch
from torch import Tensor

from mwt.errors import MwtError

# Rows per block of a pairwise computation: a 4096 x 4096 float64 block is 128 MiB at most.
_BLOCK = 4096


def _as_sets(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise MwtError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise MwtError(f"{name} must be a 2-D [sets, kernels] tensor, got shape {tuple(x.shape)}")
    if x.dtype != torch.bool:
        if x.is_floating_point() or x.is_complex():
            if not torch.all((x == 0) | (x == 1)):
                raise MwtError(f"{name} must hold only 0 and 1 (or be bool)")
        x = x != 0
    return x


def _counts_dtype(k: int) -> torch.dtype:
    # float32 represents every integer below 2^24 exactly, so intersection counts computed by a
    # float32 matmul are exact while K is below that; beyond it fall back to float64.
    return torch.float32 if k < 2**24 else torch.float64


def _jaccard_block(a: Tensor, b: Tensor, size_a: Tensor, size_b: Tensor) -> Tensor:
    """Eq. 1, JI(A, B) = |A ∩ B| / |A ∪ B|, for all rows of 0/1 float ``a`` against ``b``."""
    inter = a @ b.T
    # Sizes and counts are integers below 2^24 (or float64), so the union is exact in a's dtype.
    union = size_a[:, None] + size_b[None, :] - inter
    # Two empty sets are identical, so their JI is 1 (keeps JI(A, A) == 1 for every A).
    both_empty = union == 0
    # Divide in float64, in place: a 4096 x 4096 block is 128 MiB per float64 temporary.
    return inter.double().div_(union.clamp_min_(1)).masked_fill_(both_empty, 1.0)


def jaccard_matrix(a: Tensor, b: Tensor | None = None) -> Tensor:
    """Pairwise Jaccard indices (paper Eq. 1) of the rows of ``a`` [n, K] and ``b`` [m, K].

    Returns a float64 [n, m] tensor on ``a``'s device; ``b`` defaults to ``a``. The JI of two
    empty sets is 1.
    """
    a = _as_sets(a, "a")
    b = a if b is None else _as_sets(b, "b")
    if a.shape[1] != b.shape[1]:
        raise MwtError(f"a and b must have the same number of kernels, got {a.shape[1]} and "
                       f"{b.shape[1]}")
    b = b.to(a.device)
    dt = _counts_dtype(a.shape[1])
    af, bf = a.to(dt), b.to(dt)
    size_a, size_b = af.sum(1), bf.sum(1)
    out = torch.empty((a.shape[0], b.shape[0]), dtype=torch.float64, device=a.device)
    for i in range(0, a.shape[0], _BLOCK):
        out[i:i + _BLOCK] = _jaccard_block(af[i:i + _BLOCK], bf, size_a[i:i + _BLOCK], size_b)
    return out


def _mean_pairwise_ji(sets: Tensor) -> float:
    """Mean JI over the n(n-1)/2 unordered pairs of distinct rows (by index) of bool ``sets``."""
    n = sets.shape[0]
    # Trained modular models give few distinct kernel sets per class: weight unique rows by
    # their counts instead of comparing all n^2 rows.
    uniq, counts = torch.unique(sets, dim=0, return_counts=True)
    dt = _counts_dtype(sets.shape[1])
    u = uniq.to(dt)
    sizes = u.sum(1)
    c = counts.double()
    total = torch.zeros((), dtype=torch.float64, device=sets.device)
    for i in range(0, u.shape[0], _BLOCK):
        # JI is symmetric: compute the upper block triangle and count off-diagonal blocks twice.
        for j in range(i, u.shape[0], _BLOCK):
            ji = _jaccard_block(u[i:i + _BLOCK], u[j:j + _BLOCK], sizes[i:i + _BLOCK],
                                sizes[j:j + _BLOCK])
            total += (1 if i == j else 2) * (c[i:i + _BLOCK] @ ji @ c[j:j + _BLOCK])
    # The double sum counts every ordered pair plus the n self-pairs (JI = 1 each); removing the
    # self-pairs and dividing by n(n-1) ordered pairs gives the mean over unordered pairs.
    return float((total - n) / (n * (n - 1)))


def jaccard_cohesion(kernel_sets: Tensor, labels: Tensor, module_masks: Tensor | None = None,
                     per_class: bool = False) -> float | Tensor:
    """Cohesion (paper Eq. 2): per class, mean JI over unordered pairs of its samples' kernel sets.

    ``kernel_sets`` [M, K] are the kernels each sample activates and ``labels`` [M] its class.
    With ``module_masks`` [N, K] (row c = module c's kernels), each class-c sample's set is first
    restricted to module c's kernels, as the reference code does. Classes with fewer than two
    samples have no pairs and are skipped. Returns the mean over classes, or with ``per_class``
    a float64 [N] tensor (NaN for skipped classes; N = number of modules, else max label + 1).
    """
    sets = _as_sets(kernel_sets, "kernel_sets")
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        raise MwtError("labels must be a 1-D tensor of class indices")
    if labels.shape[0] != sets.shape[0]:
        raise MwtError(f"labels has {labels.shape[0]} entries but kernel_sets has "
                       f"{sets.shape[0]} rows")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise MwtError("labels must be an integer tensor of class indices")
    labels = labels.to(sets.device)
    if labels.numel() and int(labels.min()) < 0:
        raise MwtError("labels must be non-negative class indices")
    max_label = int(labels.max()) if labels.numel() else -1
    masks = None
    if module_masks is not None:
        masks = _as_sets(module_masks, "module_masks").to(sets.device)
        if masks.shape[1] != sets.shape[1]:
            raise MwtError(f"module_masks covers {masks.shape[1]} kernels but kernel_sets covers "
                           f"{sets.shape[1]}")
        if max_label >= masks.shape[0]:
            raise MwtError(f"label {max_label} has no module: module_masks has only "
                           f"{masks.shape[0]} rows")
    num_classes = masks.shape[0] if masks is not None else max_label + 1

    result = torch.full((num_classes,), float("nan"), dtype=torch.float64)
    for c in range(num_classes):
        class_sets = sets[labels == c]
        if class_sets.shape[0] < 2:
            continue
        if masks is not None:
            class_sets = class_sets & masks[c]
        result[c] = _mean_pairwise_ji(class_sets)
    if per_class:
        return result.to(sets.device)
    valid = result[~torch.isnan(result)]
    if valid.numel() == 0:
        raise MwtError("cohesion needs at least one class with two or more samples")
    return float(valid.mean())


def jaccard_coupling(module_masks: Tensor, per_pair: bool = False) -> float | Tensor:
    """Coupling (paper Eq. 3): mean JI over all unordered pairs of modules' kernel sets.

    ``module_masks`` [N, K] holds one module per row. With ``per_pair`` returns the full float64
    [N, N] matrix of JIs (diagonal 1).
    """
    masks = _as_sets(module_masks, "module_masks")
    ji = jaccard_matrix(masks)
    if per_pair:
        return ji
    n = masks.shape[0]
    if n < 2:
        raise MwtError("coupling needs at least two modules")
    iu = torch.triu_indices(n, n, offset=1, device=ji.device)
    return float(ji[iu[0], iu[1]].mean())


def batch_jaccard(masks, labels: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The paper's Figure 5 figures of one training batch: Jaccard cohesion (Eq. 2) and coupling
    (Eq. 3) of the batch's kernel sets, "without filtering" (section 4.2).

    ``masks``: the batch's gate outputs (one [B, K_l] tensor per gated layer, or one [B, K]);
    a sample's kernel set is the kernels whose mask is > 0. Cohesion: per class with two or more
    samples in the batch, the mean JI of its sample pairs, averaged over those classes. Coupling:
    each class's module is the union of its samples' sets (no threshold: a batch cannot estimate
    how often a kernel is used), and the JI is averaged over the pairs of classes present.
    Device tensors, no host sync and no data-dependent branch, so a training step can record
    them every iteration (0 where a batch has no such pair).
    """
    layers = [masks] if isinstance(masks, Tensor) else list(masks)
    sets = torch.cat([m.detach() > 0 for m in layers], dim=1).float()      # [B, K]
    onehot = torch.nn.functional.one_hot(labels, num_classes).float()        # [B, N]

    def ji(a: Tensor) -> Tensor:
        inter = a @ a.T
        size = a.sum(1)
        union = size[:, None] + size[None, :] - inter
        return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))

    n = onehot.sum(0)
    same = torch.diagonal(onehot.T @ ji(sets) @ onehot) - n                   # drop self-pairs
    pairs = n * (n - 1)
    valid = (pairs > 0).float()
    cohesion = (same / pairs.clamp_min(1) * valid).sum() / valid.sum().clamp_min(1)
    modules = ((onehot.T @ sets) > 0).float()                                 # [N, K]
    present = (n > 0).float()
    upper = torch.triu(torch.ones(num_classes, num_classes, device=sets.device), diagonal=1)
    both = present[:, None] * present[None, :] * upper
    coupling = (ji(modules) * both).sum() / both.sum().clamp_min(1)
    return cohesion, coupling


def kernel_retention_rate(module_masks: Tensor) -> float:
    """KRR: mean over modules of the fraction of the model's kernels (columns) a module keeps."""
    masks = _as_sets(module_masks, "module_masks")
    if masks.numel() == 0:
        raise MwtError("module_masks must have at least one module and one kernel")
    return float(masks.double().mean())
