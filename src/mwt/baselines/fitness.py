"""CNNSplitter's shared fitness (the public code's ``module_recorder.py``), vectorised.

Every class has a population of candidate modules; each candidate's score for a sample is the
logit of its own class. Candidates are judged in *compositions*, one candidate per class:

- the classes are shuffled and merged in levels (2 -> 4 -> 8 -> 10 classes for 10 classes; an odd
  list passes through a level unchanged); at each level every pair of neighbouring lists is
  merged by the Cartesian product of their compositions;
- a composition's accuracy is that of the argmax over its members' logits on the samples of its
  classes; its difference is the mean over member pairs of 1 - Jaccard index of their kernel sets;
- of a product, the compositions with accuracy >= the level's threshold are kept (at least
  ``min_keep``, at most ``max_keep``, the most accurate), ranked by
  F = w * accuracy + (1 - alpha) * difference;
- the composition of every class's candidate 0 (the previous generation's best) is always kept;
- a candidate's fitness is the largest F of a surviving composition of all classes holding it.

A list of compositions carries, per sample, the best member logit and whether the argmax over its
members is right, so a product's accuracies come from comparisons of two such lists without
touching the candidates again; argmax ties go to the member listed first, as ``numpy.argmax``.
Everything runs on the device of ``labels`` (a product of 500 x 500 compositions on 10,000
samples is billions of comparisons: seconds on a CPU, milliseconds on a GPU).
"""

import math
from dataclasses import dataclass

import torch

from mwt.metrics import jaccard_matrix

# Elements of one [rows, rows, samples] comparison block.
_BLOCK = 1 << 24


@dataclass
class Compositions:
    """Compositions over ``classes`` (one member candidate per class, in this order)."""

    classes: list[int]
    members: torch.Tensor   # long [R, len(classes)]: candidate index per class
    top: torch.Tensor       # float [R, N]: the highest member logit on each sample
    correct: torch.Tensor   # bool [R, N]: the argmax member is the sample's class (own samples)
    diff_sum: torch.Tensor  # float64 [R]: sum of 1 - JI over member pairs
    previous: torch.Tensor  # bool [R]: every member is candidate 0
    accuracy: torch.Tensor  # float64 [R]
    fitness: torch.Tensor   # float64 [R]

    @property
    def difference(self) -> torch.Tensor:
        m = len(self.classes)
        return self.diff_sum / max(m * (m - 1) / 2, 1)


def differences(masks: torch.Tensor) -> torch.Tensor:
    """float64 [C, C, P, P]: 1 - JI between candidate p of class a and candidate q of class b
    (``masks`` bool [C, P, K]); the diagonal blocks are unused and left at 0."""
    c, p, _ = masks.shape
    out = torch.zeros(c, c, p, p, dtype=torch.float64, device=masks.device)
    for a in range(c):
        for b in range(a + 1, c):
            d = 1.0 - jaccard_matrix(masks[a], masks[b])
            out[a, b], out[b, a] = d, d.T
    return out


def single(cls: int, logits: torch.Tensor, labels: torch.Tensor,
           keep_previous: bool) -> Compositions:
    """The compositions of one class: each candidate alone (``logits`` [P, N])."""
    p, device = logits.shape[0], labels.device
    own = (labels == cls)[None, :].expand(p, -1)
    zeros = torch.zeros(p, dtype=torch.float64, device=device)
    previous = torch.zeros(p, dtype=torch.bool, device=device)
    previous[0] = keep_previous
    return Compositions([cls], torch.arange(p, device=device)[:, None], logits.to(device),
                        own.clone(), zeros, previous, torch.ones_like(zeros), zeros.clone())


