"""Modularizing rules: which units each class's module keeps, given how often they are relevant.

Every method modularizes from the same statistic: ``frequencies`` [N, K], the share of class-c
training samples for which unit k is relevant (its gate is > 0, or its activation is != 0).
What differs is the rule that turns it into per-class unit masks:

- :func:`module_masks`, MwT's (paper section 3.3), also NeMo's: keep the units whose frequency
  reaches tau, lowering tau for a layer in steps of 0.05 until the layer keeps something;
- :func:`activation_rate_masks`, MODA's: keep the units active for at least tau of the class's
  samples; a layer left with fewer than a small share of its units keeps the top-k units
  instead, k being the most any class keeps there.

Both return (bool masks [N, K], the threshold each (class, layer) used [N, L]).
"""

import math
import numbers
from decimal import Decimal
from fractions import Fraction

import torch

from mwt.checks import short_repr as _short
from mwt.errors import MwtError

TAU_STEP = Fraction(1, 20)  # 0.05, exactly


def check_tau(tau) -> float:
    """``tau`` as a float, or a clear error unless it is a real number (not a bool) in (0, 1]."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real):
        raise MwtError(f"tau must be a number in (0, 1], got {_short(tau)}")
    try:
        value = float(tau)
    except (OverflowError, ValueError, TypeError):
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 1):
        raise MwtError(f"tau must lie in (0, 1], got {_short(tau)}")
    return value


def _tau_steps(tau: float) -> list[Fraction]:
    """tau - 0.05 j for j = 0, 1, ... while positive, exactly (tau read as its shortest decimal)."""
    exact = Fraction(Decimal(repr(tau)))
    count = -(-exact // TAU_STEP)  # ceil(tau / 0.05): the number of positive steps
    return [exact - j * TAU_STEP for j in range(count)]


def module_masks(frequencies: torch.Tensor, layer_sizes: list[int], tau: float):
    """Each class's module: kernels whose relevance frequency reaches tau, layer by layer.

    ``frequencies`` [N, K] (in [0, 1]) holds, for class c and kernel k, the share of class-c
    samples that find k relevant; ``layer_sizes`` splits the K kernels into the gated layers.
    Returns (bool masks [N, K], the tau each (class, layer) used [N, L], in the dtype of
    ``frequencies``). For class c and layer l, with best = the layer's highest frequency:

    - the steps are tau - 0.05 j for j = 0, 1, 2, ... while positive, computed exactly (tau is
      read as the shortest decimal of its float, so 0.9 steps 0.9, 0.85, ..., 0.05);
    - the layer's tau is the first (largest) step that best reaches; if best reaches none (it is
      below the smallest positive step), the layer's tau is best itself;
    - kernel k is kept iff freq[c, k] >= the layer's tau. So the best kernel is always kept and a
      kernel of frequency 0 never is;
    - a layer that no class-c sample uses at all (best == 0) keeps exactly its first kernel, so the
      module still carries a signal there; its tau is recorded as 0.

    "Reaches" compares the frequency with the step rounded to the dtype of ``frequencies``: a
    frequency computed as count / n (correctly rounded, as :func:`modularize` computes it) that
    is mathematically equal to or above a step always reaches it (27/30 reaches 0.9 in float32),
    and one below it never does in float32 while n stays below about 400,000 for a tau that is a
    multiple of 0.05 (80,000 for a multiple of 0.01); beyond that the two could round together.
    """
    tau = check_tau(tau)
    sizes = _check_inputs(frequencies, layer_sizes)
    steps = torch.tensor([float(s) for s in _tau_steps(tau)], dtype=torch.float64)
    steps = steps.to(device=frequencies.device, dtype=frequencies.dtype)
    steps = steps[steps > 0]  # a step below the dtype's resolution would keep everything
    masks, used = [], []
    for block in torch.split(frequencies, sizes, dim=1):
        best = block.amax(dim=1)
        reached = best[:, None] >= steps[None, :]  # [N, steps], decreasing steps
        if steps.numel():
            first = reached.to(torch.uint8).argmax(dim=1)  # the first step reached
            layer_tau = torch.where(reached.any(dim=1), steps[first], best)
        else:
            layer_tau = best.clone()
        keep = block >= layer_tau[:, None]
        # A layer no sample of the class ever uses still needs one kernel to carry a signal.
        unused = best <= 0
        if bool(unused.any()):
            keep[unused] = False
            keep[unused, 0] = True
            layer_tau[unused] = 0
        masks.append(keep)
        used.append(layer_tau)
    return torch.cat(masks, dim=1), torch.stack(used, dim=1)


def check_min_fraction(value) -> float:
    """MODA's least share of a layer each module keeps, checked: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not math.isfinite(float(value)) or not 0 <= float(value) < 1:
        raise MwtError(f"min_fraction must be a number in [0, 1), got {_short(value)}")
    return float(value)


def activation_rate_masks(frequencies: torch.Tensor, layer_sizes: list[int], tau: float,
                          min_fraction: float = 0.005):
    """MODA's rule (``model_modularizer.py``, ``--activation_rate_threshold``): class c keeps unit
    k iff at least a share ``tau`` of its samples activate k (frequency >= tau).

    A (class, layer) that keeps fewer than ``max(1, int(min_fraction * layer size))`` units
    keeps instead the top-k units of its own frequencies, k being the most units any class
    keeps in that layer by the threshold (and at least that minimum); ties go to the lower
    index. Its recorded threshold is then the k-th frequency. The published code does the
    same; its order over classes cannot change k (a class fixed this way keeps exactly the
    largest count already there).
    """
    tau = check_tau(tau)
    sizes = _check_inputs(frequencies, layer_sizes)
    min_fraction = check_min_fraction(min_fraction)
    masks, used = [], []
    for block in torch.split(frequencies, sizes, dim=1):
        keep = block >= torch.tensor(tau, dtype=block.dtype, device=block.device)
        layer_tau = torch.full(block.shape[:1], tau, dtype=block.dtype, device=block.device)
        least = max(1, int(min_fraction * block.shape[1]))
        k = max(int(keep.sum(dim=1).max()), least)
        for c in torch.nonzero(keep.sum(dim=1) < least).flatten().tolist():
            top = _stable_topk(block[c], k)
            keep[c] = False
            keep[c, top] = True
            layer_tau[c] = block[c, top].min()
        masks.append(keep)
        used.append(layer_tau)
    return torch.cat(masks, dim=1), torch.stack(used, dim=1)


def _stable_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the k largest values, ties to the lower index (torch.topk's are not
    specified)."""
    order = torch.sort(values, descending=True, stable=True).indices
    return order[:k]


def _check_inputs(frequencies, layer_sizes) -> list[int]:
    if not isinstance(frequencies, torch.Tensor) or not frequencies.is_floating_point() \
            or frequencies.dim() != 2:
        raise MwtError("frequencies must be a 2-D float tensor [classes, kernels]")
    if not bool(((frequencies >= 0) & (frequencies <= 1)).all()):
        raise MwtError("frequencies must lie in [0, 1] (and not be NaN)")
    sizes = list(layer_sizes)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1
                        for s in sizes):
        raise MwtError(f"layer_sizes must be positive kernel counts, got {_short(layer_sizes)}")
    if sum(sizes) != frequencies.shape[1]:
        raise MwtError(f"layer_sizes add up to {sum(sizes)} kernels but frequencies has "
                       f"{frequencies.shape[1]}")
    return [int(s) for s in sizes]


__all__ = ["TAU_STEP", "check_tau", "module_masks", "activation_rate_masks",
           "check_min_fraction"]
