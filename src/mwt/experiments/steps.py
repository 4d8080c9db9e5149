"""The steps every experiment is made of, each done once and kept on disk.

A training run is a run directory under ``runs/`` named after everything that varies
(``vgg16-fashion-mnist-w0.25-modular-a0.5-b1.5-e8-s0``): a finished run is used as it is, a
killed one is resumed (``mwt.runs.train_run(..., resume=True)``), a run of other settings under
the same name is an error. Module sets live in their run directory (``modules-tau0.90.*``, one
per tau), CNNSplitter's search in ``<standard run>-cnnsplitter/``, and every other result
(a reuse, a table's row) in a JSON file that is read back instead of recomputed
(:meth:`Workspace.cached`). So an experiment can be killed at any moment and started again with
the same command, losing at most the step it was in.
"""

import contextlib
import json
import math
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from mwt.config import RunSpec, TrainConfig
from mwt.errors import MwtError, MwtWarning
from mwt.experiments.presets import Preset
from mwt.io import make_dir, read_json, write_json
from mwt.module_set import list_module_sets

RESULT_FORMAT = "mwt-experiment-result/1"
# RunSpec fields that say where a run's data are, not what the run is: ignored when a run or a
# record is compared with the spec an experiment asks for.
WHERE_THE_DATA_ARE = ("data_dir", "download")


def fmt_number(value: float) -> str:
    """A short, file-name-safe form of a setting (0.5 -> "0.5", 2.0 -> "2", 0.0625 -> "0.0625")."""
    return f"{value:g}"


