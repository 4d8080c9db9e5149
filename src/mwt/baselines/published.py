"""CNNSplitter's published search settings, one per model kind and dataset the paper ran.

The public code (``qibinhang/CNNSplitter``, ``src/configures/{simcnn,rescnn}_{cifar10,svhn}.py``)
tunes four settings per model and dataset; everything else is shared (``CNNSplitterConfig``'s
defaults). A search uses the settings of its model's kind (``rescnn``: a model whose layers are
tied at residual additions, ``simcnn``: one without) and of its dataset (``svhn``; every other
dataset takes CIFAR-10's, the paper's other dataset), unless the user sets them.
``best_generation`` is the generation the published search found its modules in (the paper's
Table 4 counts time up to it).
"""

PUBLISHED = {
    ("simcnn", "cifar10"): {"mutation_rate": 0.05, "gamma": 0.9,
                            "thresholds": (0.95, 0.95, 0.85, 0.80),
                            "sensitive_ratios": (0.6, 0.7, 0.8),
                            "insensitive_ratios": (0.4, 0.5, 0.6, 0.7), "best_generation": 123},
    ("simcnn", "svhn"): {"mutation_rate": 0.10, "gamma": 0.95,
                         "thresholds": (0.95, 0.95, 0.85, 0.80),
                         "sensitive_ratios": (0.4, 0.5, 0.6),
                         "insensitive_ratios": (0.1, 0.2, 0.3, 0.4), "best_generation": 79},
    ("rescnn", "cifar10"): {"mutation_rate": 0.05, "gamma": 0.9,
                            "thresholds": (0.95, 0.95, 0.85, 0.80),
                            "sensitive_ratios": (0.5, 0.6, 0.7),
                            "insensitive_ratios": (0.2, 0.3, 0.4), "best_generation": 185},
    ("rescnn", "svhn"): {"mutation_rate": 0.10, "gamma": 0.9,
                         "thresholds": (0.95, 0.95, 0.90, 0.85),
                         "sensitive_ratios": (0.3, 0.4, 0.5),
                         "insensitive_ratios": (0.2, 0.3), "best_generation": 107},
}
# The settings a published config fixes (None in CNNSplitterConfig: take the published one).
PER_DATASET = ("mutation_rate", "gamma", "thresholds", "sensitive_ratios", "insensitive_ratios")


def published_name(tied: bool, dataset: str | None) -> str:
    """Which published config a search of this model kind and dataset follows, as the public
    code names it (``rescnn_svhn``)."""
    kind = "rescnn" if tied else "simcnn"
    return f"{kind}_{'svhn' if dataset == 'svhn' else 'cifar10'}"


def published_settings(tied: bool, dataset: str | None) -> dict:
    """The per-dataset settings of :func:`published_name`'s config."""
    kind, data = published_name(tied, dataset).split("_")
    values = PUBLISHED[(kind, data)]
    return {k: values[k] for k in PER_DATASET}


__all__ = ["PUBLISHED", "PER_DATASET", "published_name", "published_settings"]
