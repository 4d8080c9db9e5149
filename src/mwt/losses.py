"""The MwT training losses on a batch of masks: cohesion (Eq. 4) and coupling (Eq. 5).

Both work on the cosine similarities of sample masks. Masks are non-negative, so every cosine
lies in [0, 1] and so do both losses. Everything is vectorised: a [B, B] similarity matrix per
layer and one-hot class matrices turn per-class sums into matrix products.

``reduction="classes"`` (default) is the paper's form: average pairs within each class (Eq. 4)
or each class pair (Eq. 5), then average over classes. ``reduction="pairs"`` is the reference
code's form: one average over all same-class (resp. different-class) sample pairs. Both are
computed per gated layer and averaged over layers, as the reference code does.
"""

import torch
import torch.nn.functional as F

from mwt.errors import MwtError

REDUCTIONS = ("classes", "pairs")


def _layers(masks) -> list[torch.Tensor]:
    layers = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    if not layers or any(m.dim() != 2 for m in layers):
        raise MwtError("masks must be a [B, K] tensor or a non-empty list of [B, K_l] tensors")
    return layers


def _pair_sums(mask: torch.Tensor, onehot: torch.Tensor):
    """Per class pair (h, i): sum of cos over sample pairs j in h, k in i with j != k."""
    unit = F.normalize(mask.float(), p=2, dim=1, eps=1e-12)
    cos = (unit @ unit.T).clamp(0.0, 1.0)
    sums = onehot.T @ cos @ onehot                            # [N, N], ordered pairs incl. j == k
    self_sims = onehot.T @ torch.diagonal(cos)                # the j == k terms, per class
    return sums - torch.diag(self_sims)


def _check(labels: torch.Tensor, reduction: str, batch: int) -> None:
    if reduction not in REDUCTIONS:
        raise MwtError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if labels.dim() != 1 or labels.numel() != batch:
        raise MwtError(f"labels must be a 1-D tensor of {batch} class ids, got shape "
                       f"{tuple(labels.shape)}")


def _class_counts(labels: torch.Tensor):
    classes, idx = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(idx, num_classes=classes.numel()).float()
    return onehot, onehot.sum(dim=0)


def cohesion_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 4: 1 - mean cosine similarity of same-class masks; 0 when a batch has no such pair."""
    layers = _layers(masks)
    _check(labels, reduction, layers[0].shape[0])
    onehot, n = _class_counts(labels)
    pairs = n * (n - 1)                                       # ordered same-class pairs per class
    valid = pairs > 0
    losses = []
    for mask in layers:
        same = torch.diagonal(_pair_sums(mask, onehot))
        if not bool(valid.any()):
            losses.append(mask.sum() * 0.0)                   # keeps the graph, adds no term
        elif reduction == "classes":
            losses.append(1.0 - (same[valid] / pairs[valid]).mean())
        else:
            losses.append(1.0 - same.sum() / pairs.sum())
    return torch.stack(losses).mean()


def coupling_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 5: mean cosine similarity between masks of different classes; 0 for a one-class batch."""
    layers = _layers(masks)
    _check(labels, reduction, layers[0].shape[0])
    onehot, n = _class_counts(labels)
    num = n.numel()
    upper = torch.triu(torch.ones(num, num, dtype=torch.bool, device=n.device), diagonal=1)
    pairs = torch.outer(n, n)[upper]
    losses = []
    for mask in layers:
        cross = _pair_sums(mask, onehot)[upper]
        if num < 2:
            losses.append(mask.sum() * 0.0)
        elif reduction == "classes":
            losses.append((cross / pairs).mean())
        else:
            losses.append(cross.sum() / pairs.sum())
    return torch.stack(losses).mean()


def modular_objective(ce: torch.Tensor, masks, labels: torch.Tensor, alpha: float, beta: float,
                      reduction: str = "classes"):
    """Eq. 6: O = CE + alpha * L_ch + beta * L_cp; returns (O, L_ch, L_cp)."""
    ch = cohesion_loss(masks, labels, reduction)
    cp = coupling_loss(masks, labels, reduction)
    return ce + alpha * ch + beta * cp, ch, cp
