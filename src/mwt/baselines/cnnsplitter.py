"""CNNSplitter (Qi et al., ASE 2022): modularizing a *trained standard* CNN by a genetic search,
the baseline of the MwT paper's Tables 3, 4 and 8. ``docs/baselines.md`` describes the algorithm,
every hyper-parameter and where it comes from, and how we deviate from the public code.

The steps, on the 20% *search split* of the training set:

1. kernel importance per class (:func:`mwt.baselines.probe.importance`);
2. layer sensitivity, decided by a rule (:meth:`_Search.sensitivity`);
3. per class a population of chromosomes (:mod:`mwt.baselines.genetic`), judged together by the
   shared composition fitness (:mod:`mwt.baselines.fitness`), evolved generation by generation;
4. the modules of the best generation (by alpha * accuracy + (1 - alpha) * difference of its best
   candidates) are the result: a :class:`~mwt.modularize.ModuleSet` of method ``"cnnsplitter"``.

:func:`cnnsplitter_run` does this on a run directory of ``mwt train --standard`` and writes a
directory that ``mwt reuse`` takes like an MwT run: the run's files, ``modules-cnnsplitter.*``,
``cnnsplitter.json`` (settings, then results) and ``cnnsplitter-state.*``, the resumable state
written after every generation. Every random draw of generation g comes from a generator seeded
by (seed, g), so a search resumed from its state ends exactly as an uninterrupted one.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from mwt.baselines.fitness import compose, differences, ensemble_scores
from mwt.baselines.genetic import Layout, initial_population, next_population
from mwt.baselines.probe import (
    build_probe,
    composed_predictions,
    importance,
    tied_groups,
)
from mwt.baselines.published import published_name
from mwt.baselines.results import search_results
from mwt.baselines.scoring import CandidateScorer
from mwt.baselines.search_files import (
    FORMAT,
    RESULT,
    SearchState,
    check_out,
    resumable,
    save_state,
    start,
)
from mwt.baselines.settings import CNNSplitterConfig, default_config, derived_from_population
from mwt.checkpoint import WEIGHTS, load_run
from mwt.checks import is_int
from mwt.data import as_tensors
from mwt.devices import resolve_device
from mwt.errors import MwtError
from mwt.io import (
    check_writable,
    lock_directory,
    remove_stale_temps,
    sha256,
    write_json,
)
from mwt.model_info import model_config
from mwt.modularize import ModuleSet
from mwt.runs import _check_run, run_dataset
from mwt.train import epoch_seed


@dataclass
class CNNSplitterResult:
    modules: ModuleSet
    report: dict


def search_layout(model, structure, config: CNNSplitterConfig) -> Layout:
    """The chromosome layout of a search: the published gene rule, judged at full width unless
    ``config.genes_at_full_width`` is off (:meth:`Layout.of`)."""
    width = float(model_config(model).get("width") or 1.0) if config.genes_at_full_width else 1.0
    return Layout.of(structure, config.small_groups, config.large_groups, config.large_layer,
                     width)


class _Search:
    """One search: the probe of the model (kernel importance), the candidate scorer, the
    chromosome layout and the search split."""

    def __init__(self, model, x, y, config: CNNSplitterConfig, device, names: list[str],
                 progress: bool, verbose: bool, workers: int | None = None):
        self.config, self.device, self.names = config, device, names
        self.progress, self.verbose = progress, verbose
        self.structure = tied_groups(model)
        self.probe = build_probe(model, self.structure).to(device)
        self.layout = search_layout(model, self.structure, config)
        self.x, self.y = x.to(device), y.to(device)  # the fitness runs on the device too
        self.scorer = CandidateScorer(model, self.structure, self.x, scoring=config.scoring,
                                      batch_size=config.batch_size, device=device,
                                      workers=workers)
        self.classes = len(names)

    # -- preparation ---------------------------------------------------------------------------

    def prepare(self) -> SearchState:
        cfg, c = self.config, self.classes
        t0 = time.perf_counter()
        scores, confident, predictions = importance(self.probe, self.structure, self.x, self.y,
                                                    c, cfg.confidence, cfg.batch_size,
                                                    self.device)
        t1 = time.perf_counter()
        standard = float((predictions == self.y.cpu()).double().mean())
        notes = [f"class {self.names[i]!r} has no sample predicted with confidence >= "
                 f"{cfg.confidence}; its kernel importance uses all its samples"
                 for i in range(c) if int(confident[i]) == 0]
        sensitivity = self.sensitivity(scores)
        t2 = time.perf_counter()
        sensitive = torch.tensor([standard - a > cfg.sensitivity_drop for a in sensitivity],
                                 dtype=torch.bool)
        ratios = (cfg.sensitive_ratios, cfg.insensitive_ratios)  # resolved for the model
        generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, 0))
        populations = torch.stack([
            initial_population(self.layout, sensitive, cfg.population, *ratios,
                               cfg.init_temperature, generator) for _ in range(c)])
        return SearchState(0, populations, scores, sensitive, sensitivity, cfg.alpha,
                           seconds={"importance": t1 - t0, "sensitivity": t2 - t1},
                           info={"standard_acc": standard, "confident": confident.tolist(),
                                 "warnings": notes})

    def orders(self, importance_: list[torch.Tensor]) -> list[list[torch.Tensor]]:
        """Per class, per segment: channel indices by decreasing importance."""
        return [[torch.sort(seg[c], descending=True, stable=True).indices
                 for seg in importance_] for c in range(self.classes)]

    def logits(self, masks: torch.Tensor, targets: torch.Tensor, x=None, desc="",
                cache: bool = False) -> torch.Tensor:
        bar = tqdm(total=len(masks), desc=desc, leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        try:
            return self.scorer.logits(masks, targets, x, bar.update, cache=cache)
        finally:
            bar.close()

    def sensitivity(self, importance_: list[torch.Tensor]) -> list[float]:
        """Layer sensitivity, decided by a rule instead of by hand: for each segment, every
        class's module keeps only the class's top ``sensitivity_ratio`` of the segment's kernels
        (all kernels elsewhere), and the composed accuracy on the split is measured. The segment
        is sensitive iff that accuracy is more than ``sensitivity_drop`` below the standard
        model's (which is the composed accuracy with every kernel kept)."""
        orders, starts = self.orders(importance_), self.layout.starts
        result = []
        for s, group in enumerate(self.layout.groups):
            n = self.layout.layer_sizes[group[0]]
            keep = max(1, int(n * self.config.sensitivity_ratio + 1e-9))
            masks = torch.ones(self.classes, starts[-1], dtype=torch.bool)
            for c in range(self.classes):
                layer = torch.zeros(n, dtype=torch.bool)
                layer[orders[c][s][:keep]] = True
                for i in group:
                    masks[c, starts[i]:starts[i + 1]] = layer
            logits = self.logits(masks, torch.arange(self.classes),
                                  desc=f"sensitivity {s + 1}/{len(self.layout.groups)}")
            result.append(float((composed_predictions(logits) == self.y).double().mean()))
        return result

    # -- one generation ------------------------------------------------------------------------

    def generation(self, state: SearchState, maps: list[torch.Tensor]) -> dict:
        """Evaluate population ``state.generation``, record its best, breed the next one."""
        cfg, g, c = self.config, state.generation, self.classes
        t0 = time.perf_counter()
        masks = torch.stack([self.layout.decode(state.populations[i], maps[i])
                             for i in range(c)])
        targets = torch.arange(c).repeat_interleave(cfg.population)
        flat = masks.reshape(c * cfg.population, -1)
        hits = self.scorer.hits
        logits = self.logits(flat, targets, desc=f"generation {g}/{cfg.generations}",
                              cache=True).view(c, cfg.population, -1)
        # the next population's kept parents are among these: keep only their logits
        self.scorer.keep_only(flat, targets)
        reused = self.scorer.hits - hits
        diff = differences(masks.to(self.device))
        generator = torch.Generator().manual_seed(epoch_seed(cfg.seed, g + 1))
        order = torch.randperm(c, generator=generator).tolist()
        fitness, final = compose(logits, self.y, diff, order, w=state.w, alpha=cfg.alpha,
                                 thresholds=cfg.thresholds, min_keep=cfg.min_keep,
                                 max_keep=cfg.max_keep, keep_previous=g > 0)
        fitness = fitness.cpu()
        chosen = fitness.argmax(dim=1)  # each class's fittest candidate (first on ties)
        acc, diff_mean = ensemble_scores(logits, self.y, diff, chosen)
        score = cfg.alpha * acc + (1 - cfg.alpha) * diff_mean
        top_acc = float(final.accuracy[0])
        improved = state.best is None or score > state.best["score"]
        if improved:
            state.best = {"generation": g, "score": score, "acc": acc, "diff": diff_mean,
                          "candidates": chosen.tolist()}
            state.best_masks = masks[torch.arange(c), chosen].clone()
            state.stale = 0
        else:
            state.stale += 1
        record = {"generation": g, "w": state.w, "composition_acc": top_acc,
                  "composition_fitness": float(final.fitness[0]), "acc": acc,
                  "diff": diff_mean, "score": score, "kept_compositions": len(final.accuracy),
                  "kernel_share": float(masks[torch.arange(c), chosen].double().mean()),
                  "reused_candidates": reused}
        state.w = cfg.alpha + max(0.0, cfg.gamma - top_acc)
        state.populations = torch.stack([
            next_population(state.populations[i], fitness[i], cfg.parents, cfg.keep_parents,
                            cfg.mutation_rate, generator) for i in range(c)])
        state.generation = g + 1
        if cfg.patience is not None and state.stale >= cfg.patience:
            state.stopped = "early_stop"
        record["seconds"] = time.perf_counter() - t0
        state.history.append(record)
        if self.verbose:
            tqdm.write(f"generation {g}/{cfg.generations}: best composition acc {top_acc:.4f}; "
                       f"modules acc {acc:.4f}, diff {diff_mean:.4f}, score {score:.4f}"
                       f"{' (best)' if improved else ''} | {record['seconds']:.1f}s")
        return record

    def run(self, state: SearchState, save: Callable[[SearchState], None],
            on_generation: Callable[[dict], None] | None = None) -> str:
        """Generations until the last, an early stop or the budget; returns which."""
        cfg = self.config
        maps = [self.layout.gene_map(order) for order in self.orders(state.importance)]
        while True:
            if state.stopped is not None:
                return state.stopped
            if state.generation > cfg.generations:
                return "generations"
            if (cfg.budget_minutes is not None and state.history
                    and state.searched_seconds >= cfg.budget_minutes * 60):
                return "budget"
            record = self.generation(state, maps)
            save(state)
            if on_generation is not None:
                on_generation(record)


