"""Eq. 4 and Eq. 5 against hand-computed values, and their invariants as properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mwt import MwtError, cohesion_loss, coupling_loss

R2 = 1 / math.sqrt(2)


def test_hand_computed_two_classes():
    masks = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # class 0: one pair, cos = 1/sqrt2; class 1: one pair, cos = 1.
    assert cohesion_loss(masks, labels).item() == pytest.approx(1 - (R2 + 1) / 2)
    # cross pairs: (a,c)=0, (a,d)=0, (b,c)=1/sqrt2, (b,d)=1/sqrt2 -> mean 1/(2 sqrt2)
    assert coupling_loss(masks, labels).item() == pytest.approx(R2 / 2)


def test_per_class_and_pairwise_forms_differ_as_defined():
    # class 0 has 3 samples (3 pairs), class 1 has 2 samples (1 pair).
    masks = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1, 1])
    # per class: class 0 mean cos 1, class 1 cos 0 -> 1 - 0.5
    assert cohesion_loss(masks, labels).item() == pytest.approx(0.5)
    # pairs: 3 pairs with cos 1, 1 pair with cos 0 -> 1 - 3/4
    assert cohesion_loss(masks, labels, reduction="pairs").item() == pytest.approx(0.25)
    # three classes: per class-pair means differ from the overall pair mean
    masks = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 1, 2])
    # pairs (0,1): cos 1 (2 pairs); (0,2): 0 (1 pair); (1,2): 0 (2 pairs)
    assert coupling_loss(masks, labels).item() == pytest.approx(1 / 3)
    assert coupling_loss(masks, labels, reduction="pairs").item() == pytest.approx(2 / 5)


def test_layers_are_averaged_and_list_equals_single_layer_form():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    layered = cohesion_loss([a, b], labels)
    assert layered.item() == pytest.approx((cohesion_loss(a, labels) + cohesion_loss(b, labels))
                                           .item() / 2)
    assert cohesion_loss(a, labels).item() == pytest.approx(0.0)
    assert cohesion_loss(b, labels).item() == pytest.approx(1.0)


def test_degenerate_batches_add_no_term_and_no_nan():
    masks = torch.rand(3, 5, requires_grad=True)
    singletons = torch.tensor([0, 1, 2])
    one_class = torch.tensor([4, 4, 4])
    assert cohesion_loss(masks, singletons).item() == 0.0
    assert coupling_loss(masks, one_class).item() == 0.0
    zeros = torch.zeros(4, 6)
    for loss in (cohesion_loss(zeros, torch.tensor([0, 0, 1, 1])),
                 coupling_loss(zeros, torch.tensor([0, 0, 1, 1]))):
        assert torch.isfinite(loss)
    (cohesion_loss(masks, singletons) + coupling_loss(masks, one_class)).backward()
    assert torch.isfinite(masks.grad).all()


def test_bad_arguments():
    with pytest.raises(MwtError, match="reduction"):
        cohesion_loss(torch.rand(2, 3), torch.tensor([0, 1]), reduction="mean")
    with pytest.raises(MwtError, match="labels"):
        coupling_loss(torch.rand(2, 3), torch.tensor([0, 1, 1]))


batches = st.integers(2, 12).flatmap(lambda b: st.tuples(
    st.lists(st.lists(st.floats(0, 0.999, allow_nan=False), min_size=4, max_size=4),
             min_size=b, max_size=b),
    st.lists(st.integers(0, 3), min_size=b, max_size=b)))


@settings(max_examples=60, deadline=None)
@given(batches, st.sampled_from(["classes", "pairs"]))
def test_losses_lie_in_unit_interval(batch, reduction):
    masks, labels = torch.tensor(batch[0]), torch.tensor(batch[1])
    for loss in (cohesion_loss(masks, labels, reduction), coupling_loss(masks, labels, reduction)):
        assert torch.isfinite(loss)
        assert -1e-6 <= loss.item() <= 1 + 1e-6


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=16), st.integers(0, 10_000))
def test_cohesion_zero_when_same_class_masks_equal(labels, seed):
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.rand(4, 6, generator=g) + 0.01
    labels = torch.tensor(labels)
    assert cohesion_loss(prototypes[labels], labels).item() == pytest.approx(0.0, abs=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=2, max_size=16), st.integers(0, 10_000))
def test_coupling_zero_for_disjoint_kernels(labels, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(labels)
    masks = torch.zeros(len(labels), 8)
    for i, c in enumerate(labels.tolist()):  # class c owns kernels 2c and 2c+1
        masks[i, 2 * c:2 * c + 2] = torch.rand(2, generator=g) * 0.9 + 0.05
    assert coupling_loss(masks, labels).item() == pytest.approx(0.0, abs=1e-6)
    assert coupling_loss(masks, labels, "pairs").item() == pytest.approx(0.0, abs=1e-6)
