"""The experiment presets: every setting of ``mwt experiment``, written once per preset.

- ``micro``: a few hundred images of the embedded demo data (the dataset ``demo-micro``,
  registered when the preset is asked for), tiny models, one epoch; each RQ takes seconds.
  The tests use it.
- ``cpu``: full Fashion-MNIST, models of a quarter of the channels, 30 epochs, settings chosen
  on a validation split; RQ1 is about 16 core-hours of a 2-core CPU, resumed over several
  invocations (docs/reproducing.md gives the measured times).
- ``paper``: the paper's section 4.1 on a GPU: CIFAR-10 and SVHN, full width, 200 epochs,
  Table 1 alpha/beta, 10 sub-tasks per M, CNNSplitter's published search settings.

``--models``, ``--epochs`` and ``--seeds`` narrow or widen any preset (``Preset.with_options``).
"""

from dataclasses import dataclass, field, replace

import torch

from mwt.config import default_alpha_beta
from mwt.data import load_dataset, register_dataset
from mwt.errors import MwtError

RQS = ("rq1", "rq2", "rq3", "rq4", "methods")
MICRO_DATASET = "demo-micro"
MICRO_PER_CLASS = {"train": 30, "test": 10}  # images per class of each split


def _micro(split, data_dir=None, download=False):
    """The first images of each class of the embedded demo data (a stratified cut)."""
    data = load_dataset("demo", split, data_dir, download)
    per_class = MICRO_PER_CLASS.get(split, MICRO_PER_CLASS["test"])
    idx = torch.cat([torch.nonzero(data.labels == c).flatten()[:per_class]
                     for c in range(data.num_classes)])
    return replace(data.subset(idx), name=MICRO_DATASET)


def register_micro_dataset() -> None:
    """Register ``demo-micro`` (again is harmless). Done when the micro preset is asked for, not
    on import, so that importing ``mwt.experiments`` leaves the dataset registry as it was."""
    register_dataset(MICRO_DATASET, _micro)


