"""CNNSplitter's settings: every hyper-parameter of the search, defaulting to the published values,
and how a user's partial settings are completed (``docs/baselines.md`` gives each one's source).

Settings left None (mutation rate, gamma, thresholds, active ratios) are the ones the public code
tunes per model and dataset; a search fills them from :mod:`mwt.baselines.published`.
"""

import json
import math
from dataclasses import asdict, dataclass, fields, replace

from mwt.baselines.published import PER_DATASET, published_settings
from mwt.baselines.scoring import SCORINGS
from mwt.checks import is_int, is_real
from mwt.errors import CheckpointError, MwtError

# Settings a resumed search may change: how far it goes and how candidates are run (to float
# rounding the same), not how it searches.
RESUMABLE = ("generations", "budget_minutes", "scoring", "batch_size")


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
    mutation_rate: float | None = None  # share of a child's genes re-drawn (published: 0.05 /
                                        # 0.10 on SVHN)
    patience: int | None = 20         # stop after this many generations without a better best
    # Chromosomes: G kernel groups per layer, the initial population's active ratios.
    small_groups: int = 10            # G of a layer with fewer than large_layer channels
    large_groups: int = 100
    large_layer: int = 256
    genes_at_full_width: bool = True  # compare a layer's channels / model width to large_layer
    sensitive_ratios: tuple[float, ...] | None = None    # None: the published config's
    insensitive_ratios: tuple[float, ...] | None = None
    init_temperature: float = 10.0    # gene probability ~ exp((G - 1 - rank) / temperature)
    # Kernel importance and layer sensitivity.
    confidence: float = 0.9           # importance from samples predicted with softmax >= this
    sensitivity_ratio: float = 0.5    # keep this share of a layer's most important kernels ...
    sensitivity_drop: float = 0.05    # ... sensitive if composed accuracy drops by more
    # Fitness.
    alpha: float = 0.9
    gamma: float | None = None        # published: 0.9 (SimCNN-SVHN 0.95)
    thresholds: tuple[float, ...] | None = None  # per merge level (2, 4, 8, 10); published
    min_keep: int = 50                # compositions kept per merge, at least ...
    max_keep: int = 500               # ... and at most
    # Data and cost.
    search_fraction: float = 0.2      # the training set's share searched on
    split_seed: int = 0
    search_samples: int | None = None  # a random subset of the split, for CPUs (None: all)
    seed: int = 0
    budget_minutes: float | None = None  # stop after the generation that passes this
    batch_size: int = 1024            # samples (cut) or (candidate, sample) pairs per pass
    scoring: str = "cut"              # how candidates run: cut modules, or the masked model

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
            if value is None and name in PER_DATASET:
                continue
            if not is_real(value) or not 0 <= value <= 1:
                raise MwtError(f"{name.replace('_', '-')} must be a number in [0, 1], got "
                               f"{value!r}")
        if not is_real(self.search_fraction) or not 0 < self.search_fraction < 1:
            raise MwtError(f"search-fraction must lie in (0, 1), got {self.search_fraction!r}")
        if not is_real(self.init_temperature) or self.init_temperature <= 0:
            raise MwtError(f"init-temperature must be positive, got {self.init_temperature!r}")
        for name in ("sensitive_ratios", "insensitive_ratios", "thresholds"):
            values = getattr(self, name)
            if values is None:
                continue
            if (not isinstance(values, tuple) or not values
                    or not all(is_real(v) and 0 <= v <= 1 for v in values)):
                raise MwtError(f"{name} must be a non-empty tuple of numbers in [0, 1], got "
                               f"{values!r}")
        if self.scoring not in SCORINGS:
            raise MwtError(f"scoring must be one of {', '.join(SCORINGS)}, got "
                           f"{self.scoring!r}")
        if not isinstance(self.genes_at_full_width, bool):
            raise MwtError("genes_at_full_width must be true or false")
        if self.budget_minutes is not None and (not is_real(self.budget_minutes)
                                                or self.budget_minutes <= 0):
            raise MwtError(f"budget-minutes must be a positive number, got "
                           f"{self.budget_minutes!r}")
        return self

    def resolved(self, tied: bool, dataset: str | None) -> "CNNSplitterConfig":
        """These settings with every one left None taken from the published config of the
        model's kind and the dataset (:mod:`mwt.baselines.published`)."""
        published = published_settings(tied, dataset)
        return replace(self, **{k: v for k, v in published.items()
                                if getattr(self, k) is None}).validate()

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


__all__ = ["CNNSplitterConfig", "RESUMABLE", "default_config", "derived_from_population"]
