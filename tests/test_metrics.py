"""Jaccard metrics (paper Eq. 1-3) and KRR: hand cases, brute force, properties, errors."""

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mwt.errors import MwtError
from mwt.metrics import (
    jaccard_cohesion,
    jaccard_coupling,
    jaccard_matrix,
    kernel_retention_rate,
)


def rows(*sets, k):
    """Bool [len(sets), k] matrix with row i holding set i."""
    out = torch.zeros(len(sets), k, dtype=torch.bool)
    for i, s in enumerate(sets):
        out[i, list(s)] = True
    return out


def brute_ji(a, b):
    sa = {i for i, v in enumerate(a.tolist()) if v}
    sb = {i for i, v in enumerate(b.tolist()) if v}
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def brute_cohesion_per_class(sets, labels, masks=None, num_classes=None):
    num_classes = num_classes if num_classes is not None else int(labels.max()) + 1
    out = []
    for c in range(num_classes):
        members = [sets[i] for i in range(len(labels)) if int(labels[i]) == c]
        if masks is not None:
            members = [m & masks[c] for m in members]
        pairs = list(itertools.combinations(members, 2))
        out.append(sum(brute_ji(a, b) for a, b in pairs) / len(pairs) if pairs else math.nan)
    return out


def random_sets(gen, n, k, p=0.3, dup=True):
    sets = torch.rand(n, k, generator=gen) < p
    sets[0] = False  # an empty set
    if dup:  # duplicate rows, so deduplication is exercised
        sets[1::3] = sets[0:n - 1:3][: sets[1::3].shape[0]]
    return sets


def test_hand_jaccard():
    a = rows({0, 1}, {1, 2}, set(), {0, 1, 2, 3}, k=4)
    ji = jaccard_matrix(a)
    assert ji.dtype == torch.float64 and ji.shape == (4, 4)
    assert ji[0, 1] == pytest.approx(1 / 3)
    assert ji[0, 3] == pytest.approx(2 / 4)
    assert ji[2, 2] == 1.0            # two empty sets are identical
    assert ji[2, 0] == 0.0            # empty vs non-empty
    assert torch.equal(ji, ji.T)
    assert torch.all(ji.diagonal() == 1)


def test_jaccard_matrix_two_inputs_and_int_input():
    a = rows({0, 1}, k=3).int()
    b = rows({1, 2}, {0, 1}, {2}, k=3).float()
    assert jaccard_matrix(a, b).tolist() == [[pytest.approx(1 / 3), 1.0, 0.0]]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_jaccard_matrix_matches_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = random_sets(gen, 13, 17), random_sets(gen, 7, 17, p=0.6)
    ji = jaccard_matrix(a, b)
    for i, j in itertools.product(range(13), range(7)):
        assert ji[i, j].item() == pytest.approx(brute_ji(a[i], b[j]), abs=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=6, max_size=6), min_size=1, max_size=8))
