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

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mwt.baselines.fitness import compose, differences, ensemble_scores
from mwt.baselines.genetic import Layout, initial_population, next_population
from mwt.baselines.probe import (
    build_probe,
    composed_predictions,
    importance,
    target_logits,
    tied_groups,
)
from mwt.checkpoint import WEIGHTS, load_run
from mwt.checks import is_int, is_real
from mwt.data import as_tensors
from mwt.devices import resolve_device
from mwt.errors import CheckpointError, MwtError
from mwt.extract import extract_module
from mwt.io import (
    LOCK_FILE,
    TEMP_PREFIX,
    atomic_write_bytes,
    check_writable,
    lock_directory,
    read_artifact,
    read_json,
    remove_stale_temps,
    sha256,
    write_artifact,
    write_json,
)
from mwt.macs import count_macs
from mwt.metrics import jaccard_cohesion, jaccard_coupling, kernel_retention_rate
from mwt.model_info import model_config
from mwt.modularize import ModuleSet, collect_kernel_sets, method_set_stem
from mwt.runs import _check_run, run_dataset
from mwt.train import epoch_seed, evaluate

FORMAT = "mwt-cnnsplitter/1"
STATE_FORMAT = "mwt-cnnsplitter-state/1"
RESULT = "cnnsplitter.json"    # marks a directory as a CNNSplitter search: settings, results
STATE = "cnnsplitter-state"    # .safetensors + .json: the search after its last generation
METHOD = "cnnsplitter"
RUN_FILES = ("config.json", WEIGHTS, "checkpoint.json", "metrics.jsonl")
# Settings a resumed search may change: how far it goes, not how it searches.
RESUMABLE = ("generations", "budget_minutes")


