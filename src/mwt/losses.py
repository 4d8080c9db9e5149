"""The MwT training losses on a batch of masks: cohesion (Eq. 4) and coupling (Eq. 5).

Both work on the cosine similarities of sample masks. Masks are non-negative, so every cosine
lies in [0, 1] and so do both losses.

No [B, B] similarity matrix is built: both losses only need, per layer, the sum of cosines over
the sample pairs of each class pair (h, c), and with unit-normalised masks u that sum is
``S_h . S_c`` where ``S_h`` is the sum of the class-h unit masks; for h == c the self-pairs
``u_j . u_j`` (1 for a non-zero mask, 0 for an all-zero one) are subtracted. Per layer that is a
[N, B] x [B, K] product (one-hot classes scaled by each sample's inverse norm, times the raw
masks) and an [N, N] Gram matrix: time and memory grow linearly with the batch.

``reduction="classes"`` (default) is the paper's form: average pairs within each class (Eq. 4)
or each class pair (Eq. 5), then average over classes. ``reduction="pairs"`` is the reference
code's form: one average over all same-class (resp. different-class) sample pairs. Both are
computed per gated layer and averaged over layers, as the reference code does.
"""

import torch
import torch.nn.functional as F

from mwt.config import REDUCTIONS
from mwt.errors import MwtError

_EPS = 1e-12  # F.normalize's default: a mask is divided by max(||mask||, _EPS)


def _layers(masks) -> list[torch.Tensor]:
    layers = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    if not layers or any(m.dim() != 2 for m in layers):
        raise MwtError("masks must be a [B, K] tensor or a non-empty list of [B, K_l] tensors")
    return layers


def check_signals(masks, labels: torch.Tensor) -> list[torch.Tensor]:
    """The layers of a batch of signals (a [B, K] tensor or a list of [B, K_l] tensors),
    checked against its labels: what every method's loss takes."""
    layers = _layers(masks)
    if labels.dim() != 1 or labels.numel() != layers[0].shape[0]:
        raise MwtError(f"labels must be a 1-D tensor of {layers[0].shape[0]} class ids, got "
                       f"shape {tuple(labels.shape)}")
    return layers


def _check(labels: torch.Tensor, reduction: str, batch: int) -> None:
    if reduction not in REDUCTIONS:
        raise MwtError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if labels.dim() != 1 or labels.numel() != batch:
        raise MwtError(f"labels must be a 1-D tensor of {batch} class ids, got shape "
                       f"{tuple(labels.shape)}")


def pair_similarity_sums(masks, labels: torch.Tensor, reduction: str = "classes",
                         num_classes: int | None = None):
    """Per layer and class pair (h, i): the sum of mask cosines over sample pairs j in h, k in i,
    j != k. Returns (sums [L, N, N], samples per class [N]) over the N classes in the batch, or
    over all ``num_classes`` classes when given (absent ones count 0 samples and add no term;
    shapes then do not depend on the batch's labels, which ``torch.compile`` needs).

    Linear in the batch B: with u_j = m_j / max(||m_j||, eps) (F.normalize), the class sums
    S_h = sum_{j in h} u_j give sums[h, i] = S_h . S_i - [h == i] sum_{j in h} ||u_j||^2.
    ||u_j||^2 = (||m_j|| / max(||m_j||, eps))^2 is 1 for a non-zero mask and 0 for an all-zero
    one: the self-cosine u_j . u_j on a [B, B] matrix's diagonal (also below eps, where it is
    ||m_j||^2 / eps^2). Only where every entry of a non-zero mask is below ~2.6e-23, so that its
    float32 squared norm underflows to 0, is that self-pair's gradient (at most ~50 times
    dLoss/dsums) left uncancelled; the values still agree.

    Layers are batched where their widths allow: the per-sample norms of all layers form one
    [B, L] tensor, the class weights onehot / norm one [B, L, N] tensor, and the class sums,
    zero-padded to a common width (which changes no dot product), one [L, N, N] Gram product.
    Only the [N, B] x [B, K_l] products run per layer, since the K_l differ; the forward makes
    no [B, K] tensor beyond the (float32) masks, and nothing is [B, B].
    """
    layers = [m.float() for m in _layers(masks)]
    _check(labels, reduction, layers[0].shape[0])
    norms = torch.cat([torch.linalg.vector_norm(m, dim=1, keepdim=True) for m in layers], dim=1)
    denom = norms.clamp_min(_EPS)                                     # [B, L]
    if num_classes is None:
        _, idx = torch.unique(labels, return_inverse=True)
        onehot = F.one_hot(idx).to(norms.dtype)                       # [B, N]
    else:
        onehot = F.one_hot(labels, num_classes).to(norms.dtype)
    weights = onehot.unsqueeze(1) / denom.unsqueeze(2)                # [B, L, N]
    width = max(m.shape[1] for m in layers)
    class_sums = torch.stack([F.pad(w.T @ m, (0, width - m.shape[1]))
                              for w, m in zip(weights.unbind(1), layers)])  # [L, N, K]
    gram = class_sums @ class_sums.transpose(1, 2)                    # ordered pairs incl. j == k
    self_sims = (norms / denom).square().T @ onehot                   # the j == k terms [L, N]
    return gram - torch.diag_embed(self_sims), onehot.sum(dim=0)


