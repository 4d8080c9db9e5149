"""The tau rule of modularizing (paper 3.3), against a plain exact-arithmetic implementation."""

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mwt
from mwt.modularize import module_masks

STEP = Fraction(1, 20)
TAUS = [Fraction(i, 20) for i in range(1, 21)]  # 0.05, 0.10, ..., 1.00


def reference(freqs: list[list[Fraction]], sizes: list[int], tau: Fraction):
    """The rule, one (class, layer) at a time, in exact fractions."""
    masks, taus = [], []
    for row in freqs:
        keep_row, tau_row, start = [], [], 0
        for size in sizes:
            block = row[start:start + size]
            start += size
            best = max(block)
            if best == 0:
                keep_row += [True] + [False] * (size - 1)
                tau_row.append(Fraction(0))
                continue
            layer_tau = None
            j = 0
            while tau - j * STEP > 0:
                if best >= tau - j * STEP:
                    layer_tau = tau - j * STEP
                    break
                j += 1
            if layer_tau is None:
                layer_tau = best
            keep_row += [f >= layer_tau for f in block]
            tau_row.append(layer_tau)
        masks.append(keep_row)
        taus.append(tau_row)
    return masks, taus


def check_against_reference(tensor: torch.Tensor, exact: list[list[Fraction]], sizes: list[int]):
    for tau in TAUS:
        masks, used = module_masks(tensor, sizes, float(tau))
        expected_masks, expected_taus = reference(exact, sizes, tau)
        assert masks.dtype == torch.bool and masks.tolist() == expected_masks, float(tau)
        assert used.shape == (len(exact), len(sizes))
        for got_row, want_row in zip(used.tolist(), expected_taus):
            assert got_row == pytest.approx([float(t) for t in want_row], abs=1e-6)
        check_invariants(tensor, sizes, masks)


def check_invariants(tensor, sizes, masks):
    for freq, keep in zip(torch.split(tensor, sizes, 1), torch.split(masks, sizes, 1)):
        assert keep.sum(1).ge(1).all()  # every (class, layer) keeps a kernel
        used = freq.amax(1) > 0
        assert not (keep & (freq == 0))[used].any()  # never an unused kernel beside a used one
        assert keep.sum(1)[~used].eq(1).all()  # an unused layer keeps exactly one kernel
        best = freq == freq.amax(1, keepdim=True)
        assert (keep | ~best)[used].all()  # the best kernels are always kept


