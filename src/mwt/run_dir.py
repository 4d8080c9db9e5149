"""A training run's directory: what may be trained into, and how a run is created or reopened.

A run directory holds ``config.json`` (the run's model and training options, tagged
``RUN_FORMAT``), ``metrics.jsonl`` and the checkpoint. A directory is trained into only if it is
new, empty, or (with ``resume``) a run of the same model and options; nothing is overwritten.
"""

from pathlib import Path

from mwt.checkpoint import WEIGHTS, load_checkpoint_into
from mwt.errors import MwtError
from mwt.io import (
    LOCK_FILE,
    TEMP_PREFIX,
    make_dir,
    read_json,
    remove_stale_temps,
    write_json,
    write_json_lines,
)

RUN_FORMAT = "mwt-run/1"


def is_run_dir(path) -> bool:
    """Whether ``path`` holds a run of ours (a config.json written by ``mwt.train``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        saved = read_json(config)
    except MwtError:
        return False
    # Runs from before the format tag carry both of these keys.
    return saved.get("format") == RUN_FORMAT or ("train" in saved and "model" in saved)


def _foreign_entries(out: Path) -> list[str]:
    """What is in ``out`` besides our lock file and our temporary files."""
    return sorted(p.name for p in out.iterdir()
                  if p.name != LOCK_FILE and not p.name.startswith(TEMP_PREFIX))


def check_run_dir(out, resume: bool) -> Path:
    """Refuse, before any work, an --out that is not a directory we may train into."""
    if out is None or str(out).strip() == "":
        raise MwtError("the run directory (--out) must not be empty")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MwtError(f"{out} is a file, not a run directory")
    if resume:
        if not out.exists():
            raise MwtError(f"nothing to resume: {out} does not exist")
        if not is_run_dir(out):
            raise MwtError(f"nothing to resume: {out} holds no run (no config.json of "
                           "`mwt train`)")
        return out
    if out.is_dir():
        if is_run_dir(out):
            raise MwtError(f"{out} already holds a run; pass --resume to continue it or choose "
                           "another --out")
        foreign = _foreign_entries(out)
        if foreign:
            raise MwtError(f"{out} is not empty ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}) and holds no run; choose an "
                           "empty or new directory for --out")
    return out


def prepare_run_dir(out: Path, run_config: dict, resume: bool, model, optimizer, device):
    """Create or reopen a run directory (under its lock); never overwrite a run silently.

    Resuming a run that died before its first checkpoint restarts it from epoch 0 with the saved
    config; temporary files of a killed write are removed.
    """
    check_run_dir(out, resume)  # again, now that we hold the lock
    make_dir(out)
    remove_stale_temps(out)
    config_path = out / "config.json"
    if resume:
        _check_same_run(read_json(config_path), run_config, out)
        if (out / WEIGHTS).exists():  # the safetensors file is the source of truth
            done = load_checkpoint_into(out, model, optimizer, device, described_by=config_path)
            write_json_lines(out / "metrics.jsonl", done[1])  # its mirror, repaired if damaged
        else:  # died in its first epoch: start again
            done = 0, []
            write_json_lines(out / "metrics.jsonl", [])
        write_json(config_path, run_config)  # the number of epochs may have been extended
        return done
    write_json(config_path, run_config)
    write_json_lines(out / "metrics.jsonl", [])
    return 0, []


def _check_same_run(saved: dict, current: dict, out: Path) -> None:
    if not isinstance(saved.get("train", {}), dict):
        raise MwtError(f"cannot resume {out}: its config.json is damaged (train is not an object)")
    fixed = ("model", "modular")
    for key in fixed:
        if saved.get(key) != current.get(key):
            raise MwtError(f"cannot resume {out}: its {key} was {saved.get(key)} but is now "
                           f"{current.get(key)}")
    for key, value in saved.get("train", {}).items():
        if key != "epochs" and current["train"].get(key) != value:
            raise MwtError(f"cannot resume {out}: training option {key} was {value} but is now "
                           f"{current['train'].get(key)}")
