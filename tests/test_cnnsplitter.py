"""The CNNSplitter baseline (mwt.baselines): fitness, genetic operators, tied layers, a search end
to end on a run directory, resuming, and the `mwt baseline cnnsplitter` command."""

import itertools
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

import mwt
import mwt.runs
from helpers import demo_subset
from mwt.baselines import CNNSplitterConfig, cnnsplitter_run
from mwt.baselines.fitness import compose, differences
from mwt.baselines.genetic import (
    Layout,
    crossover,
    initial_population,
    mutate,
    next_population,
)
from mwt.baselines.probe import build_probe, importance, tied_groups
from mwt.cli import main
from mwt.modularize import ModuleSet, list_module_sets

# A search small enough for a test: 6 candidates per class, 3 populations (generations 0..2).
SMALL = {"generations": 2, "population": 6, "parents": 4, "keep_parents": 2}
SMALL_ARGS = ["--generations", "2", "--population", "6", "--parents", "4", "--keep-parents", "2",
              "--no-progress", "--quiet"]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- fitness ------------------------------------------------------------------------------------

def _two_classes():
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[[2.0, 2.0, 0.0, 0.0], [1.0, -1.0, 1.0, 1.0]],    # class 0's candidates
                           [[0.0, 0.0, 3.0, 3.0], [1.5, 1.5, 0.5, 2.0]]])   # class 1's
    masks = torch.tensor([[[1, 1, 0, 0], [1, 0, 1, 0]],
                          [[0, 0, 1, 1], [1, 1, 0, 0]]], dtype=torch.bool)
    return logits, labels, masks


def _compose(logits, labels, masks, order=(0, 1), keep_previous=False, **kw):
    options = {"w": 0.9, "alpha": 0.9, "thresholds": (0.95,), "min_keep": 1, "max_keep": 3,
               **kw}
    return compose(logits, labels, differences(masks), list(order),
                   keep_previous=keep_previous, **options)


def test_fitness_on_hand_made_compositions():
    logits, labels, masks = _two_classes()
    # Accuracies of (class-0 candidate, class-1 candidate): (0,0) 1, (0,1) 1, (1,0) .75, (1,1)
    # .25; differences 1 - JI: 1, 0, 2/3, 2/3; F = 0.9 acc + 0.1 diff.
    fitness, final = _compose(logits, labels, masks)
    assert final.members.tolist() == [[0, 0], [0, 1]]  # the two above 0.95, best F first
    assert final.accuracy.tolist() == [1.0, 1.0]
    assert final.difference.tolist() == pytest.approx([1.0, 0.0])
    assert final.fitness.tolist() == pytest.approx([1.0, 0.9])
    torch.testing.assert_close(fitness, torch.tensor([[1.0, 0.0], [1.0, 0.9]],
                                                      dtype=torch.float64))
    # min_keep keeps the most accurate even below the threshold
    fitness, final = _compose(logits, labels, masks, min_keep=3)
    assert final.members.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert fitness[0, 1] == pytest.approx(0.9 * 0.75 + 0.1 * 2 / 3)


def test_fitness_keeps_the_previous_best_and_breaks_ties_by_order():
    logits, labels, masks = _two_classes()
    flipped_logits, flipped_masks = logits.flip(1), masks.flip(1)
    # candidate 0 of both classes is now the (1, 1) composition above: accuracy .25, filtered
    # out by the threshold, but kept as the previous generation's best
    fitness, final = _compose(flipped_logits, labels, flipped_masks, keep_previous=True)
    assert final.members.tolist() == [[1, 1], [1, 0], [0, 0]]
    low = 0.9 * 0.25 + 0.1 * 2 / 3
    torch.testing.assert_close(fitness, torch.tensor([[low, 1.0], [0.9, 1.0]],
                                                      dtype=torch.float64))
    # a tie goes to the member listed first, as numpy's argmax: class 0 when it comes first
    tied = logits.clone()
    tied[1, 1, 0] = 2.0  # class-1 candidate 1 equals class-0 candidate 0 on sample 0
    keep_all = {"min_keep": 4, "max_keep": 4}
    _, first = _compose(tied, labels, masks, order=(0, 1), **keep_all)
    _, second = _compose(tied, labels, masks, order=(1, 0), **keep_all)
    acc_first = dict(zip(map(tuple, first.members.tolist()), first.accuracy.tolist()))
    acc_second = dict(zip(map(tuple, second.members.tolist()), second.accuracy.tolist()))
    assert acc_first[(0, 1)] == 1.0 and acc_second[(1, 0)] == 0.75  # members in (1, 0) order