@dataclass(frozen=True)
class CNNSplitterConfig:
    """Every hyper-parameter of the search, defaulting to the published values
    (``configures/simcnn_cifar10.py`` and ``rescnn_cifar10.py`` of the public code, and
    ``../shared/CNNSPLITTER.md``); ``docs/baselines.md`` gives each one's source."""

    # The genetic search.
    generations: int = 200            # genetic steps; populations 0..generations are evaluated
    population: int = 100             # candidates per class
    parents: int = 50                 # the fittest that mate
    keep_parents: int = 20            # the fittest carried over; the rest are children
    mutation_rate: float = 0.05       # share of a child's genes re-drawn
    patience: int | None = 20         # stop after this many generations without a better best
    # Chromosomes: G kernel groups per layer, the initial population's active ratios.
    small_groups: int = 10            # G of a layer with fewer than large_layer channels
    large_groups: int = 100
    large_layer: int = 256
    sensitive_ratios: tuple[float, ...] = (0.6, 0.7, 0.8)
    insensitive_ratios: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7)
    tied_sensitive_ratios: tuple[float, ...] = (0.5, 0.6, 0.7)    # models with residual adds
    tied_insensitive_ratios: tuple[float, ...] = (0.2, 0.3, 0.4)
    init_temperature: float = 10.0    # gene probability ~ exp((G - 1 - rank) / temperature)
    # Kernel importance and layer sensitivity.
    confidence: float = 0.9           # importance from samples predicted with softmax >= this
    sensitivity_ratio: float = 0.5    # keep this share of a layer's most important kernels ...
    sensitivity_drop: float = 0.05    # ... sensitive if composed accuracy drops by more
    # Fitness.
    alpha: float = 0.9
    gamma: float = 0.9
    thresholds: tuple[float, ...] = (0.95, 0.95, 0.85, 0.80)  # per merge level (2, 4, 8, 10)
    min_keep: int = 50                # compositions kept per merge, at least ...
    max_keep: int = 500               # ... and at most
    # Data and cost.
    search_fraction: float = 0.2      # the training set's share searched on
    split_seed: int = 0
    search_samples: int | None = None  # a random subset of the split, for CPUs (None: all)
    seed: int = 0
    budget_minutes: float | None = None  # stop after the generation that passes this
    batch_size: int = 1024            # (candidate, sample) pairs per forward pass

    def validate(self) -> "CNNSplitterConfig":
        def positive_int(name, low=1):
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise MwtError(f"{name.replace('_', '-')} must be an integer >= {low}, got "
                               f"{value!r}")

        for name in ("population", "parents", "keep_parents", "small_groups", "large_groups",
                     "large_layer", "min_keep", "max_keep", "batch_size"):
            positive_int(name)
        positive_int("generations", 0)
        for name in ("split_seed", "seed"):
            positive_int(name, 0)
        for name in ("patience", "search_samples"):
            if getattr(self, name) is not None:
                positive_int(name)
        if not self.keep_parents <= self.parents <= self.population:
            raise MwtError(f"need keep-parents <= parents <= population, got {self.keep_parents}"
                           f", {self.parents}, {self.population}")
        if self.keep_parents >= self.population:
            raise MwtError("keep-parents must be below the population, so that children are "
                           "born")
        if self.min_keep > self.max_keep:
            raise MwtError(f"min-keep {self.min_keep} is above max-keep {self.max_keep}")
        for name in ("mutation_rate", "confidence", "sensitivity_ratio", "sensitivity_drop",
                     "alpha", "gamma"):
            value = getattr(self, name)
            if not is_real(value) or not 0 <= value <= 1:
                raise MwtError(f"{name.replace('_', '-')} must be a number in [0, 1], got "
                               f"{value!r}")
        if not is_real(self.search_fraction) or not 0 < self.search_fraction < 1:
            raise MwtError(f"search-fraction must lie in (0, 1), got {self.search_fraction!r}")
        if not is_real(self.init_temperature) or self.init_temperature <= 0:
            raise MwtError(f"init-temperature must be positive, got {self.init_temperature!r}")
        for name in ("sensitive_ratios", "insensitive_ratios", "tied_sensitive_ratios",
                     "tied_insensitive_ratios", "thresholds"):
            values = getattr(self, name)
            if (not isinstance(values, tuple) or not values
                    or not all(is_real(v) and 0 <= v <= 1 for v in values)):
                raise MwtError(f"{name} must be a non-empty tuple of numbers in [0, 1], got "
                               f"{values!r}")
        if self.budget_minutes is not None and (not is_real(self.budget_minutes)
                                                or self.budget_minutes <= 0):
            raise MwtError(f"budget-minutes must be a positive number, got "
                           f"{self.budget_minutes!r}")
        return self

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples as lists, as the files hold them

    @classmethod
    def from_dict(cls, saved) -> "CNNSplitterConfig":
        if not isinstance(saved, dict) or set(saved) - {f.name for f in fields(cls)}:
            raise CheckpointError("the saved CNNSplitter settings are damaged")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()}
        try:
            return cls(**values).validate()
        except MwtError as exc:
            raise CheckpointError(f"the saved CNNSplitter settings are damaged ({exc})") from exc


@dataclass
class SearchState:
    """Everything a search needs to go on from its next generation (what the state file holds)."""

    generation: int                  # the next generation to evaluate
    populations: torch.Tensor        # bool [classes, population, genes]
    importance: list[torch.Tensor]   # float [classes, channels] per segment
    sensitive: torch.Tensor          # bool [segments]
    sensitivity: list[float]         # composed accuracy keeping sensitivity_ratio, per segment
    w: float                         # the accuracy weight of the fitness, updated per generation
    best: dict | None = None         # the best generation so far: generation, score, acc, diff
    best_masks: torch.Tensor | None = None  # bool [classes, kernels]: its modules
    stale: int = 0                   # generations since the best improved
    history: list[dict] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)  # importance, sensitivity
    stopped: str | None = None       # "early_stop" once patience ran out
    info: dict = field(default_factory=dict)     # standard accuracy on the split, warnings

    @property
    def searched_seconds(self) -> float:
        """The search time so far (the paper's Table 4): preparation plus every generation."""
        return (self.seconds.get("importance", 0.0) + self.seconds.get("sensitivity", 0.0)
                + sum(h["seconds"] for h in self.history))


@dataclass
class CNNSplitterResult:
    modules: ModuleSet
    report: dict


