"""CNNSplitter at the speed of its FLOPs (issue 17): cut-candidate scoring equals the masked model,
the cache and the workers change no number, the gene rule scales with width, and each dataset
gets its published config."""

import itertools
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import mwt
from helpers import demo_subset
from mwt.baselines import CNNSplitterConfig, cnnsplitter_search
from mwt.baselines.cohesion import reference_cohesion
from mwt.baselines.fitness import compose, differences
from mwt.baselines.genetic import Layout
from mwt.baselines.probe import tied_groups
from mwt.baselines.published import published_name
from mwt.baselines.scoring import CandidateScorer
from mwt.gates import gateable_layers


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (conftest's ``one_thread``)."""


def _trained_like(name: str, seed: int = 0):
    """A tiny standard model with BatchNorm statistics and affine weights that are not the
    identity, so that folding them is tested."""
    torch.manual_seed(seed)
    model = mwt.create_model(name, 10, 1, 0.0625).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model


def _masks(structure, count: int, seed: int = 0) -> torch.Tensor:
    """Random candidate masks that keep at least one kernel per layer and the same kernels in
    tied layers (as decoded chromosomes do)."""
    g = torch.Generator().manual_seed(seed)
    layout = Layout.of(structure)
    orders = [torch.randperm(layout.layer_sizes[grp[0]], generator=g) for grp in layout.groups]
    genes = torch.rand(count, layout.num_genes, generator=g) < 0.5
    return layout.decode(genes, layout.gene_map(orders))


@pytest.mark.parametrize("name", ["simcnn", "rescnn"])
def test_cut_candidates_score_what_the_masked_model_scores(name):
    model = _trained_like(name)
    structure = tied_groups(model)
    x = torch.randn(24, 1, 16, 16)
    masks = _masks(structure, 8)
    targets = torch.arange(8) % 10
    cut = CandidateScorer(model, structure, x, scoring="cut", batch_size=10, workers=1)
    masked = CandidateScorer(model, structure, x, scoring="masked", batch_size=50)
    a, b = cut.logits(masks, targets), masked.logits(masks, targets)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # and so the shared fitness is the same
    logits = lambda s: s.logits(masks, targets).view(2, 4, -1)  # noqa: E731
    labels = torch.randint(0, 2, (24,), generator=torch.Generator().manual_seed(1))
    both = masks.view(2, 4, -1)
    diff = differences(both)
    kw = dict(w=0.9, alpha=0.9, thresholds=(0.0,), min_keep=1, max_keep=16, keep_previous=True)
    fa, _ = compose(logits(cut), labels, diff, [0, 1], **kw)
    fb, _ = compose(logits(masked), labels, diff, [0, 1], **kw)
    torch.testing.assert_close(fa, fb, rtol=1e-6, atol=1e-6)


def test_the_cache_and_the_workers_change_no_number():
    model = _trained_like("simcnn")
    structure = tied_groups(model)
    x = torch.randn(12, 1, 16, 16)
    masks = _masks(structure, 6)
    masks = torch.cat([masks, masks[:2]])  # duplicates within one call are run once
    targets = torch.tensor([0, 1, 2, 3, 4, 5, 0, 1])
    one = CandidateScorer(model, structure, x, workers=1)
    first = one.logits(masks, targets)
    assert one.hits == 2
    torch.testing.assert_close(first[6:], first[:2], rtol=0, atol=0)
    # kept parents of the next generation come from the cache, bit for bit
    one.keep_only(masks[:3], targets[:3])
    again = one.logits(masks[:4], targets[:4])
    assert one.hits == 2 + 3
    torch.testing.assert_close(again, first[:4], rtol=0, atol=0)
    # another target class for the same kernels is another candidate
    other = one.logits(masks[:1], torch.tensor([9]))
    assert one.hits == 5 and not torch.equal(other, first[:1])
    torch.set_num_threads(2)
    two = CandidateScorer(model, structure, x, workers=2).logits(masks, targets)
    torch.testing.assert_close(two, first, rtol=1e-5, atol=1e-5)
    with pytest.raises(mwt.MwtError, match="workers"):
        CandidateScorer(model, structure, x, workers=0)


def test_genes_are_counted_at_full_width_within_each_layers_bounds():
    with torch.device("meta"):
        full = mwt.create_model("simcnn", 10, 3, 1.0)
        quarter = mwt.create_model("simcnn", 10, 1, 0.25)
    published = Layout.of(tied_groups(full))
    scaled = Layout.of(tied_groups(quarter), width=0.25)
    # each layer gets the published layer's genes (the same share of the layer per gene),
    # except where it has fewer kernels than that: one gene per kernel
    assert scaled.genes == tuple(min(g, n) for g, n in zip(published.genes, scaled.layer_sizes))
    assert scaled.genes == (10, 10, 10, 64, 64, 64) + (100,) * 6 and scaled.num_genes == 822
    as_is = Layout.of(tied_groups(quarter))
    assert as_is.num_genes == 120  # every layer under 256 kernels: 10 genes each
    tiny = Layout.of(tied_groups(mwt.create_model("simcnn", 10, 1, 0.0625)), width=0.0625)
    assert all(1 <= g <= n for g, n in zip(tiny.genes, tiny.layer_sizes))
    assert tiny.genes[-1] == tiny.layer_sizes[-1]  # 32 kernels of a 512-kernel layer: 32 genes


def test_each_dataset_and_model_kind_gets_its_published_config():
    cifar = CNNSplitterConfig().resolved(False, "cifar10")
    svhn = CNNSplitterConfig().resolved(False, "svhn")
    res_svhn = CNNSplitterConfig().resolved(True, "svhn")
    assert (cifar.mutation_rate, cifar.gamma, cifar.sensitive_ratios) == (0.05, 0.9,
                                                                           (0.6, 0.7, 0.8))
    assert (svhn.mutation_rate, svhn.gamma, svhn.insensitive_ratios) == (0.10, 0.95,
                                                                          (0.1, 0.2, 0.3, 0.4))
    assert res_svhn.thresholds == (0.95, 0.95, 0.90, 0.85)
    assert res_svhn.sensitive_ratios == (0.3, 0.4, 0.5)
    assert published_name(False, "fashion-mnist") == "simcnn_cifar10"
    # a setting the user gives is kept
    assert CNNSplitterConfig(mutation_rate=0.2).resolved(True, "svhn").mutation_rate == 0.2


def _tiny_data(split, per_class, name):
    data = demo_subset(split, per_class)
    return replace(data, images=F.avg_pool2d(data.images, 4), augmentation=None, name=name)


def test_an_svhn_search_runs_with_the_svhn_config():
    torch.manual_seed(0)
    model = mwt.create_model("simcnn", 10, 1, 0.0625).eval()
    train, test = _tiny_data("train", 20, "svhn"), _tiny_data("test", 3, "svhn")
    config = CNNSplitterConfig(generations=1, population=4, parents=2, keep_parents=1)
    result = cnnsplitter_search(model, train, test, config, device="cpu")
    r = result.report
    assert r["published_config"] == "simcnn_svhn"
    assert r["config"]["mutation_rate"] == 0.10 and r["requested_config"]["mutation_rate"] is None
    assert r["history"][1]["reused_candidates"] >= 1  # the kept parent was not run again


def _module_sets_by_hooks(model, mask, x):
    """Kernel sets of the module that keeps ``mask``, by hooks on the standard model: every
    removed kernel's BatchNorm output is zeroed (what cutting it does), a kept kernel is used
    when its output has a positive element."""
    layers = gateable_layers(model)
    sizes = [layer.kernels for layer in layers]
    parts = torch.split(mask, sizes)
    seen, hooks = [], []
    for layer, keep in zip(layers, parts):
        def hook(module, inputs, out, keep=keep):
            out = out * keep.view(1, -1, 1, 1).float()
            seen.append((out.flatten(2).amax(2) > 0) & keep)
            return out
        hooks.append(model.get_submodule(layer.output).register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(seen, dim=1)


def test_reference_cohesion_runs_each_cut_module_on_its_classes_test_images():
    model = _trained_like("simcnn")
    structure = tied_groups(model)
    test = _tiny_data("test", 4, "demo")
    masks = _masks(structure, 10, seed=3)
    mean, per_class = reference_cohesion(model, masks, test)
    expected = []
    for c in range(10):
        x = test.images[test.labels == c]
        sets = _module_sets_by_hooks(model, masks[c], x)
        pairs = []
        for i, j in itertools.combinations(range(len(sets)), 2):
            union = (sets[i] | sets[j]).sum().item()
            pairs.append((sets[i] & sets[j]).sum().item() / union if union else 1.0)
        expected.append(sum(pairs) / len(pairs))
    assert per_class == pytest.approx(expected)
    assert mean == pytest.approx(sum(expected) / 10)