def search_split(data, config: CNNSplitterConfig, num_classes: int):
    """The search split: ``search_fraction`` of the training set by a permutation seeded with
    ``split_seed`` (cut to ``search_samples``), as (x, y)."""
    x, y = as_tensors(data)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(config.split_seed))
    take = perm[:max(1, round(len(y) * config.search_fraction))]
    if config.search_samples is not None:
        take = take[:config.search_samples]
    take = take.to(y.device)
    xs, ys = x[take], y[take]
    missing = sorted(set(range(num_classes)) - set(ys.tolist()))
    if missing:
        raise MwtError(f"the search split ({len(ys)} samples) has no sample of class(es) "
                       f"{missing}; give more samples (search_samples / search_fraction)")
    return xs, ys


# -- the whole search ----------------------------------------------------------------------------

def cnnsplitter_search(model, train_data, test_data, config: CNNSplitterConfig | None = None, *,
                       classes: list[str] | None = None, device=None, progress: bool = False,
                       verbose: bool = False, state: SearchState | None = None,
                       save: Callable[[SearchState], None] | None = None,
                       on_generation: Callable[[dict], None] | None = None,
                       workers: int | None = None, dataset: str | None = None,
                       ) -> CNNSplitterResult:
    """Run CNNSplitter on a trained standard ``model`` in memory (no files).

    ``train_data``: the training set (the search split is carved from it, and cohesion is
    measured on it); ``test_data``: for the final accuracies only. ``config`` settings left
    None follow the published config of the model's kind and ``dataset`` (default: the
    training data's name; :mod:`mwt.baselines.published`). ``state``: a saved search to
    continue; ``save(state)`` is called after every generation; ``on_generation(record)`` after
    that. ``workers``: candidates scored side by side (:mod:`mwt.baselines.scoring`). Returns
    the modules (a ``ModuleSet`` of method ``"cnnsplitter"``) and the report.
    """
    config = (config or CNNSplitterConfig()).validate()
    device = resolve_device(device)
    spec = model_config(model)
    if spec.get("modular"):
        raise MwtError("CNNSplitter modularizes a standard model; this one has MwT's gates")
    dataset = dataset if dataset is not None else getattr(train_data, "name", None)
    tied = tied_groups(model).tied
    requested, config = config, config.resolved(tied, dataset)
    num_classes = spec.get("num_classes") or int(as_tensors(train_data)[1].max()) + 1
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise MwtError(f"{len(names)} class names given for a model of {num_classes} classes")
    model = model.to(device).eval()
    x, y = search_split(train_data, config, num_classes)
    search = _Search(model, x, y, config, device, names, progress, verbose, workers)
    if state is None:
        state = search.prepare()
    stopped = search.run(state, save or (lambda s: None), on_generation)
    mods, report = search_results(model, search, state, train_data, test_data, names, config,
                                  device, stopped)
    report.update(published_config=published_name(tied, dataset),
                  requested_config=requested.to_dict(), workers=search.scorer.workers,
                  reused_candidates=search.scorer.hits)
    return CNNSplitterResult(mods, report)