class _Search:
    """One search: the probe of the model, the chromosome layout and the search split."""

    def __init__(self, model, x, y, config: CNNSplitterConfig, device, names: list[str],
                 progress: bool, verbose: bool):
        self.config, self.device, self.names = config, device, names
        self.progress, self.verbose = progress, verbose
        self.structure = tied_groups(model)
        self.probe = build_probe(model, self.structure).to(device)
        self.layout = Layout.of(self.structure, config.small_groups, config.large_groups,
                                config.large_layer)
        self.x, self.y = x.to(device), y.to(device)  # the fitness runs on the device too
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
        ratios = ((cfg.tied_sensitive_ratios, cfg.tied_insensitive_ratios)
                  if self.structure.tied else (cfg.sensitive_ratios, cfg.insensitive_ratios))
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

    def _logits(self, masks: torch.Tensor, targets: torch.Tensor, x=None, desc="") -> torch.Tensor:
        bar = tqdm(total=len(masks), desc=desc, leave=False, disable=not self.progress,
                   dynamic_ncols=True)
        try:
            return target_logits(self.probe, self.structure, self.x if x is None else x, masks,
                                 targets, self.config.batch_size, self.device, bar.update)
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
            logits = self._logits(masks, torch.arange(self.classes),
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
        logits = torch.stack([
            self._logits(masks[i], torch.full((cfg.population,), i, dtype=torch.long),
                         desc=f"generation {g}/{cfg.generations} class {self.names[i]}")
            for i in range(c)])
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
                  "kernel_share": float(masks[torch.arange(c), chosen].double().mean())}
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


# -- files ---------------------------------------------------------------------------------------

def _save_state(out: Path, state: SearchState, config: CNNSplitterConfig, source: dict) -> None:
    tensors = {"populations": state.populations.to(torch.uint8),
               "sensitive": state.sensitive.to(torch.uint8),
               **{f"importance.{i}": t for i, t in enumerate(state.importance)}}
    if state.best_masks is not None:
        tensors["best_masks"] = state.best_masks.to(torch.uint8)
    write_artifact(out, STATE, tensors, {
        "format": STATE_FORMAT, "config": config.to_dict(), "source": source,
        "generation": state.generation, "w": state.w, "best": state.best, "stale": state.stale,
        "history": state.history, "seconds": state.seconds, "stopped": state.stopped,
        "sensitivity": state.sensitivity, "info": state.info})