def test_ji_of_a_set_with_itself_is_one(bits):
    a = torch.tensor(bits, dtype=torch.bool)
    assert torch.all(jaccard_matrix(a).diagonal() == 1.0)
    assert torch.all(jaccard_matrix(a, a.clone()).diagonal() == 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("with_masks", [False, True])
def test_cohesion_matches_brute_force(seed, with_masks):
    gen = torch.Generator().manual_seed(seed)
    n, k, classes = 40, 12, 4
    sets = random_sets(gen, n, k, p=0.4)
    labels = torch.randint(0, classes, (n,), generator=gen)
    labels[-1] = classes - 1
    masks = torch.rand(classes, k, generator=gen) < 0.6 if with_masks else None
    expected = brute_cohesion_per_class(list(sets), labels, masks, classes)
    got = jaccard_cohesion(sets, labels, masks, per_class=True)
    assert got.shape == (classes,) and got.dtype == torch.float64
    for g, e in zip(got.tolist(), expected):
        assert (math.isnan(g) and math.isnan(e)) or g == pytest.approx(e, abs=1e-12)
    valid = [e for e in expected if not math.isnan(e)]
    assert jaccard_cohesion(sets, labels, masks) == pytest.approx(sum(valid) / len(valid))


def test_cohesion_with_heavy_duplicates_matches_brute_force():
    # Few distinct sets with large counts: the count-weighted path must match the pair loop.
    gen = torch.Generator().manual_seed(7)
    proto = torch.rand(3, 10, generator=gen) < 0.5
    pick = torch.randint(0, 3, (30,), generator=gen)
    sets, labels = proto[pick], torch.zeros(30, dtype=torch.long)
    expected = brute_cohesion_per_class(list(sets), labels)[0]
    assert jaccard_cohesion(sets, labels) == pytest.approx(expected, abs=1e-12)


def test_cohesion_is_one_when_same_class_sets_are_equal():
    sets = rows({0, 1}, {0, 1}, {0, 1}, {2, 3}, {2, 3}, k=5)
    labels = torch.tensor([0, 0, 0, 1, 1])
    assert jaccard_cohesion(sets, labels) == 1.0


def test_cohesion_hand_case_and_small_classes():
    sets = rows({0, 1}, {1, 2}, {0}, {3}, k=4)
    labels = torch.tensor([0, 0, 0, 2])
    # class 0 pairs: 1/3, 1/2, 0 -> mean 5/18; class 1 absent, class 2 has one sample -> NaN
    per = jaccard_cohesion(sets, labels, per_class=True)
    assert per[0].item() == pytest.approx(5 / 18)
    assert math.isnan(per[1].item()) and math.isnan(per[2].item())
    assert jaccard_cohesion(sets, labels) == pytest.approx(5 / 18)


def test_cohesion_restricted_by_module_masks_hand_case():
    # Unrestricted {0,1} vs {1,2} is 1/3; restricted to module 0's kernels {1, 2} it is
    # {1} vs {1, 2} = 1/2.
    sets = rows({0, 1}, {1, 2}, k=3)
    labels = torch.tensor([0, 0])
    masks = rows({1, 2}, {0}, k=3)
    assert jaccard_cohesion(sets, labels) == pytest.approx(1 / 3)
    assert jaccard_cohesion(sets, labels, masks) == pytest.approx(1 / 2)
    per = jaccard_cohesion(sets, labels, masks, per_class=True)
    assert per.shape == (2,) and math.isnan(per[1].item())


def test_coupling_hand_cases():
    disjoint = rows({0, 1}, {2, 3}, {4}, k=5)
    assert jaccard_coupling(disjoint) == 0.0
    masks = rows({0, 1}, {1, 2}, {0, 1}, k=3)
    # pairs: 1/3, 1, 1/3
    assert jaccard_coupling(masks) == pytest.approx(5 / 9)
    per = jaccard_coupling(masks, per_pair=True)
    assert per.shape == (3, 3) and torch.all(per.diagonal() == 1)
    assert per[0, 1].item() == pytest.approx(1 / 3)


def test_kernel_retention_rate_hand_case():
    masks = rows({0, 1}, {1, 2, 3}, set(), k=4)
    # (2/4 + 3/4 + 0/4) / 3
    assert kernel_retention_rate(masks) == pytest.approx(5 / 12)
    assert kernel_retention_rate(torch.ones(2, 7)) == 1.0


def test_blocked_path_matches_small_blocks(monkeypatch):
    import mwt.metrics as metrics

    gen = torch.Generator().manual_seed(3)
    sets = random_sets(gen, 50, 9, p=0.5)
    labels = torch.randint(0, 2, (50,), generator=gen)
    full, coh = jaccard_matrix(sets), jaccard_cohesion(sets, labels, per_class=True)
    monkeypatch.setattr(metrics, "_BLOCK", 4)
    assert torch.allclose(jaccard_matrix(sets), full, atol=0, rtol=0)
    assert torch.allclose(jaccard_cohesion(sets, labels, per_class=True), coh, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda: jaccard_matrix(torch.ones(3)), "2-D"),
    (lambda: jaccard_matrix(torch.ones(2, 3), torch.ones(2, 4)), "same number of kernels"),
    (lambda: jaccard_matrix(torch.full((2, 3), 0.5)), "only 0 and 1"),
    (lambda: jaccard_cohesion(torch.ones(4, 3), torch.zeros(4, 1, dtype=torch.long)), "1-D"),
    (lambda: jaccard_cohesion(torch.ones(4, 3), torch.zeros(3, dtype=torch.long)), "4 rows"),
    (lambda: jaccard_cohesion(torch.ones(4, 3), torch.zeros(4)), "integer"),
    (lambda: jaccard_cohesion(torch.ones(4, 3), torch.tensor([0, 0, 1, 2]), torch.ones(2, 3)),
     "no module"),
    (lambda: jaccard_cohesion(torch.ones(4, 3), torch.zeros(4, dtype=torch.long),
                              torch.ones(2, 5)), "kernels"),
    (lambda: jaccard_cohesion(torch.ones(2, 3), torch.tensor([0, 1])), "two or more"),
    (lambda: jaccard_coupling(torch.ones(3)), "2-D"),
    (lambda: jaccard_coupling(torch.ones(1, 3)), "two modules"),
    (lambda: kernel_retention_rate(torch.ones(2, 2, 2)), "2-D"),
])
def test_clear_errors(call, match):
    with pytest.raises(MwtError, match=match):
        call()


def test_batch_jaccard_is_eq2_and_eq3_of_the_batch_without_filtering():
    from mwt.metrics import batch_jaccard, jaccard_cohesion, jaccard_coupling

    g = torch.Generator().manual_seed(0)
    layers = [torch.relu(torch.randn(24, 5, generator=g)), torch.relu(torch.randn(24, 7,
                                                                                 generator=g))]
    labels = torch.arange(24) % 4
    ch, cp = batch_jaccard(layers, labels, num_classes=6)  # classes 4, 5 absent
    sets = torch.cat(layers, 1) > 0
    assert float(ch) == pytest.approx(jaccard_cohesion(sets, labels), abs=1e-6)
    modules = torch.stack([sets[labels == c].any(0) for c in range(4)])
    assert float(cp) == pytest.approx(jaccard_coupling(modules), abs=1e-6)