@dataclass
class Workspace:
    """Where an experiment works and how: its output directory, runs directory, preset (with
    ``--epochs`` / ``--seeds`` applied), device and data directory."""

    out: Path
    runs: Path
    preset: Preset
    device: str | None = None
    data_dir: str | None = None
    progress: bool = True
    stream: object = None

    def __post_init__(self):
        self.out, self.runs = Path(self.out), Path(self.runs)
        self._t0 = time.perf_counter()
        self.trained: list[str] = []   # runs trained (or resumed) by this invocation
        self.reused: list[str] = []    # finished runs found on disk
        self.recorded: list[str] = []  # pairs read from their records in out (runs not needed)

    # -- progress ----------------------------------------------------------------------------

    def log(self, message: str) -> None:
        """One line per step, with the time since the experiment started."""
        elapsed = time.perf_counter() - self._t0
        print(f"[{int(elapsed // 60):3d}:{int(elapsed % 60):02d}] {message}",
              file=self.stream or sys.stdout, flush=True)

    # -- JSON results ------------------------------------------------------------------------

    def cached(self, path: Path, compute, what: str, key=None):
        """The JSON result at ``path``: read back when it exists (and was made with the same
        ``key``, the settings it depends on beyond its file name), else computed and written
        atomically (so a killed experiment keeps every result it finished)."""
        path = Path(path)
        key = None if key is None else json.loads(json.dumps(key))  # as it reads back
        if path.is_file():
            with contextlib.suppress(MwtError):  # unreadable: computed again below
                saved = read_json(path)
                if (saved.get("format") == RESULT_FORMAT and "result" in saved
                        and saved.get("key") == key):
                    return saved["result"]
        self.log(what)
        result = compute()
        write_json(path, {"format": RESULT_FORMAT, "result": result,
                          **({} if key is None else {"key": key})})
        return result

    # -- training runs -----------------------------------------------------------------------

    def spec(self, model: str, dataset: str, *, standard: bool, seed: int,
             alpha: float | None = None, beta: float | None = None,
             method: str = "mwt") -> RunSpec:
        """The RunSpec of a run of this preset (modular MwT runs get the preset's alpha/beta
        unless given; other methods their own defaults, ``mwt.methods``)."""
        from mwt.methods import get_method

        p = self.preset
        if not standard and (alpha is None or beta is None):
            a, b = (p.alpha_beta_for(model, dataset) if method == "mwt"
                    else get_method(method).default_weights(model, dataset))
            alpha = a if alpha is None else alpha
            beta = b if beta is None else beta
        train = TrainConfig(epochs=p.epochs, lr=p.lr, batch_size=p.batch_size,
                            alpha=None if standard or alpha is None else float(alpha),
                            beta=None if standard or beta is None else float(beta),
                            crop_padding=p.crop_padding, hflip=p.hflip, seed=int(seed),
                            track_modularity=p.track_samples, method=method)
        spec = RunSpec(model=model, dataset=dataset, width=p.width, standard=standard,
                       data_dir=None if self.data_dir is None else str(self.data_dir),
                       train=train)
        spec.validate()
        return spec

    def run_name(self, spec: RunSpec) -> str:
        t = spec.train
        weights = "".join(f"-{k}{fmt_number(v)}" for k, v in (("a", t.alpha), ("b", t.beta))
                          if v is not None)
        # MwT's runs keep the names they had before there were other methods.
        kind = ("standard" if spec.standard
                else f"modular{weights}" if t.method == "mwt" else f"{t.method}{weights}")
        return (f"{spec.model}-{spec.dataset}-w{fmt_number(spec.width)}-{kind}-e{t.epochs}"
                f"-s{t.seed}")

    def run_dir(self, spec: RunSpec) -> Path:
        return self.runs / self.run_name(spec)

    def ensure_run(self, spec: RunSpec) -> Path:
        """The finished run of ``spec``: found, resumed, or trained."""
        from mwt.run_dir import is_run_dir
        from mwt.runs import train_run

        path = self.run_dir(spec)
        name = path.name
        if is_run_dir(path):
            _check_same_spec(path, spec)
            if _epochs_done(path) >= spec.train.epochs:
                if name not in self.trained and name not in self.reused:
                    self.reused.append(name)
                return path
            self.log(f"resuming {name} from epoch {_epochs_done(path)}")
            train_run(path, resume=True, device=self.device, progress=self.progress,
                      verbose=True)
        else:
            self.log(f"training {name} ({spec.train.epochs} epochs)")
            train_run(path, spec, device=self.device, progress=self.progress, verbose=True)
        self.trained.append(name)
        return path

    # -- module sets -------------------------------------------------------------------------

    def ensure_modules(self, run: Path, tau: float | None = None):
        """The module set of ``run`` at ``tau`` (default: the preset's), made once."""
        from mwt.runs import load_modules, modularize_run

        tau = self.preset.tau if tau is None else tau
        have = [t for t in list_module_sets(run) if not isinstance(t, str)]
        if any(math.isclose(t, tau) for t in have):
            return load_modules(run, tau)
        self.log(f"modularizing {run.name} at tau {tau:g}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MwtWarning)  # degenerate gates: kept in the set
            return modularize_run(run, tau, data_dir=self.data_dir, device=self.device)

    # -- CNNSplitter ---------------------------------------------------------------------------

    def ensure_cnnsplitter(self, standard_run: Path):
        """CNNSplitter's modules and report for a standard run, searched once into
        ``<run>-cnnsplitter/``; None when the baseline is not installed."""
        try:
            from mwt.baselines import cnnsplitter_run, default_config
        except ImportError:  # pragma: no cover - the baseline ships with the package
            if self.preset.cnnsplitter_fallback:
                return None
            raise
        from mwt.module_set import ModuleSet

        out = standard_run.parent / f"{standard_run.name}-cnnsplitter"
        config = default_config(**self.preset.cnnsplitter)
        result = out / "cnnsplitter.json"
        if result.is_file():
            saved = read_json(result)
            asked = saved.get("requested", saved.get("config"))  # the settings before the
            # published config filled them in: what the preset asks for
            if saved.get("status") == "done" or (saved.get("status") == "stopped"
                                                 and asked == config.to_dict()):
                return ModuleSet.load(out, method="cnnsplitter"), saved["results"]
        self.log(f"CNNSplitter search on {standard_run.name}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MwtWarning)
            found = cnnsplitter_run(standard_run, out, config, data_dir=self.data_dir,
                                    device=self.device, progress=self.progress, verbose=False)
        return found.modules, found.report

    # -- the experiment's own record ---------------------------------------------------------

    def lock(self, command: str):
        from mwt.io import lock_directory

        return lock_directory(self.out, command)

    def subdir(self, *parts) -> Path:
        return make_dir(self.out.joinpath(*parts))


def _epochs_done(path: Path) -> int:
    """Epochs finished by the run in ``path`` (its checkpoint's; 0 before the first)."""
    from mwt.checkpoint import WEIGHTS

    if not (path / WEIGHTS).is_file() or not (path / "checkpoint.json").is_file():
        return 0
    with contextlib.suppress(MwtError, TypeError, ValueError):
        return int(read_json(path / "checkpoint.json").get("epoch", 0))
    return 0


def _check_same_spec(path: Path, spec: RunSpec) -> None:
    saved = RunSpec.load(path).to_dict()
    wanted = spec.to_dict()
    for key in sorted(set(saved) | set(wanted)):
        if key == "train" or key in WHERE_THE_DATA_ARE:
            continue
        if saved.get(key) != wanted.get(key):
            raise MwtError(f"{path} holds a run with {key} {saved.get(key)!r}, not "
                           f"{wanted.get(key)!r}; remove it or choose another --runs")
    for key in sorted(set(saved["train"]) | set(wanted["train"])):
        if saved["train"].get(key) != wanted["train"].get(key):
            raise MwtError(f"{path} holds a run with training option {key} "
                           f"{saved['train'].get(key)!r}, not {wanted['train'].get(key)!r}; "
                           "remove it or choose another --runs")


def is_transformer(model: str) -> bool:
    """Whether a registered model's units are a transformer's heads and neurons (so its tables
    get NeMo's Transformer note) rather than conv kernels only."""
    from mwt.gates import unit_noun
    from mwt.models import create_model

    return unit_noun(create_model(model, 10, 3, 0.125)) == "units"


def history(run: Path) -> list[dict]:
    """The per-epoch records of a run (``metrics.jsonl``). A last line cut short, as a write
    killed by something other than mwt could leave it, is ignored and said so on stderr; any
    other damage is an error naming the file (``mwt train --resume`` rewrites it from the
    checkpoint)."""
    import json

    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MwtError(f"cannot read {path} ({exc.__class__.__name__})") from exc
    lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    records = []
    for i, (n, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            record = None
        if isinstance(record, dict):
            records.append(record)
            continue
        if i == len(lines) - 1 and not text.endswith("\n"):
            print(f"note: ignored the incomplete last line ({n}) of {path}", file=sys.stderr)
            break
        raise MwtError(f"{path} is damaged at line {n} (not a JSON record); restore it, or "
                       f"rewrite it from the checkpoint with `mwt train --resume --out {run}`")
    return records


def mean_std(values) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation of the numbers in ``values`` (None where missing);
    the std is None for fewer than two."""
    xs = [float(v) for v in values if v is not None and not _isnan(v)]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else None)


def _isnan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)
