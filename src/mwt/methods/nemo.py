"""NeMo (Bi, Qi et al., arXiv 2508.11348, 2025): MwT's gates trained with a supervised
contrastive loss on the L2-normalised masks.

Everything but the loss is MwT's: the same gates, the tau rule, a new head and fine-tuning.
The loss (the authors' ``src/models/funcs.py`` ``loss_func_contra``, written anew here) is, per
gated layer, with u_i the unit-normalised mask of sample i, s_ij = u_i . u_j and P(i) the
samples of i's class (i itself included):

    L_i = -log( (pos_i + eps) / (pos_i + neg_i + eps) ),
    pos_i = sum_{j in P(i)} exp(s_ij / T),   neg_i = sum_{j not in P(i)} exp(s_ij / T),

averaged over the batch, then over layers; the objective is CE + alpha * L. The published code
computes pos_i and neg_i over *all* j, with the similarity of every excluded pair set to 0, so
each adds exp(0) = 1: pos_i also counts 1 per different-class sample and neg_i 1 per same-class
one (and i itself). ``excluded_pairs="exp0"`` (default) follows that, as the published figures
were made with it; ``"drop"`` leaves excluded pairs and the self-pair out (SupCon's form), and
averages over the samples that have a same-class partner.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from mwt.checks import is_real, short_repr
from mwt.errors import MwtError
from mwt.losses import check_signals
from mwt.methods.mwt import GatedMethod

EXCLUDED_PAIRS = ("exp0", "drop")
_EPS = 1e-8  # the published code's


def contrastive_loss(masks, labels: torch.Tensor, temperature: float = 0.2,
                     excluded_pairs: str = "exp0") -> torch.Tensor:
    """NeMo's loss of a batch of masks (a [B, K] tensor or a list of them, one per layer)."""
    layers = check_signals(masks, labels)
    if excluded_pairs not in EXCLUDED_PAIRS:
        raise MwtError(f"excluded_pairs must be one of {EXCLUDED_PAIRS}, got "
                       f"{short_repr(excluded_pairs)}")
    same = (labels[:, None] == labels[None, :]).to(torch.float32)
    if excluded_pairs == "drop":
        others = 1.0 - torch.eye(len(labels), device=labels.device)
        positives, negatives = same * others, 1.0 - same
        anchors = (positives.sum(1) > 0).to(torch.float32)
    losses = []
    for mask in layers:
        u = F.normalize(mask.float(), dim=1)
        sim = u @ u.T
        if excluded_pairs == "exp0":
            pos = torch.exp(sim * same / temperature).sum(1)
            neg = torch.exp(sim * (1.0 - same) / temperature).sum(1)
            per_sample = -torch.log((pos + _EPS) / (pos + neg + _EPS))
            losses.append(per_sample.mean())
        else:
            e = torch.exp(sim / temperature)
            pos, neg = (e * positives).sum(1), (e * negatives).sum(1)
            per_sample = -torch.log((pos + _EPS) / (pos + neg + _EPS))
            losses.append((per_sample * anchors).sum() / anchors.sum().clamp_min(1))
    return torch.stack(losses).mean()


@dataclass(frozen=True)
class NeMo(GatedMethod):
    """``temperature``: T above (0.2, the paper's); ``excluded_pairs``: see the module docs.
    alpha weighs the contrastive loss (default 1.4, inside the 1.0-1.8 the authors use for
    CNNs and the value of their temperature study); NeMo has no beta."""

    temperature: float = 0.2
    excluded_pairs: str = "exp0"

    name: ClassVar[str] = "nemo"
    weights: ClassVar[tuple] = ("contrastive", None)
    loss_names: ClassVar[tuple] = (("contrastive_loss", "L_con"),)
    open_gates_advice: ClassVar[str] = "raise alpha (the contrastive weight)"
    DEFAULT_ALPHA: ClassVar[float] = 1.4

    def validate(self) -> None:
        if not is_real(self.temperature) or not 0.01 <= self.temperature <= 100:
            raise MwtError(f"temperature must be a number from 0.01 to 100, got "
                           f"{short_repr(self.temperature)}")
        if self.excluded_pairs not in EXCLUDED_PAIRS:
            raise MwtError(f"excluded_pairs must be one of {', '.join(EXCLUDED_PAIRS)}, got "
                           f"{short_repr(self.excluded_pairs)}")

    def default_weights(self, model, dataset):
        return self.DEFAULT_ALPHA, None

    def objective(self, ce, signals, labels, alpha, beta, reduction, num_classes):
        con = contrastive_loss(signals, labels, self.temperature, self.excluded_pairs)
        return ce + alpha * con, {"contrastive_loss": con}


__all__ = ["NeMo", "contrastive_loss", "EXCLUDED_PAIRS"]