def cnnsplitter_run(run_dir, out, config: CNNSplitterConfig | None = None, *, data_dir=None,
                    device=None, progress: bool = True, verbose: bool = True,
                    force: bool = False,
                    on_generation: Callable[[dict], None] | None = None,
                    workers: int | None = None) -> CNNSplitterResult:
    """Search the modules of the standard model of ``run_dir`` into directory ``out``.

    Everything is checked before the search starts (the run, that it is a standard model, the
    settings, that ``out`` is new, empty or a CNNSplitter search of this run, and writable).
    ``out`` is locked while the search runs. A search that was killed continues from its last
    finished generation when run again with the same settings (``generations`` and
    ``budget_minutes`` may change); ``force=True`` searches again from scratch. Settings left
    None follow the published config of the model's kind and the run's dataset; ``cnnsplitter.json``
    records which (``published_config``) and every value used.
    """
    config = (config or CNNSplitterConfig()).validate()
    if workers is not None and (not is_int(workers) or workers < 1):
        raise MwtError(f"--workers must be a positive integer, got {workers!r}")
    run_dir = _check_run(run_dir)
    out = check_out(out, run_dir)
    device = resolve_device(device)
    model, run_config = load_run(run_dir, device)
    if run_config.get("modular"):
        raise MwtError(f"{run_dir} holds a modular (MwT) model; CNNSplitter modularizes a "
                       "standard model: train one with `mwt train --standard`")
    train_data = run_dataset(run_config, "train", data_dir)
    test_data = run_dataset(run_config, "test", data_dir)
    names = run_config.get("classes") or [str(i) for i in range(train_data.num_classes)]
    source = {"run": str(run_dir), "sha256": sha256((run_dir / WEIGHTS).read_bytes())}
    check_writable(out)
    with lock_directory(out, "mwt baseline cnnsplitter"):
        remove_stale_temps(out)
        check_out(out, run_dir)  # again, now that we hold the lock
        num_classes = len(names)
        structure = tied_groups(model)
        requested, config = config, config.resolved(structure.tied, run_config.get("dataset"))
        layout = search_layout(model, structure, config)
        state = None if force else resumable(out, config, source, layout, num_classes)
        start(out, run_dir, config, source, fresh=state is None, requested=requested)
        if state is not None and verbose:
            tqdm.write(f"continuing the search in {out} from generation {state.generation}")
        result = cnnsplitter_search(model, train_data, test_data, config, classes=names,
                                    device=device, progress=progress, verbose=verbose,
                                    state=state,
                                    save=lambda s: save_state(out, s, config, source),
                                    on_generation=on_generation, workers=workers,
                                    dataset=run_config.get("dataset"))
        result.modules.save(out)
        status = "stopped" if result.report["stopped_by"] == "budget" else "done"
        result.report.update(source_run=str(run_dir), dataset=run_config.get("dataset"),
                             model=model_config(model))
        write_json(out / RESULT, {"format": FORMAT, "status": status, "source": source,
                                  "config": config.to_dict(), "requested": requested.to_dict(),
                                  "results": result.report})
    return result


__all__ = ["CNNSplitterConfig", "CNNSplitterResult", "SearchState", "cnnsplitter_search",
           "cnnsplitter_run", "default_config", "derived_from_population", "search_split"]
