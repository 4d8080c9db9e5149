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

from mwt.config import REDUCTIONS
from mwt.errors import MwtError


def _layers(masks) -> list[torch.Tensor]:
    layers = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    if not layers or any(m.dim() != 2 for m in layers):
        raise MwtError("masks must be a [B, K] tensor or a non-empty list of [B, K_l] tensors")
    return layers


def _check(labels: torch.Tensor, reduction: str, batch: int) -> None:
    if reduction not in REDUCTIONS:
        raise MwtError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if labels.dim() != 1 or labels.numel() != batch:
        raise MwtError(f"labels must be a 1-D tensor of {batch} class ids, got shape "
                       f"{tuple(labels.shape)}")


def pair_similarity_sums(masks, labels: torch.Tensor, reduction: str = "classes"):
    """Per layer and class pair (h, i): the sum of mask cosines over sample pairs j in h, k in i,
    j != k. Returns (sums [L, N, N], samples per class [N]) over the N classes in the batch.

    All layers are handled at once: zero-padding them to a common width changes no norm or dot
    product, and one batched product replaces a loop of small ones.
    """
    layers = _layers(masks)
    _check(labels, reduction, layers[0].shape[0])
    width = max(m.shape[1] for m in layers)
    stacked = torch.stack([F.pad(m.float(), (0, width - m.shape[1])) for m in layers])
    unit = F.normalize(stacked, p=2, dim=2, eps=1e-12)              # [L, B, K]
    cos = (unit @ unit.transpose(1, 2)).clamp(0.0, 1.0)             # [L, B, B]
    _, idx = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(idx).to(cos.dtype)                           # [B, N]
    sums = onehot.T @ cos @ onehot                                  # ordered pairs incl. j == k
    self_sims = torch.diagonal(cos, dim1=1, dim2=2) @ onehot        # the j == k terms [L, N]
    return sums - torch.diag_embed(self_sims), onehot.sum(dim=0)


def _cohesion(sums: torch.Tensor, n: torch.Tensor, reduction: str) -> torch.Tensor:
    pairs = n * (n - 1)                                       # ordered same-class pairs per class
    valid = pairs > 0
    if not bool(valid.any()):
        return sums.sum() * 0.0                               # keeps the graph, adds no term
    same = torch.diagonal(sums, dim1=1, dim2=2)               # [L, N]
    if reduction == "classes":
        per_layer = 1.0 - (same[:, valid] / pairs[valid]).mean(dim=1)
    else:
        per_layer = 1.0 - same.sum(dim=1) / pairs.sum()
    return per_layer.mean()


def _coupling(sums: torch.Tensor, n: torch.Tensor, reduction: str) -> torch.Tensor:
    num = n.numel()
    if num < 2:
        return sums.sum() * 0.0
    upper = torch.triu(torch.ones(num, num, dtype=torch.bool, device=n.device), diagonal=1)
    pairs = torch.outer(n, n)[upper]
    cross = sums[:, upper]                                    # [L, P]
    if reduction == "classes":
        per_layer = (cross / pairs).mean(dim=1)
    else:
        per_layer = cross.sum(dim=1) / pairs.sum()
    return per_layer.mean()


def cohesion_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 4: 1 - mean cosine similarity of same-class masks; 0 when a batch has no such pair."""
    return _cohesion(*pair_similarity_sums(masks, labels, reduction), reduction)


def coupling_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 5: mean cosine similarity between masks of different classes; 0 for a one-class batch."""
    return _coupling(*pair_similarity_sums(masks, labels, reduction), reduction)


def modular_objective(ce: torch.Tensor, masks, labels: torch.Tensor, alpha: float, beta: float,
                      reduction: str = "classes"):
    """Eq. 6: O = CE + alpha * L_ch + beta * L_cp; returns (O, L_ch, L_cp)."""
    sums, n = pair_similarity_sums(masks, labels, reduction)
    ch, cp = _cohesion(sums, n, reduction), _coupling(sums, n, reduction)
    return ce + alpha * ch + beta * cp, ch, cp
