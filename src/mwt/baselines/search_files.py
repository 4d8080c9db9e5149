"""A CNNSplitter search on disk: its state after every generation, and the checks that decide
whether an ``--out`` directory may be written, continued or must be refused.

``cnnsplitter.json`` marks a directory as a search (status, source run, settings, results);
``cnnsplitter-state.*`` holds everything needed to go on from the next generation.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mwt.baselines.genetic import Layout
from mwt.baselines.settings import RESUMABLE, CNNSplitterConfig
from mwt.checkpoint import WEIGHTS
from mwt.errors import CheckpointError, MwtError
from mwt.io import (
    LOCK_FILE,
    TEMP_PREFIX,
    atomic_write_bytes,
    read_artifact,
    read_json,
    write_artifact,
    write_json,
)
from mwt.module_set import method_set_stem

FORMAT = "mwt-cnnsplitter/1"
STATE_FORMAT = "mwt-cnnsplitter-state/1"
RESULT = "cnnsplitter.json"    # marks a directory as a CNNSplitter search: settings, results
STATE = "cnnsplitter-state"    # .safetensors + .json: the search after its last generation
METHOD = "cnnsplitter"
RUN_FILES = ("config.json", WEIGHTS, "checkpoint.json", "metrics.jsonl")


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


def save_state(out: Path, state: SearchState, config: CNNSplitterConfig, source: dict) -> None:
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


def load_state(out: Path, layout: Layout, classes: int,
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


def foreign_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_FILE and not p.name.startswith(TEMP_PREFIX))


def check_out(out, run_dir: Path) -> Path:
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
        elif foreign_files(out):
            shown = ", ".join(foreign_files(out)[:3])
            raise MwtError(f"{out} is not empty ({shown}) and holds no CNNSplitter search; "
                           "choose an empty or new directory for --out")
    return out


def resumable(out: Path, config: CNNSplitterConfig, source: dict, layout: Layout,
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
    state = load_state(out, layout, classes, config)
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


def start(out: Path, run_dir: Path, config: CNNSplitterConfig, source: dict,
           fresh: bool, requested: CNNSplitterConfig) -> None:
    """Mark ``out`` as a search in progress. A fresh search writes the marker first (so that a
    killed start is still recognised as ours), then copies the run's files, so that the
    directory is a run directory for ``mwt reuse``."""
    if fresh:
        for stem in (STATE, method_set_stem(METHOD)):
            for suffix in (".json", ".safetensors"):
                (out / f"{stem}{suffix}").unlink(missing_ok=True)
    write_json(out / RESULT, {"format": FORMAT, "status": "searching", "source": source,
                              "config": config.to_dict(), "requested": requested.to_dict()})
    if fresh:
        for name in RUN_FILES:
            if (run_dir / name).is_file():
                atomic_write_bytes(out / name, (run_dir / name).read_bytes())


__all__ = ["SearchState", "FORMAT", "RESULT", "STATE", "METHOD", "RUN_FILES", "save_state",
           "load_state", "check_out", "resumable", "start"]
