"""Every setting of a run, in one place and with its default written once.

``TrainConfig`` holds the training hyper-parameters (the paper's Table 1 and section 4.1), the
Table 1 (alpha, beta) lookup lives here, and ``RunSpec`` describes a whole `mwt train` run of a
registered model on a registered dataset: it is what the CLI builds, what ``config.json`` saves
and what ``--resume`` reads back. ``DEMO`` holds the demo's settings. Nothing here imports torch
at module level.
"""

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mwt.checks import is_int, is_real
from mwt.errors import CheckpointError, MwtError

REDUCTIONS = ("classes", "pairs")
# The training methods of mwt.methods, named here for the CLI without importing torch.
METHOD_NAMES = ("mwt", "nemo", "moda")  # the paper's per-class form, the reference code's pairs

# Table 1 of the paper: (alpha, beta) per model and dataset; others use DEFAULT_ALPHA_BETA.
PAPER_ALPHA_BETA = {
    ("vgg16", "cifar10"): (0.5, 1.5), ("vgg16", "svhn"): (1.0, 2.0),
    ("resnet18", "cifar10"): (0.5, 1.5), ("resnet18", "svhn"): (1.3, 1.5),
    ("simcnn", "cifar10"): (0.5, 3.5), ("simcnn", "svhn"): (0.5, 2.0),
    ("rescnn", "cifar10"): (1.0, 2.2), ("rescnn", "svhn"): (1.0, 1.8),
}
DEFAULT_ALPHA_BETA = (0.5, 1.5)


def default_alpha_beta(model: str | None, dataset: str | None) -> tuple[float, float]:
    """The paper's Table 1 (alpha, beta) for a registered model and dataset, else 0.5 / 1.5."""
    return PAPER_ALPHA_BETA.get((str(model).lower(), str(dataset).lower()), DEFAULT_ALPHA_BETA)