def test_merged_levels_equal_brute_force():
    torch.manual_seed(3)
    c, p, n = 5, 3, 40  # levels 2 -> 4 -> 5, the fifth class passing through the first two
    labels = torch.randint(c, (n,))
    logits = torch.randn(c, p, n)
    masks = torch.rand(c, p, 12) < 0.5
    order = [3, 0, 4, 1, 2]
    fitness, final = compose(logits, labels, differences(masks), order, w=0.95, alpha=0.9,
                             thresholds=(0.0,), min_keep=1, max_keep=10**6,
                             keep_previous=False)
    assert len(final.accuracy) == p ** c
    diff = differences(masks)
    best = torch.zeros(c, p, dtype=torch.float64)
    for row, members in enumerate(final.members.tolist()):
        chosen = dict(zip(order, members))
        picks = torch.stack([logits[k, chosen[k]] for k in order])
        acc = float((torch.tensor(order)[picks.argmax(0)] == labels).double().mean())
        pairs = [float(diff[a, b, chosen[a], chosen[b]])
                 for a, b in itertools.combinations(order, 2)]
        assert float(final.accuracy[row]) == pytest.approx(acc)
        assert float(final.difference[row]) == pytest.approx(sum(pairs) / len(pairs))
        f = 0.95 * acc + 0.1 * sum(pairs) / len(pairs)
        for k in order:
            best[k, chosen[k]] = max(best[k, chosen[k]], f)
    torch.testing.assert_close(fitness, best)


# ---- chromosomes and genetic operators ----------------------------------------------------------

def _layout(name="rescnn", width=0.125):
    model = mwt.create_model(name, 10, 1, width)
    return model, tied_groups(model), Layout.of(tied_groups(model))


def test_published_gene_counts_and_residual_pairs():
    with torch.device("meta"):
        simcnn = mwt.create_model("simcnn", 10, 3, 1.0)
        rescnn = mwt.create_model("rescnn", 10, 3, 1.0)
    # CNNSPLITTER.md: 940 and 630 genes with the first conv, whose 64 kernels (10 genes) MwT
    # never gates and neither do we
    assert Layout.of(tied_groups(simcnn)).num_genes == 930
    structure = tied_groups(rescnn)
    assert Layout.of(structure).num_genes == 620
    tied = [g for g in structure.group_names() if "+" in g]
    assert tied == ["convs.1.0+convs.3.0", "convs.5.0+convs.7.0", "convs.9.0+convs.11.0"]


def test_residual_pairs_share_one_segment():
    model, structure, layout = _layout("rescnn")
    assert [g for g in structure.groups if len(g) > 1] == [(0, 2), (4, 6), (8, 10)]
    orders = [torch.randperm(layout.layer_sizes[g[0]], generator=_gen(s))
              for s, g in enumerate(layout.groups)]
    masks = layout.decode(torch.rand(20, layout.num_genes, generator=_gen()) < 0.5,
                          layout.gene_map(orders))
    blocks = torch.split(masks, layout.layer_sizes, dim=1)
    for group in structure.groups:
        for i in group[1:]:
            assert torch.equal(blocks[group[0]], blocks[i])
    # ResNet: a block's convolution and its shortcut convolution meet at an add
    _, resnet, _ = _layout("resnet18", 0.125)
    assert "layer2.0.conv2+layer2.0.shortcut.0+layer2.1.conv2" in resnet.group_names()


