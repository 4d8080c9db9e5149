"""A module set on disk: per-class unit masks with the figures of paper Table 2.

A module set is saved as ``modules-tau<T>.safetensors`` + ``modules-tau<T>.json`` (see
:func:`module_set_stem`), so sets made with different taus live side by side in one directory;
:func:`list_module_sets` finds them and ``ModuleSet.load(directory, tau)`` reads one back, checking
every field. A ``modules.json`` + ``modules.safetensors`` pair written by older versions is still
read. A module set found by another method than MwT's tau rule (``ModuleSet.method``, e.g. the
CNNSplitter baseline of ``mwt.baselines``) has no tau and is saved as ``modules-<method>.*``.
How a set is computed is ``mwt.modularize``'s.
"""

import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import torch

from mwt.checks import short_repr as _short
from mwt.errors import CheckpointError, MwtError
from mwt.io import read_artifact, read_json, write_artifact
from mwt.methods import METHODS as TRAINING_METHODS
from mwt.metrics import kernel_retention_rate
from mwt.rules import check_tau

FORMAT = "mwt-modules/1"
STEM_PREFIX = "modules-tau"
LEGACY_STEM = "modules"  # the single module set of a directory written by older versions
# How a set's masks were found: a training method's rule with a tau (``mwt.methods``), or a
# search without one saved as ``modules-<method>.*``.
TAU_METHODS = tuple(TRAINING_METHODS)
SEARCH_METHODS = ("cnnsplitter",)
METHODS = TAU_METHODS + SEARCH_METHODS
TENSORS = ("masks", "frequencies", "gate_means", "counts", "layer_tau")


def module_set_stem(tau) -> str:
    """The file stem of the module set of ``tau``: ``modules-tau`` + tau as a decimal number.

    The number is the shortest decimal that reads back as the same float, written with at least
    two decimals and never in exponent notation: 0.9 -> ``modules-tau0.90``, 1 ->
    ``modules-tau1.00``, 0.925 -> ``modules-tau0.925``, 1e-05 -> ``modules-tau0.00001``. Distinct
    taus get distinct stems and ``float`` of the number is tau again.
    """
    text = format(Decimal(repr(check_tau(tau))), "f")
    whole, _, frac = text.partition(".")
    return f"{STEM_PREFIX}{whole}.{frac.ljust(2, '0')}"


def _tau_text(tau) -> str:
    return module_set_stem(tau)[len(STEM_PREFIX):]


def method_set_stem(method: str) -> str:
    """The file stem of a set found by a method without a tau: ``modules-cnnsplitter``."""
    if method not in SEARCH_METHODS:
        raise MwtError(f"unknown module-set method {_short(method)}; known: "
                       f"{', '.join(SEARCH_METHODS)}")
    return f"{LEGACY_STEM}-{method}"


def _legacy_tau(path: Path) -> float | None:
    """The tau of a legacy ``modules.json``, or None when it cannot be read."""
    try:
        return check_tau(read_json(path).get("tau"))
    except MwtError:
        return None