MAX_SEED = 2**63 - 1


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (defaults: the paper's Table 1 and section 4.1).

    This is the one home of every training default: the CLI, ``mwt.train``, ``--resume`` and the
    demo all start from it. Fields left at None are decided by what is trained (``resolved``):
    ``alpha`` / ``beta`` by the paper's Table 1 for the model and dataset (0.5 / 1.5 where the
    table has none), ``crop_padding`` / ``hflip`` by the data (a registered dataset's own
    augmentation; none for tensors, Datasets and DataLoaders; see ``train``'s ``augment``).
    """

    epochs: int = 200
    lr: float = 0.05
    # The cosine schedule's T_max is cosine_span x epochs: 1.0 anneals the rate to zero over the
    # run (the paper's training); 2.0 only to half of it (the reference code's fine-tuning).
    cosine_span: float = 1.0
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0
    batch_size: int = 128
    alpha: float | None = None
    beta: float | None = None
    reduction: str = "classes"
    crop_padding: int | None = None
    hflip: bool | None = None
    seed: int = 0
    eval_batch_size: int = 1024
    # Several processes (torchrun): the losses see each rank's own batch only, not the global one.
    local_losses: bool = False
    # Several processes on CUDA: BatchNorm statistics over the global batch (SyncBatchNorm).
    sync_bn: bool = False
    # After each epoch, Jaccard cohesion/coupling, KRR and kernel rate of this many training
    # images (a fixed sample) go into metrics.jsonl as track_* keys (mwt.tracking); 0: off.
    track_modularity: int = 0
    # The modular training method (mwt.methods: "mwt", "nemo", "moda") and its own
    # hyper-parameters besides alpha / beta (e.g. {"temperature": 0.2}); a model without gates
    # trained with a gated method (mwt, nemo) is standard training.
    method: str = "mwt"
    method_options: dict = field(default_factory=dict)

    def validate(self) -> None:
        """One clear error for the first bad field, before any work starts."""
        if not is_int(self.epochs) or not 1 <= self.epochs <= 100_000:
            raise MwtError(f"epochs must be an integer from 1 to 100000, got {self.epochs!r}")
        if not is_real(self.lr) or not self.lr > 0:
            raise MwtError(f"lr must be a positive finite number, got {self.lr!r}")
        if not is_real(self.cosine_span) or not 1.0 <= self.cosine_span <= 1000:
            raise MwtError(f"cosine span must be a number from 1 to 1000 (T_max = span x "
                           f"epochs), got {self.cosine_span!r}")
        if not is_real(self.momentum) or not 0 <= self.momentum < 1:
            raise MwtError(f"momentum must lie in [0, 1), got {self.momentum!r}")
        if not isinstance(self.nesterov, bool):
            raise MwtError(f"nesterov must be true or false, got {self.nesterov!r}")
        if not is_real(self.weight_decay) or self.weight_decay < 0:
            raise MwtError(f"weight decay must be a finite number >= 0, got "
                           f"{self.weight_decay!r}")
        if not is_int(self.batch_size) or self.batch_size < 2:
            raise MwtError(f"batch size must be an integer of at least 2, got "
                           f"{self.batch_size!r}")
        if not is_int(self.eval_batch_size) or self.eval_batch_size < 1:
            raise MwtError(f"eval batch size must be a positive integer, got "
                           f"{self.eval_batch_size!r}")
        for weight in (self.alpha, self.beta):
            if weight is not None and (not is_real(weight) or weight < 0):
                raise MwtError(f"alpha and beta must be finite and >= 0, got {self.alpha!r} "
                               f"and {self.beta!r}")
        if self.reduction not in REDUCTIONS:
            raise MwtError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")
        method = self.training_method()
        method.check_weights(self.alpha, self.beta)
        if method.name != "mwt" and self.reduction != "classes":
            raise MwtError(f"reduction is an MwT option; {method.name} has its own loss form")
        if self.crop_padding is not None and (not is_int(self.crop_padding)
                                              or not 0 <= self.crop_padding <= 64):
            raise MwtError(f"crop padding must be an integer from 0 to 64, got "
                           f"{self.crop_padding!r}")
        if self.hflip is not None and not isinstance(self.hflip, bool):
            raise MwtError(f"hflip must be true or false, got {self.hflip!r}")
        for name in ("local_losses", "sync_bn"):
            if not isinstance(getattr(self, name), bool):
                raise MwtError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if not is_int(self.track_modularity) or not 0 <= self.track_modularity <= 10_000_000:
            raise MwtError(f"track_modularity must be a number of images from 0 (off) to "
                           f"10000000, got {self.track_modularity!r}")
        if not is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise MwtError(f"seed must be an integer from 0 to 2**63 - 1, got {self.seed!r}")

    def training_method(self):
        """The ``mwt.methods.Method`` this config names, its options checked."""
        from mwt.methods import get_method

        return get_method(self.method, self.method_options)

    def resolved(self, model: str | None, dataset: str | None, augmentation) -> "TrainConfig":
        """A copy with every None decided: the method's alpha/beta (MwT: Table 1), and
        ``augmentation`` (an ``mwt.data.Augmentation``) for the crop padding and flips."""
        alpha, beta = self.training_method().default_weights(model, dataset)
        done = replace(self,
                       alpha=alpha if self.alpha is None else self.alpha,
                       beta=beta if self.beta is None else self.beta,
                       crop_padding=(int(augmentation.crop_padding) if self.crop_padding is None
                                     else self.crop_padding),
                       hflip=bool(augmentation.hflip) if self.hflip is None else self.hflip)
        done.validate()
        return done

    @classmethod
    def from_dict(cls, fields: dict, where) -> "TrainConfig":
        """A config saved as JSON (config.json), checked field by field."""
        if not isinstance(fields, dict):
            raise MwtError(f"{where}: the training settings are not an object")
        unknown = sorted(set(fields) - set(cls.__dataclass_fields__))
        if unknown:
            raise MwtError(f"{where}: unknown training setting(s) {', '.join(unknown)}")
        config = cls(**fields)
        try:
            config.validate()
        except MwtError as exc:
            raise MwtError(f"{where}: {exc}") from exc
        return config


def make_config(base: TrainConfig | None = None, **fields) -> TrainConfig:
    """``base`` (default: ``TrainConfig()``) with the given fields that are not None, checked."""
    unknown = set(fields) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise MwtError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    if base is not None and not isinstance(base, TrainConfig):
        raise MwtError(f"config must be a TrainConfig, got {type(base).__name__}")
    config = replace(base or TrainConfig(), **{k: v for k, v in fields.items() if v is not None})
    config.validate()
    return config


@dataclass
class RunSpec:
    """Everything `mwt train` needs to start, or restart, a run of a registered model on a
    registered dataset. It is saved in the run's ``config.json`` (as ``"run"``) and read back by
    ``--resume``; training settings are a ``TrainConfig`` with its own defaults."""

    model: str = "vgg16"
    dataset: str = "demo"
    width: float = 1.0
    standard: bool = False
    data_dir: str | None = None
    download: bool = False
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_settings(cls, **settings) -> "RunSpec":
        """A spec from flat keyword settings: RunSpec fields, TrainConfig fields, and the CLI's
        switches ``augment=False`` (no augmentation) and ``hflip=False`` (no flips)."""
        own = {k: settings.pop(k) for k in list(settings) if k in cls.__dataclass_fields__}
        base = own.pop("train", None)
        if not settings.pop("augment", True):
            settings.update(crop_padding=0, hflip=False)
        if settings.get("hflip") is True:
            settings["hflip"] = None  # flips as the dataset has them
        if own.get("data_dir") is not None:
            own["data_dir"] = str(own["data_dir"])
        spec = cls(**own, train=make_config(base, **settings))
        spec.validate()
        return spec

    def validate(self) -> None:
        if not isinstance(self.model, str) or not isinstance(self.dataset, str):
            raise MwtError("model and dataset must be names")
        if not isinstance(self.standard, bool) or not isinstance(self.download, bool):
            raise MwtError("standard and download must be true or false")
        if not isinstance(self.data_dir, (str, type(None))):
            raise MwtError(f"data_dir must be a path, got {self.data_dir!r}")
        if self.standard and self.train.method != "mwt":
            raise MwtError(f"a standard run trains without a method; drop --method "
                           f"{self.train.method} or --standard")
        import torch

        from mwt.models import create_model

        with torch.device("meta"):  # checks name and width without allocating the model
            create_model(self.model, 10, 1, self.width)
        self.train.validate()

    def to_dict(self) -> dict:
        return {**asdict(self), "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, saved, where) -> "RunSpec":
        """The spec saved in a config.json, every field checked (a damaged or hand-edited file is
        one clear error)."""
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where} holds no run description")
        unknown = sorted(set(saved) - set(cls.__dataclass_fields__))
        if unknown:
            raise CheckpointError(f"{where} has unknown setting(s): {', '.join(unknown)}")
        try:
            train = TrainConfig.from_dict(saved.get("train", {}), where)
            spec = cls(**{**saved, "train": train})
            spec.validate()
        except (MwtError, TypeError) as exc:
            raise CheckpointError(f"{where} holds a damaged run description ({exc})") from exc
        return spec

    @classmethod
    def load(cls, out) -> "RunSpec":
        """The spec of the run in ``out`` (runs from before RunSpec saved flat ``"cli"``
        settings, which are read too)."""
        from mwt.io import read_json

        out = Path(out)
        if not (out / "config.json").exists():
            raise MwtError(f"nothing to resume: {out} does not exist or holds no run")
        where = out / "config.json"
        saved = read_json(where)
        if "run" in saved:
            return cls.from_dict(saved["run"], where)
        if isinstance(saved.get("cli"), dict):
            legacy = dict(saved["cli"])
            try:
                return cls.from_settings(**legacy)
            except (MwtError, TypeError) as exc:
                raise CheckpointError(f"{where} holds damaged settings ({exc})") from exc
        raise MwtError(f"{out} was not made by `mwt train`; resume it from Python")


@dataclass(frozen=True)
class DemoSettings:
    """`mwt demo`: 12 epochs of batch 64 give the 6,000 embedded images enough steps to become
    visibly modular in a few minutes on a 2-core CPU (the paper's batch 128 needs more).
    `mwt demo --quick` (the README's first command) trains only the modular model, for
    ``quick_epochs``: about two minutes in all, and the gates have closed (kernel rate ~0.6)."""

    out: str = "runs/mwt-demo"
    model: str = "vgg16"
    width: float = 0.25
    epochs: int = 12
    batch_size: int = 64
    classes: tuple = (0, 3)
    tau: float = 0.9
    finetune_epochs: int = 5
    quick_out: str = "runs/mwt-demo-quick"
    quick_epochs: int = 10
    quick_finetune_epochs: int = 2


DEMO = DemoSettings()