def test_decode_keeps_groups_and_a_kernel_per_layer():
    _, _, layout = _layout("simcnn", 0.0625)
    assert layout.genes[:3] == (4, 8, 8)  # never more groups than channels (tiny model)
    split = Layout((13,), ((0,),), (10,))
    assert torch.bincount(split.gene_of_rank(0)).tolist() == [2, 2, 2] + [1] * 7
    orders = [torch.randperm(layout.layer_sizes[g[0]], generator=_gen(s))
              for s, g in enumerate(layout.groups)]
    gene_map = layout.gene_map(orders)
    none = layout.decode(torch.zeros(1, layout.num_genes, dtype=torch.bool), gene_map)
    assert [int(b.sum()) for b in torch.split(none[0], layout.layer_sizes)] == \
        [1] * len(layout.layer_sizes)
    assert all(bool(b[0]) for b in torch.split(none[0], layout.layer_sizes))  # kernel 0
    first = torch.zeros(1, layout.num_genes, dtype=torch.bool)
    first[0, 0] = True  # the first segment's most important group
    kept = layout.decode(first, gene_map)[0, :layout.layer_sizes[0]]
    assert torch.nonzero(kept).flatten().tolist() == sorted(orders[0][:1].tolist())


def test_initial_population_respects_ratios():
    _, _, layout = _layout("simcnn", 0.25)
    sensitive = torch.zeros(len(layout.genes), dtype=torch.bool)
    sensitive[:4] = True
    pop = initial_population(layout, sensitive, 50, (0.6, 0.7, 0.8), (0.4, 0.5), 10.0, _gen())
    for s, (g, offset) in enumerate(zip(layout.genes, layout.offsets)):
        active = pop[:, offset:offset + g].sum(1)
        allowed = {int(g * r + 1e-9) for r in ((0.6, 0.7, 0.8) if s < 4 else (0.4, 0.5))}
        assert set(active.tolist()) <= allowed
    again = initial_population(layout, sensitive, 50, (0.6, 0.7, 0.8), (0.4, 0.5), 10.0, _gen())
    assert torch.equal(pop, again)
    # important groups are favoured: gene 0 of each segment is on more often than the last
    first = pop[:, layout.offsets].float().mean()
    last = pop[:, [o + g - 1 for o, g in zip(layout.offsets, layout.genes)]].float().mean()
    assert first > last


def test_crossover_and_mutation_keep_valid_bit_vectors():
    parents = torch.rand(5, 37, generator=_gen(1)) < 0.5
    children = crossover(parents, 8, _gen(2))
    assert children.dtype == torch.bool and children.shape == (8, 37)
    for k, child in enumerate(children):
        a, b = parents[k % 5], parents[(k + 1) % 5]
        assert any(torch.equal(child, torch.cat([a[:p], b[p:]])) for p in range(37))
    mutated = mutate(children, 0.05, _gen(3))
    assert mutated.dtype == torch.bool and mutated.shape == children.shape
    assert ((mutated != children).sum(1) <= 1).all()  # int(0.05 * 37) = 1 gene re-drawn
    assert not torch.equal(mutate(children, 1.0, _gen(4)), children)
    fitness = torch.tensor([0.1, 0.9, 0.5, 0.9, 0.0], dtype=torch.float64)
    nxt = next_population(parents, fitness, 4, 2, 0.05, _gen(5))
    assert nxt.shape == parents.shape
    assert torch.equal(nxt[0], parents[1]) and torch.equal(nxt[1], parents[3])
    # decoded children keep a kernel in every layer
    _, _, layout = _layout("rescnn")
    pop = crossover(torch.rand(4, layout.num_genes, generator=_gen()) < 0.1, 10, _gen(6))
    orders = [torch.arange(layout.layer_sizes[g[0]]) for g in layout.groups]
    masks = layout.decode(mutate(pop, 0.05, _gen(7)), layout.gene_map(orders))
    assert all(bool(b.any(1).all()) for b in torch.split(masks, layout.layer_sizes, dim=1))


# ---- the probe and extraction of a standard model -----------------------------------------------