@dataclass(frozen=True)
class Preset:
    """Everything an experiment needs besides its output directory.

    Training: ``datasets`` (each model is trained on each), ``width``, ``epochs``, ``seeds``
    (RQ1: ``rq1_seeds`` per model where given), ``batch_size``, ``lr``; ``alpha_beta``
    overrides the paper's Table 1 per (model, dataset);
    ``crop_padding`` / ``hflip`` override the dataset's own augmentation (None: keep it);
    ``track_samples`` training images score modularity after each epoch (Figure 5).
    ``models``: the default models of each RQ; ``baseline_models``: the models CNNSplitter is run
    for (Tables 3, 4, 8), with ``cnnsplitter`` overriding its published settings.
    RQ3: ``subtask_sizes`` (M), ``subtasks`` random sub-tasks per M drawn with
    ``subtask_seed``; fine-tuning ``finetune_epochs`` at ``finetune_lr`` (at least
    ``finetune_min_steps`` steps; None: the library's 100), on a cosine schedule whose T_max is
    ``finetune_cosine_span`` x the epochs, with the run's own training augmentation, starting
    from the module with its gates ``finetune_start`` ("removed", "kept" or "folded"), its
    BatchNorm statistics recalibrated on the sub-task first if ``finetune_recalibrate``.
    RQ4: ``alphas`` / ``betas`` (the other weight at its Table 1 value), ``taus`` and a
    ``rq4_classes``-class reuse per tau.
    """

    name: str
    description: str
    datasets: tuple[str, ...]
    width: float
    epochs: int
    seeds: tuple[int, ...] = (0,)
    rq1_seeds: dict = field(default_factory=dict)
    batch_size: int = 128
    lr: float = 0.05
    alpha_beta: dict = field(default_factory=dict)
    crop_padding: int | None = None
    hflip: bool | None = None
    track_samples: int = 1000
    tau: float = 0.9
    models: dict = field(default_factory=dict)
    baseline_models: tuple[str, ...] = ("simcnn", "rescnn")
    cnnsplitter: dict = field(default_factory=dict)
    subtask_sizes: tuple[int, ...] = tuple(range(2, 11))
    subtasks: int = 10
    subtask_seed: int = 0
    finetune_epochs: int = 5
    finetune_lr: float = 0.01
    finetune_min_steps: int | None = None
    finetune_cosine_span: float = 1.0
    finetune_start: str = "removed"
    finetune_recalibrate: bool = False
    alphas: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    betas: tuple[float, ...] = (1.2, 1.5, 1.7, 2.0)
    taus: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    rq4_classes: int = 3
    # `mwt experiment methods`: the training methods compared, and the sub-task sizes.
    methods: tuple[str, ...] = ("mwt", "nemo", "moda")
    methods_subtask_sizes: tuple[int, ...] = (2, 3, 5)
    cnnsplitter_fallback: bool = True  # Table 3/4/8 without CNNSplitter if it is not installed

    def __post_init__(self) -> None:
        if self.finetune_start not in ("removed", "kept", "folded"):
            raise MwtError(f"finetune_start must be removed, kept or folded, got "
                           f"{self.finetune_start!r}")

    def alpha_beta_for(self, model: str, dataset: str) -> tuple[float, float]:
        """The preset's (alpha, beta) for a model and dataset: its own, else Table 1's."""
        return tuple(self.alpha_beta.get((model, dataset), default_alpha_beta(model, dataset)))

    def models_for(self, rq: str) -> tuple[str, ...]:
        return tuple(self.models.get(rq, ()))

    def rq1_seeds_for(self, model: str) -> tuple[int, ...]:
        """The training seeds RQ1 averages over for ``model``: its own (``rq1_seeds``), else
        ``seeds``. The other RQs use ``seeds``: RQ1's extra seeds measure how much Table 2 moves
        between runs, where fine-tuning every seed's modules would multiply RQ3's cost."""
        return tuple(self.rq1_seeds.get(model, self.seeds))

    def with_options(self, *, epochs: int | None = None,
                     seeds: list[int] | None = None) -> "Preset":
        """This preset with ``--epochs`` / ``--seeds`` applied (models are chosen per RQ)."""
        changes = {}
        if epochs is not None:
            changes["epochs"] = int(epochs)
        if seeds is not None:  # --seeds is every model's, in every RQ
            changes["seeds"] = tuple(int(s) for s in seeds)
            changes["rq1_seeds"] = {}
        return replace(self, **changes)

    def settings(self) -> dict:
        """The preset as JSON (what each experiment records)."""
        out = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "alpha_beta":
                value = [[m, d, a, b] for (m, d), (a, b) in sorted(value.items())]
            elif isinstance(value, dict):
                value = {k: list(v) if isinstance(v, tuple) else v for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[name] = value
        return out


ALL_MODELS = ("vgg16", "resnet18", "simcnn", "rescnn")

MICRO = Preset(
    name="micro",
    description=(f"tests and smoke runs: {MICRO_DATASET} ({MICRO_PER_CLASS['train']} train / "
                 f"{MICRO_PER_CLASS['test']} test images per class of the embedded demo data), "
                 "width 0.0625, 2 epochs of batch 50; seconds per RQ"),
    datasets=(MICRO_DATASET,),
    width=0.0625,
    epochs=2,
    batch_size=50,
    track_samples=100,
    models={"rq1": ("vgg16", "simcnn"), "rq2": ("simcnn",), "rq3": ("vgg16",),
            "rq3_baseline": ("simcnn",), "rq4": ("vgg16",), "methods": ("vgg16",)},
    cnnsplitter={"generations": 1, "population": 6, "parents": 4, "keep_parents": 2,
                 "min_keep": 2, "max_keep": 8, "search_samples": 60, "patience": None},
    subtask_sizes=(2, 5, 10),
    subtasks=1,
    finetune_epochs=1,
    finetune_min_steps=2,
    alphas=(0.3, 0.5),
    betas=(1.5, 2.0),
    taus=(0.5, 0.9),
)

CPU = Preset(
    name="cpu",
    description=("full Fashion-MNIST (60,000 / 10,000 images), width 0.25, 30 epochs of batch "
                 "128 (lr 0.05, cosine), flips only (no crop), alpha/beta 0.5/1.5, fine-tuning "
                 "2 epochs at lr 0.05 from the gates removed, all chosen on a validation split "
                 "(docs/results/cpu/tuning); RQ1 2 seeds for vgg16 and resnet18; RQ3 5 "
                 "sub-tasks per M; several sessions of a 2-core CPU (docs/reproducing.md)"),
    datasets=("fashion-mnist",),
    width=0.25,
    # Chosen by `python -m mwt.experiments.tune` on 6,000 validation images of the training
    # split (docs/results/cpu/tuning/tuning.md). At 8 epochs (the old preset) accuracy was still
    # rising when the cosine schedule ended; at 30, beta 1.5 (flips only) loses 0.70 points
    # against the standard model with KRR 24.3%, cohesion 0.963, coupling 0.187, where beta 2.0
    # loses 1.12 with KRR 22.2%, cohesion 0.950, coupling 0.164: 1.5 meets three of the four
    # targets, 2.0 one and a half. Without the crop the standard model gained 1.2 points at 8
    # epochs and the modular one 2.5.
    epochs=30,
    rq1_seeds={"vgg16": (0, 1), "resnet18": (0, 1)},
    crop_padding=0,
    hflip=True,
    alpha_beta={(m, "fashion-mnist"): (0.5, 1.5) for m in ALL_MODELS},
    models={"rq1": ALL_MODELS, "rq2": ("simcnn", "rescnn"), "rq3": ("vgg16", "resnet18"),
            "rq3_baseline": ("simcnn", "rescnn"), "rq4": ("vgg16",),
            "methods": ("vgg16", "resnet18")},
    # At most an hour per model, stopped after 10 generations without a better score (issue 17).
    cnnsplitter={"population": 20, "parents": 10, "keep_parents": 4, "search_samples": 2000,
                 "budget_minutes": 60.0, "patience": 10},
    subtasks=5,
    # Chosen by `python -m mwt.experiments.tune_reuse` on the flip-b1.5 run and the same split
    # (docs/results/cpu/tuning/reuse): 2-class sub-tasks lose 0.13 points against the standard
    # model at lr 0.05 from the gates removed, 0.29-0.46 from kept or folded gates.
    finetune_epochs=2,
    finetune_lr=0.05,
    finetune_start="removed",
    alphas=(0.3, 0.5, 0.7, 0.9),
    betas=(1.2, 1.5, 1.7, 2.0),
)

PAPER = Preset(
    name="paper",
    description=("the paper's section 4.1 (GPU): CIFAR-10 and SVHN, full width, 200 epochs of "
                 "batch 128, lr 0.05 (Nesterov, cosine), crop + flip (also for SVHN, as the "
                 "reference code does), Table 1 alpha/beta, tau 0.9, 10 sub-tasks per M "
                 "fine-tuned as the reference code does (10 epochs, lr 0.05, cosine over 20), "
                 "CNNSplitter's published search"),
    datasets=("cifar10", "svhn"),
    width=1.0,
    epochs=200,
    # The reference code flips SVHN too (src/dataset_loader.py); the SVHN dataset's own
    # augmentation here is crop only, since a mirrored digit is another image.
    hflip=True,
    # The reference code's reuse (src/modularizer.py): 10 epochs (the text says 5) at
    # --lr_model 0.05, CosineAnnealingLR(T_max = 2 x epochs); it keeps the best *test* epoch,
    # we the best on a 10% validation split of the sub-task's training images.
    finetune_epochs=10,
    finetune_lr=0.05,
    finetune_cosine_span=2.0,
    models={"rq1": ALL_MODELS, "rq2": ("simcnn", "rescnn"), "rq3": ("vgg16", "resnet18"),
            "rq3_baseline": ("simcnn", "rescnn"), "rq4": ("resnet18",),
            "methods": ("vgg16", "resnet18")},
)

PRESETS = {p.name: p for p in (MICRO, CPU, PAPER)}

# What the cpu preset must show for vgg16 and resnet18 (issue 10; ../shared/SPEC.md), checked in
# the RQ1 and RQ3 reports: Table 2 key -> (label, bound, "max" or "min").
TARGETS = {
    "acc_loss": ("accuracy loss vs standard (points)", 1.0, "max"),
    "krr": ("KRR %", 20.0, "max"),
    "cohesion": ("cohesion", 0.95, "min"),
    "coupling": ("coupling", 0.20, "max"),
}
REUSE_TARGET = ("2-class reuse loss vs standard model (points)", 0.3, "max")
# Issue 20's bounds for a transformer at the cpu preset, where they differ from the CNNs'.
VIT_TARGET_BOUNDS = {"acc_loss": 1.5, "reuse_loss": 0.5}
TUNING_NOTE = ("The cpu preset's settings (30 epochs, flips only, alpha/beta 0.5/1.5, "
               "fine-tuning 2 epochs at lr 0.05) were chosen on a validation split by `python "
               "-m mwt.experiments.tune` and `tune_reuse`; what was tried and what "
               "each candidate scored: docs/results/cpu/tuning/tuning.md and docs/reproducing.md "
               "(How the cpu preset's settings were chosen).")


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise MwtError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if MICRO_DATASET in PRESETS[name].datasets:
        register_micro_dataset()
    return PRESETS[name]


__all__ = ["Preset", "PRESETS", "MICRO", "CPU", "PAPER", "RQS", "MICRO_DATASET", "TARGETS",
           "REUSE_TARGET", "VIT_TARGET_BOUNDS", "TUNING_NOTE", "get_preset",
           "register_micro_dataset"]