def list_module_sets(directory) -> dict[float | str, Path]:
    """Every module set saved in ``directory``: tau -> its JSON file, in increasing tau, then
    method name -> its JSON file for sets of other methods (``modules-cnnsplitter.json``).

    New-style sets are found by file name (``modules-tau<T>.json``, see :func:`module_set_stem`);
    a legacy ``modules.json`` by the tau recorded inside it (it is left out when that cannot be
    read, and a new-style set of the same tau takes precedence over it). Nothing is loaded or
    verified here: :meth:`ModuleSet.load` does that.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return {}
    found: dict[float, Path] = {}
    legacy = directory / f"{LEGACY_STEM}.json"
    if legacy.is_file():
        tau = _legacy_tau(legacy)
        if tau is not None:
            found[tau] = legacy
    for path in directory.glob(f"{STEM_PREFIX}*.json"):
        match = re.fullmatch(re.escape(STEM_PREFIX) + r"(\d+\.\d{2,})", path.stem)
        if match is None or not path.is_file():
            continue
        try:
            tau = check_tau(float(match.group(1)))
        except MwtError:
            continue
        if module_set_stem(tau) == path.stem:
            found[tau] = path
    others = {m: directory / f"{method_set_stem(m)}.json" for m in SEARCH_METHODS}
    return {**dict(sorted(found.items())), **{m: p for m, p in others.items() if p.is_file()}}


def _taus_text(keys) -> str:
    """``tau 0.60, 0.90`` for the keys of :func:`list_module_sets`, methods after the taus."""
    taus = sorted(k for k in keys if not isinstance(k, str))
    parts = [f"tau {', '.join(_tau_text(t) for t in taus)}"] if taus else []
    parts += [f"a {m} set" for m in keys if isinstance(m, str)]
    return " and ".join(parts)


def class_ids(classes, names: list[str]) -> list[int]:
    """Class ids (0..N-1) from ids or names of ``names`` (case-insensitive); a bad, repeated or
    missing one is a clear error."""
    if isinstance(classes, (int, str)):
        classes = [classes]
    ids = []
    lower = [str(c).lower() for c in names]
    for c in classes:
        if isinstance(c, str) and not c.strip().lstrip("-").isdigit():
            if c.lower() not in lower:
                raise MwtError(f"unknown class {c!r}; classes are: {', '.join(names)}")
            ids.append(lower.index(c.lower()))
            continue
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise MwtError(f"a class is an id or a name, got {c!r}")
        i = int(c)
        if not 0 <= i < len(names):
            raise MwtError(f"class id {i} is out of range: the model has {len(names)} "
                           f"classes (0..{len(names) - 1})")
        ids.append(i)
    if not ids:
        raise MwtError("no classes given")
    if len(set(ids)) != len(ids):
        raise MwtError(f"classes are repeated: {', '.join(str(c) for c in classes)}")
    return ids


@dataclass
class ModuleSet:
    """Per-class kernel masks of a modular model, with the figures of paper Table 2.

    ``method`` says how the masks were found: a training method's rule at ``tau`` (``"mwt"``,
    the tau rule of section 3.3, also NeMo's; ``"moda"``, its activation-rate rule; see
    ``mwt.rules``), or a search such as ``"cnnsplitter"`` (``mwt.baselines``), whose set has no
    tau (``None``). How a sub-task module is composed from it follows the method
    (``mwt.methods``: a new head and fine-tuning, or MODA's target rows).
    """

    masks: torch.Tensor            # bool [N, K]: module c keeps kernel k
    layers: list[tuple[str, int]]  # (conv name, kernels) per gated layer, in mask order
    tau: float | None              # None for a set found by a search (CNNSplitter)
    frequencies: torch.Tensor      # float [N, K]: share of class-c samples using kernel k
    gate_means: torch.Tensor       # float [N, K]: mean gate value over class-c samples
    counts: torch.Tensor           # int [N]: training samples per class
    layer_tau: torch.Tensor        # float [N, L]: the tau each class's layer ended up with
    classes: list[str] = field(default_factory=list)
    cohesion: float = float("nan")
    coupling: float = float("nan")
    krr: float = float("nan")
    seconds: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # degenerate gates found when modularizing
    method: str = "mwt"

    @property
    def num_classes(self) -> int:
        return self.masks.shape[0]

    @property
    def total_kernels(self) -> int:
        return self.masks.shape[1]

    @property
    def stem(self) -> str:
        """The file stem this set is saved under (``modules-tau0.90`` for tau 0.9,
        ``modules-cnnsplitter`` for a CNNSplitter set)."""
        if self.method in TAU_METHODS:
            return module_set_stem(self.tau)
        return method_set_stem(self.method)

    def class_ids(self, classes) -> list[int]:
        """Class ids from ids or names; a bad one is a clear error."""
        return class_ids(classes, self.classes or [str(i) for i in range(self.num_classes)])

    def kernels_for(self, classes) -> torch.Tensor:
        """The union of the kernel sets of the given classes' modules (a mixed module, 3.4)."""
        return self.masks[self.class_ids(classes)].any(dim=0)

    def gate_means_for(self, classes) -> torch.Tensor:
        """Mean gate value of each kernel over all training samples of the given classes."""
        ids = self.class_ids(classes)
        weights = self.counts[ids].float()
        return (self.gate_means[ids] * weights[:, None]).sum(0) / weights.sum().clamp(min=1)

    def summary(self) -> dict:
        return {"method": self.method, "tau": self.tau, "krr": self.krr,
                "cohesion": self.cohesion,
                "coupling": self.coupling, "kernels_per_module": self.masks.sum(1).tolist(),
                "total_kernels": self.total_kernels, "seconds": self.seconds}

    def save(self, directory) -> Path:
        """Write ``<stem>.safetensors`` + ``<stem>.json`` (with the tensor file's SHA-256) into
        ``directory`` atomically and return the JSON's path. A set of another tau in the same
        directory is left alone; one of the same tau is replaced."""
        directory = Path(directory)
        stem = self.stem
        write_artifact(directory, stem, {
            "masks": self.masks.to(torch.uint8), "frequencies": self.frequencies,
            "gate_means": self.gate_means, "counts": self.counts, "layer_tau": self.layer_tau,
        }, {"format": FORMAT, "classes": list(self.classes),
            "layers": [[name, k] for name, k in self.layers], "model": self.model,
            "warnings": list(self.warnings), **self.summary()})
        return directory / f"{stem}.json"

    @classmethod
    def load(cls, directory, tau=None, *, method: str | None = None) -> "ModuleSet":
        """The module set of ``tau`` saved in ``directory`` (``tau=None``: its only one), or with
        ``method`` (e.g. ``"cnnsplitter"``) the set of that method.

        Every field of the JSON and every tensor is checked: a missing, corrupted or inconsistent
        set is a :class:`~mwt.errors.CheckpointError`; no set, or no set of that tau, or several
        sets with ``tau=None``, is an :class:`~mwt.errors.MwtError` naming the taus there are.
        """
        directory = Path(directory)
        if not directory.exists():
            raise CheckpointError(f"{directory} does not exist")
        if not directory.is_dir():
            raise CheckpointError(f"{directory} is not a directory")
        sets = list_module_sets(directory)
        if method is not None and method not in TAU_METHODS:
            if tau is not None:
                raise MwtError(f"a {method} module set has no tau; give tau or method, not both")
            stem = method_set_stem(method)
            if method not in sets:
                raise MwtError(f"{directory} has no {method} module set ({stem}.json)")
            return cls._read(directory, stem)
        if tau is None:
            if not sets:
                if (directory / f"{LEGACY_STEM}.json").is_file():
                    # A legacy set whose tau cannot be read: loading it says what is wrong.
                    return cls._read(directory, LEGACY_STEM)
                raise MwtError(f"{directory} has no modules yet; run `mwt modularize {directory}` "
                               "first")
            if len(sets) > 1:
                raise MwtError(f"{directory} holds module sets for {_taus_text(sets)}; "
                               "choose one with --tau")
            return cls._read(directory, next(iter(sets.values())).stem)
        want = module_set_stem(tau)
        for found, path in sets.items():
            if not isinstance(found, str) and module_set_stem(found) == want:
                return cls._read(directory, path.stem)
        have = f"it holds {_taus_text(sets)}" if sets else "it has no modules yet"
        raise MwtError(f"{directory} has no module set for tau {_tau_text(tau)} ({have}); run "
                       f"`mwt modularize {directory} --tau {_tau_text(tau)}` to make it")

    @classmethod
    def _read(cls, directory: Path, stem: str) -> "ModuleSet":
        meta, tensors = read_artifact(directory, stem, FORMAT, "module set")
        where = directory / f"{stem}.json"
        if stem != LEGACY_STEM and not isinstance(meta.get("sha256"), str):
            raise CheckpointError(f"{where} carries no SHA-256 of its tensor file, so the tensors "
                                  "cannot be verified; modularize again")
        fields = _validated(meta, tensors, where)
        if fields["method"] not in TAU_METHODS:
            if method_set_stem(fields["method"]) != stem:
                raise CheckpointError(f"{where} records method {fields['method']!r}, which does "
                                      "not match its file name; it was renamed or edited")
        elif stem != LEGACY_STEM and module_set_stem(fields["tau"]) != stem:
            raise CheckpointError(f"{where} records tau {_short(meta['tau'])}, which does not "
                                  "match its file name; it was renamed or edited")
        return cls(**fields)


def _validated(meta: dict, t: dict, where: Path) -> dict:
    """The fields of a ModuleSet from a saved JSON and its tensors, every one checked."""

    def bad(reason: str):
        return CheckpointError(f"{where} holds an invalid module set: {reason}")

    for key in ("tau", "classes", "layers", "cohesion", "coupling", "krr"):
        if key not in meta:
            raise bad(f"the field {key!r} is missing")
    method = meta.get("method", "mwt")  # sets written before methods existed are MwT's
    if method not in METHODS:
        raise bad(f"'method' must be one of {', '.join(METHODS)}, got {_short(method)}")
    if method in SEARCH_METHODS:
        if meta["tau"] is not None:
            raise bad(f"a {method} set has no tau, but 'tau' is {_short(meta['tau'])}")
        tau = None
    else:
        try:
            tau = check_tau(meta["tau"])
        except MwtError:
            raise bad(f"'tau' must be a number in (0, 1], got {_short(meta['tau'])}") from None
    classes = meta["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise bad(f"'classes' must be a list of class names, got {_short(classes)}")
    layers = meta["layers"]
    ok = isinstance(layers, list) and len(layers) > 0
    for item in layers if ok else ():
        ok = (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
              and isinstance(item[1], int) and not isinstance(item[1], bool) and item[1] > 0)
        if not ok:
            break
    if not ok:
        raise bad(f"'layers' must be a non-empty list of [conv name, kernel count > 0] pairs, got "
                  f"{_short(layers)}")
    layers = [(name, k) for name, k in layers]
    figures = {}
    for key in ("cohesion", "coupling", "krr"):
        v = meta[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
            raise bad(f"{key!r} must be a number in [0, 1], got {_short(v)}")
        figures[key] = float(v)
    seconds = meta.get("seconds", {})
    if not isinstance(seconds, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf
            for v in seconds.values()):
        raise bad(f"'seconds' must map steps to durations, got {_short(seconds)}")
    model = meta.get("model", {})
    if not isinstance(model, dict):
        raise bad(f"'model' must be an object, got {_short(model)}")
    notes = meta.get("warnings", [])
    if not isinstance(notes, list) or not all(isinstance(w, str) for w in notes):
        raise bad(f"'warnings' must be a list of messages, got {_short(notes)}")

    for name in TENSORS:
        if name not in t:
            raise bad(f"the tensor {name!r} is missing from its .safetensors file")
    masks = t["masks"]
    n, k = len(classes), sum(size for _, size in layers)
    if masks.dtype not in (torch.uint8, torch.bool) or masks.dim() != 2:
        raise bad(f"'masks' must be a 2-D 0/1 tensor, got {masks.dtype} of shape "
                  f"{tuple(masks.shape)}")
    if tuple(masks.shape) != (n, k):
        raise bad(f"it is inconsistent: {n} classes and layers of {k} kernels in all, but masks "
                  f"of shape {tuple(masks.shape)}")
    if n == 0:
        raise bad("it has no classes")
    if masks.dtype == torch.uint8 and bool((masks > 1).any()):
        raise bad("'masks' holds values other than 0 and 1")
    for name, shape in (("frequencies", (n, k)), ("gate_means", (n, k)),
                        ("layer_tau", (n, len(layers)))):
        x = t[name]
        if not x.is_floating_point() or tuple(x.shape) != shape:
            raise bad(f"{name!r} must be a float tensor of shape {shape}, got {x.dtype} of shape "
                      f"{tuple(x.shape)}")
        if not bool(((x >= 0) & (x <= 1)).all()):  # False for NaN too
            raise bad(f"{name!r} holds values outside [0, 1] (or NaN)")
    counts = t["counts"]
    if counts.is_floating_point() or counts.is_complex() or counts.dtype == torch.bool \
            or tuple(counts.shape) != (n,):
        raise bad(f"'counts' must be an integer tensor of shape ({n},), got {counts.dtype} of "
                  f"shape {tuple(counts.shape)}")
    if bool((counts < 0).any()):
        raise bad("'counts' holds negative sample counts")
    masks = masks.bool()
    if abs(figures["krr"] - kernel_retention_rate(masks)) > 1e-6:
        raise bad(f"its 'krr' {figures['krr']} does not match its masks "
                  f"({kernel_retention_rate(masks)})")
    return dict(masks=masks, layers=layers, tau=tau, frequencies=t["frequencies"],
                gate_means=t["gate_means"], counts=t["counts"], layer_tau=t["layer_tau"],
                classes=list(classes), seconds=dict(seconds), model=dict(model),
                warnings=list(notes), method=method, **figures)


__all__ = ["ModuleSet", "module_set_stem", "method_set_stem", "list_module_sets", "class_ids",
           "FORMAT"]