@pytest.mark.parametrize("name", ["simcnn", "rescnn"])
def test_extract_module_on_a_standard_model_equals_the_masked_model(name):
    torch.manual_seed(0)
    standard = mwt.create_model(name, 10, 1, 0.125).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that a slicing error would show
        for m in standard.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    structure = tied_groups(standard)
    probe = build_probe(standard, structure)
    kernels = torch.rand(structure.total_kernels, generator=_gen()) < 0.5
    for block in torch.split(kernels, structure.layer_sizes):
        block[0] = True
    x = torch.randn(4, 1, 8, 8, generator=_gen(1))
    module = mwt.extract_module(standard, kernels).eval()
    masks = [b.float().expand(4, -1) for b in torch.split(kernels, structure.layer_sizes)]
    with torch.no_grad():
        torch.testing.assert_close(module(x), probe(x, masks)[0], rtol=1e-4, atol=1e-5)
    assert not mwt.is_modular(standard)  # the caller's model is untouched
    with pytest.raises(mwt.MwtError, match="keep_gates needs a modular model"):
        mwt.extract_module(standard, kernels, keep_gates=True)
    with pytest.raises(mwt.MwtError, match="fold_gates needs a modular model"):
        mwt.extract_module(standard, kernels, fold_gates=True, gate_values=kernels.float())


def test_importance_reads_relu_maps_and_the_sum_after_an_add():
    torch.manual_seed(0)
    model = mwt.create_model("rescnn", 10, 1, 0.125).eval()
    structure = tied_groups(model)
    x, y = torch.randn(12, 1, 8, 8), torch.arange(12) % 10
    scores, confident, _ = importance(build_probe(model, structure), structure, x, y, 10, 0.0,
                                      5, "cpu")
    seen = {}
    hooks = [model.convs[4].register_forward_pre_hook(lambda m, a: seen.update(add=a[0])),
             model.convs[2].register_forward_hook(lambda m, a, o: seen.update(relu=o))]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    tied, alone = structure.groups.index((0, 2)), structure.groups.index((1,))  # convs.1+3, 2
    for c in range(10):
        torch.testing.assert_close(scores[tied][c], seen["add"][y == c].sum((2, 3)).mean(0))
        torch.testing.assert_close(scores[alone][c], seen["relu"][y == c].sum((2, 3)).mean(0))
    assert confident.tolist() == torch.bincount(y, minlength=10).tolist()


def test_extracting_a_standard_model_leaves_the_random_stream_alone():
    standard = mwt.create_model("simcnn", 10, 1, 0.0625)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    mwt.extract_module(standard, torch.ones(mwt.count_gated_kernels(standard), dtype=torch.bool))
    assert torch.equal(torch.rand(3), expected)


# ---- module sets of another method --------------------------------------------------------------

def test_cnnsplitter_module_set_files(tmp_path):
    masks = torch.tensor([[1, 0, 1], [0, 1, 1]], dtype=torch.bool)
    mods = ModuleSet(masks=masks, layers=[("a", 1), ("b", 2)], tau=None,
                     frequencies=torch.rand(2, 3), gate_means=torch.ones(2, 3),
                     counts=torch.tensor([3, 4]), layer_tau=torch.zeros(2, 2),
                     classes=["x", "y"], cohesion=0.5, coupling=0.25,
                     krr=mwt.kernel_retention_rate(masks), method="cnnsplitter")
    path = mods.save(tmp_path)
    assert path.name == "modules-cnnsplitter.json"
    assert list_module_sets(tmp_path) == {"cnnsplitter": path}
    loaded = ModuleSet.load(tmp_path)
    assert loaded.method == "cnnsplitter" and loaded.tau is None
    assert torch.equal(loaded.masks, masks)
    assert ModuleSet.load(tmp_path, method="cnnsplitter").stem == "modules-cnnsplitter"
    with pytest.raises(mwt.MwtError, match=r"no module set for tau 0\.90 \(it holds a "
                                           r"cnnsplitter set\)"):
        ModuleSet.load(tmp_path, 0.9)
    meta = json.loads(path.read_text())
    meta["tau"] = 0.9
    path.write_text(json.dumps(meta))
    with pytest.raises(mwt.CheckpointError, match="has no tau"):
        ModuleSet.load(tmp_path)


# ---- a search on a run directory ----------------------------------------------------------------