@st.composite
def counted(draw):
    """Frequencies as modularize computes them: float32 counts / int64 class sizes."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    rows = draw(st.integers(1, 4))
    exact, counts, hits = [], [], []
    for _ in range(rows):
        n = draw(st.sampled_from([1, 2, 3, 7, 20, 30, 60, 100, 1000]) | st.integers(1, 2000))
        row = draw(st.lists(st.integers(0, n) | st.sampled_from([0, n]), min_size=sum(sizes),
                            max_size=sum(sizes)))
        counts.append(n)
        hits.append(row)
        exact.append([Fraction(k, n) for k in row])
    tensor = torch.tensor(hits, dtype=torch.float32) / torch.tensor(counts)[:, None]
    return tensor, exact, sizes


@st.composite
def decimals(draw):
    """Frequencies typed as decimals (torch.tensor([[0.45, 0.3]])): steps, tiny ones, zeros."""
    sizes = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    rows = draw(st.integers(1, 4))
    value = (st.integers(0, 20).map(lambda m: Fraction(m, 20))
             | st.integers(0, 100).map(lambda m: Fraction(m, 100))
             | st.integers(0, 1000).map(lambda m: Fraction(m, 1000))
             | st.sampled_from([Fraction(0), Fraction(49, 1000), Fraction(1, 1000)]))
    exact = [draw(st.lists(value, min_size=sum(sizes), max_size=sum(sizes)))
             for _ in range(rows)]
    tensor = torch.tensor([[float(f) for f in row] for row in exact])
    return tensor, exact, sizes


@settings(max_examples=150, deadline=None, derandomize=True)
@given(counted() | decimals())
def test_every_tau_matches_the_exact_rule(case):
    tensor, exact, sizes = case
    check_against_reference(tensor, exact, sizes)


def test_explicit_cases_against_the_exact_rule():
    cases = [
        ([[0.45, 0.30]], [2]),
        ([[0.049, 0, 0, 0]], [4]),
        ([[0, 0, 0], [0, 0, 0]], [2, 1]),
        ([[1.0, 0.95, 0.2, 0.5, 0.3], [0.9, 0.1, 0.0, 0.0, 0.0]], [3, 2]),
        ([[0.05, 0.0, 0.001, 0.049]], [2, 2]),
    ]
    for rows, sizes in cases:
        exact = [[Fraction(str(f)) for f in row] for row in rows]
        check_against_reference(torch.tensor(rows, dtype=torch.float32), exact, sizes)


def test_a_best_frequency_exactly_on_a_step_is_kept():
    masks, used = module_masks(torch.tensor([[0.45, 0.30]]), [2], 0.6)
    assert masks.tolist() == [[True, False]] and used.item() == pytest.approx(0.45)
    # every tau and every lower step, typed as a decimal and computed as a count / n
    for i in range(1, 21):
        for m in range(1, i + 1):
            typed = torch.tensor([[m / 20, 0.0, (m - 1) / 20]])
            counted = torch.tensor([[3.0 * m, 0.0, 3.0 * (m - 1)]]) / torch.tensor([60])
            for freq in (typed, counted):
                masks, used = module_masks(freq, [3], i / 20)
                assert masks.tolist() == [[True, False, False]], (i, m)
                assert used.item() == pytest.approx(m / 20)


def test_a_count_that_equals_tau_reaches_it():
    freq = torch.tensor([[27.0, 26.0]]) / torch.tensor([30])  # 27/30 = 0.9 in float32
    masks, used = module_masks(freq, [2], 0.9)
    assert masks.tolist() == [[True, False]] and used.item() == pytest.approx(0.9)


def test_tau_never_falls_below_the_best_frequency():
    masks, used = module_masks(torch.tensor([[0.049, 0.0, 0.0, 0.0]]), [4], 0.9)
    assert masks.tolist() == [[True, False, False, False]]
    assert used.item() == pytest.approx(0.049)
    masks, _ = module_masks(torch.tensor([[0.02, 0.01, 0.02, 0.0]]), [4], 0.9)
    assert masks.tolist() == [[True, False, True, False]]


def test_taus_off_the_grid_step_down_from_themselves():
    freq = torch.tensor([[0.83, 0.84, 0.0], [0.02, 0.03, 0.01]])
    masks, used = module_masks(freq, [3], 0.93)
    # 0.93 -> 0.88 -> 0.83: both kept; second row: steps end at 0.03, which 0.03 reaches
    assert masks.tolist() == [[True, True, False], [False, True, False]]
    assert used[:, 0].tolist() == pytest.approx([0.83, 0.03])


def test_float64_frequencies():
    freq = torch.tensor([[0.45, 0.3, 0.0]], dtype=torch.float64)
    masks, used = module_masks(freq, [3], 0.6)
    assert masks.tolist() == [[True, False, False]] and used.dtype == torch.float64


@pytest.mark.parametrize("tau", [True, False, "0.9", None, float("nan"), float("inf"), 0, -0.5,
                                 1.0000001, pytest.param(10**400, id="huge-int"),
                                 [0.9]])
def test_module_masks_checks_tau(tau):
    with pytest.raises(mwt.MwtError, match="tau must"):
        module_masks(torch.tensor([[0.5, 0.2]]), [2], tau)


@pytest.mark.parametrize("freq, sizes, match", [
    (torch.tensor([[0.5, float("nan")]]), [2], "frequencies must lie in"),
    (torch.tensor([[0.5, 1.5]]), [2], "frequencies must lie in"),
    (torch.tensor([[0.5, -0.1]]), [2], "frequencies must lie in"),
    (torch.tensor([[1, 0]]), [2], "2-D float tensor"),
    (torch.tensor([0.5, 0.2]), [2], "2-D float tensor"),
    (torch.tensor([[0.5, 0.2]]), [3], "add up to 3 kernels"),
    (torch.tensor([[0.5, 0.2]]), [2, 0], "positive kernel counts"),
    (torch.tensor([[0.5, 0.2]]), [True, 1], "positive kernel counts"),
])
def test_module_masks_checks_its_inputs(freq, sizes, match):
    with pytest.raises(mwt.MwtError, match=match):
        module_masks(freq, sizes, 0.9)