def _load_state(out: Path, layout: Layout, classes: int,
                config: CNNSplitterConfig) -> SearchState:
    meta, t = read_artifact(out, STATE, STATE_FORMAT, "CNNSplitter search state")
    where = out / f"{STATE}.json"
    try:
        segments = len(layout.genes)
        pops = t["populations"].bool()
        importance_ = [t[f"importance.{i}"].float() for i in range(segments)]
        best_masks = t["best_masks"].bool() if "best_masks" in t else None
        state = SearchState(int(meta["generation"]), pops, importance_, t["sensitive"].bool(),
                            [float(v) for v in meta["sensitivity"]], float(meta["w"]),
                            meta["best"], best_masks, int(meta["stale"]), list(meta["history"]),
                            dict(meta["seconds"]), meta["stopped"], dict(meta["info"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where} is damaged ({type(exc).__name__}: {exc}); pass --force "
                              "to search again") from exc
    expected = (classes, config.population, layout.num_genes)
    if (tuple(state.populations.shape) != expected or len(state.sensitive) != segments
            or any(tuple(s.shape) != (classes, layout.layer_sizes[g[0]])
                   for s, g in zip(state.importance, layout.groups))
            or (state.best_masks is not None
                and tuple(state.best_masks.shape) != (classes, sum(layout.layer_sizes)))):
        raise CheckpointError(f"{where} does not fit this model and these settings; pass "
                              "--force to search again")
    return state


def _foreign(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_FILE and not p.name.startswith(TEMP_PREFIX))


def _check_out(out, run_dir: Path) -> Path:
    """Refuse an --out we must not write: a file, the run itself, or a directory holding
    anything but a CNNSplitter search."""
    if out is None or str(out).strip() == "":
        raise MwtError("the output directory (--out) must not be empty")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MwtError(f"{out} is a file, not a directory")
    if out.exists() and out.resolve() == run_dir.resolve():
        raise MwtError("--out must be a new directory, not the run directory itself")
    if out.is_dir():
        if (out / RESULT).is_file():
            if read_json(out / RESULT).get("format") != FORMAT:
                raise MwtError(f"{out / RESULT} is not a CNNSplitter result of torch-mwt")
        elif _foreign(out):
            shown = ", ".join(_foreign(out)[:3])
            raise MwtError(f"{out} is not empty ({shown}) and holds no CNNSplitter search; "
                           "choose an empty or new directory for --out")
    return out


def _resumable(out: Path, config: CNNSplitterConfig, source: dict, layout: Layout,
               classes: int) -> SearchState | None:
    """The saved state to continue, None to start afresh, or an error saying why neither."""
    if not (out / RESULT).is_file():
        return None
    marker = read_json(out / RESULT)
    saved_source = marker.get("source") if isinstance(marker.get("source"), dict) else {}
    if saved_source.get("sha256") != source["sha256"]:
        raise MwtError(f"{out} holds a CNNSplitter search of another run or of other weights "
                       f"(its source is {saved_source.get('run')}); pass --force to search "
                       "again")
    if not (out / f"{STATE}.json").is_file():
        return None  # killed before its first generation ended
    saved = CNNSplitterConfig.from_dict(read_json(out / f"{STATE}.json").get("config"))
    for key, value in asdict(saved).items():
        if key not in RESUMABLE and getattr(config, key) != value:
            raise MwtError(f"cannot continue the search in {out}: {key} was {value!r} but is "
                           f"now {getattr(config, key)!r} (only --generations and "
                           "--budget-minutes may change); pass --force to search again")
    state = _load_state(out, layout, classes, config)
    if marker.get("status") == "searching":
        return state  # killed: go on, or only write the results if it had finished
    if state.stopped == "early_stop":
        raise MwtError(f"the search in {out} has finished (early stop after generation "
                       f"{state.generation - 1}); its results are in {out / RESULT}; pass "
                       "--force to search again")
    if state.generation > config.generations:
        raise MwtError(f"the search in {out} has finished all {state.generation - 1} "
                       f"generations; its results are in {out / RESULT}; pass a larger "
                       "--generations to go on, or --force to search again")
    if (config.budget_minutes is not None
            and state.searched_seconds >= config.budget_minutes * 60):
        raise MwtError(f"the search in {out} has used its budget ({state.searched_seconds / 60:.1f}"
                       f" of {config.budget_minutes:g} minutes); its results are in "
                       f"{out / RESULT}; raise --budget-minutes to go on")
    return state


def _start(out: Path, run_dir: Path, config: CNNSplitterConfig, source: dict,
           fresh: bool) -> None:
    """Mark ``out`` as a search in progress. A fresh search writes the marker first (so that a
    killed start is still recognised as ours), then copies the run's files, so that the
    directory is a run directory for ``mwt reuse``."""
    if fresh:
        for stem in (STATE, method_set_stem(METHOD)):
            for suffix in (".json", ".safetensors"):
                (out / f"{stem}{suffix}").unlink(missing_ok=True)
    write_json(out / RESULT, {"format": FORMAT, "status": "searching", "source": source,
                              "config": config.to_dict()})
    if fresh:
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                atomic_write_bytes(out / name, (run_dir / name).read_bytes())


# -- figures -------------------------------------------------------------------------------------

def _figures(model, search: _Search, state: SearchState, train_data, test_data, names,
             config: CNNSplitterConfig, device, stopped: str) -> tuple[ModuleSet, dict]:
    """The found modules as a ModuleSet, and the report: test accuracies, KRR, cohesion and
    coupling (paper section 4.2: the standard model's kernel sets on the training samples,
    restricted to each module), MACs and search time."""
    t0 = time.perf_counter()
    masks = state.best_masks
    c = len(names)
    x_test, y_test = as_tensors(test_data)
    logits = search._logits(masks, torch.arange(c), x=x_test.to(device), desc="test set")
    composed_test = float((composed_predictions(logits) == y_test.to(device)).double().mean())
    standard_test = evaluate(model, test_data, device=device)["acc"]
    sets, labels, _ = collect_kernel_sets(model, train_data, config.batch_size, device)
    counts = torch.bincount(labels, minlength=c)
    frequencies = (F.one_hot(labels, c).double().T @ sets.double()) / counts.clamp(min=1)[:, None]
    cohesion = float(jaccard_cohesion(sets, labels, module_masks=masks))
    coupling = float(jaccard_coupling(masks))
    krr = kernel_retention_rate(masks)
    shape = tuple(int(v) for v in x_test.shape[1:])
    full = count_macs(model, shape)
    macs = [count_macs(extract_module(model, masks[i]), shape) / full for i in range(c)]
    structure = search.structure
    seconds = {"importance": state.seconds["importance"],
               "sensitivity": state.seconds["sensitivity"],
               "generations": sum(h["seconds"] for h in state.history),
               "total": state.searched_seconds, "figures": time.perf_counter() - t0}
    notes = list(state.info.get("warnings", []))
    mods = ModuleSet(
        masks=masks, layers=[(layer.conv, layer.kernels) for layer in structure.layers],
        tau=None, frequencies=frequencies.float(),
        gate_means=torch.ones(c, masks.shape[1]),  # a standard model has no gates: scale 1
        counts=counts, layer_tau=torch.zeros(c, len(structure.layers)), classes=list(names),
        cohesion=cohesion, coupling=coupling, krr=krr, seconds=seconds,
        model={**model_config(model), "modular": False}, warnings=notes, method=METHOD)
    groups = structure.group_names()
    report = {
        "method": METHOD,
        "standard_acc": {"test": standard_test, "search": state.info["standard_acc"]},
        "composed_acc": {"test": composed_test, "search": state.best["acc"]},
        "krr": krr, "cohesion": cohesion, "coupling": coupling,
        "difference": state.best["diff"], "score": state.best["score"],
        "macs_ratio": sum(macs) / c, "module_macs_ratio": macs,
        "kernels_per_module": masks.sum(1).tolist(), "total_kernels": int(masks.shape[1]),
        "search_seconds": state.searched_seconds,
        "seconds": {**seconds, "per_generation": [h["seconds"] for h in state.history]},
        "generations_run": len(state.history), "best_generation": state.best["generation"],
        "stopped_by": stopped, "budget_minutes": config.budget_minutes,
        "layers": {"segments": groups, "genes": list(search.layout.genes),
                   "sensitivity_acc": state.sensitivity,
                   "sensitive": [groups[i] for i in range(len(groups))
                                 if bool(state.sensitive[i])],
                   "tied": [g for g in groups if "+" in g]},
        "search_split": {"samples": len(search.y), "fraction": config.search_fraction,
                         "seed": config.split_seed},
        "history": state.history, "warnings": notes, "config": config.to_dict(),
    }
    return mods, report


# -- the whole search ----------------------------------------------------------------------------

def cnnsplitter_search(model, train_data, test_data, config: CNNSplitterConfig | None = None, *,
                classes: list[str] | None = None, device=None, progress: bool = False,
                verbose: bool = False, state: SearchState | None = None,
                save: Callable[[SearchState], None] | None = None,
                on_generation: Callable[[dict], None] | None = None) -> CNNSplitterResult:
    """Run CNNSplitter on a trained standard ``model`` in memory (no files).

    ``train_data``: the training set (the search split is carved from it, and cohesion is
    measured on it); ``test_data``: for the final accuracies only. ``state``: a saved search to
    continue; ``save(state)`` is called after every generation; ``on_generation(record)`` after
    that. Returns the modules (a ``ModuleSet`` of method ``"cnnsplitter"``) and the report.
    """
    config = (config or CNNSplitterConfig()).validate()
    device = resolve_device(device)
    spec = model_config(model)
    if spec.get("modular"):
        raise MwtError("CNNSplitter modularizes a standard model; this one has MwT's gates")
    num_classes = spec.get("num_classes") or int(as_tensors(train_data)[1].max()) + 1
    names = list(classes) if classes is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise MwtError(f"{len(names)} class names given for a model of {num_classes} classes")
    model = model.to(device).eval()
    x, y = search_split(train_data, config, num_classes)
    search = _Search(model, x, y, config, device, names, progress, verbose)
    if state is None:
        state = search.prepare()
    stopped = search.run(state, save or (lambda s: None), on_generation)
    mods, report = _figures(model, search, state, train_data, test_data, names, config, device,
                            stopped)
    return CNNSplitterResult(mods, report)


def cnnsplitter_run(run_dir, out, config: CNNSplitterConfig | None = None, *, data_dir=None,
                    device=None, progress: bool = True, verbose: bool = True,
                    force: bool = False,
                    on_generation: Callable[[dict], None] | None = None) -> CNNSplitterResult:
    """Search the modules of the standard model of ``run_dir`` into directory ``out``.

    Everything is checked before the search starts (the run, that it is a standard model, the
    settings, that ``out`` is new, empty or a CNNSplitter search of this run, and writable).
    ``out`` is locked while the search runs. A search that was killed continues from its last
    finished generation when run again with the same settings (``generations`` and
    ``budget_minutes`` may change); ``force=True`` searches again from scratch.
    """
    config = (config or CNNSplitterConfig()).validate()
    run_dir = _check_run(run_dir)
    out = _check_out(out, run_dir)
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
        _check_out(out, run_dir)  # again, now that we hold the lock
        num_classes = len(names)
        structure = tied_groups(model)
        layout = Layout.of(structure, config.small_groups, config.large_groups,
                           config.large_layer)
        state = None if force else _resumable(out, config, source, layout, num_classes)
        _start(out, run_dir, config, source, fresh=state is None)
        if state is not None and verbose:
            tqdm.write(f"continuing the search in {out} from generation {state.generation}")
        result = cnnsplitter_search(model, train_data, test_data, config, classes=names,
                                    device=device, progress=progress, verbose=verbose,
                                    state=state,
                                    save=lambda s: _save_state(out, s, config, source),
                                    on_generation=on_generation)
        result.modules.save(out)
        status = "stopped" if result.report["stopped_by"] == "budget" else "done"
        result.report.update(source_run=str(run_dir), dataset=run_config.get("dataset"),
                             model=model_config(model))
        write_json(out / RESULT, {"format": FORMAT, "status": status, "source": source,
                                  "config": config.to_dict(), "results": result.report})
    return result


def derived_from_population(**overrides) -> dict:
    """The parent counts a user left unset when they set the population: the published ratios
    (50 parents and 20 kept of 100 candidates), at least 1 each, kept parents at most the
    parents. Empty when the population is not set or both counts are."""
    given = {k: v for k, v in overrides.items() if v is not None}
    population = given.get("population")
    if not is_int(population) or population < 1:
        return {}  # nothing to derive from; validate() names a bad population
    published = CNNSplitterConfig()
    derived = {}
    if "parents" not in given:
        derived["parents"] = max(1, math.floor(population * published.parents
                                               / published.population + 0.5))
    parents = given.get("parents", derived.get("parents"))
    if "keep_parents" not in given:
        keep = max(1, math.floor(population * published.keep_parents / published.population
                                 + 0.5))
        derived["keep_parents"] = min(keep, parents) if is_int(parents) else keep
    return derived


def default_config(**overrides) -> CNNSplitterConfig:
    """The published settings with ``overrides`` (None values are ignored), checked. Parent
    counts the overrides leave unset follow a given population (:func:`derived_from_population`)."""
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(CNNSplitterConfig(), **given,
                   **derived_from_population(**given)).validate()


__all__ = ["CNNSplitterConfig", "CNNSplitterResult", "SearchState", "cnnsplitter_search",
           "cnnsplitter_run", "default_config", "derived_from_population", "search_split"]