def _own(labels: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """bool [N]: the samples of ``classes``."""
    return torch.isin(labels, torch.tensor(classes, device=labels.device))


def _product_accuracy(a: Compositions, b: Compositions, labels: torch.Tensor) -> torch.Tensor:
    """float64 [Ra, Rb]: accuracy of every merged composition on the samples of its classes."""
    own_a = torch.nonzero(_own(labels, a.classes)).flatten()
    own_b = torch.nonzero(_own(labels, b.classes)).flatten()
    # A side's logit where its argmax is wrong becomes -inf: it can then beat nothing, so one
    # comparison per (row, row, sample) counts the samples a merged composition gets right.
    never = torch.tensor(-math.inf, dtype=a.top.dtype, device=labels.device)
    ta = torch.where(a.correct[:, own_a], a.top[:, own_a], never)
    tb = torch.where(b.correct[:, own_b], b.top[:, own_b], never)
    tb_a, ta_b = b.top[:, own_a], a.top[:, own_b]
    rows_b = b.top.shape[0]
    hits = torch.empty(a.top.shape[0], rows_b, dtype=torch.float64, device=labels.device)
    step = max(1, _BLOCK // max(1, rows_b * max(len(own_a), len(own_b))))
    for i in range(0, a.top.shape[0], step):
        s = slice(i, i + step)
        # a's members come first, so a wins ties on its own samples; b needs a strict win
        # (an int32 sum of a bool tensor is several times faster than the default int64 one)
        on_a = (ta[s, None, :] >= tb_a[None, :, :]).sum(2, dtype=torch.int32)
        on_b = (tb[None, :, :] > ta_b[s, None, :]).sum(2, dtype=torch.int32)
        hits[s] = (on_a + on_b).double()
    return hits / max(len(own_a) + len(own_b), 1)


def _product_diff_sum(a: Compositions, b: Compositions, diff: torch.Tensor) -> torch.Tensor:
    total = a.diff_sum[:, None] + b.diff_sum[None, :]
    for i, ca in enumerate(a.classes):
        for j, cb in enumerate(b.classes):
            total = total + diff[ca, cb][a.members[:, i]][:, b.members[:, j]]
    return total


def merge(a: Compositions, b: Compositions, labels: torch.Tensor, diff: torch.Tensor, *,
          w: float, alpha: float, threshold: float, min_keep: int,
          max_keep: int) -> Compositions:
    """The kept compositions of the product of ``a`` and ``b``, best F first (see the module
    docstring); the all-candidate-0 composition is appended when it was not kept."""
    acc = _product_accuracy(a, b, labels)
    diff_sum = _product_diff_sum(a, b, diff)
    m = len(a.classes) + len(b.classes)
    fit = w * acc + (1 - alpha) * diff_sum / (m * (m - 1) / 2)
    flat_acc, flat_fit = acc.flatten(), fit.flatten()
    count = int((flat_acc >= threshold).sum())
    count = min(max(min(count, max_keep), min_keep), flat_acc.numel())
    kept = torch.sort(flat_acc, descending=True, stable=True).indices[:count]
    kept = kept[torch.sort(flat_fit[kept], descending=True, stable=True).indices]
    previous = (a.previous[:, None] & b.previous[None, :]).flatten()
    if bool(previous.any()) and not bool(previous[kept].any()):
        kept = torch.cat([kept, torch.nonzero(previous).flatten()])
    rows_b = b.top.shape[0]
    pa, pb = kept // rows_b, kept % rows_b
    top_a, top_b = a.top[pa], b.top[pb]
    own_a, own_b = _own(labels, a.classes)[None, :], _own(labels, b.classes)[None, :]
    correct = ((own_a & a.correct[pa] & (top_a >= top_b))
               | (own_b & b.correct[pb] & (top_b > top_a)))
    return Compositions(a.classes + b.classes, torch.cat([a.members[pa], b.members[pb]], 1),
                        torch.maximum(top_a, top_b), correct, diff_sum.flatten()[kept],
                        previous[kept], flat_acc[kept], flat_fit[kept])


def compose(logits: torch.Tensor, labels: torch.Tensor, diff: torch.Tensor, order, *, w: float,
            alpha: float, thresholds, min_keep: int, max_keep: int,
            keep_previous: bool) -> tuple[torch.Tensor, Compositions]:
    """CNNSplitter's fitness of every candidate, float64 [C, P], and the surviving compositions
    of all classes (best F first, then the previous best if appended).

    ``logits`` [C, P, N]: candidate p of class c's class-c logit on every sample of the search
    split; ``labels`` [N]; ``diff`` from :func:`differences`; ``order``: the shuffled classes;
    ``thresholds``: accuracy threshold per level (the last one repeats for further levels).
    """
    lists = [single(int(c), logits[int(c)], labels, keep_previous) for c in order]
    level = 0
    while len(lists) > 1:
        threshold = thresholds[min(level, len(thresholds) - 1)]
        merged = []
        for i in range(0, len(lists), 2):
            if i + 1 < len(lists):
                merged.append(merge(lists[i], lists[i + 1], labels, diff, w=w, alpha=alpha,
                                    threshold=threshold, min_keep=min_keep, max_keep=max_keep))
            else:
                merged.append(lists[i])
        lists, level = merged, level + 1
    final = lists[0]
    fitness = torch.zeros(logits.shape[0], logits.shape[1], dtype=torch.float64,
                          device=labels.device)
    for i, cls in enumerate(final.classes):
        fitness[cls].scatter_reduce_(0, final.members[:, i], final.fitness, reduce="amax")
    return fitness, final


def ensemble_scores(logits: torch.Tensor, labels: torch.Tensor, diff: torch.Tensor,
                    chosen: torch.Tensor) -> tuple[float, float]:
    """(accuracy, difference) of the composition of candidate ``chosen[c]`` of every class."""
    c = logits.shape[0]
    chosen = chosen.to(logits.device)
    rows = logits[torch.arange(c, device=logits.device), chosen]  # [C, N]
    acc = float((rows.argmax(0) == labels).double().mean())
    a, b = torch.triu_indices(c, c, offset=1, device=diff.device)
    pairs = diff[a, b, chosen[a].to(diff.device), chosen[b].to(diff.device)]
    return acc, float(pairs.mean()) if len(pairs) else 0.0


__all__ = ["Compositions", "differences", "single", "merge", "compose", "ensemble_scores"]
