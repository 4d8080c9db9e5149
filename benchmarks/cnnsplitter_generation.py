"""One CNNSplitter generation's candidate scoring: the masked full-width model against cut
candidates (with the cache of kept parents), on the same population and search samples.

Target (issue 17): the cut scoring takes >= 2.5x fewer seconds per generation at the cpu preset's
settings (population 20, 10 parents, 4 kept, 2,000 search images), and both give the same
fitness within float tolerance.

What is timed is what a generation spends on candidates: every class's population scored on
the search samples. Two generations are measured, because the cache only helps from the
second: generation 0 (nothing cached) and generation 1 (bred from generation 0 by the search's
own genetic step, so its kept parents are cached). The masked scoring has no cache. The two
scorings alternate, ``--rounds`` times, each round on fresh scorers.

    python benchmarks/cnnsplitter_generation.py --run RUNS/a-standard-run [--threads 2]
    python benchmarks/cnnsplitter_generation.py --model simcnn --dataset fashion-mnist  # untrained

An untrained model times the same (its fitness agreement says little).
"""

import argparse
import json
import statistics
import time

import torch

import mwt
from mwt.baselines.cnnsplitter import search_layout, search_split
from mwt.baselines.fitness import compose, differences
from mwt.baselines.genetic import initial_population, next_population
from mwt.baselines.probe import build_probe, importance, tied_groups
from mwt.baselines.scoring import CandidateScorer
from mwt.baselines.settings import default_config
from mwt.checkpoint import load_run
from mwt.model_info import model_config
from mwt.runs import run_dataset


def populations(model, structure, x, y, config, classes):
    """Generation 0 as the search draws it (importance from the search samples; no layer marked
    sensitive, which changes no cost), and the gene maps that decode it."""
    layout = search_layout(model, structure, config)
    scores, _, _ = importance(build_probe(model, structure), structure, x, y, classes,
                              config.confidence, config.batch_size, "cpu")
    maps = []
    for c in range(classes):
        orders = [torch.sort(seg[c], descending=True, stable=True).indices for seg in scores]
        maps.append(layout.gene_map(orders))
    g = torch.Generator().manual_seed(0)
    sensitive = torch.zeros(len(layout.genes), dtype=torch.bool)
    pops = torch.stack([initial_population(layout, sensitive, config.population,
                                           config.sensitive_ratios, config.insensitive_ratios,
                                           config.init_temperature, g) for _ in range(classes)])
    return layout, maps, pops


def score(scorer, layout, maps, pops, y, config, classes):
    """Seconds to score one generation, its logits and its fitness."""
    masks = torch.stack([layout.decode(pops[c], maps[c]) for c in range(classes)])
    flat = masks.reshape(classes * config.population, -1)
    targets = torch.arange(classes).repeat_interleave(config.population)
    t0 = time.perf_counter()
    logits = scorer.logits(flat, targets, cache=True).view(classes, config.population, -1)
    seconds = time.perf_counter() - t0
    scorer.keep_only(flat, targets)
    fitness, _ = compose(logits, y, differences(masks), list(range(classes)), w=config.alpha,
                         alpha=config.alpha, thresholds=config.thresholds,
                         min_keep=config.min_keep, max_keep=config.max_keep,
                         keep_previous=True)
    return seconds, logits, fitness


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a standard run (default: an untrained model)")
    p.add_argument("--model", default="simcnn")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--population", type=int, default=20)
    p.add_argument("--parents", type=int, default=10)
    p.add_argument("--keep-parents", type=int, default=4)
    p.add_argument("--search-samples", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.run:
        model, run_config = load_run(args.run, "cpu")
        # the settings search's runs do not record their dataset: --dataset names it
        train = (run_dataset(run_config, "train") if run_config.get("dataset")
                 else mwt.load_dataset(args.dataset, "train"))
    else:
        train = mwt.load_dataset(args.dataset, "train")
        torch.manual_seed(0)
        model = mwt.create_model(args.model, train.num_classes, train.in_channels, args.width)
    model.eval()
    structure = tied_groups(model)
    config = default_config(population=args.population, parents=args.parents,
                            keep_parents=args.keep_parents,
                            search_samples=args.search_samples).resolved(structure.tied,
                                                                         train.name)
    classes = train.num_classes
    x, y = search_split(train, config, classes)
    layout, maps, pop0 = populations(model, structure, x, y, config, classes)
    times = {"masked": [[], []], "cut": [[], []]}
    fitness, hits, pop1 = {}, {}, None
    for _ in range(args.rounds):
        for scoring in ("masked", "cut"):
            scorer = CandidateScorer(model, structure, x, scoring=scoring,
                                     batch_size=config.batch_size, device="cpu")
            for generation in (0, 1):
                pops = pop0 if generation == 0 else pop1
                seconds, _, fit = score(scorer, layout, maps, pops, y, config, classes)
                times[scoring][generation].append(seconds)
                fitness[(scoring, generation)] = fit
                if pop1 is None:  # generation 1 is bred once, from the first fitness
                    g = torch.Generator().manual_seed(1)
                    pop1 = torch.stack([next_population(pop0[c], fit[c], config.parents,
                                                        config.keep_parents,
                                                        config.mutation_rate, g)
                                        for c in range(classes)])
            hits[scoring] = scorer.hits
    med = {k: [statistics.median(v[0]), statistics.median(v[1])] for k, v in times.items()}
    out = {
        "model": model_config(model), "run": args.run, "threads": args.threads,
        "torch": torch.__version__, "population": config.population,
        "keep_parents": config.keep_parents, "search_samples": len(y),
        "genes": layout.num_genes, "workers_cut": CandidateScorer(
            model, structure, x[:1], device="cpu").workers,
        "seconds_generation0": {k: v[0] for k, v in med.items()},
        "seconds_generation1": {k: v[1] for k, v in med.items()},
        "speedup_generation0": med["masked"][0] / med["cut"][0],
        "speedup_generation1": med["masked"][1] / med["cut"][1],
        "cut_cache_hits_last_round": hits["cut"],
        "max_fitness_difference": max(
            float((fitness[("masked", g)] - fitness[("cut", g)]).abs().max()) for g in (0, 1)),
        "rounds": args.rounds, "all_seconds": times,
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
