"""Eq. 4 and Eq. 5 against hand-computed values, and their invariants as properties; the
linear-in-the-batch form against the former [B, B] pair-matrix form (values and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from mwt import MwtError, cohesion_loss, coupling_loss
from mwt.losses import modular_objective, pair_similarity_sums

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


# ---------------------------------------------------------------------------------------------
# Reference oracle: the quadratic form (an [L, B, B] cosine matrix per batch), in float64 and
# written so that it is smooth wherever the losses are: no clamp (cosines of non-negative masks
# lie in [0, 1] by construction), the diagonal dropped by a fixed mask rather than subtracted, and
# norms through ``torch.where`` instead of ``F.normalize`` / ``vector_norm``. Its gradients then
# depend on no release's convention at a clamp or a zero norm (torch 2.14 changed those), so the
# comparison below holds on every torch. benchmarks/loss_scaling.py imports it from here (with
# dtype=float32, as the old quadratic form ran).

# mwt.losses divides a float32 mask by max(||mask||, eps), as F.normalize does: eps as float32
_EPS = torch.tensor(1e-12, dtype=torch.float32).item()


def _unit_rows(m: torch.Tensor) -> torch.Tensor:
    """m / max(||m||, eps) per row: smooth for ||m|| != eps (linear below it, 0 at 0)."""
    sq = (m * m).sum(dim=1, keepdim=True)
    norm = torch.where(sq > 0, sq, torch.ones_like(sq)).sqrt() * (sq > 0)
    return m / torch.where(norm > _EPS, norm, torch.full_like(norm, _EPS))


def _reference_pair_similarity_sums(masks, labels: torch.Tensor, dtype=torch.float64):
    layers = [masks] if isinstance(masks, torch.Tensor) else list(masks)
    _, idx = torch.unique(labels, return_inverse=True)
    onehot = F.one_hot(idx).to(dtype)                               # [B, N]
    off_diagonal = 1.0 - torch.eye(labels.numel(), dtype=dtype)     # pairs j != k only
    sums = []
    for m in layers:
        unit = _unit_rows(m.to(dtype))
        cos = (unit @ unit.T) * off_diagonal                        # [B, B]
        sums.append(onehot.T @ cos @ onehot)                        # [N, N]
    return torch.stack(sums), onehot.sum(dim=0)


def _reference_cohesion(sums, n, reduction):
    pairs = n * (n - 1)
    valid = pairs > 0
    if not bool(valid.any()):
        return sums.sum() * 0.0
    same = torch.diagonal(sums, dim1=1, dim2=2)
    if reduction == "classes":
        per_layer = 1.0 - (same[:, valid] / pairs[valid]).mean(dim=1)
    else:
        per_layer = 1.0 - same.sum(dim=1) / pairs.sum()
    return per_layer.mean()


def _reference_coupling(sums, n, reduction):
    num = n.numel()
    if num < 2:
        return sums.sum() * 0.0
    upper = torch.triu(torch.ones(num, num, dtype=torch.bool, device=n.device), diagonal=1)
    pairs = torch.outer(n, n)[upper]
    cross = sums[:, upper]
    if reduction == "classes":
        per_layer = (cross / pairs).mean(dim=1)
    else:
        per_layer = cross.sum(dim=1) / pairs.sum()
    return per_layer.mean()


def _reference_losses(masks, labels: torch.Tensor, reduction: str = "classes",
                      dtype=torch.float64):
    """(L_ch, L_cp) of the quadratic form."""
    sums, n = _reference_pair_similarity_sums(masks, labels, dtype)
    return _reference_cohesion(sums, n, reduction), _reference_coupling(sums, n, reduction)


def _values_and_grads(fn, layers, labels, reduction):
    leaves = [m.detach().clone().requires_grad_() for m in layers]
    ch, cp = fn(leaves, labels, reduction)
    grads = []
    for loss in (ch, cp):
        grads.append(torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True))
    return (ch.detach(), cp.detach()), grads


def _new_losses(masks, labels, reduction):
    _, ch, cp = modular_objective(torch.tensor(0.0), masks, labels, 1.0, 1.0, reduction)
    return ch, cp


def assert_matches_reference(layers, labels, reduction, rtol=1e-4, atol=1e-5):
    labels = torch.as_tensor(labels)
    (ch, cp), grads = _values_and_grads(_new_losses, layers, labels, reduction)
    (ref_ch, ref_cp), ref_grads = _values_and_grads(_reference_losses, layers, labels, reduction)
    torch.testing.assert_close(ch, ref_ch.float(), rtol=rtol, atol=atol)
    torch.testing.assert_close(cp, ref_cp.float(), rtol=rtol, atol=atol)
    for value in (ch, cp):
        assert torch.isfinite(value) and 0.0 <= value.item() <= 1.0
    # the public wrappers agree with modular_objective
    assert cohesion_loss(layers, labels, reduction).item() == ch.item()
    assert coupling_loss(layers, labels, reduction).item() == cp.item()
    for got, want in zip(grads, ref_grads):
        for g, r, m in zip(got, want, layers):
            g = torch.zeros_like(m) if g is None else g
            r = torch.zeros_like(m) if r is None else r.float()
            assert torch.isfinite(g).all()
            # a row's gradient scales with 1 / max(||mask||, eps): compare it times that norm
            # (the gradient w.r.t. the unit mask), relative to the largest such entry. The
            # reference is smooth everywhere but where ||mask|| is eps (a kink of max), so every
            # other row, all-zero ones included, is compared.
            norm = torch.linalg.vector_norm(m.double(), dim=1, keepdim=True)
            smooth = ((norm - _EPS).abs() > 1e-3 * _EPS).squeeze(1)
            norm = norm.clamp_min(_EPS).float()
            g, r = (g * norm)[smooth], (r * norm)[smooth]
            scale = max(1.0, r.abs().max().item()) if r.numel() else 1.0
            torch.testing.assert_close(g, r, rtol=rtol, atol=atol * scale)


def _masks(batch, widths, seed, zero_rows=0, zero_frac=0.3):
    g = torch.Generator().manual_seed(seed)
    layers = []
    for w in widths:
        m = torch.relu(torch.tanh(torch.randn(batch, w, generator=g)))      # exact zeros
        m[torch.rand(batch, w, generator=g) < zero_frac] = 0.0
        m[torch.randperm(batch, generator=g)[:zero_rows]] = 0.0              # all-zero rows
        layers.append(m)
    return layers


VGG_WIDTHS = [8, 8, 16, 16, 32, 32, 32, 64, 64, 64, 64, 64, 64]


@pytest.mark.parametrize("reduction", ["classes", "pairs"])
def test_linear_form_matches_reference_vgg_like(reduction):
    labels = torch.cat([torch.arange(10).repeat(6), torch.tensor([3, 3, 7, 10])])  # 10: 1 sample
    layers = _masks(labels.numel(), VGG_WIDTHS, seed=0, zero_rows=5)
    assert_matches_reference(layers, labels, reduction)


@pytest.mark.parametrize("reduction", ["classes", "pairs"])
@pytest.mark.parametrize("labels", [[2, 2, 2, 2, 2], [0, 1, 2, 3], [5, 5, 1], [0, 1, 1, 0, 2, 2]])
def test_linear_form_matches_reference_small_batches(labels, reduction):
    # one class (no coupling term), all singletons (no cohesion term), a singleton among pairs
    assert_matches_reference(_masks(len(labels), [3, 7, 1], seed=len(labels), zero_rows=1),
                             labels, reduction)


@pytest.mark.parametrize("reduction", ["classes", "pairs"])
def test_linear_form_matches_reference_on_boundary_masks(reduction):
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2])
    zeros = torch.zeros(7, 5)
    same = torch.tensor([[0.5, 0.2, 0.0]]).repeat(7, 1)          # every cosine exactly 1
    disjoint = torch.zeros(7, 6)
    disjoint[torch.arange(7), 2 * labels] = 0.7                  # cross-class cosines exactly 0
    tiny = torch.rand(7, 4, generator=torch.Generator().manual_seed(3)) * 1e-14  # norm < eps
    tiny[0] = 0.0
    for layers in ([zeros], [same], [disjoint], [tiny], [zeros, same, disjoint]):
        assert_matches_reference(layers, labels, reduction)


def test_underflowing_masks_match_reference_in_value_and_stay_finite():
    # every entry < 2.6e-23: the float32 squared norm underflows to 0 (see unit_floats below);
    # values still match the [B, B] form, gradients stay finite
    labels = torch.tensor([0, 0, 1, 1, 1])
    layers = [torch.rand(5, 3) * 1e-25, torch.rand(5, 4)]
    for reduction in ("classes", "pairs"):
        (ch, cp), grads = _values_and_grads(_new_losses, layers, labels, reduction)
        (ref_ch, ref_cp), _ = _values_and_grads(_reference_losses, layers, labels, reduction)
        torch.testing.assert_close(ch, ref_ch.float(), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(cp, ref_cp.float(), rtol=1e-4, atol=1e-5)
        assert all(torch.isfinite(g).all() for pair in grads for g in pair)


def test_pair_similarity_sums_match_reference_and_accept_any_float_dtype():
    labels = torch.tensor([4, 1, 4, 4, 1, 9, 1, 4])
    layers = _masks(8, [5, 2, 9], seed=7, zero_rows=2)
    ref_sums, ref_n = _reference_pair_similarity_sums(layers, labels)
    for cast in (torch.float32, torch.float64, torch.bfloat16):
        sums, n = pair_similarity_sums([m.to(cast) for m in layers], labels)
        ref = ref_sums if cast != torch.bfloat16 else _reference_pair_similarity_sums(
            [m.to(cast) for m in layers], labels)[0]
        assert sums.dtype == torch.float32 and sums.shape == (3, 3, 3)
        torch.testing.assert_close(sums, ref.float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(n, ref_n.float())
    single, _ = pair_similarity_sums(layers[0], labels)
    torch.testing.assert_close(single, ref_sums[:1].float(), rtol=1e-5, atol=1e-5)


# Non-zero entries stay >= 1e-20: a mask whose every entry is below ~2.6e-23 has a float32
# squared norm that underflows to 0, and there the self-pair's gradient (of size at most
# 2 |entry| / eps^2 * |dL/dsums| ~ 50 |dL/dsums|) is not cancelled as the [B, B] form cancels it.
unit_floats = st.one_of(st.just(0.0), st.floats(1e-20, 1.0))


@st.composite
def layered_batches(draw):
    batch = draw(st.integers(1, 12))
    labels = draw(st.lists(st.integers(0, 4), min_size=batch, max_size=batch))
    widths = draw(st.lists(st.integers(1, 8), min_size=1, max_size=4))
    layers = []
    for w in widths:
        rows = draw(st.lists(st.lists(unit_floats, min_size=w, max_size=w),
                             min_size=batch, max_size=batch))
        zero = draw(st.lists(st.booleans(), min_size=batch, max_size=batch))
        m = torch.tensor(rows, dtype=torch.float32)
        m[torch.tensor(zero)] = 0.0
        layers.append(m)
    return layers, labels


@settings(max_examples=150, deadline=None)
@given(layered_batches(), st.sampled_from(["classes", "pairs"]))
def test_linear_form_matches_reference_property(batch, reduction):
    layers, labels = batch
    assert_matches_reference(layers, labels, reduction)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 64), st.integers(1, 12), st.integers(0, 10_000),
       st.sampled_from(["classes", "pairs"]))
def test_linear_form_matches_reference_random_batches(batch, classes, seed, reduction):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (batch,), generator=g)
    layers = _masks(batch, [4, 16, 9, 33], seed=seed, zero_rows=batch // 8)
    assert_matches_reference(layers, labels, reduction)


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.numel = max(self.numel, t.numel())
        return out


def test_no_batch_by_batch_tensor_is_built():
    batch = 1024
    labels = torch.arange(batch) % 10
    layers = [m.requires_grad_() for m in _masks(batch, [4, 8, 16], seed=1)]
    with _LargestTensor() as probe:
        _, ch, cp = modular_objective(torch.tensor(0.0), layers, labels, 0.5, 1.5)
        (ch + cp).backward()
    assert probe.numel <= batch * 3 * 10         # [B, L, N] class weights; B * B = 1,048,576