def _unit_interval(x: torch.Tensor) -> torch.Tensor:
    """x with its value clamped to [0, 1] but its gradient untouched: the linear form's sums can
    round a hair outside (e.g. -1e-8 for identical masks); the true value never is."""
    return x + (x.detach().clamp(0.0, 1.0) - x.detach())


def _cohesion(sums: torch.Tensor, n: torch.Tensor, reduction: str) -> torch.Tensor:
    """Classes with fewer than two samples add no term; with none at all the loss is 0 (and keeps
    the graph). No branch depends on the data, so the step compiles as one graph."""
    pairs = n * (n - 1)                                       # ordered same-class pairs per class
    valid = (pairs > 0).to(sums.dtype)
    same = torch.diagonal(sums, dim1=1, dim2=2)               # [L, N]
    if reduction == "classes":
        ratio = _unit_interval(same / pairs.clamp_min(1))
        per_layer = ((1.0 - ratio) * valid).sum(dim=1) / valid.sum().clamp_min(1)
    else:
        total = pairs.sum()
        ratio = _unit_interval((same * valid).sum(dim=1) / total.clamp_min(1))
        per_layer = (1.0 - ratio) * (total > 0).to(sums.dtype)
    return per_layer.mean()


def _coupling(sums: torch.Tensor, n: torch.Tensor, reduction: str) -> torch.Tensor:
    """Class pairs with a class absent from the batch add no term; 0 for a one-class batch."""
    i, j = torch.triu_indices(n.numel(), n.numel(), offset=1, device=n.device)
    pairs = n[i] * n[j]
    valid = (pairs > 0).to(sums.dtype)
    cross = sums[:, i, j]                                     # [L, P]
    if reduction == "classes":
        per_layer = ((_unit_interval(cross / pairs.clamp_min(1)) * valid).sum(dim=1)
                     / valid.sum().clamp_min(1))
    else:
        per_layer = _unit_interval(cross.sum(dim=1) / pairs.sum().clamp_min(1))
    return per_layer.mean()


def cohesion_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 4: 1 - mean cosine similarity of same-class masks; 0 when a batch has no such pair."""
    return _cohesion(*pair_similarity_sums(masks, labels, reduction), reduction)


def coupling_loss(masks, labels: torch.Tensor, reduction: str = "classes") -> torch.Tensor:
    """Eq. 5: mean cosine similarity between masks of different classes; 0 for a one-class batch."""
    return _coupling(*pair_similarity_sums(masks, labels, reduction), reduction)


def modular_objective(ce: torch.Tensor, masks, labels: torch.Tensor, alpha: float, beta: float,
                      reduction: str = "classes", num_classes: int | None = None):
    """Eq. 6: O = CE + alpha * L_ch + beta * L_cp; returns (O, L_ch, L_cp). ``num_classes``: see
    :func:`pair_similarity_sums` (the same values, with shapes fixed)."""
    sums, n = pair_similarity_sums(masks, labels, reduction, num_classes)
    ch, cp = _cohesion(sums, n, reduction), _coupling(sums, n, reduction)
    return ce + alpha * ch + beta * cp, ch, cp