def _small_dataset(name, split="train", data_dir=None, download=False):
    """A slice of the demo data at 7x7 pixels (every model pools it down to 1x1), fast enough
    for three generations of ten populations in a test."""
    data = demo_subset(split, 30 if split == "train" else 5)
    return replace(data, images=F.avg_pool2d(data.images, 4), augmentation=None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A standard and a modular run on a slice of the demo data, and a straight CNNSplitter
    search of the standard one made through the command line."""
    root = tmp_path_factory.mktemp("cnnsplitter")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mwt.runs, "load_dataset", _small_dataset)
        train, test = _small_dataset("demo"), _small_dataset("demo", "test")
        info = {"dataset": "demo", "classes": list(train.classes), "mean": list(train.mean),
                "std": list(train.std)}
        for name, standard in (("standard", True), ("modular", False)):
            spec = mwt.RunSpec(model="vgg16", dataset="demo", width=0.0625, standard=standard,
                               train=mwt.TrainConfig(epochs=3 if standard else 1,
                                                     batch_size=50))
            torch.manual_seed(0)
            model = mwt.create_model("vgg16", 10, 1, 0.0625)
            mwt.train(model if standard else mwt.make_modular(model), train, test,
                      config=spec.train, out=root / name, progress=False, verbose=False,
                      device="cpu", run_info={**info, "run": spec.to_dict()})
        assert main(["baseline", "cnnsplitter", str(root / "standard"), "--out",
                     str(root / "straight"), *SMALL_ARGS]) == 0
        yield root


def test_search_end_to_end_gives_modules_for_reuse(runs, capsys):
    out = runs / "straight"
    assert {"modules-cnnsplitter.json", "checkpoint.safetensors", "config.json",
            "cnnsplitter.json", "cnnsplitter-state.json"} <= {p.name for p in out.iterdir()}
    saved = json.loads((out / "cnnsplitter.json").read_text())
    assert saved["status"] == "done"
    r = saved["results"]
    assert r["generations_run"] == 3 and r["stopped_by"] == "generations"
    assert 0 <= r["best_generation"] <= 2
    assert r["config"]["population"] == 6
    for key in ("krr", "cohesion", "coupling", "macs_ratio"):
        assert 0 < r[key] <= 1
    assert 0 <= r["composed_acc"]["test"] <= 1 and 0 <= r["standard_acc"]["test"] <= 1
    assert r["search_seconds"] == pytest.approx(sum(r["seconds"]["per_generation"])
                                                + r["seconds"]["importance"]
                                                + r["seconds"]["sensitivity"])
    mods = mwt.runs.load_modules(out)
    assert mods.method == "cnnsplitter" and mods.krr == pytest.approx(r["krr"])
    assert mods.total_kernels == mwt.count_gated_kernels(mwt.create_model("vgg16", 10, 1, 0.0625))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mwt.runs, "load_dataset", _small_dataset)
        sub = mwt.runs.reuse_run(out, [0, 3], epochs=0, device="cpu", verbose=False)
        assert sub.report["kernel_share"] == pytest.approx(float(mods.kernels_for([0, 3])
                                                                 .float().mean()))
        assert 0 < sub.report["macs_ratio"] < 1
        capsys.readouterr()
        assert main(["reuse", str(out), "--classes", "0", "3", "--epochs", "0"]) == 0
    assert "found by CNNSplitter" in capsys.readouterr().out


def test_resumed_search_equals_a_straight_run(runs):
    out = runs / "resumed"
    config = CNNSplitterConfig(**SMALL, budget_minutes=1e-9)  # stops after generation 0

    class Killed(Exception):
        pass

    def kill(record):
        if record["generation"] == 1:
            raise Killed

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mwt.runs, "load_dataset", _small_dataset)
        first = cnnsplitter_run(runs / "standard", out, config, device="cpu", progress=False,
                                verbose=False)
        assert first.report["stopped_by"] == "budget" and first.report["generations_run"] == 1
        with pytest.raises(mwt.MwtError, match="used its budget"):
            cnnsplitter_run(runs / "standard", out, config, device="cpu", progress=False,
                            verbose=False)
        with pytest.raises(mwt.MwtError, match="seed was 0 but is now 1"):
            cnnsplitter_run(runs / "standard", out, CNNSplitterConfig(**SMALL, seed=1),
                            device="cpu", progress=False, verbose=False)
        config = CNNSplitterConfig(**SMALL)
        with pytest.raises(Killed):  # killed after generation 1 was saved
            cnnsplitter_run(runs / "standard", out, config, device="cpu", progress=False,
                            verbose=False, on_generation=kill)
        resumed = cnnsplitter_run(runs / "standard", out, config, device="cpu", progress=False,
                                  verbose=False)
    straight = json.loads((runs / "straight" / "cnnsplitter.json").read_text())["results"]
    r = resumed.report
    assert r["generations_run"] == 3
    assert r["best_generation"] == straight["best_generation"]
    for key in ("krr", "cohesion", "coupling", "score", "composed_acc"):
        assert r[key] == straight[key]
    keys = ("generation", "acc", "diff", "score", "composition_acc", "w")
    assert ([{k: h[k] for k in keys} for h in r["history"]]
            == [{k: h[k] for k in keys} for h in straight["history"]])
    assert torch.equal(resumed.modules.masks, ModuleSet.load(runs / "straight").masks)


def test_run_refuses_what_it_must_not_touch(runs, tmp_path):
    config = CNNSplitterConfig(**SMALL)
    with pytest.raises(mwt.MwtError, match="finished all 2 generations"):
        cnnsplitter_run(runs / "standard", runs / "straight", config, device="cpu")
    with pytest.raises(mwt.MwtError, match="holds no CNNSplitter search"):
        cnnsplitter_run(runs / "standard", runs / "modular", config, device="cpu")
    with pytest.raises(mwt.MwtError, match="not the run directory itself"):
        cnnsplitter_run(runs / "standard", runs / "standard", config, device="cpu")
    with pytest.raises(mwt.MwtError, match="standard model"):
        cnnsplitter_run(runs / "modular", tmp_path / "new", config, device="cpu")
    assert not (tmp_path / "new").exists()  # refused before anything was written


@pytest.mark.parametrize("argv, match", [
    (["--generations", "-1"], "generations must be an integer >= 0"),
    (["--parents", "7"], "keep-parents <= parents <= population"),
    (["--budget-minutes", "0"], "budget-minutes must be a positive number"),
])
def test_cli_bad_options_are_one_line(runs, capsys, tmp_path, argv, match):
    code = main(["baseline", "cnnsplitter", str(runs / "standard"), "--out",
                 str(tmp_path / "x"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and match in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_modular_run(runs, capsys, tmp_path):
    code = main(["baseline", "cnnsplitter", str(runs / "modular"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "modular (MwT) model" in err and "--standard" in err
    code = main(["baseline", "cnnsplitter", str(tmp_path / "missing"), "--out", "x"])
    assert code == 2 and "is not a directory" in capsys.readouterr().err


def test_parent_counts_follow_a_population_set_alone():
    from mwt.baselines.cnnsplitter import default_config, derived_from_population

    assert derived_from_population(population=6) == {"parents": 3, "keep_parents": 1}
    assert derived_from_population(population=100) == {"parents": 50, "keep_parents": 20}
    assert derived_from_population(population=1) == {"parents": 1, "keep_parents": 1}
    # a count the user set is kept, and the other follows within it
    assert derived_from_population(population=10, parents=2) == {"keep_parents": 2}
    assert derived_from_population(population=10, keep_parents=4) == {"parents": 5}
    assert derived_from_population(parents=4) == {}
    assert derived_from_population(population=10, parents=4, keep_parents=2) == {}
    config = default_config(population=6)
    assert (config.population, config.parents, config.keep_parents) == (6, 3, 1)
    with pytest.raises(mwt.MwtError, match="keep-parents <= parents <= population"):
        default_config(population=6, parents=8)


def test_cli_population_alone_runs_and_says_what_it_used(runs, capsys, tmp_path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mwt.runs, "load_dataset", _small_dataset)
        code = main(["baseline", "cnnsplitter", str(runs / "standard"), "--out",
                     str(tmp_path / "x"), "--population", "6", "--generations", "0",
                     "--no-progress", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "population 6: using --parents 3, --keep-parents 1" in out
    saved = json.loads((tmp_path / "x" / "cnnsplitter.json").read_text())["results"]["config"]
    assert (saved["population"], saved["parents"], saved["keep_parents"]) == (6, 3, 1)
